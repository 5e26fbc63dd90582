"""5-minute and 1-hour rollups (min, max, avg, count, last) for closed intervals.

Progress is kept in ``rollup_state.done_through`` per resolution. The writer lowers that
mark when it stores samples older than it (late data, a spool replayed after an outage),
so those buckets are computed again: rollups are upserts, never appends. Maintenance holds
the state row (FOR UPDATE) across each step, so a writer's lowering is never lost to a
concurrent advance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from netmon.store.partitions import PartitionedTable, ensure_partitions, floor_time

__all__ = ["FIVE_MINUTES", "ONE_HOUR", "RollupResult", "compute_rollups", "lower_watermarks"]

FIVE_MINUTES = timedelta(minutes=5)
ONE_HOUR = timedelta(hours=1)
CHUNK = timedelta(hours=6)

Progress = Callable[[str, float], None]

_ROLLUP_5M = """
INSERT INTO samples_5m (series_id, bucket, min, max, avg, count, last)
SELECT series_id, date_bin('5 minutes', time, 'epoch'), min(value), max(value),
       avg(value)::double precision, count(*), (array_agg(value ORDER BY time DESC))[1]
FROM samples
WHERE time >= $1 AND time < $2
GROUP BY 1, 2
ON CONFLICT (series_id, bucket) DO UPDATE SET
    min = EXCLUDED.min, max = EXCLUDED.max, avg = EXCLUDED.avg,
    count = EXCLUDED.count, last = EXCLUDED.last
"""

_ROLLUP_1H = """
INSERT INTO samples_1h (series_id, bucket, min, max, avg, count, last)
SELECT series_id, date_bin('1 hour', bucket, 'epoch'), min(min), max(max),
       sum(avg * count) / sum(count), sum(count), (array_agg(last ORDER BY bucket DESC))[1]
FROM samples_5m
WHERE bucket >= $1 AND bucket < $2
GROUP BY 1, 2
ON CONFLICT (series_id, bucket) DO UPDATE SET
    min = EXCLUDED.min, max = EXCLUDED.max, avg = EXCLUDED.avg,
    count = EXCLUDED.count, last = EXCLUDED.last
"""

LOWER_WATERMARKS = """
UPDATE rollup_state
SET done_through = date_bin(
    CASE resolution WHEN '5m' THEN interval '5 minutes' ELSE interval '1 hour' END,
    $1::timestamptz, 'epoch')
WHERE done_through > $1::timestamptz
"""


@dataclass
class RollupResult:
    rows_5m: int = 0
    rows_1h: int = 0
    done_5m: datetime | None = None
    done_1h: datetime | None = None


async def lower_watermarks(conn: asyncpg.Connection, oldest: datetime) -> None:
    """Make the next maintenance run recompute buckets from ``oldest`` on."""
    await conn.execute(LOWER_WATERMARKS, oldest)


async def _earliest(conn: asyncpg.Connection, table: str, column: str) -> datetime | None:
    value: datetime | None = await conn.fetchval(f"SELECT min({column}) FROM {table}")
    return value


async def _advance(
    conn: asyncpg.Connection,
    resolution: str,
    source: tuple[str, str],
    sql: str,
    width: timedelta,
    target: datetime,
    dest: PartitionedTable,
    lock_timeout: timedelta,
    progress: Progress | None,
) -> tuple[int, datetime | None]:
    rows = 0
    done: datetime | None = None
    first: datetime | None = None
    while True:
        async with conn.transaction():
            done = await conn.fetchval(
                "SELECT done_through FROM rollup_state WHERE resolution = $1 FOR UPDATE",
                resolution,
            )
            start = done if done is not None else await _earliest(conn, *source)
            if start is None:
                return rows, done
            start = floor_time(start, width)
            if first is None:
                first = start
            if start >= target:
                return rows, done
            end = min(start + CHUNK, target)
            await ensure_partitions(conn, dest, start, end, lock_timeout)
            status = await conn.execute(sql, start, end)
            rows += int(status.rsplit(" ", 1)[-1])
            await conn.execute(
                "UPDATE rollup_state SET done_through = $2 WHERE resolution = $1", resolution, end
            )
        if progress is not None:
            span = (target - first).total_seconds() or 1.0
            progress(resolution, (end - first).total_seconds() / span)


async def compute_rollups(
    conn: asyncpg.Connection,
    tables: dict[str, PartitionedTable],
    now: datetime,
    lateness: timedelta,
    lock_timeout: timedelta,
    progress: Progress | None = None,
) -> RollupResult:
    result = RollupResult()
    target_5m = floor_time(now - lateness, FIVE_MINUTES)
    result.rows_5m, result.done_5m = await _advance(
        conn, "5m", ("samples", "time"), _ROLLUP_5M, FIVE_MINUTES, target_5m,
        tables["samples_5m"], lock_timeout, progress,
    )  # fmt: skip
    done_5m = await conn.fetchval("SELECT done_through FROM rollup_state WHERE resolution = '5m'")
    if done_5m is not None:
        result.rows_1h, result.done_1h = await _advance(
            conn, "1h", ("samples_5m", "bucket"), _ROLLUP_1H, ONE_HOUR,
            floor_time(done_5m, ONE_HOUR), tables["samples_1h"], lock_timeout, progress,
        )  # fmt: skip
    return result
