"""Relays that delay, cut or freeze traffic: netem's job, in userspace.

This kernel has no ``netem`` and toxiproxy is not packaged here, so the latency and
database faults put a relay in the path: UDP for SNMP (one listening port per device,
forwarded to the device's port), TCP for PostgreSQL (or SSH/NETCONF). Every datagram or
chunk is held for the current delay in each direction, with ``call_later``; the delay is
the same for all held data, so order is kept. ``cut`` makes the peer look gone (UDP
drops, TCP connections are closed and new ones refused at once); ``freeze`` makes it hang
(nothing is forwarded, connections stay open, as with a SIGSTOPped server); ``restore``
forwards again. Data held while frozen is released in order on restore: a TCP stream is
never corrupted.

``serve_relays`` runs relays under a JSON control socket (``netmon chaos relay``);
``relay_request`` is the synchronous client the Chaos Toolkit actions use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from netmon import control_socket

__all__ = ["RelayControl", "RelaySpec", "TcpRelay", "UdpRelay", "relay_request", "serve_relays"]

State = Literal["forwarding", "cut", "frozen"]
Address = tuple[str, int]

_IDLE_S = 60.0  # an upstream UDP socket unused this long is closed
_HIGH_WATER = 4 << 20  # bytes held per TCP direction before reading pauses


class RelayControl:
    """Delay, state and counters, shared by every relay of a process (pass one to each
    relay's ``control=``); a relay made without one has its own."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.state: State = "forwarding"
        self.forwarded = 0
        self.dropped = 0
        self._relays: list[Any] = []

    def attach(self, relay: Any) -> None:
        self._relays.append(relay)

    def set_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        self.delay = seconds

    def cut(self) -> None:
        self.state = "cut"
        for r in self._relays:
            r.on_cut()

    def freeze(self) -> None:
        if self.state == "cut":
            return  # nothing is open to hold; restore first
        self.state = "frozen"

    def restore(self) -> None:
        self.state = "forwarding"
        for r in self._relays:
            r.on_restore()

    def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "delay": self.delay,
            "state": self.state,
            "forwarded": self.forwarded,
            "dropped": self.dropped,
        }


class _Controlled:
    """The control surface on a relay itself: ``relay.set_delay(0.2)``, ``relay.cut()``..."""

    control: RelayControl

    @property
    def delay(self) -> float:
        return self.control.delay

    @property
    def state(self) -> State:
        return self.control.state

    @property
    def forwarded(self) -> int:
        return self.control.forwarded

    @property
    def dropped(self) -> int:
        return self.control.dropped

    def set_delay(self, seconds: float) -> None:
        """Data arriving from now on is held ``seconds`` in each direction."""
        self.control.set_delay(seconds)

    def cut(self) -> None:
        self.control.cut()

    def freeze(self) -> None:
        self.control.freeze()

    def restore(self) -> None:
        self.control.restore()


# -- UDP ----------------------------------------------------------------------------------


class _Upstream(asyncio.DatagramProtocol):
    """One client's socket towards the target: replies go back to that client."""

    def __init__(self, relay: UdpRelay, listen: asyncio.DatagramTransport, client: Address):
        self.relay = relay
        self.listen = listen
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is no subclass of asyncio's, though it has its methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.used = time.monotonic()
        self.relay.pass_on(data, self.listen, self.client)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, port: int, target: Address) -> None:
        self.relay = relay
        self.port = port
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.upstreams: dict[Address, _Upstream] = {}
        self.pending: dict[Address, list[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is no subclass of asyncio's, though it has its methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        up = self.upstreams.get(addr)
        if up is not None and up.transport is not None:
            up.used = time.monotonic()
            self.relay.pass_on(data, up.transport, None)
            return
        waiting = self.pending.get(addr)
        if waiting is not None:
            waiting.append(data)
            return
        self.pending[addr] = [data]
        asyncio.get_running_loop().create_task(self._open(addr))

    async def _open(self, client: Address) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        listen = self.transport
        try:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _Upstream(self.relay, listen, client), remote_addr=self.target
            )
        except OSError:
            self.relay.control.dropped += len(self.pending.pop(client, []))
            return
        self.upstreams[client] = proto
        for data in self.pending.pop(client, []):
            self.relay.pass_on(data, transport, None)


def _same(listener: _Listener) -> _Listener:
    return listener


class UdpRelay(_Controlled):
    """Each listen port on ``host`` forwards to its target, from a socket of its own per
    (client, listen port); replies come back to the client from the port it sent to.

    Cut and frozen both drop datagrams, also those already held for the delay: UDP has no
    connection to hang, and a lost datagram is what a dead or stopped device looks like.
    """

    def __init__(
        self,
        routes: dict[int, Address],
        host: str = "127.0.0.1",
        control: RelayControl | None = None,
    ) -> None:
        self.routes = routes
        self.host = host
        self.control = control or RelayControl()
        self.control.attach(self)
        self._listeners: list[_Listener] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port, target in self.routes.items():
            listener = _Listener(self, port, target)
            await loop.create_datagram_endpoint(
                functools.partial(_same, listener), local_addr=(self.host, port)
            )
            self._listeners.append(listener)
        self._sweeper = asyncio.create_task(self._sweep())

    def pass_on(
        self, data: bytes, transport: asyncio.DatagramTransport, to: Address | None
    ) -> None:
        c = self.control
        if c.state != "forwarding":
            c.dropped += 1
            return
        if c.delay <= 0:
            self._send(data, transport, to)
        else:
            asyncio.get_running_loop().call_later(c.delay, self._send, data, transport, to)

    def _send(self, data: bytes, transport: asyncio.DatagramTransport, to: Address | None) -> None:
        if transport.is_closing() or self.control.state != "forwarding":
            self.control.dropped += 1
            return
        if to is None:
            transport.sendto(data)
        else:
            transport.sendto(data, to)
        self.control.forwarded += 1

    def on_cut(self) -> None:
        return  # datagrams are dropped while cut; nothing to close

    def on_restore(self) -> None:
        return

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_IDLE_S / 2)
            now = time.monotonic()
            for li in self._listeners:
                for addr, up in list(li.upstreams.items()):
                    if now - up.used > _IDLE_S and up.transport is not None:
                        up.transport.close()
                        del li.upstreams[addr]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for li in self._listeners:
            for up in li.upstreams.values():
                if up.transport is not None:
                    up.transport.close()
            if li.transport is not None:
                li.transport.close()


