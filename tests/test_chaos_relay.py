"""The chaos relays: delay, cut and freeze of real UDP and TCP traffic on 127.0.0.1, and a
relay in front of the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import typer

from netmon.chaos.relay import RelaySpec, TcpRelay, UdpRelay, relay_request, serve_relays
from netmon.cli.chaos_relay import parse_tcp, parse_udp

DELAY = 0.2


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


@pytest.fixture
async def udp_echo() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    yield transport.get_extra_info("sockname")[1]
    transport.close()


def _udp_client() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


async def _round_trip(client: socket.socket, port: int, data: bytes, timeout: float = 2.0) -> float:
    """Seconds until ``data`` comes back from the relay port (TimeoutError if it does not)."""
    loop = asyncio.get_running_loop()
    client.setblocking(False)
    start = time.monotonic()
    await loop.sock_sendto(client, data, ("127.0.0.1", port))
    reply, _ = await asyncio.wait_for(loop.sock_recvfrom(client, 2048), timeout)
    assert reply == data
    return time.monotonic() - start


async def test_udp_delay_cut_restore(udp_echo: int) -> None:
    port = _free_udp_port()
    relay = UdpRelay({port: ("127.0.0.1", udp_echo)})
    await relay.start()
    try:
        with _udp_client() as client:
            assert await _round_trip(client, port, b"plain") < 1.0
            relay.set_delay(DELAY)
            assert relay.delay == DELAY
            took = await _round_trip(client, port, b"slow")
            assert took >= 2 * DELAY  # held each way
            assert took < 2 * DELAY + 1.5

            relay.cut()
            with pytest.raises(TimeoutError):
                await _round_trip(client, port, b"lost", timeout=0.8)
            assert relay.dropped >= 1
            relay.freeze()
            assert relay.state == "cut"  # a cut is not softened to a freeze
            relay.restore()
            relay.set_delay(0)
            assert await _round_trip(client, port, b"back") < 1.0
            assert relay.forwarded >= 6
    finally:
        await relay.close()


async def test_udp_freeze_drops_held_datagrams() -> None:
    loop = asyncio.get_running_loop()
    seen: list[bytes] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            seen.append(data)

    sink, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    port = _free_udp_port()
    relay = UdpRelay({port: ("127.0.0.1", sink.get_extra_info("sockname")[1])})
    await relay.start()
    try:
        relay.set_delay(0.5)
        with _udp_client() as client:
            client.sendto(b"held", ("127.0.0.1", port))
            await asyncio.sleep(0.1)
            relay.freeze()  # while the datagram waits out its delay: it never arrives
            await asyncio.sleep(0.8)
            assert seen == []
            assert relay.dropped == 1
            relay.restore()
            client.sendto(b"next", ("127.0.0.1", port))
            await asyncio.sleep(0.8)
            assert seen == [b"next"]
    finally:
        await relay.close()
        sink.close()


async def test_udp_routes_each_client_and_port(udp_echo: int) -> None:
    loop = asyncio.get_running_loop()
    # A second target that answers with its own mark, to tell the routes apart.
    marks: list[tuple[str, int]] = []

    class Mark(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            marks.append(addr)
            self.transport.sendto(b"B:" + data, addr)  # type: ignore[attr-defined]

    other, _ = await loop.create_datagram_endpoint(Mark, local_addr=("127.0.0.1", 0))
    a, b = _free_udp_port(), _free_udp_port()
    relay = UdpRelay(
        {a: ("127.0.0.1", udp_echo), b: ("127.0.0.1", other.get_extra_info("sockname")[1])}
    )
    await relay.start()
    try:
        with _udp_client() as one, _udp_client() as two:
            for c in (one, two):
                c.setblocking(False)
            # Both clients at once, on both ports: each reply reaches its own asker.
            await loop.sock_sendto(one, b"one", ("127.0.0.1", a))
            await loop.sock_sendto(two, b"two", ("127.0.0.1", a))
            await loop.sock_sendto(one, b"one", ("127.0.0.1", b))
            await loop.sock_sendto(two, b"two", ("127.0.0.1", b))
            got_one = {await asyncio.wait_for(loop.sock_recvfrom(one, 100), 2) for _ in range(2)}
            got_two = {await asyncio.wait_for(loop.sock_recvfrom(two, 100), 2) for _ in range(2)}
            assert got_one == {(b"one", ("127.0.0.1", a)), (b"B:one", ("127.0.0.1", b))}
            assert got_two == {(b"two", ("127.0.0.1", a)), (b"B:two", ("127.0.0.1", b))}
            # The target saw the two clients from two sources of the relay.
            assert len(set(marks)) == 2
    finally:
        await relay.close()
        other.close()


# -- TCP ----------------------------------------------------------------------------------


@pytest.fixture
async def tcp_echo() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def tcp_relay(tcp_echo: int) -> AsyncIterator[TcpRelay]:
    relay = TcpRelay(("127.0.0.1", 0), ("127.0.0.1", tcp_echo))
    await relay.start()
    yield relay
    await relay.close()


async def _stream(port: int, size: int) -> None:
    """Send ``size`` bytes of a known pattern and check they come back whole and in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = os.urandom(1 << 16)
    payload = (block * (size // len(block) + 1))[:size]

    async def send() -> None:
        for i in range(0, size, 1 << 16):
            writer.write(payload[i : i + (1 << 16)])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    got = await reader.read(-1)  # up to the relayed EOF
    await sender
    writer.close()
    assert len(got) == size
    assert got == payload


@pytest.mark.parametrize("delay", [0.0, 0.05])
async def test_tcp_stream_intact(tcp_relay: TcpRelay, delay: float) -> None:
    tcp_relay.set_delay(delay)
    await _stream(tcp_relay.port, 10 << 20)


async def _ping(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float = 5
) -> float:
    start = time.monotonic()
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), timeout) == b"ping"
    return time.monotonic() - start


