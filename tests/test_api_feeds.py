"""Live feeds end to end: writers publish with NOTIFY, API processes LISTEN and fan out to
WebSocket clients.

Real PostgreSQL, real uvicorn servers on loopback (in the test's process, or ``netmon
api`` in processes of their own), a real WebSocket client (``websockets``), writers in
this process or in a child. Nothing waits a fixed time to assert: every wait polls for
its condition, up to a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from netmon.api import feed_meta
from netmon.api.context import ApiContext
from netmon.api.feeds import FeedClient, FeedHub
from netmon.api.server import ApiServer
from netmon.config import Settings, load_settings
from netmon.records import DeviceEvent, Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.devices import delete_device as delete_device_rows
from netmon.store.notify import (
    MAX_SAFE_INTEGER,
    PAYLOAD_LIMIT,
    decode_events,
    decode_samples,
    encode_events,
    encode_samples,
    publish_control,
)
from netmon.store.tokens import create_token
from netmon.store.writer import SampleWriter
from tests.conftest import PgServer
from tests.tcp_proxy import TcpProxy

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0


# -- payload encoding (no database) ------------------------------------------------------


def test_sample_payloads_fit_and_round_trip_exactly() -> None:
    base = datetime(2026, 11, 27, 12, 0, 0, 123_456, tzinfo=UTC)
    rows: list[tuple[int, datetime, int | float]] = []
    values: list[int | float] = [
        0,
        1,
        -1,
        MAX_SAFE_INTEGER,
        MAX_SAFE_INTEGER + 1,
        -(MAX_SAFE_INTEGER + 1),
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        0.1,
        1e308,
        -0.0,
        float("inf"),
        float("-inf"),
    ]
    for step in range(30):
        for sid in range(1_000):
            rows.append((10**12 + sid, base + timedelta(seconds=step), values[sid % len(values)]))
    payloads = encode_samples(rows)
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert all(len(p.encode()) <= PAYLOAD_LIMIT for p in payloads)
    back = [row for p in payloads for row in decode_samples(p)]
    assert back == rows
    # exact, type included: 2**64-1 stays an int, 0.1 a float, -0.0 keeps its sign
    assert all(type(a[2]) is type(b[2]) for a, b in zip(back, rows, strict=True))
    assert [str(b[2]) for b in back[:14]] == [str(v) for v in values]


def test_sample_payload_sends_big_integers_as_strings_and_nan_survives() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    (payload,) = encode_samples([(1, t, 2**64 - 1), (2, t, 2**53 - 1), (3, t, float("nan"))])
    data = json.loads(payload)
    assert data["s"][2] == "18446744073709551615"
    assert data["s"][5] == 2**53 - 1
    assert data["s"][8] == "nan"
    back = decode_samples(payload)
    assert back[0] == (1, t, 2**64 - 1)
    assert back[2][2] != back[2][2]  # nan


def test_event_payloads_fit_even_for_one_huge_event() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        DeviceEvent(device=f"sw{i}", time=t, kind="reboot", message="é" * (i % 60 * 50))
        for i in range(200)
    ]
    huge = DeviceEvent(
        device="big", time=t, kind="config", message='"\\x' * 10_000, attributes={"a": "b" * 9000}
    )
    payloads = encode_events([*events, huge])
    assert all(len(p.encode()) <= PAYLOAD_LIMIT for p in payloads)
    back = [e for p in payloads for e in decode_events(p)]
    assert back[:-1] == events
    assert back[-1].uid == huge.uid
    assert back[-1].attributes == {"truncated": "true"}
    assert back[-1].message.endswith("…")
    assert huge.message.startswith(back[-1].message[:-1])


# -- helpers -----------------------------------------------------------------------------


async def eventually(
    predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def feed_settings(url: str, data_dir: Path, **api: Any) -> Settings:
    return load_settings(
        None,
        data_dir=data_dir,
        database={"url": url, "pool_min": 1, "pool_max": 6, "connect_timeout": "2s"},
        writer={"retry_interval": "100ms"},
        api={"port": 0, **api},
    )


async def make_token(url: str, role: str = "viewer", sites: list[str] | None = None) -> str:
    conn = await asyncpg.connect(url)
    try:
        name = f"feeds-{role}-{'-'.join(sites or ['all'])}"
        _, token = await create_token(
            conn,
            name=name,
            role=role,
            created_by="test",
            pepper=b"",
            sites=sites,  # type: ignore[arg-type]
        )
    finally:
        await conn.close()
    return token


class Feed:
    """A WebSocket client of one feed; a reader task collects every message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.reader: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in self.ws:
                self.messages.append(json.loads(text))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def samples(self) -> list[dict[str, Any]]:
        return [s for m in self.of_type("samples") for s in m["samples"]]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for m in self.of_type("events") for e in m["events"]]

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a command; return the reply (subscribed, unsubscribed or error)."""
        before = len(self.messages)
        await self.ws.send(json.dumps(message))

        def reply() -> dict[str, Any] | None:
            for m in self.messages[before:]:
                if m["type"] in ("subscribed", "unsubscribed", "error"):
                    return m
            return None

        found: dict[str, Any] = await eventually(reply, f"a reply to {message}")
        return found

    async def subscribe(self, **spec: Any) -> int:
        answer = await self.request({"subscribe": spec})
        assert answer["type"] == "subscribed", answer
        sub_id: int = answer["id"]
        return sub_id

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            await self.reader


@contextlib.asynccontextmanager
async def feed(
    port: int, path: str, token: str | None, *, read: bool = True, **kwargs: Any
) -> AsyncIterator[Feed]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(
        f"ws://127.0.0.1:{port}{path}", additional_headers=headers, open_timeout=10, **kwargs
    ) as ws:
        client = Feed(ws)
        if read:
            client.start_reading()
        try:
            yield client
        finally:
            await client.close()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Writes:
    """Samples written in this process, numbered so that each is told apart."""

    def __init__(self, writer: SampleWriter) -> None:
        self.writer = writer
        self.n = 0

    async def write(self, key: SeriesKey, value: int | float | None = None) -> datetime:
        self.n += 1
        when = now() - timedelta(seconds=1) + timedelta(microseconds=self.n)
        result = await self.writer.write([Sample(key, when, self.n if value is None else value)])
        assert result.stored == 1, result
        return when


async def primed(writes: Writes, clients: list[Feed], key: SeriesKey) -> None:
    """Write ``key`` until every client received it once more: the hubs are listening and
    the subscriptions in place (notifications sent before a LISTEN are not delivered), and
    whatever was written before has been delivered (delivery keeps commit order)."""

    def count(client: Feed) -> int:
        return sum(s["device"] == key.device and s["metric"] == key.metric for s in client.samples)

    before = [count(c) for c in clients]

    async def all_seen() -> bool:
        await writes.write(key)
        await asyncio.sleep(0.05)  # pacing of the probe writes, not an assertion
        return all(count(c) > n for c, n in zip(clients, before, strict=True))

    await eventually(all_seen, f"{key.device} at every client", interval=0)


@contextlib.asynccontextmanager
async def in_process_api(settings: Settings, db: Database) -> AsyncIterator[ApiServer]:
    server = ApiServer(ApiContext(settings=settings, db=db))
    await server.start()
    try:
        hub = server.ctx.hub
        assert hub is not None
        await eventually(lambda: hub.listening, "the feed hub listening")
        yield server
    finally:
        await server.stop()


class ApiProcess:
    """``netmon api`` in a process of its own, on a port it picks."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.log: list[str] = []
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> ApiProcess:
        env = {
            **os.environ,
            "NETMON_DATABASE__URL": self.url,
            "NETMON_DATABASE__POOL_MIN": "1",
            "NETMON_DATABASE__POOL_MAX": "4",
            "NETMON_DATA_DIR": str(self.data_dir),
            "NETMON_API__PORT": "0",
        }
        env.pop("NETMON_CONFIG", None)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "netmon",
            "--log-format",
            "json",
            "api",
            cwd=self.data_dir.parent,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._pump = asyncio.create_task(self._read_log())
        await eventually(lambda: self.port or self.proc.returncode is not None, "netmon api up")  # type: ignore[union-attr]
        if not self.port:
            raise AssertionError("netmon api exited:\n" + "\n".join(self.log))
        return self

    async def _read_log(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "api listening":
                    self.port = urlsplit(entry["url"]).port or 0

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            await self._pump


@pytest.fixture
async def url(one_pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh migrated database on one server: these tests are about the feeds, not about
    storage, so they need not run against both."""
    database = await one_pg_server.create_database(template=one_pg_server.template)
    try:
        yield database
    finally:
        await one_pg_server.drop_database(database)


@pytest.fixture
async def writer(url: str, tmp_path: Path) -> AsyncIterator[SampleWriter]:
    settings = feed_settings(url, tmp_path / "writer")
    db = Database(settings.database, settings.data_dir)
    await db.start()
    sample_writer = SampleWriter(db, settings)
    await sample_writer.start()
    try:
        yield sample_writer
    finally:
        await sample_writer.close(drain_timeout=0)
        await db.stop()


CPU_A = SeriesKey.of("feed-a", "cpuUtilization", kind="gauge", unit="%")
CPU_B = SeriesKey.of("feed-b", "cpuUtilization", kind="gauge", unit="%")
IN_A = SeriesKey.of("feed-a", "ifHCInOctets", {"ifName": "eth0"}, kind="counter", unit="B")
IN_A1 = SeriesKey.of("feed-a", "ifHCInOctets", {"ifName": "eth1"}, kind="counter", unit="B")
PROBE = SeriesKey.of("feed-probe", "probe")


# -- across processes --------------------------------------------------------------------


@pytest.mark.slow
async def test_samples_reach_subscribers_of_other_processes_filtered(
    url: str, writer: SampleWriter, tmp_path: Path
) -> None:
    token = await make_token(url)
    servers = [ApiProcess(url, tmp_path / f"api{i}") for i in range(2)]
    try:
        for server in servers:
            (server.data_dir).mkdir(parents=True)
            await server.start()
        a, b = servers
        async with (
            feed(a.port, "/ws/metrics", token) as on_a,
            feed(b.port, "/ws/metrics", token) as on_b,
        ):
            for client in (on_a, on_b):
                await client.subscribe(devices=["feed-probe"])
            # On B also: one interface of feed-a's octets, by label.
            await on_b.subscribe(
                devices=["feed-a"], metrics=["ifHCInOctets"], labels={"ifName": "eth0"}
            )
            writes = Writes(writer)
            await primed(writes, [on_a, on_b], PROBE)

            # Not wanted on B: another device, another metric, another label value.
            await writes.write(CPU_B)
            await writes.write(CPU_A)
            await writes.write(IN_A1)
            when = await writes.write(IN_A, 2**64 - 1)
            mine = await eventually(
                lambda: [s for s in on_b.samples if s["device"] == "feed-a"], "feed-a on B"
            )
            # Publication is in commit order, so anything unwanted would have come first.
            assert mine == [
                {
                    "device": "feed-a",
                    "metric": "ifHCInOctets",
                    "labels": {"ifName": "eth0"},
                    "time": when.isoformat().replace("+00:00", "Z"),
                    "value": "18446744073709551615",
                }
            ]
            assert {s["device"] for s in on_b.samples} == {"feed-a", "feed-probe"}
            assert {s["device"] for s in on_a.samples} == {"feed-probe"}

            # unsubscribe: feed-a stops, the probe goes on
            sub = await on_b.subscribe(devices=["feed-b"])
            answer = await on_b.request({"unsubscribe": sub})
            assert answer == {"type": "unsubscribed", "id": sub}
            before = len(on_b.samples)
            await writes.write(CPU_B)
            await primed(writes, [on_b], PROBE)
            assert all(s["device"] != "feed-b" for s in on_b.samples[before:])
    finally:
        for server in servers:
            await server.stop()


_CHILD = r"""
import asyncio, json, sys
from datetime import UTC, datetime
from netmon.config import load_settings
from netmon.logs import configure_logging
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.devices import delete_device as delete_device_rows
from netmon.store.writer import SampleWriter

async def main(url, data_dir):
    configure_logging("warning", "json")
    settings = load_settings(None, data_dir=data_dir, writer={"retry_interval": "100ms"},
                             database={"url": url, "pool_min": 1, "pool_max": 2})
    db = Database(settings.database, settings.data_dir)
    await db.start()
    writer = SampleWriter(db, settings)
    await writer.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    key = SeriesKey.of("doomed", "cpuUtilization")
    while line := await reader.readline():
        stored = None
        if line.strip() == b"write":
            stored = (await writer.write([Sample(key, datetime.now(UTC), 1.5)])).stored
        print(json.dumps({"stored": stored, "series": len(writer.series),
                          "forgets": writer.stats.series_forgets,
                          "listening": writer.control_listening}), flush=True)
    await writer.close(drain_timeout=0)
    await db.stop()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class WriterChild:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        assert line, "the writer child died"
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> None:
        async def check() -> bool:
            return predicate(await self.ask("status"))

        await eventually(check, what)


async def orphan_samples(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM samples s "
        "WHERE NOT EXISTS (SELECT 1 FROM series WHERE id = s.series_id)"
    )
    return count


@pytest.mark.slow
async def test_series_forget_clears_the_cache_of_a_writer_in_another_process(
    url: str, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        url,
        str(tmp_path / "child"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    child = WriterChild(proc)
    conn = await asyncpg.connect(url)
    try:
        await child.until(lambda s: s["listening"], "the child's control listener")
        assert (await child.ask("write"))["series"] == 1

        async def delete_device() -> None:
            # As DELETE /api/v1/devices/{id} does it.
            async with conn.transaction():
                device_id = await conn.fetchval("SELECT id FROM devices WHERE name = 'doomed'")
                await delete_device_rows(conn, device_id)
                await publish_control(conn, "series_forget", device="doomed")

        await delete_device()
        await child.until(lambda s: s["series"] == 0 and s["forgets"] >= 1, "the cache dropped")
        assert (await child.ask("write"))["stored"] == 1
        assert await orphan_samples(conn) == 0
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM samples JOIN series s ON s.id = series_id "
                "JOIN devices d ON d.id = s.device_id WHERE d.name = 'doomed'"
            )
            == 1
        )

        # The listener's connection dies: it reconnects and drops the cache (a forget sent
        # meanwhile would be lost), and forgets work as before.
        status = await child.ask("status")
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert killed == 1
        await child.until(
            lambda s: s["listening"] and s["forgets"] > status["forgets"], "the listener back"
        )
        assert (await child.ask("write"))["series"] == 1
        await delete_device()
        await child.until(lambda s: s["series"] == 0, "the cache dropped again")
        assert (await child.ask("write"))["stored"] == 1
        assert await orphan_samples(conn) == 0
    finally:
        await conn.close()
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- in one process: slow clients, scope, auth, outages ----------------------------------


def tiny_receive_buffer_socket(port: int) -> socket.socket:
    """A client socket that takes little before TCP pushes back on the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def hub_of(server: ApiServer) -> FeedHub:
    hub = server.ctx.hub
    assert hub is not None
    return hub


@pytest.mark.slow
async def test_a_slow_client_gets_a_gap_and_a_fast_one_everything(
    url: str, writer: SampleWriter, tmp_path: Path
) -> None:
    settings = feed_settings(url, tmp_path / "api", ws_queue=8)
    token = await make_token(url)
    db = Database(settings.database, settings.data_dir)
    await db.start()
    # Long labels make large messages, so the slow client's TCP buffers fill soon.
    keys = [
        SeriesKey.of("feed-bulk", "ifHCInOctets", {"ifName": f"eth{i}", "ifAlias": "x" * 300})
        for i in range(500)
    ]
    try:
        async with in_process_api(settings, db) as server:
            hub = hub_of(server)
            sock = tiny_receive_buffer_socket(server.port)
            async with (
                feed(server.port, "/ws/metrics", token) as fast,
                # Without compression: repetitive messages would shrink to almost nothing.
                feed(
                    server.port,
                    "/ws/metrics",
                    token,
                    read=False,
                    sock=sock,
                    max_queue=1,
                    compression=None,
                ) as slow,
            ):
                await fast.subscribe(devices=["feed-bulk"])
                await slow.ws.send(json.dumps({"subscribe": {"devices": ["feed-bulk"]}}))
                assert json.loads(await slow.ws.recv())["type"] == "subscribed"
                await eventually(
                    lambda: all(c.subscriptions for c in hub._clients.values()), "subscribed"
                )
                slow_client: FeedClient = max(hub._clients.values(), key=lambda c: c.id)
                written: set[tuple[str, str]] = set()
                base = now() - timedelta(minutes=10)
                step = 0

                async def write_batch() -> None:
                    nonlocal step
                    step += 1
                    when = base + timedelta(milliseconds=step)
                    result = await writer.write([Sample(k, when, step) for k in keys])
                    assert result.stored == len(keys)
                    stamp = when.isoformat().replace("+00:00", "Z")
                    written.update((k.label_map["ifName"], stamp) for k in keys)

                async def overflowed() -> bool:
                    await write_batch()
                    # In step with the fast client: it never has more than a message or two
                    # queued, so however loaded the machine, only the slow one falls behind.
                    await eventually(
                        lambda: len(fast.samples) >= len(written), "the batch at the fast client"
                    )
                    return slow_client.missed > 0

                gaps_before = hub.gaps
                await eventually(overflowed, "the slow client's queue full", interval=0)
                assert hub.dropped > 0
                got = {(s["labels"]["ifName"], s["time"]) for s in fast.samples}
                assert got == written
                assert len(fast.samples) == len(written)
                assert not fast.of_type("gap")

                # The slow client reads at last: the gap comes before the next message.
                slow.start_reading()
                await eventually(lambda: not slow_client.queue, "the slow client drained")
                await write_batch()
                gap = await eventually(lambda: slow.of_type("gap"), "a gap at the slow client")
                assert gap[0]["reason"] == "slow"
                assert gap[0]["missed"] > 0
                assert hub.gaps > gaps_before
                index = slow.messages.index(gap[0])
                await eventually(lambda: len(slow.messages) > index + 1, "a message after the gap")
                assert slow.messages[index + 1]["type"] == "samples"
                assert hub.delivered > 0
    finally:
        await db.stop()


@pytest.mark.slow
async def test_site_scope_auth_events_and_bad_messages(
    url: str, writer: SampleWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Metadata read again at every batch: a device moved to another site without any
    # notification is out of scope at once.
    monkeypatch.setattr(feed_meta, "META_TTL", 0.0)
    settings = feed_settings(url, tmp_path / "api", ws_max_subscriptions=3, ws_max_clients=4)
    viewer = await make_token(url)
    lon1 = await make_token(url, sites=["lon1"])
    db = Database(settings.database, settings.data_dir)
    await db.start()
    conn = await asyncpg.connect(url)
    await conn.execute(
        "INSERT INTO devices (name, site) "
        "VALUES ('feed-lon', 'lon1'), ('feed-lon2', 'lon1'), ('feed-par', 'par2')"
    )
    lon_cpu = SeriesKey.of("feed-lon", "cpuUtilization")
    par_cpu = SeriesKey.of("feed-par", "cpuUtilization")
    nowhere_cpu = SeriesKey.of("feed-nowhere", "cpuUtilization")  # no site at all
    writes = Writes(writer)
    try:
        async with in_process_api(settings, db) as server:
            port = server.port
            # Unauthenticated, or a token that is not one: refused before the handshake.
            for token in (None, "nmt_abc_" + "x" * 40):
                with pytest.raises(websockets.InvalidStatus) as info:
                    async with feed(port, "/ws/metrics", token):
                        pass
                assert info.value.response.status_code == 403

            async with (
                feed(port, "/ws/metrics", viewer) as everything,
                feed(port, "/ws/metrics", lon1) as scoped,
                # Browsers cannot set headers on a WebSocket: the token in the query.
                feed(port, f"/ws/events?access_token={lon1}", None) as scoped_events,
                feed(port, "/ws/events", viewer) as all_events,
            ):
                # A fifth client is one too many for this server.
                async with feed(port, "/ws/metrics", viewer) as extra:
                    await eventually(lambda: extra.messages, "the refusal")
                    assert extra.messages[0]["type"] == "error"
                    await eventually(
                        lambda: extra.reader is not None and extra.reader.done(), "closed"
                    )
                    assert extra.ws.close_code == 1013

                # Bad messages: an error each, and the connection stays open.
                for bad in (
                    "not json",
                    {"subscribe": {"device": ["typo"]}},
                    {"subscribe": {"labels": ["not", "a", "map"]}},
                    {"unsubscribe": 99},
                    {"subscribe": {}, "unsubscribe": 1},
                    {"hello": 1},
                ):
                    before = len(scoped.messages)
                    await scoped.ws.send(bad if isinstance(bad, str) else json.dumps(bad))
                    reply = await eventually(
                        lambda n=before: scoped.messages[n:], f"reply to {bad}"
                    )
                    assert reply[0]["type"] == "error", reply
                    assert reply[0]["detail"]
                bad_severity = await scoped_events.request({"subscribe": {"severities": ["fatal"]}})
                assert bad_severity["type"] == "error"

                await everything.subscribe()
                await scoped.subscribe()  # everything it may see
                for _ in range(2):
                    await scoped.subscribe(devices=["feed-par"])
                too_many = await scoped.request({"subscribe": {}})
                assert too_many["type"] == "error"
                assert "at most 3" in too_many["detail"]

                # Scoped: par2 and site-less devices never arrive, lon1 ones do.
                await writes.write(par_cpu)
                await writes.write(nowhere_cpu)
                await writes.write(lon_cpu)
                await eventually(lambda: scoped.samples, "lon1 at the scoped client")
                await eventually(lambda: len(everything.samples) == 3, "all at the other one")
                assert [s["device"] for s in scoped.samples] == ["feed-lon"]
                assert [s["device"] for s in everything.samples] == [
                    "feed-par",
                    "feed-nowhere",
                    "feed-lon",
                ]

                # Events: scoped by site too, filtered by severity.
                await scoped_events.subscribe()
                await all_events.subscribe(severities=["critical"])
                t = now()
                events = [
                    DeviceEvent("feed-par", t, "reboot", "par rebooted", severity="critical"),
                    DeviceEvent("feed-lon", t, "reboot", "lon rebooted", severity="warning"),
                    DeviceEvent("feed-lon", t, "unreachable", "lon down", severity="critical"),
                ]
                await writer.write([], events)
                await eventually(lambda: len(scoped_events.events) == 2, "lon1 events")
                await eventually(lambda: len(all_events.events) == 2, "critical events")
                assert [e["message"] for e in scoped_events.events] == ["lon rebooted", "lon down"]
                assert [e["message"] for e in all_events.events] == ["par rebooted", "lon down"]
                assert all_events.events[0]["uid"] == str(events[0].uid)
                assert all_events.events[0]["severity"] == "critical"
                assert all_events.events[0]["kind"] == "reboot"

                # A re-written batch stores nothing new, so publishes nothing new.
                await writer.write([], events)
                await writer.write(
                    [], [DeviceEvent("feed-lon", t, "x", "last", severity="critical")]
                )
                await eventually(lambda: len(scoped_events.events) == 3, "the last event")
                assert scoped_events.events[-1]["message"] == "last"

                # feed-lon moves to par2, and nobody says so.
                await conn.execute("UPDATE devices SET site = 'par2' WHERE name = 'feed-lon'")
                await writes.write(lon_cpu)
                await writes.write(SeriesKey.of("feed-lon2", "cpuUtilization"))
                await eventually(lambda: len(scoped.samples) == 2, "feed-lon2 at the scoped client")
                assert [s["device"] for s in scoped.samples] == ["feed-lon", "feed-lon2"]
                await eventually(lambda: len(everything.samples) == 5, "both at the other one")
    finally:
        await conn.close()
        await db.stop()


def proxy_for(url: str) -> TcpProxy:
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [None])[0]
    if socket_dir:
        return TcpProxy(unix_path=Path(socket_dir) / f".s.PGSQL.{parts.port or 5432}")
    return TcpProxy(host=parts.hostname, port=parts.port or 5432)


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    return f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{proxy.port}{parts.path}"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*Unable to (connect to database|fetch server version)")
async def test_listeners_survive_a_database_outage(
    url: str, writer: SampleWriter, tmp_path: Path
) -> None:
    """The API and a second writer reach the database through a proxy that is cut and
    restored: feed clients get a gap, and both listeners come back."""
    proxy = await proxy_for(url).start()
    settings = feed_settings(through(proxy, url), tmp_path / "api")
    token = await make_token(url)
    db = Database(settings.database, settings.data_dir)
    await db.start()
    cut_writer = SampleWriter(db, settings)
    await cut_writer.start()
    conn = await asyncpg.connect(url)
    writes = Writes(writer)
    try:
        async with in_process_api(settings, db) as server:
            hub = hub_of(server)
            await eventually(lambda: cut_writer.control_listening, "the writer listening")
            async with feed(server.port, "/ws/metrics", token) as client:
                await client.subscribe(devices=[PROBE.device])
                await primed(writes, [client], PROBE)
                forgets = cut_writer.stats.series_forgets

                await proxy.cut()
                await eventually(lambda: not hub.listening, "the hub to notice")
                await eventually(lambda: not cut_writer.control_listening, "the writer to notice")
                await proxy.restore()

                gap = await eventually(lambda: client.of_type("gap"), "a gap after the outage")
                assert gap[0]["reason"] == "feed"
                assert hub.reconnects == 1
                await eventually(lambda: cut_writer.control_listening, "the writer listening again")
                assert cut_writer.stats.series_forgets == forgets + 1  # dropped on reconnect

                # Both work as before: the hub delivers, the writer's cache is dropped.
                await primed(writes, [client], PROBE)
                await cut_writer.write([Sample(CPU_A, now(), 1.0)])
                # (spooled, should the pool still have had a dead connection: then replayed)
                await eventually(lambda: len(cut_writer.series) == 1, "the series cached")
                await publish_control(conn, "series_forget")
                await eventually(lambda: len(cut_writer.series) == 0, "the cache dropped")
    finally:
        await conn.close()
        await cut_writer.close(drain_timeout=0)
        await db.stop()
        await proxy.close()