# -- TCP ----------------------------------------------------------------------------------


@dataclass
class _Pipe:
    """One direction of one connection: chunks held until their release time."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    held: deque[tuple[float, bytes]] = field(default_factory=deque)
    held_bytes: int = 0


class TcpRelay(_Controlled):
    """One listening port; each accepted connection gets its own to ``target``.

    Each direction holds its chunks for the delay (at most ``_HIGH_WATER`` bytes, then it
    stops reading). ``cut`` closes every connection and closes new ones at once; ``freeze``
    keeps them (and accepts new ones) but forwards nothing; data held while frozen is
    released in order on ``restore``, so a stream is never corrupted.
    """

    def __init__(
        self, listen: Address, target: Address, control: RelayControl | None = None
    ) -> None:
        self.listen = listen
        self.target = target
        self.control = control or RelayControl()
        self.control.attach(self)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self.listen)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.control.state == "cut":
            writer.transport.abort()  # a server that is gone: the client fails at once
            return
        # A task of our own, not asyncio's callback task: a cut cancels it, and asyncio
        # would log the cancelled callback task as an error.
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer))
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()  # the target is down: so is the relay
            return
        self._writers.update((writer, up_writer))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(_Pipe(reader, up_writer)))
                group.create_task(self._pump(_Pipe(up_reader, writer)))
        except* (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pump(self, pipe: _Pipe) -> None:
        """Read chunks, hold each for the delay (and while frozen), write them in order."""
        release = asyncio.Event()
        drained = asyncio.Event()
        drained.set()
        done = False

        async def reader() -> None:
            nonlocal done
            while True:
                await drained.wait()  # backpressure: stop reading while too much waits
                chunk = await pipe.reader.read(65536)
                if not chunk:
                    done = True
                    release.set()
                    return
                pipe.held.append((time.monotonic() + self.control.delay, chunk))
                pipe.held_bytes += len(chunk)
                if pipe.held_bytes > _HIGH_WATER:
                    drained.clear()
                release.set()

        async def writer() -> None:
            while True:
                if not pipe.held:
                    if done:
                        with contextlib.suppress(OSError):
                            pipe.writer.write_eof()
                        return
                    release.clear()
                    await release.wait()
                    continue
                if self.control.state == "frozen":
                    await asyncio.sleep(0.05)
                    continue
                due, chunk = pipe.held[0]
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                pipe.held.popleft()
                pipe.held_bytes -= len(chunk)
                if pipe.held_bytes <= _HIGH_WATER:
                    drained.set()
                pipe.writer.write(chunk)
                await pipe.writer.drain()
                self.control.forwarded += 1

        # One side failing (a reset, a cut) ends the other instead of leaving it waiting.
        async with asyncio.TaskGroup() as group:
            group.create_task(reader())
            group.create_task(writer())

    def on_cut(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        for task in list(self._conns):
            task.cancel()

    def on_restore(self) -> None:
        return

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for w in list(self._writers):
            w.transport.abort()
        for task in conns:
            task.cancel()
        await asyncio.gather(*conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


# -- a relay process ----------------------------------------------------------------------


@dataclass
class RelaySpec:
    udp: dict[int, Address] = field(default_factory=dict)
    tcp: list[tuple[Address, Address]] = field(default_factory=list)


async def serve_relays(
    spec: RelaySpec, control_path: Path, *, delay: float = 0.0, stop: asyncio.Event | None = None
) -> None:
    """Run the relays of ``spec`` under one control until ``stop`` is set."""
    control = RelayControl()
    control.set_delay(delay)
    relays: list[UdpRelay | TcpRelay] = []
    if spec.udp:
        relays.append(UdpRelay(spec.udp, control=control))
    relays += [TcpRelay(listen, target, control=control) for listen, target in spec.tcp]
    for r in relays:
        await r.start()

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            if op == "set_delay":
                control.set_delay(float(request.get("seconds", 0.0)))
            elif op == "cut":
                control.cut()
            elif op == "freeze":
                control.freeze()
            elif op == "restore":
                control.restore()
            elif op != "status":
                return {"ok": False, "error": f"unknown op {op!r}"}
        except (TypeError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return control.status()

    server = await control_socket.serve(control_path, handle, what="netmon chaos relay")
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        server.close()
        for r in relays:
            await r.close()


def relay_request(control_path: Path, op: str, **args: Any) -> dict[str, Any]:
    """Ask the relay process behind ``control_path`` to change (or tell) its state."""
    return control_socket.request(control_path, {"op": op, **args})
