"""Read latency: netmon's query path against the same reads in plain SQL, in the same run.

    python bench/query.py [--quick] [--database-url URL] [--runs N] [--reps N]

Set-up (not measured): 30 days of 1-minute samples for 1,000 series (100 devices x 10
series; --quick: 3 days, 200 series) in a freshly migrated database. The series are made
by netmon's SeriesCache, the daily partitions by ``ensure_partitions``, the rows by a
server-side INSERT ... SELECT in time order (what the writer would have produced, minus
the wait), then VACUUM ANALYZE, as autovacuum would have done on closed partitions. The
5-minute and 1-hour rollups are computed by the real maintenance code
(``netmon.store.maintenance.maintain(now=...)``).

Measured, ``reps`` times each (500; --quick 200) after 20 unmeasured warm-up calls, on one
pooled connection, a random device or series each time (the same picks for both sides):

* last_*: ``last_values`` of one device's 10 series (1-hour lookback);
* range_24h_*: ``range_query(step=None)`` over the last 24 hours of one series (raw rows);
* range_30d_*: ``range_query(step=1h)`` over 30 days of one series (the 1-hour rollup; the
  last hour, not rolled up yet, aggregated from raw rows, as netmon does).

The baseline is the same three reads as hand-written SQL through asyncpg's ``fetch``:
the LATERAL latest-row query, the raw range, and a plain SELECT from ``samples_1h``.
Figures are p50 and p99 in milliseconds, medians over ``runs``. The database is
netmon_bench_<random>, created here and dropped at the end, failure or not.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from _contract import environment, main, percentile, progress, repeat, stderr
from ingest import make_keys

from netmon.config import Settings, StorageSettings, load_settings
from netmon.store.database import Database
from netmon.store.maintenance import maintain
from netmon.store.partitions import ensure_partitions, list_partitions, partitioned_tables
from netmon.store.queries import last_values, range_query
from netmon.store.schema import upgrade
from netmon.store.series import SeriesCache

WARMUP = 20

# One day of 1-minute rows for every series, in time order; integer counters that grow,
# a 2-decimal float gauge and an integer gauge, like the ingest benchmark's data.
_LOAD_DAY = """
INSERT INTO samples (series_id, time, value)
SELECT s.id, t,
       CASE WHEN s.kind = 'counter'
                THEN (s.id * 1000000000000::numeric
                      + (extract(epoch FROM t)::bigint / 60) * (s.id % 997 + 1) * 1000)
            WHEN s.metric = 'cpuUtilization' THEN round((random() * 100)::numeric, 2)
            ELSE (1000000000 + (random() * 1000000)::bigint)::numeric
       END
FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 minute',
                     interval '1 minute') AS t
