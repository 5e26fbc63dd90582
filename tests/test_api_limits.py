"""Limits that hold before authentication, in the HTTP server (api/http_limits.py), and the
problem+json answers of everything below the app: each attack goes over a real socket to a
real server."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from netmon.api.problems import PROBLEM_JSON
from netmon.api.server import _config, bind_socket
from tests.api_helpers import (
    Api,
    api,
    api_database_url,
    api_settings,
    make_api_settings,
    running_api,
)

__all__ = ["api", "api_database_url", "api_settings"]

SHORT = {
    "header_timeout": "1s",
    "keepalive_timeout": "1s",
    "body_timeout": "1s",
    # Bounds of their own, so that the tests do not follow the defaults.
    "max_header_bytes": 16 * 1024,
    "max_url_bytes": 8 * 1024,
}
WS_HEAD = (
    "Connection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == PROBLEM_JSON, (self.headers, self.body)
        doc: dict[str, Any] = json.loads(self.body)
        assert doc["status"] == self.status
        assert {"type", "title", "status", "detail"} <= doc.keys(), doc
        return doc


def parse(raw: bytes) -> Answer:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {raw[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Answer(status, headers, body)


async def read_to_close(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes; fails if it does not within timeout."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send data, read until the server closes: what came back and how long it took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(data)
        await writer.drain()
        return await read_to_close(reader, timeout), time.monotonic() - started
    finally:
        writer.close()


async def answer(port: int, data: bytes) -> Answer:
    raw, _ = await exchange(port, data)
    return parse(raw)


def rss_bytes() -> int:
    """This process's resident set: the test server runs in it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def short(api_database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """A server with 1 s timeouts."""
    async with running_api(make_api_settings(api_database_url, tmp_path / "d", **SHORT)) as api:
        yield api


def port_of(api: Api) -> int:
    return api.server.port


# Heads over the limits


def flood_head(port: int, total: int, results: list[bytes], index: int) -> None:
    """A request head with one header of ``total`` bytes, sent from one reused 64 KiB
    buffer (so that the client costs this process nothing), then whatever comes back."""
    chunk = b"a" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server closed: the answer, if any, is in the receive buffer
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
        results[index] = data


