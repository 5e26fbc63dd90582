"""A poll never waits on the database.

PostgreSQL frozen with SIGSTOP (postmaster and every backend: the server neither answers
nor refuses, as a hung host or a stalled disk) while the poller polls the lab: polls keep
their schedule, records go to the spool once a write outlives ``writer.write_deadline``,
and after SIGCONT every sample arrives exactly once. The frozen server is an embedded
PostgreSQL private to the test; the shared system PostgreSQL is never stopped.

The same with every packet to and from the database 150 ms late (300 ms a round trip,
through a proxy; a new device's first batch then outlasts the 5 s deadline): polls keep
their schedule, everything is stored.

And the batcher's bounded queue: past ``writer.queue_limit`` what waits goes to the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from netmon.config import load_settings
from netmon.records import Sample, SeriesKey
from netmon.store.batcher import Batcher
from netmon.store.database import Database
from netmon.store.writer import SampleWriter
from tests.poller_helpers import eventually, fast_inventory, poller_settings, running_poller
from tests.tcp_proxy import TcpProxy, proxy_for, through
from tests.test_outage import OwnServer, migrated_database

FREEZE_S = 5.0
DEADLINE = "1s"


def _cluster(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, checkpointer, walwriter, ...)."""
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # The command may hold spaces and parentheses: the fields after the last ')'.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == postmaster:
                pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def frozen(postmaster: int) -> Iterator[None]:
    """SIGSTOP the whole cluster; SIGCONT it on the way out, whatever happens."""
    pids = _cluster(postmaster)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(tmp_path / "pg")
    try:
        yield server
    finally:
        server.cleanup()


def _late_polls(lag_histogram: object, above: float) -> int:
    cumulative = lag_histogram.cumulative()  # type: ignore[attr-defined]
    within = max(n for bound, n in cumulative if bound <= above)
    return int(cumulative[-1][1] - within)


@pytest.mark.slow
@pytest.mark.lab(interfaces=2)
async def test_a_frozen_database_never_holds_up_polls_and_loses_nothing(lab, own_server, tmp_path):
    url = await migrated_database(own_server.url, "netmon")
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        database={"url": url, "pool_min": 1, "pool_max": 10, "connect_timeout": "2s"},
        writer={"flush_interval": "50ms", "retry_interval": "200ms", "write_deadline": DEADLINE},
        poller={"jitter": "0s", "stop_timeout": "10s"},
    )
    inventory = fast_inventory(lab, tmp_path / "inventory", interval="1s")
    postmaster = own_server.server.get_pid()
    assert postmaster is not None
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        async with running_poller(settings, db, inventory) as service:
            poller = service.poller
            assert poller is not None
            writer = service.batcher.writer

            async def stored_once() -> bool:
                return writer.stats.stored > 0 and poller.stats.polls >= 6

            await eventually(stored_once, what="polls stored before the freeze")
            polls_before, overruns_before = poller.stats.polls, poller.stats.overruns
            late_before = _late_polls(poller.stats.start_lag, 1.0)
            started = time.monotonic()
            with frozen(postmaster):
                await asyncio.sleep(FREEZE_S)
                frozen_polls = poller.stats.polls - polls_before
                spooled = writer.stats.spooled
                up_while_frozen = writer.database_up
            thawed = time.monotonic() - started

            # Polls kept their schedule: 3 devices every second, none skipped, none started
            # a second or more after its slot.
            assert frozen_polls >= 3 * (FREEZE_S - 1), (frozen_polls, thawed)
            assert poller.stats.overruns == overruns_before
            assert _late_polls(poller.stats.start_lag, 1.0) == late_before
            # A write outlived its deadline: the database counts as down, records spooled.
            assert not up_while_frozen
            assert spooled > 0
            assert writer.stats.deadlines >= 1

            async def replayed() -> bool:
                return writer.database_up and not len(writer.spool)

            await eventually(replayed, timeout=30, what="the spool replayed after SIGCONT")
        queued = service.processor.samples
        stats = writer.stats
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM samples")
        finally:
            await conn.close()
    finally:
        await db.stop()
    # Exactly once: every sample queued is stored (the primary key makes a second copy
    # impossible; a lost one would make the count short), none rejected or dropped.
    assert stats.rejected == 0
    assert stats.dropped == 0
    assert rows == queued, (rows, queued, stats)
    assert stats.replayed > 0


