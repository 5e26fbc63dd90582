"""A UDP relay that delays the agent's answers: a device whose round trip is long.

Each client address gets a socket of its own towards the agent (gufo-snmp opens a socket
per session), so answers go back to whoever asked.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: DelayRelay, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.answer(data, self.client)


class _Listen(asyncio.DatagramProtocol):
    def __init__(self, relay: DelayRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.ask(data, addr)


class DelayRelay:
    """``with DelayRelay(agent_port, delay) as relay``: poll 127.0.0.1:``relay.port``."""

    def __init__(self, agent_port: int, delay: float) -> None:
        self.agent = ("127.0.0.1", agent_port)
        self.delay = delay
        self.port = 0
        self.answers = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._listen: asyncio.DatagramTransport | None = None
        self._upstreams: dict[tuple[str, int], _Upstream] = {}

    def __enter__(self) -> DelayRelay:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=5)
        return self

    def __exit__(self, *_exc: Any) -> None:
        async def shut() -> None:
            for up in self._upstreams.values():
                if up.transport is not None:
                    up.transport.close()
            if self._listen is not None:
                self._listen.close()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _open(self) -> None:
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Listen(self), local_addr=("127.0.0.1", 0)
        )
        self._listen = transport
        self.port = transport.get_extra_info("sockname")[1]

    def ask(self, data: bytes, client: tuple[str, int]) -> None:
        up = self._upstreams.get(client)
        if up is None:
            up = self._upstreams[client] = _Upstream(self, client)
            self._loop.create_task(self._connect(up, data))
            return
        if up.transport is not None:
            up.transport.sendto(data)

    async def _connect(self, up: _Upstream, first: bytes) -> None:
        await self._loop.create_datagram_endpoint(lambda: up, remote_addr=self.agent)
        assert up.transport is not None
        up.transport.sendto(first)

    def answer(self, data: bytes, client: tuple[str, int]) -> None:
        def deliver() -> None:
            if self._listen is not None:
                self.answers += 1
                self._listen.sendto(data, client)

        self._loop.call_later(self.delay, deliver)