async def test_huge_headers_are_answered_431_and_cost_no_memory(short: Api) -> None:
    port = port_of(short)
    # Warm up the paths a rejection takes, so that first-use allocations are not counted.
    warm: list[bytes] = [b""]
    await asyncio.to_thread(flood_head, port, 1 << 20, warm, 0)
    assert parse(warm[0]).status == 431
    before = rss_bytes()
    peak = before
    results: list[bytes] = [b""] * 8
    threads = [
        threading.Thread(target=flood_head, args=(port, 64 << 20, results, i)) for i in range(8)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    live: list[float] = []
    async with httpx.AsyncClient(base_url=short.url, timeout=10) as client:
        while (any(t.is_alive() for t in threads) or len(live) < 5) and (
            time.monotonic() - started < 60
        ):
            t0 = time.monotonic()
            assert (await client.get("/health/live")).status_code == 200
            live.append(time.monotonic() - t0)
            peak = max(peak, rss_bytes())
            await asyncio.sleep(0.02)
    for t in threads:
        await asyncio.to_thread(t.join, 30)
    elapsed = time.monotonic() - started
    peak = max(peak, rss_bytes())
    for raw in results:
        problem = parse(raw).problem()
        assert problem["status"] == 431
        assert "16384" in problem["detail"]
    # Answered after the first 16 KiB, not after 64 MiB: every attacker gave up early.
    assert elapsed < 10, elapsed
    assert peak - before < 8 << 20, f"RSS grew by {(peak - before) >> 20} MiB"
    assert max(live, default=0) < 1.0, live


async def test_too_many_header_fields_are_answered_431(short: Api) -> None:
    fields = "".join(f"X-F{i}: v\r\n" for i in range(101))
    reply = await answer(port_of(short), f"GET /health/live HTTP/1.1\r\n{fields}\r\n".encode())
    assert reply.status == 431
    assert "100" in reply.problem()["detail"]
    # 100 are fine.
    fields = "".join(f"X-F{i}: v\r\n" for i in range(98))
    head = f"GET /health/live HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n"
    assert (await answer(port_of(short), head.encode())).status == 200


@pytest.mark.parametrize("length", [9000, 200_000])
async def test_a_long_url_is_answered_414(short: Api, length: int) -> None:
    url = "/health/live?" + "q" * length
    reply = await answer(port_of(short), f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.status == 414
    assert "8192" in reply.problem()["detail"]


async def test_a_websocket_handshake_is_held_to_the_same_limits(short: Api) -> None:
    port = port_of(short)
    big = f"GET /ws/metrics HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 20000}\r\n{WS_HEAD}\r\n"
    assert (await answer(port, big.encode())).problem()["status"] == 431
    long_url = f"GET /ws/metrics?{'q' * 9000} HTTP/1.1\r\nHost: x\r\n{WS_HEAD}\r\n"
    assert (await answer(port, long_url.encode())).problem()["status"] == 414
    # Half a handshake: closed with 408 at the header timeout, as any request.
    raw, took = await exchange(port, b"GET /ws/metrics HTTP/1.1\r\nHost: x\r\nUpgrade: web")
    assert parse(raw).problem()["status"] == 408
    assert 0.8 < took < 4


async def test_pipelined_requests_queue_no_more_than_sixteen(short: Api) -> None:
    """uvicorn parses all the requests of one read at once and keeps about 1 KB for each
    that waits (from 27 bytes sent): the queue is bounded, the connection ends after it."""
    burst = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    raw, _ = await exchange(port_of(short), burst)
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 17, len(answers)  # the one answered first, and 16 queued
    assert all(a.startswith(b"200 ") for a in answers)
    assert b"connection: close" in answers[-1]


# Timeouts


async def test_a_connection_that_sends_nothing_is_closed(short: Api) -> None:
    raw, took = await exchange(port_of(short), b"")
    assert raw == b""  # nothing of a request came: nothing to answer
    assert 0.8 < took < 4, took


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /health/li",
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nUser-Agent: slo",
    ],
    ids=["half a request line", "half the headers"],
)
async def test_a_half_sent_head_is_answered_408_and_closed(short: Api, partial: bytes) -> None:
    raw, took = await exchange(port_of(short), partial)
    assert parse(raw).problem()["status"] == 408
    assert 0.8 < took < 4, took


async def test_the_header_timeout_is_a_deadline_not_an_idle_time(short: Api) -> None:
    """A client trickling one header every 200 ms is still cut off at the deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(short))
    started = time.monotonic()
    writer.write(b"GET /health/live HTTP/1.1\r\n")
    closed = asyncio.create_task(read_to_close(reader, 6))
    try:
        for i in range(25):
            if closed.done():
                break
            writer.write(f"X-Slow-{i}: v\r\n".encode())
            await asyncio.sleep(0.2)
        raw = await closed
    finally:
        writer.close()
    assert parse(raw).problem()["status"] == 408
    assert time.monotonic() - started < 2.5


async def test_a_half_sent_body_is_answered_408_and_closed(short: Api) -> None:
    head = (
        "POST /api/v1/devices HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {short.tokens['operator']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    raw, took = await exchange(port_of(short), head.encode() + b'{"name": "sw')
    assert parse(raw).problem()["status"] == 408
    assert 0.8 < took < 4, took
    async with short.client("operator") as client:  # nothing was created
        assert (await client.get("/api/v1/devices")).json()["items"] == []


async def test_an_idle_keepalive_connection_is_closed(short: Api) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(short))
    try:
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await reader.readuntil(b'{"status":"ok"}')
        assert parse(first).status == 200
        started = time.monotonic()
        assert await read_to_close(reader, 4) == b""
        assert 0.8 < time.monotonic() - started < 4
    finally:
        writer.close()


async def test_the_next_head_is_due_a_header_timeout_after_the_response(short: Api) -> None:
    """Bytes that keep the connection from being idle do not keep it open for ever."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(short))
    try:
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b'{"status":"ok"}')
        started = time.monotonic()
        closed = asyncio.create_task(read_to_close(reader, 6))
        writer.write(b"GET /health/live HTTP/1.1\r\n")
        for i in range(25):
            if closed.done():
                break
            writer.write(f"X-Slow-{i}: v\r\n".encode())
            await asyncio.sleep(0.2)
        raw = await closed
        assert parse(raw).problem()["status"] == 408
        assert time.monotonic() - started < 2.5
    finally:
        writer.close()