CROSS JOIN (SELECT id, kind, metric FROM series ORDER BY id) AS s
ORDER BY t, s.id
"""

_BASE_LAST = """
SELECT s.id, l.time, l.value
FROM unnest($1::bigint[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT time, value FROM samples
    WHERE series_id = s.id AND time >= $2 AND time <= $3
    ORDER BY time DESC LIMIT 1
) l
"""

_BASE_RAW = """
SELECT time, value FROM samples
WHERE series_id = $1 AND time >= $2 AND time < $3
ORDER BY time
"""

_BASE_1H = """
SELECT bucket, min, max, avg, count, last FROM samples_1h
WHERE series_id = $1 AND bucket >= $2 AND bucket < $3
ORDER BY bucket
"""


# -- set-up --------------------------------------------------------------------------------


async def load(
    db: Database, storage: StorageSettings, now: datetime, days: int, n_series: int
) -> tuple[list[list[int]], int]:
    """Series, partitions and rows; returns the series ids per device and the row count."""
    samples = partitioned_tables(storage)[0]
    first = now - timedelta(days=days) + timedelta(minutes=1)
    conn = await db.connect()
    try:
        await ensure_partitions(conn, samples, first, now + storage.premake, storage.lock_timeout)
        keys = make_keys(n_series)
        cache = SeriesCache()
        await cache.resolve(conn, keys)
        devices: dict[str, list[int]] = {}
        for key in keys:
            devices.setdefault(key.device, []).append(cache._ids[key])
    finally:
        await conn.close()

    # Day by day (the last slice ends at now, inclusive), two connections at once; then
    # VACUUM ANALYZE of every partition, also two at a time.
    edges = [first + timedelta(days=d) for d in range(days)] + [now + timedelta(minutes=1)]
    slices = list(itertools.pairwise(edges))
    async with _connection(db) as conn:
        partitions = [p.name for p in await list_partitions(conn, "samples")]
    with progress() as bar:
        task = bar.add_task(f"loading {days} days x {n_series:,} series", total=len(slices))

        async def insert(conn: asyncpg.Connection, lo: datetime, hi: datetime) -> None:
            await conn.execute(_LOAD_DAY, lo, hi)
            bar.advance(task)

        await _two_at_a_time(db, insert, slices, "SET work_mem = '256MB'")
        task = bar.add_task("VACUUM ANALYZE partitions", total=len(partitions))

        async def vacuum(conn: asyncpg.Connection, name: str) -> None:
            await conn.execute(f"VACUUM (ANALYZE) {name}")
            bar.advance(task)

        await _two_at_a_time(db, vacuum, [(name,) for name in partitions])
    async with _connection(db) as conn:
        rows: int = await conn.fetchval("SELECT count(*) FROM samples")
    return list(devices.values()), rows


@asynccontextmanager
async def _connection(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """A connection for set-up work: no statement timeout (VACUUM of a day takes a while)."""
    conn = await asyncpg.connect(**{**db.connect_kwargs(), "command_timeout": None})
    try:
        yield conn
    finally:
        await conn.close()


async def _two_at_a_time(
    db: Database,
    job: Callable[..., Awaitable[None]],
    items: Sequence[tuple[Any, ...]],
    setup: str | None = None,
) -> None:
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        async with _connection(db) as conn:
            if setup:
                await conn.execute(setup)
            while not queue.empty():
                await job(conn, *queue.get_nowait())

    await asyncio.gather(worker(), worker())


async def rollups(db: Database, storage: StorageSettings, now: datetime) -> dict[str, Any]:
    """The real maintenance run (partitions, rollups, retention) at ``now``."""
    with progress() as bar:
        tasks = {
            res: bar.add_task(f"rollups {res} (netmon maintain)", total=1.0) for res in ("5m", "1h")
        }

        def report(resolution: str, fraction: float) -> None:
            bar.update(tasks[resolution], completed=fraction)

        started = time.perf_counter()
        result = await maintain(db, storage, now=now, progress=report)
        elapsed = time.perf_counter() - started
    async with _connection(db) as conn:
        await conn.execute("VACUUM (ANALYZE) samples_5m, samples_1h")
    return {
        "maintain_seconds": round(elapsed, 1),
        "rollup_rows_5m": result.rollups.rows_5m,
        "rollup_rows_1h": result.rollups.rows_1h,
        "rollup_done_1h": result.rollups.done_1h.isoformat() if result.rollups.done_1h else None,
    }


# -- measurement ---------------------------------------------------------------------------


async def latencies(call: Callable[[int], Awaitable[Any]], picks: Sequence[int]) -> list[float]:
    """Milliseconds of each call; the first WARMUP picks are run but not kept."""
    out: list[float] = []
    for i, pick in enumerate(picks):
        started = time.perf_counter()
        await call(pick)
        elapsed = (time.perf_counter() - started) * 1000
        if i >= WARMUP:
            out.append(elapsed)
    return out


@dataclass
class Reads:
    conn: asyncpg.Connection
    storage: StorageSettings
    devices: list[list[int]]
    now: datetime
    reps: int

    @property
    def series(self) -> list[int]:
        return [sid for device in self.devices for sid in device]

    # netmon's query path

    async def netmon_last(self, device: int) -> None:
        result = await last_values(self.conn, self.devices[device], now=self.now)
        assert len(result) == len(self.devices[device])

    async def netmon_24h(self, series_id: int) -> None:
        start = self.now - timedelta(hours=24)
        result = await range_query(
            self.conn, series_id, start, self.now, None, self.storage, self.now
        )
        assert result.resolution == "raw"
        assert len(result.points) >= 1439

    async def netmon_30d(self, series_id: int) -> None:
        start = self.now - timedelta(days=30)
        step = timedelta(hours=1)
        result = await range_query(
            self.conn, series_id, start, self.now, step, self.storage, self.now
        )
        assert result.resolution == "1h"
        assert result.points

    # the same reads by hand

    async def plain_last(self, device: int) -> None:
        ids = self.devices[device]
        rows = await self.conn.fetch(_BASE_LAST, ids, self.now - timedelta(hours=1), self.now)
        assert len(rows) == len(ids)

    async def plain_24h(self, series_id: int) -> None:
        start = self.now - timedelta(hours=24)
        rows = await self.conn.fetch(_BASE_RAW, series_id, start, self.now)
        assert len(rows) >= 1439

    async def plain_30d(self, series_id: int) -> None:
        rows = await self.conn.fetch(_BASE_1H, series_id, self.now - timedelta(days=30), self.now)
        assert rows

    async def once(self, index: int) -> tuple[dict[str, float], dict[str, float]]:
        rng = random.Random(index)
        n = WARMUP + self.reps
        device_picks = [rng.randrange(len(self.devices)) for _ in range(n)]
        series_picks = [rng.choice(self.series) for _ in range(n)]
        plan: list[
            tuple[
                str, Callable[[int], Awaitable[None]], Callable[[int], Awaitable[None]], list[int]
            ]
        ] = [
            ("last", self.netmon_last, self.plain_last, device_picks),
            ("range_24h", self.netmon_24h, self.plain_24h, series_picks),
            ("range_30d", self.netmon_30d, self.plain_30d, series_picks),
        ]
        figures: dict[str, float] = {}
        baseline: dict[str, float] = {}
        with progress() as bar:
            task = bar.add_task(f"run {index + 1}: 3 reads x 2 paths", total=len(plan) * 2)
            for name, netmon, plain, picks in plan:
                # Alternate which side goes first from run to run.
                sides = [(figures, netmon), (baseline, plain)]
                for target, call in sides if index % 2 == 0 else sides[::-1]:
                    ms = await latencies(call, picks)
                    target[f"{name}_p50_ms"] = percentile(ms, 50)
                    target[f"{name}_p99_ms"] = percentile(ms, 99)
                    bar.advance(task)
        return figures, baseline


# -- the benchmark -------------------------------------------------------------------------


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, default=None, help="days of 1-minute data")
    parser.add_argument("--series", type=int, default=None, help="series (a multiple of 10)")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per read and run")


async def bench(args: argparse.Namespace, url: str, data_dir: Path) -> dict[str, Any]:
    days = args.days or (3 if args.quick else 30)
    n_series = args.series or (200 if args.quick else 1_000)
    reps = args.reps or (200 if args.quick else 500)
    runs = args.runs or (1 if args.quick else 3)
    # maintain() computes 6-hour rollup chunks of 1,000 series in one statement each.
    database = {"url": url, "pool_min": 2, "pool_max": 4, "command_timeout": timedelta(minutes=30)}
    settings: Settings = load_settings(None, data_dir=data_dir, database=database)
    # Whole minutes: the newest sample of every series is at ``now``.
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        await upgrade(db)
        started = time.perf_counter()
        devices, rows = await load(db, settings.storage, now, days, n_series)
        load_seconds = time.perf_counter() - started
        stderr.print(f"loaded {rows:,} rows in {load_seconds:.0f} s")
        maintenance = await rollups(db, settings.storage, now)
        stderr.print(f"maintain: {maintenance}")
        async with db.pool.acquire() as conn:
            server = await conn.fetchval("SHOW server_version")
            sizes = await conn.fetchrow(
                """
                SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) AS samples
                FROM pg_inherits WHERE inhparent = 'samples'::regclass
                """
            )
            reads = Reads(conn, settings.storage, devices, now, reps)
            return await repeat(
                "query",
                runs,
                reads.once,
                notes={
                    "series": n_series,
                    "days": days,
                    "rows": rows,
                    "samples_size": sizes["samples"],
                    "reps": reps,
                    "warmup_calls": WARMUP,
                    "load_seconds": round(load_seconds, 1),
                    **maintenance,
                    "baseline": "the same reads as hand-written SQL with asyncpg fetch: "
                    "LATERAL latest row per series, raw range, plain SELECT from samples_1h",
                    "server_version": server,
                    **environment(),
                },
            )
    finally:
        await db.stop()


if __name__ == "__main__":
    sys.exit(main(__doc__, options, bench))