class SlowProxy(TcpProxy):
    """Every chunk forwarded ``delay`` seconds after it arrived, in order: latency, not
    a slower link (chunks in flight overlap)."""

    delay = 0.15

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(1 << 16):
                    queue.put_nowait((loop.time() + self.delay, data))
            queue.put_nowait((loop.time() + self.delay, b""))
            with contextlib.suppress(OSError):
                await sender
        finally:
            sender.cancel()


@pytest.fixture
async def one_database_url(one_pg_server) -> AsyncIterator[str]:
    """A fresh migrated database on one server: the subject is the poller, not storage."""
    url = await one_pg_server.create_database(template=one_pg_server.template)
    try:
        yield url
    finally:
        await one_pg_server.drop_database(url)


@pytest.mark.slow
@pytest.mark.lab(interfaces=2)
async def test_a_slow_database_never_holds_up_polls(lab, one_database_url, tmp_path):
    database_url = one_database_url
    proxy = proxy_for(database_url)
    slow = SlowProxy(host=proxy.upstream_host, port=proxy.upstream_port, unix_path=proxy.unix_path)
    await slow.start()
    try:
        config = poller_settings(
            load_settings(None, data_dir=tmp_path / "data", database={"url": database_url})
        )
        url = through(slow, database_url)
        config = config.model_copy(
            update={"database": config.database.model_copy(update={"url": url})}
        )
        inventory = fast_inventory(lab, tmp_path / "inventory", interval="1s")
        db = Database(config.database, config.data_dir)
        await db.start()
        try:
            async with running_poller(config, db, inventory) as service:
                poller = service.poller
                assert poller is not None
                writer = service.batcher.writer

                async def polled() -> bool:
                    return poller.stats.polls >= 3 * 4

                await eventually(polled, timeout=30, what="four rounds of polls")
                assert poller.stats.overruns == 0
                assert _late_polls(poller.stats.start_lag, 1.0) == 0

                # A new device's first batch takes more round trips than the deadline
                # allows (series are created): it waits in the spool, and the replay,
                # with more time, takes it back.
                async def caught_up() -> bool:
                    return writer.database_up and not len(writer.spool)

                await eventually(caught_up, timeout=60, what="the writer caught up")
            queued = service.processor.samples
            stats = writer.stats
        finally:
            await db.stop()
    finally:
        await slow.close()
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM samples")
    finally:
        await conn.close()
    assert stats.dropped == 0
    assert rows == queued, (rows, queued, stats)


def _poll(device: int, t: datetime, n: int = 50) -> list[Sample]:
    return [
        Sample(
            SeriesKey.of(f"q{device}", "ifHCInOctets", {"ifName": f"e{i}"}, kind="counter"), t, i
        )
        for i in range(n)
    ]


async def test_a_full_queue_overflows_to_the_spool(db, settings, conn):
    settings = load_settings(
        None,
        data_dir=settings.data_dir,
        database={"url": settings.database.url, "pool_min": 1, "pool_max": 4},
        # Nothing flushes on its own: only the queue limit moves records.
        writer={
            "batch_size": 10_000,
            "flush_interval": "1h",
            "queue_limit": 120,
            "retry_interval": "100ms",
        },
    )
    t = datetime.now(UTC).replace(microsecond=0)
    async with SampleWriter(db, settings) as writer:
        batcher = Batcher(writer, settings.writer)
        batcher.start()
        batcher.put(_poll(1, t))
        batcher.put(_poll(2, t))
        assert batcher.queued == 100
        batcher.put(_poll(3, t))  # 150 > 120: all three go to the spool
        assert batcher.queued == 0
        assert batcher.stats.overflows == 1
        assert batcher.stats.overflowed == 150

        async def spooled_then_stored() -> bool:
            return writer.stats.spooled == 150 and writer.stats.replayed == 150

        await eventually(spooled_then_stored, timeout=10, what="overflow spooled and replayed")
        batcher.put(_poll(4, t))  # under the limit: queued as usual, flushed at close
        assert batcher.queued == 50
        await batcher.close()
    assert await conn.fetchval("SELECT count(*) FROM samples") == 200