# Connection caps


async def open_idle(port: int, n: int, host: str = "127.0.0.1") -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.bind((host, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        socks.append(sock)
    return socks


async def get_on(sock: socket.socket) -> Answer:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    async with asyncio.timeout(5):
        while b'{"status":"ok"}' not in data:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, f"closed: {data!r}"
            data += chunk
    return parse(data)


async def refused(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """A new connection is answered 503 at once, without a request, and closed."""
    (sock,) = await open_idle(port, 1, host)
    loop = asyncio.get_running_loop()
    data = b""
    try:
        async with asyncio.timeout(3):
            while chunk := await loop.sock_recv(sock, 65536):
                data += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    reply = parse(data)
    assert reply.headers.get("retry-after")
    return reply.problem()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(5):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within 5 s: {what}") from None


async def settled(api: Api) -> bool:
    """No connection counted any more: every kind of ending gave its place back."""
    return api.server.guard.open == 0 and not api.server.guard.per_client


async def test_connections_beyond_the_cap_are_refused_and_the_others_served(
    api_database_url: str, tmp_path: Path
) -> None:
    settings = make_api_settings(api_database_url, tmp_path / "d", max_connections=16)
    async with running_api(settings) as api:
        port = port_of(api)
        held = await open_idle(port, 16)
        try:
            for _ in range(3):
                problem = await refused(port)
                assert problem["status"] == 503
            for sock in held:  # the ones held are served as ever
                assert (await get_on(sock)).status == 200
            # A closed connection gives its place back.
            held.pop().close()

            async def admitted() -> bool:
                try:
                    (sock,) = await open_idle(port, 1)
                    await get_on(sock)
                except (AssertionError, OSError):
                    return False
                held.append(sock)
                return True

            await until(admitted, "a place freed")
        finally:
            for sock in held:
                sock.close()
        await until(lambda: settled(api), "every place given back")


async def test_websockets_count_as_connections_until_they_close(
    api_database_url: str, tmp_path: Path
) -> None:
    settings = make_api_settings(api_database_url, tmp_path / "d", max_connections=16)
    async with running_api(settings) as api:
        port = port_of(api)
        token = api.tokens["viewer"]
        url = f"ws://127.0.0.1:{port}/ws/events?access_token={token}"
        for _ in range(20):  # a closed feed gives its place back
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"subscribe": {}}))
                assert json.loads(await ws.recv())["type"] == "subscribed"
        feeds = [await websockets.connect(url) for _ in range(16)]
        try:
            assert (await refused(port))["status"] == 503
        finally:
            for ws in feeds:
                await ws.close()
        held: list[socket.socket] = []

        async def admitted() -> bool:
            try:
                (sock,) = await open_idle(port, 1)
                await get_on(sock)
            except (AssertionError, OSError):
                return False
            held.append(sock)
            return True

        await until(admitted, "the feeds' places freed")
        for sock in held:
            sock.close()
        await until(lambda: settled(api), "every place given back")


