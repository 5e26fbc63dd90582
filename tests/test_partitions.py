"""Partition maintenance against real PostgreSQL: partitions made ahead and on demand,
never a DEFAULT one, retention by DETACH ... CONCURRENTLY + DROP that never stalls
writers, pruning in the query plans, two maintainers at once, and a changed interval."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from netmon.config import load_settings
from netmon.records import Sample, SeriesKey
from netmon.store import queries
from netmon.store.database import Database
from netmon.store.maintenance import MAINTENANCE_LOCK_KEY, maintain
from netmon.store.partitions import (
    Partition,
    PartitionedTable,
    ensure_partitions,
    floor_time,
    list_partitions,
    partition_name,
)
from netmon.store.writer import SampleWriter
from tests.conftest import with_storage

DAY = timedelta(days=1)
TABLES = ("samples", "samples_5m", "samples_1h")
LOCK_TIMEOUT = timedelta(milliseconds=50)
# A writer call must finish far below the long query it runs next to (lock_timeout 50 ms);
# the bound leaves a loaded machine's slow commits room, and a writer queued behind the
# detach would wait out the whole query (6 s, or the reader held to the end).
WRITER_BOUND_S = 2.5

KEY = SeriesKey.of("r1", "ifHCInOctets", {"ifName": "eth0"}, kind="counter")


# -- helpers -------------------------------------------------------------------------------


def day_floor(moment: datetime) -> datetime:
    return floor_time(moment, DAY)


def day_name(start: datetime) -> str:
    return f"samples_p{start:%Y%m%d}"


async def parts(conn: asyncpg.Connection, table: str = "samples") -> list[Partition]:
    return await list_partitions(conn, table)


async def relation_exists(conn: asyncpg.Connection, name: str) -> bool:
    count = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = $1", name)
    return bool(count)


def assert_contiguous(partitions: list[Partition]) -> None:
    for a, b in itertools.pairwise(partitions):
        assert a.end == b.start, f"{a.name} and {b.name} leave a hole or overlap"
        assert a.start < a.end


async def assert_no_default_partition(conn: asyncpg.Connection) -> None:
    for table in TABLES:
        partdefid = await conn.fetchval(
            "SELECT partdefid FROM pg_partitioned_table WHERE partrelid = $1::regclass", table
        )
        assert partdefid == 0, f"{table} has a DEFAULT partition"
    defaults = await conn.fetchval(
        """
        SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('samples'::regclass, 'samples_5m'::regclass,
                              'samples_1h'::regclass)
          AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
        """
    )
    assert defaults == 0
    # And every partition has a FROM ... TO bound that list_partitions understands.
    for table in TABLES:
        attached = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass", table
        )
        assert attached == len(await parts(conn, table))


def relations_in_plan(plan: Any) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "Relation Name" in node:
                found.add(node["Relation Name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return found


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> set[str]:
    text = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    return relations_in_plan(json.loads(text))


async def count_rows(conn: asyncpg.Connection, relation: str) -> int:
    value: int = await conn.fetchval(f"SELECT count(*) FROM {relation}")
    return value


async def wait_for_lock(conn: asyncpg.Connection, relation: str, pid: int) -> None:
    """Wait until backend ``pid`` holds a lock on ``relation`` (its query is under way)."""
    for _ in range(200):
        held = await conn.fetchval(
            """
            SELECT count(*) FROM pg_locks
            WHERE pid = $1 AND granted AND relation = (
                SELECT oid FROM pg_class WHERE relname = $2)
            """,
            pid,
            relation,
        )
        if held:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"backend {pid} never locked {relation}")


class WriterLoop:
    """Writes one current sample at a time until stopped, timing every call."""

    def __init__(self, writer: SampleWriter) -> None:
        self.writer = writer
        self.latencies: list[float] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        value = 0
        while not self.stop.is_set():
            started = loop.time()
            result = await self.writer.write([Sample(KEY, datetime.now(UTC), value)])
            self.latencies.append(loop.time() - started)
            assert result.stored == 1, result
            value += 1
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def finish(self) -> None:
        self.stop.set()
        assert self.task is not None
        await self.task


# -- partitions ahead ----------------------------------------------------------------------


async def test_maintain_creates_partitions_ahead_and_is_idempotent(db, settings, conn):
    now = datetime.now(UTC)
    assert settings.storage.premake == timedelta(days=7)
    for table in TABLES:
        assert await parts(conn, table) == []

    report = await maintain(db, settings.storage, now=now)
    assert not report.skipped

    raw = await parts(conn, "samples")
    today = day_floor(now)
    # One day back (the current partition and the one before it) and 7 days ahead.
    assert [p.start for p in raw] == [today + k * DAY for k in range(-1, 8)]
    assert [p.name for p in raw] == [day_name(p.start) for p in raw]
    assert all(p.end - p.start == DAY for p in raw)
    assert raw[-1].end >= now + settings.storage.premake
    assert_contiguous(raw)

    for table, width in (("samples_5m", timedelta(days=7)), ("samples_1h", timedelta(days=28))):
        made = await parts(conn, table)
        assert made, table
        assert_contiguous(made)
        assert all(p.end - p.start == width for p in made)
        assert all(floor_time(p.start, width) == p.start for p in made)
        assert made[0].start <= now - width
        assert made[-1].end >= now + settings.storage.premake
        assert made[-1].start < now + settings.storage.premake

    everything = {table: await parts(conn, table) for table in TABLES}
    assert sorted(report.created) == sorted(p.name for ps in everything.values() for p in ps)

    again = await maintain(db, settings.storage, now=now)
    assert not again.skipped
    assert again.created == []
    assert again.dropped == []
    assert again.deferred == []
    assert {table: await parts(conn, table) for table in TABLES} == everything

    # A day later exactly one more raw partition appears, the rest is already there.
    later = await maintain(db, settings.storage, now=now + DAY)
    assert [n for n in later.created if n.startswith("samples_p")] == [day_name(today + 8 * DAY)]
    await assert_no_default_partition(conn)


async def test_sample_without_partition_is_created_on_demand(db, settings, conn):
    now = datetime.now(UTC)
    await maintain(db, settings.storage, now=now)
    before = {p.name for p in await parts(conn)}
    old = now - timedelta(days=3)
    assert day_name(day_floor(old)) not in before

    async with SampleWriter(db, settings) as writer:
        result = await writer.write([Sample(KEY, old, 7)])
        assert (result.stored, result.rejected, result.spooled) == (1, 0, 0)
        # Re-delivery finds the partition and stores nothing twice.
        again = await writer.write([Sample(KEY, old, 7)])
        assert (again.stored, again.duplicates) == (0, 1)

    after = {p.name for p in await parts(conn)}
    assert after - before == {day_name(day_floor(old))}
    assert await count_rows(conn, day_name(day_floor(old))) == 1
    assert await conn.fetchval("SELECT value FROM samples WHERE time = $1", old) == 7
    await assert_no_default_partition(conn)


async def test_first_write_into_empty_database_creates_only_needed_partitions(db, settings, conn):
    now = datetime.now(UTC)
    times = [now - timedelta(days=3), now - timedelta(days=1), now]
    async with SampleWriter(db, settings) as writer:
        result = await writer.write([Sample(KEY, t, i) for i, t in enumerate(times)])
    assert result.stored == 3
    raw = await parts(conn)
    # The batch spans three days; every day from the oldest to the newest is covered.
    first, last = day_floor(times[0]), day_floor(times[-1])
    assert [p.start for p in raw] == [first + k * DAY for k in range((last - first) // DAY + 1)]
    assert_contiguous(raw)
    assert await conn.fetchval("SELECT count(*) FROM samples") == 3
    await assert_no_default_partition(conn)


async def test_no_default_partition_after_maintenance_and_writes(db, settings, conn):
    now = datetime.now(UTC)
    await maintain(db, settings.storage, now=now)
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(KEY, now - timedelta(days=5), 1), Sample(KEY, now, 2)])
    await maintain(db, settings.storage, now=now)
    await assert_no_default_partition(conn)


# -- retention -----------------------------------------------------------------------------


async def test_retention_detaches_and_drops_expired_partitions(db, settings, conn):
    now = datetime.now(UTC)
    old_times = [now - timedelta(days=d) for d in (5, 4, 3)]
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(KEY, t, i) for i, t in enumerate(old_times)])
        await writer.write([Sample(KEY, now - timedelta(hours=1), 100)])
    await maintain(db, settings.storage, now=now)
    before = await parts(conn)
    assert len(before) >= 12

    short = with_storage(settings, raw_retention="2d")
    cutoff = now - timedelta(days=2)
    expired = [p.name for p in before if p.end <= cutoff]
    kept = [p.name for p in before if p.end > cutoff]
    assert set(expired) >= {day_name(day_floor(t)) for t in old_times}

    report = await maintain(db, short.storage, now=now)
    assert not report.skipped
    assert sorted(report.dropped) == sorted(expired)
    assert report.deferred == []
    for name in expired:
        assert not await relation_exists(conn, name), name
    assert [p.name for p in await parts(conn)] == kept
    # The newer data is untouched; the old rows went with their partitions.
    assert await conn.fetchval("SELECT array_agg(value) FROM samples") == [100]
    # Rollups keep their own (longer) retention.
    assert await conn.fetchval("SELECT count(*) FROM samples_5m") == 4

    again = await maintain(db, short.storage, now=now)
    assert again.dropped == []
    assert again.deferred == []


async def test_retention_far_in_the_future_drops_every_old_partition(db, settings, conn):
    now = datetime.now(UTC)
    await maintain(db, settings.storage, now=now)
    old = {table: await parts(conn, table) for table in TABLES}
    future = now + timedelta(days=800)  # past every default retention, 1-hour's 730 days too

    report = await maintain(db, settings.storage, now=future)
    assert sorted(report.dropped) == sorted(p.name for ps in old.values() for p in ps)
    for ps in old.values():
        for p in ps:
            assert not await relation_exists(conn, p.name)
    # What is left is what the future day needs: nothing expired, made ahead of `future`.
    raw = await parts(conn)
    assert [p.start for p in raw] == [day_floor(future) + k * DAY for k in range(-1, 8)]
    for table in TABLES:
        assert all(p.end > future - timedelta(days=730) for p in await parts(conn, table))


async def test_retention_keeps_partitions_inside_the_window(db, settings, conn):
    now = datetime.now(UTC)
    await maintain(db, settings.storage, now=now)
    before = await parts(conn)
    # 30 days of raw retention: nothing made for "now" has expired 29 days later either.
    report = await maintain(db, settings.storage, now=now + timedelta(days=29))
    assert not [n for n in report.dropped if n.startswith("samples_p")]
    names = {p.name for p in await parts(conn)}
    assert {p.name for p in before} <= names


async def test_retention_while_a_transaction_reads_the_old_partition(db, settings, conn):
    """A long reader holds the old partition: retention gives up within the lock timeout
    (deferred), the writer carries on, and the next run after the reader drops it."""
    now = datetime.now(UTC)
    old = day_floor(now) - 3 * DAY + timedelta(hours=12)  # its 10 s never span midnight
    old_part = day_name(day_floor(old))
    await maintain(db, settings.storage, now=now)
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(KEY, old + timedelta(seconds=i), i) for i in range(10)])
    await maintain(db, settings.storage, now=now)  # rollups done: the run below is retention
    short = with_storage(settings, raw_retention="2d")

    reader = await db.connect()
    try:
        tx = reader.transaction()
        await tx.start()
        n = await reader.fetchval(
            "SELECT count(*) FROM samples WHERE time >= $1 AND time < $2",
            day_floor(old),
            day_floor(old) + DAY,
        )
        assert n == 10
        await wait_for_lock(conn, old_part, reader.get_server_pid())

        async with SampleWriter(db, short) as writer:
            loop = WriterLoop(writer)
            loop.start()
            await asyncio.sleep(0.1)
            started = asyncio.get_running_loop().time()
            report = await asyncio.wait_for(maintain(db, short.storage, now=now), 10)
            took = asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.2)
            await loop.finish()

        assert not report.skipped
        assert old_part in report.deferred
        assert old_part not in report.dropped
        assert took < 3.0
        assert len(loop.latencies) >= 10
        assert max(loop.latencies) < WRITER_BOUND_S, loop.latencies
        # The reader still sees its rows: nothing was deleted under it.
        assert await reader.fetchval("SELECT count(*) FROM " + old_part) == 10
        await tx.rollback()
    finally:
        await reader.close()

    report = await maintain(db, short.storage, now=now)
    assert old_part in report.dropped
    assert report.deferred == []
    assert not await relation_exists(conn, old_part)
    assert old_part not in {p.name for p in await parts(conn)}
    assert await conn.fetchval("SELECT count(*) FROM samples WHERE time < $1", day_floor(now)) == 0


async def test_retention_with_several_expired_partitions_while_one_is_read(db, settings, conn):
    """Two expired partitions and a reader on one of them: the first DETACH is left
    pending; the second must not fail the run (PostgreSQL allows one pending detach per
    table), and the next run after the reader finishes both."""
    now = datetime.now(UTC)
    olds = [now - timedelta(days=4), now - timedelta(days=3)]
    names = [day_name(day_floor(t)) for t in olds]
    await maintain(db, settings.storage, now=now)
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(KEY, t, i) for i, t in enumerate(olds)])
    short = with_storage(settings, raw_retention="2d")

    reader = await db.connect()
    try:
        tx = reader.transaction()
        await tx.start()
        await reader.fetchval("SELECT count(*) FROM samples WHERE time >= $1", day_floor(olds[1]))
        report = await maintain(db, short.storage, now=now)
        assert sorted(report.deferred) == sorted(names)
        assert report.dropped == []
        # Still deferred (not an error) on a second run while the reader is there.
        report = await maintain(db, short.storage, now=now)
        assert sorted(report.deferred) == sorted(names)
        await tx.rollback()
    finally:
        await reader.close()

    report = await maintain(db, short.storage, now=now)
    assert sorted(report.dropped) == sorted(names)
    assert report.deferred == []
    for name in names:
        assert not await relation_exists(conn, name)


async def test_retention_while_a_long_query_runs(db, settings, conn):
    """The issue's scenario: a 3-s dashboard query on the old partition, retention and a
    writer into the current partition at the same time."""
    now = datetime.now(UTC)
    old = day_floor(now) - 3 * DAY + timedelta(hours=12)  # its 10 s never span midnight
    old_part = day_name(day_floor(old))
    await maintain(db, settings.storage, now=now)
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(KEY, old, 1)])
    await maintain(db, settings.storage, now=now)  # rollups done: the run below is retention
    short = with_storage(settings, raw_retention="2d")

    reader = await db.connect()
    try:
        query = asyncio.create_task(
            reader.fetchrow(
                "SELECT pg_sleep(6), count(*) FROM samples WHERE time >= $1 AND time < $2",
                day_floor(old),
                day_floor(old) + DAY,
            )
        )
        await wait_for_lock(conn, old_part, reader.get_server_pid())
        clock = asyncio.get_running_loop()
        async with SampleWriter(db, short) as writer:
            loop = WriterLoop(writer)
            loop.start()
            started = clock.time()
            report = await asyncio.wait_for(maintain(db, short.storage, now=now), 10)
            took = clock.time() - started
            assert not query.done(), "the long query should still be running"
            row = await query
            await loop.finish()
        assert row["count"] == 1
        long_query = clock.time() - started
    finally:
        await reader.close()

    assert old_part in report.deferred
    assert took < 3.0 < long_query
    assert len(loop.latencies) >= 20
    assert max(loop.latencies) < WRITER_BOUND_S, max(loop.latencies)

    report = await maintain(db, short.storage, now=now)
    assert old_part in report.dropped
    assert not await relation_exists(conn, old_part)


async def test_drop_deferred_after_detach_is_finished_by_next_run(db, settings, conn):
    """A partition detached on an earlier run whose DROP could not run (an orphan) is
    dropped by the next run, found by its name."""
    now = datetime.now(UTC)
    old = day_floor(now) - 3 * DAY + timedelta(hours=12)  # its 10 s never span midnight
    old_part = day_name(day_floor(old))
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(KEY, old, 1)])
    await conn.execute(f"ALTER TABLE samples DETACH PARTITION {old_part}")
    assert old_part not in {p.name for p in await parts(conn)}
    assert await relation_exists(conn, old_part)

    short = with_storage(settings, raw_retention="2d")
    report = await maintain(db, short.storage, now=now)
    assert old_part in report.dropped
    assert not await relation_exists(conn, old_part)


# -- pruning -------------------------------------------------------------------------------


async def test_explain_range_query_prunes_to_the_days_asked(db, settings, conn):
    now = datetime.now(UTC)
    await maintain(db, settings.storage, now=now)
    today = day_floor(now)
    yesterday = today - DAY
    assert len(await parts(conn)) == 9

    one_day = await explain(conn, queries._RAW, 1, yesterday, today)
    assert one_day == {day_name(yesterday)}
    stepped = await explain(
        conn, queries._RAW_STEPPED, 1, yesterday, today, timedelta(minutes=1), yesterday
    )
    assert stepped == {day_name(yesterday)}
    # A day that straddles midnight reads exactly the two partitions it touches.
    straddle = await explain(conn, queries._RAW, 1, yesterday + DAY / 2, today + DAY / 2)
    assert straddle == {day_name(yesterday), day_name(today)}
    # The 5-minute rollup of the same day: one weekly partition.
    rollup = await explain(
        conn,
        queries._ROLLUP_STEPPED.format(table="samples_5m"),
        1,
        yesterday,
        today,
        timedelta(minutes=5),
        yesterday,
    )
    week = floor_time(yesterday, timedelta(days=7))
    assert rollup == {partition_name("samples_5m", week)}


async def test_explain_last_value_prunes_to_its_lookback(db, settings, conn):
    now = datetime.now(UTC)
    await maintain(db, settings.storage, now=now)
    today = day_floor(now)
    noon = today + timedelta(hours=12)
    ids = [1, 2, 3]

    one = await explain(conn, queries._LAST, ids, noon - queries.DEFAULT_LOOKBACK, noon)
    assert one == {day_name(today)}
    # A lookback that reaches back over midnight touches yesterday too, nothing else.
    early = today + timedelta(minutes=30)
    two = await explain(conn, queries._LAST, ids, early - queries.DEFAULT_LOOKBACK, early)
    assert two == {day_name(today - DAY), day_name(today)}
    assert len(await parts(conn)) == 9


# -- two maintainers -----------------------------------------------------------------------


async def test_two_maintainers_at_once_one_skips(db, settings, conn):
    # Two months of partitions to make: the first run is still busy when the second asks.
    storage = with_storage(settings, premake="60d").storage
    other = Database(settings.database, settings.data_dir)
    await other.start()
    try:
        now = datetime.now(UTC)
        reports = await asyncio.gather(
            maintain(db, storage, now=now), maintain(other, storage, now=now)
        )
    finally:
        await other.stop()
    assert sorted(r.skipped for r in reports) == [False, True]
    done = next(r for r in reports if not r.skipped)
    skipped = next(r for r in reports if r.skipped)
    assert skipped.created == []
    assert skipped.dropped == []
    assert len(done.created) == len(set(done.created)) > 60
    for table in TABLES:
        assert_contiguous(await parts(conn, table))
    assert (await parts(conn))[-1].end >= now + timedelta(days=60)
    # The lock is released: the next run is not skipped and finds nothing to do.
    again = await maintain(db, storage, now=now)
    assert not again.skipped
    assert again.created == []


async def test_maintain_skips_while_another_process_holds_the_lock(db, settings, conn):
    await conn.execute("SELECT pg_advisory_lock($1)", MAINTENANCE_LOCK_KEY)
    report = await maintain(db, settings.storage)
    assert report.skipped
    assert report.created == []
    assert await parts(conn) == []
    await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_KEY)
    report = await maintain(db, settings.storage)
    assert not report.skipped
    assert len(await parts(conn)) == 9


async def test_writer_and_maintainer_create_partitions_at_once(db, settings, conn):
    """On-demand creation in the writer and maintenance racing for the same slots: each
    slot is created once, nothing fails."""
    now = datetime.now(UTC)
    times = [now - timedelta(days=d, minutes=m) for d in range(4) for m in range(3)]
    async with SampleWriter(db, settings) as writer:
        result, report = await asyncio.gather(
            writer.write([Sample(KEY, t, i) for i, t in enumerate(times)]),
            maintain(db, settings.storage, now=now),
        )
    assert result.stored == len(times)
    raw = await parts(conn)
    assert_contiguous(raw)
    assert raw[0].start == day_floor(times[-1])
    assert await conn.fetchval("SELECT count(*) FROM samples") == len(times)
    assert not report.skipped


# -- a changed partition interval ----------------------------------------------------------


async def test_partition_interval_change_does_not_overlap(db, settings, conn):
    now = datetime.now(UTC)
    await maintain(db, settings.storage, now=now)
    daily = await parts(conn)

    six = with_storage(settings, partition_interval="6h", premake="10d")
    report = await maintain(db, six.storage, now=now)
    assert not report.skipped
    raw = await parts(conn)
    assert raw[: len(daily)] == daily
    new = raw[len(daily) :]
    assert new, "the longer premake should add 6-hour partitions after the daily ones"
    assert new[0].start == daily[-1].end
    assert all(p.end - p.start == timedelta(hours=6) for p in new)
    assert all(p.name == partition_name("samples", p.start) for p in new)
    assert any(p.name.endswith("_0600") for p in new)
    assert raw[-1].end >= now + timedelta(days=10)
    assert_contiguous(raw)

    # Writes land in both kinds; on-demand creation uses the new width.
    async with SampleWriter(db, six) as writer:
        old = now - timedelta(days=3)
        result = await writer.write([Sample(KEY, old, 1), Sample(KEY, now, 2)])
        assert result.stored == 2
    made = [p for p in await parts(conn) if p.start <= old < p.end]
    assert len(made) == 1
    assert made[0].end - made[0].start == timedelta(hours=6)

    # Back to a width that does not line up with what exists (2 days): clipped, no error.
    two = with_storage(settings, partition_interval="2d", premake="20d")
    await maintain(db, two.storage, now=now)
    raw = await parts(conn)
    assert_contiguous([p for p in raw if p.start >= day_floor(now) - DAY])
    assert raw[-1].end >= now + timedelta(days=20)
    assert (await maintain(db, two.storage, now=now)).created == []
    await assert_no_default_partition(conn)


async def test_wider_slot_around_an_existing_partition_is_filled_completely(conn):
    """A wider interval whose slot has an older, narrower partition in its middle: both
    sides of it get covered in one call (the writer retries its COPY only once)."""
    daily = PartitionedTable("samples", "time", DAY, timedelta(days=30))
    weekly = PartitionedTable("samples", "time", timedelta(days=7), timedelta(days=30))
    # 2020-01-02 is a Thursday, so an epoch-aligned week runs 2020-01-02 .. 2020-01-09.
    lone = datetime(2020, 1, 5, tzinfo=UTC)
    assert await ensure_partitions(conn, daily, lone, lone + DAY, LOCK_TIMEOUT) == [
        "samples_p20200105"
    ]
    inside = datetime(2020, 1, 7, 12, tzinfo=UTC)
    created = await ensure_partitions(
        conn, weekly, inside, inside + timedelta(microseconds=1), LOCK_TIMEOUT
    )
    assert created
    raw = await parts(conn)
    assert any(p.start <= inside < p.end for p in raw), [(p.start, p.end) for p in raw]
    assert_contiguous(raw)
    assert raw[0].start == datetime(2020, 1, 2, tzinfo=UTC)
    assert raw[-1].end == datetime(2020, 1, 9, tzinfo=UTC)
    await conn.execute("INSERT INTO samples VALUES (1, $1, 1)", inside)
    assert await ensure_partitions(conn, weekly, inside, inside + DAY, LOCK_TIMEOUT) == []


@pytest.mark.parametrize("interval", ["1h", "6h", "1d", "7d"])
async def test_explicit_ranges_give_aligned_named_partitions(conn, interval):
    width = load_settings(None, storage={"partition_interval": interval}).storage
    table = PartitionedTable("samples", "time", width.partition_interval, width.raw_retention)
    start = datetime(2021, 3, 4, 5, 6, tzinfo=UTC)
    end = start + 3 * width.partition_interval
    created = await ensure_partitions(conn, table, start, end, LOCK_TIMEOUT)
    raw = await parts(conn)
    assert [p.name for p in raw] == created
    assert raw[0].start == floor_time(start, width.partition_interval) <= start
    assert raw[-1].end >= end
    assert all(p.end - p.start == width.partition_interval for p in raw)
    assert_contiguous(raw)
    assert await ensure_partitions(conn, table, start, end, LOCK_TIMEOUT) == []


async def test_partition_creation_under_a_busy_parent_is_deferred_not_fatal(db, settings):
    """A conflicting lock on the parent makes maintain() defer creation, not crash."""
    from datetime import UTC, datetime, timedelta

    from netmon.store.maintenance import maintain

    blocker = await db.connect()
    try:
        async with blocker.transaction():
            # SHARE ROW EXCLUSIVE conflicts with ATTACH's SHARE UPDATE EXCLUSIVE.
            await blocker.execute("LOCK TABLE samples IN SHARE ROW EXCLUSIVE MODE")
            report = await maintain(
                db, settings.storage, now=datetime.now(UTC) + timedelta(days=30)
            )
        assert "samples" in report.deferred
        later = await maintain(db, settings.storage, now=datetime.now(UTC) + timedelta(days=30))
        assert any(name.startswith("samples_p") for name in later.created)
    finally:
        await blocker.close()