async def test_tcp_delay(tcp_relay: TcpRelay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_relay.port)
    assert await _ping(reader, writer) < 1.0
    tcp_relay.set_delay(DELAY)
    took = await _ping(reader, writer)
    assert 2 * DELAY <= took < 2 * DELAY + 1.5
    writer.close()


async def _ends(reader: asyncio.StreamReader) -> None:
    """The connection ends (EOF or reset) within 2 s."""
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(100), 2) == b""


async def test_tcp_cut_fails_fast(tcp_relay: TcpRelay, caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_relay.port)
    await _ping(reader, writer)
    start = time.monotonic()
    tcp_relay.cut()
    # The open connection ends, and a new one is closed at once: no hang either way.
    await _ends(reader)
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", tcp_relay.port)
    writer2.write(b"x")
    await _ends(reader2)
    assert time.monotonic() - start < 2
    writer.close()
    writer2.close()
    tcp_relay.restore()
    reader3, writer3 = await asyncio.open_connection("127.0.0.1", tcp_relay.port)
    await _ping(reader3, writer3)
    writer3.close()
    # Cutting connections is no error of the relay's (asyncio logs a cancelled
    # connection callback as one).
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_tcp_freeze_hangs_then_restore_releases_in_order(tcp_relay: TcpRelay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_relay.port)
    await _ping(reader, writer)
    tcp_relay.freeze()
    writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 1.0)
    # A new connection is accepted but hangs too.
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", tcp_relay.port)
    writer2.write(b"new!")
    tcp_relay.restore()
    assert await asyncio.wait_for(reader.readexactly(4), 2) == b"held"
    assert await asyncio.wait_for(reader2.readexactly(4), 2) == b"new!"
    assert await _ping(reader, writer) < 1.0
    writer.close()
    writer2.close()