async def test_connections_per_client_address_are_capped(
    api_database_url: str, tmp_path: Path
) -> None:
    settings = make_api_settings(api_database_url, tmp_path / "d", max_connections_per_client=2)
    async with running_api(settings) as api:
        port = port_of(api)
        mine = await open_idle(port, 2)
        other = await open_idle(port, 2, host="127.0.0.2")  # another client address
        try:
            problem = await refused(port)
            assert problem["status"] == 503
            assert "127.0.0.1" in problem["detail"]
            for sock in mine + other:
                assert (await get_on(sock)).status == 200
        finally:
            for sock in mine + other:
                sock.close()
        await until(lambda: settled(api), "every place given back")


# Malformed requests: problem+json from below the app


MALFORMED = {
    "not HTTP": (b"GARBAGE\r\n\r\n", 400),
    "unknown method": (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "space in a header name": (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
    "NUL in the path": (b"GET /health/\x00live HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "non-ASCII path": (b"GET /health/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "CONNECT": (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400),
    "Content-Length and chunked": (
        b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "bad Content-Length": (
        b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        400,
    ),
    "bad chunk size": (
        b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    "HTTP/3.7": (b"GET /health/live HTTP/3.7\r\nHost: x\r\n\r\n", 505),
    "HTTP/2 prior knowledge": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "WebSocket without a key": (
        b"GET /ws/metrics HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        400,
    ),
    "WebSocket version 8": (
        f"GET /ws/metrics HTTP/1.1\r\nHost: x\r\n{WS_HEAD}".encode().replace(
            b"Version: 13", b"Version: 8"
        )
        + b"\r\n",
        400,
    ),
    "WebSocket by POST": (
        f"POST /ws/metrics HTTP/1.1\r\nHost: x\r\n{WS_HEAD}Content-Length: 0\r\n\r\n".encode(),
        405,
    ),
    "WebSocket header line over 8 KiB": (
        f"GET /ws/metrics HTTP/1.1\r\nHost: x\r\nX-Long: {'a' * 9000}\r\n{WS_HEAD}\r\n".encode(),
        431,
    ),
    "WebSocket without a token": (
        f"GET /ws/metrics HTTP/1.1\r\nHost: x\r\n{WS_HEAD}\r\n".encode(),
        403,
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_malformed_requests_are_answered_with_problems(short: Api, case: str) -> None:
    data, status = MALFORMED[case]
    reply = await answer(port_of(short), data)
    assert reply.status == status, reply
    problem = reply.problem()
    assert problem["detail"]
    assert reply.headers.get("connection", "").lower() == "close"


async def test_a_refused_websocket_says_why(short: Api) -> None:
    reply = await answer(
        port_of(short), f"GET /ws/metrics HTTP/1.1\r\nHost: x\r\n{WS_HEAD}\r\n".encode()
    )
    assert "token" in reply.problem()["detail"]


async def test_a_cors_preflight_from_another_origin_is_a_problem(
    api_database_url: str, tmp_path: Path
) -> None:
    settings = make_api_settings(
        api_database_url, tmp_path / "d", cors_origins=["https://noc.example.net"]
    )
    async with running_api(settings) as api, httpx.AsyncClient(base_url=api.url) as client:
        headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        r = await client.options("/api/v1/devices", headers=headers)
        assert r.status_code == 400
        assert r.headers["content-type"] == PROBLEM_JSON
        assert r.json()["detail"] == "Disallowed CORS Origin"
        # The allowed origin's preflight is unchanged.
        headers["Origin"] = "https://noc.example.net"
        r = await client.options("/api/v1/devices", headers=headers)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://noc.example.net"


async def test_an_unsupported_upgrade_is_served_then_closed(
    api_database_url: str, tmp_path: Path
) -> None:
    """The request is answered as if there were no Upgrade; what follows on the connection
    is not parsed as HTTP (the parser stopped at the upgrade), so the connection closes
    with the answer, not 5 s later when it has been idle for the keep-alive timeout."""
    head = (
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    async with running_api(make_api_settings(api_database_url, tmp_path / "d")) as api:
        raw, took = await exchange(port_of(api), head)
    reply = parse(raw)
    assert reply.status == 200
    assert reply.headers["connection"] == "close"
    assert took < 2.5


# A failing app: uvicorn's own 500s become problems too


async def broken_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/silent":
        return  # never answers
    raise RuntimeError("broken on purpose")


@pytest.fixture
async def broken_server(tmp_path: Path) -> AsyncIterator[int]:
    """uvicorn as netmon configures it, serving an app that fails."""
    settings = make_api_settings("postgresql://nowhere/none", tmp_path / "d", **SHORT)
    sock = bind_socket("127.0.0.1", 0, reuse_port=False)
    server = uvicorn.Server(_config(broken_app, settings))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize("path", ["/raises", "/silent"])
async def test_an_app_that_fails_or_never_answers_is_a_500_problem(
    broken_server: int, path: str
) -> None:
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = await answer(broken_server, head.encode())
    assert reply.status == 500
    assert reply.problem()["detail"] == "internal error; see the netmon log"


async def test_a_websocket_the_app_fails_is_a_500_problem(broken_server: int) -> None:
    head = f"GET /raises HTTP/1.1\r\nHost: x\r\n{WS_HEAD}\r\n"
    reply = await answer(broken_server, head.encode())
    assert reply.status == 500
    reply.problem()


# The document and the limits agree


def _string_bytes(schema: dict[str, Any], where: str) -> int:
    """The most bytes one value can take in a query string, percent-encoded: a character
    from an ASCII-only pattern is at most 3 (%XX), any other at most 12 (4 UTF-8 bytes)."""
    if "enum" in schema:
        return max(3 * len(str(v)) for v in schema["enum"])
    kinds = {b.get("type") for b in [schema, *schema.get("oneOf", [])]} - {"null", None}
    if kinds & {"integer", "number"}:
        return 25
    if kinds == {"boolean"}:
        return 5
    assert "maxLength" in schema, f"{where}: a string without maxLength"
    pattern = schema.get("pattern", "")
    outside_classes = re.sub(r"\[[^\]]*\]", "", pattern)
    ascii_only = (
        bool(pattern) and "[^" not in pattern and not re.search(r"(?<!\\)\.", outside_classes)
    )
    return int(schema["maxLength"]) * (3 if ascii_only else 12)


def longest_query(operation: dict[str, Any], where: str) -> int:
    total = 0
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "query":
            continue
        schema, name = parameter["schema"], parameter["name"]
        arrays = [b for b in [schema, *schema.get("oneOf", [])] if b.get("type") == "array"]
        if arrays:
            # Litestar writes maxItems beside the oneOf of array and null.
            most = arrays[0].get("maxItems", schema.get("maxItems"))
            assert most is not None, f"{where} {name}: an array without maxItems"
            each = len(name) + 2 + _string_bytes(arrays[0]["items"], f"{where} {name}")
            total += int(most) * each
        else:
            total += len(name) + 2 + _string_bytes(schema, f"{where} {name}")
    return total


async def test_the_longest_request_the_document_allows_fits_the_limits(api: Api) -> None:
    # Schemathesis sent a /metrics/last the document allowed (20 labels of 401 characters)
    # and got a 414: the document promised more than the server took. Every query
    # parameter is now bounded, and the longest query of each operation fits.
    settings = api.ctx.settings.api
    async with api.client(None) as c:
        document = (await c.get("/schema/openapi.json")).json()
    longest = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            # Path parameters are ids and names of at most 200 characters.
            longest[where] = len(path) + 200 * 12 + longest_query(operation, where)
            assert "414" in operation["responses"] or path.startswith("/health"), where
    for where, n in sorted(longest.items(), key=lambda kv: -kv[1]):
        assert n + 1000 <= settings.max_url_bytes, (where, n, sorted(longest.values())[-5:])
    assert settings.max_url_bytes <= settings.max_header_bytes
    assert max(longest.values()) > settings.max_url_bytes / 2  # the bound is not slack