async def test_control_socket(tcp_echo: int, tmp_path: Path) -> None:
    udp_port = _free_udp_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        tcp_port = s.getsockname()[1]
    spec = RelaySpec(
        udp={udp_port: ("127.0.0.1", 9)}, tcp=[(("127.0.0.1", tcp_port), ("127.0.0.1", tcp_echo))]
    )
    path = tmp_path / "relay.sock"
    stop = asyncio.Event()
    served = asyncio.create_task(serve_relays(spec, path, delay=0.1, stop=stop))
    try:
        for _ in range(100):
            if path.exists():
                break
            await asyncio.sleep(0.05)

        def ask(op: str, **args: object) -> dict[str, object]:
            return relay_request(path, op, **args)

        status = await asyncio.to_thread(ask, "status")
        assert status == {
            "ok": True,
            "delay": 0.1,
            "state": "forwarding",
            "forwarded": 0,
            "dropped": 0,
        }
        assert (await asyncio.to_thread(ask, "set_delay", seconds=0.3))["delay"] == 0.3
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        assert await _ping(reader, writer) >= 0.6
        assert (await asyncio.to_thread(ask, "freeze"))["state"] == "frozen"
        assert (await asyncio.to_thread(ask, "restore"))["state"] == "forwarding"
        status = await asyncio.to_thread(ask, "cut")
        assert status["state"] == "cut"
        assert status["forwarded"] == 2
        bad = await asyncio.to_thread(ask, "explode")
        assert bad["ok"] is False
        bad = await asyncio.to_thread(ask, "set_delay", seconds=-1)
        assert bad["ok"] is False
        writer.close()
    finally:
        stop.set()
        await served


async def test_in_front_of_postgres() -> None:
    relay = TcpRelay(("127.0.0.1", 0), ("127.0.0.1", 5432))
    await relay.start()
    try:
        conn = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{relay.port}/test", timeout=10
        )
        try:
            assert await conn.fetchval("SELECT 1") == 1
            relay.set_delay(DELAY)
            start = time.monotonic()
            assert await conn.fetchval("SELECT 2") == 2
            assert time.monotonic() - start >= 2 * DELAY
        finally:
            relay.set_delay(0)
            await conn.close(timeout=5)
    finally:
        await relay.close()


async def test_udp_many_routes(udp_echo: int) -> None:
    # Thousands of listening ports start in seconds; upstream sockets only as used.
    socks = []
    for _ in range(2000):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    relay = UdpRelay({p: ("127.0.0.1", udp_echo) for p in ports})
    start = time.monotonic()
    await relay.start()
    try:
        assert time.monotonic() - start < 20
        with _udp_client() as client:
            for p in (ports[0], ports[-1]):
                assert await _round_trip(client, p, b"far") < 1.0
    finally:
        await relay.close()


def test_cli_parses_ranges() -> None:
    assert parse_udp("31001-31003=127.0.0.1:16101") == {
        31001: ("127.0.0.1", 16101),
        31002: ("127.0.0.1", 16102),
        31003: ("127.0.0.1", 16103),
    }
    assert parse_udp("40000=::1:161") == {40000: ("::1", 161)}
    assert parse_tcp("25432=127.0.0.1:5432") == (("127.0.0.1", 25432), ("127.0.0.1", 5432))
    for bad in ("31003-31001=h:1", "1-10=h:65530", "31001-31003", "x=h:1"):
        with pytest.raises(typer.BadParameter):
            parse_udp(bad)
    with pytest.raises(typer.BadParameter):
        parse_tcp("25432=5432")


def test_cli_process_serves_until_sigterm(tcp_port_free: int, tmp_path: Path) -> None:
    control = tmp_path / "relay.sock"
    udp = _free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "netmon", "chaos", "relay", "--control", str(control),
         "--udp", f"{udp}-{udp}=127.0.0.1:9", "--tcp", f"{tcp_port_free}=127.0.0.1:5432",
         "--delay", "0.25"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not control.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the relay did not start"
            time.sleep(0.1)
        assert relay_request(control, "status")["delay"] == 0.25
        assert relay_request(control, "freeze")["state"] == "frozen"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def tcp_port_free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
