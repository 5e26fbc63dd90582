"""The read path: latest values and range queries at the resolution that fits.

A range is answered from raw samples, the 5-minute or the 1-hour rollup according to its
step and age; the part of the range the rollups do not cover yet (newer than their
``done_through``) is aggregated from raw samples on the fly, so a range never has a hole
at its recent end. Every query carries a time bound, so the planner prunes partitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import msgspec

from netmon.config import StorageSettings
from netmon.errors import QueryError
from netmon.store.devices import DEVICE_COLUMNS
from netmon.store.partitions import floor_time
from netmon.store.rollups import FIVE_MINUTES, ONE_HOUR

__all__ = [
    "LastValue",
    "RangePoint",
    "RangeResult",
    "Resolution",
    "choose_resolution",
    "device_detail_counted",
    "fill_last_values",
    "highest_series_id",
    "last_values",
    "range_query",
    "series_rows",
]

Resolution = Literal["raw", "5m", "1h"]

MAX_POINTS = 11_000  # as Prometheus: beyond this a graph cannot show the detail anyway
DEFAULT_LOOKBACK = timedelta(hours=1)


class LastValue(msgspec.Struct, frozen=True, gc=False):
    series_id: int
    time: datetime
    value: int | float


class RangePoint(msgspec.Struct, frozen=True, gc=False):
    """One step of a range. For raw data without a step, min = max = avg = last."""

    time: datetime
    avg: float
    min: int | float
    max: int | float
    last: int | float
    count: int


class RangeResult(msgspec.Struct, frozen=True, gc=False):
    series_id: int
    start: datetime
    end: datetime
    step: timedelta | None
    resolution: Resolution
    points: list[RangePoint]


def _number(text: str) -> int | float:
    """numeric, read as text -> int when written without a fraction (counters keep all 64
    bits), else float. Text is parsed faster than asyncpg's Decimal and converted once."""
    if "." in text or "N" in text or "n" in text:  # 12.5, NaN, Infinity
        return float(text)
    return int(text)


_LAST = """
SELECT s.id, l.time, l.value::text AS value
FROM unnest($1::bigint[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT time, value FROM samples
    WHERE series_id = s.id AND time >= $2 AND time <= $3
    ORDER BY time DESC LIMIT 1
) l
"""


async def last_values(
    conn: asyncpg.Connection,
    series_ids: Sequence[int],
    lookback: timedelta = DEFAULT_LOOKBACK,
    now: datetime | None = None,
) -> list[LastValue]:
    """The newest sample of each series within ``lookback`` (series with none are left out).

    The bound is what keeps this fast: without it the scan steps through every empty
    future partition."""
    now = now or datetime.now(UTC)
    rows = await conn.fetch(_LAST, list(series_ids), now - lookback, now)
    return [LastValue(id_, time, _number(value)) for id_, time, value in rows]


# The fill of an API process's last-value cache (netmon.api.last_values): a chunk of
# series by id, what each measures, and its newest sample in [$3, $4] (one index probe a
# series and partition: the window bounds the partitions).
_FILL = """
SELECT s.id, s.device_id, s.metric, s.labels::text, s.unit, s.kind, l.time, l.value::text
FROM (SELECT * FROM series WHERE id > $1 ORDER BY id LIMIT $2) s
LEFT JOIN LATERAL (
    SELECT time, value FROM samples
    WHERE series_id = s.id AND time >= $3 AND time <= $4
    ORDER BY time DESC LIMIT 1
) l ON true
ORDER BY s.id
"""

# A device as ``store.devices.device_detail`` reads it, with how many series it has: an
# API process answers its interfaces from memory only if it knows all of them.
_DEVICE_DETAIL = f"""
SELECT {DEVICE_COLUMNS}, h.last_success, h.last_error_class, h.last_error, h.last_error_at,
       h.duration_ms, h.consecutive_failures, h.overruns,
       (SELECT count(*) FROM series s WHERE s.device_id = d.id) AS series_count
FROM devices d LEFT JOIN poll_health h ON h.device_id = d.id
WHERE d.id = $1
"""

_SERIES_ROWS = """
SELECT id, device_id, metric, labels::text, unit, kind FROM series
WHERE id = ANY($1::bigint[])
"""


async def fill_last_values(
    conn: asyncpg.Connection, after_id: int, limit: int, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """Up to ``limit`` series with ids above ``after_id``, ascending: (id, device_id,
    metric, labels as JSON text, unit, kind, newest time in [since, until] or null, its
    value as text or null)."""
    return list(await conn.fetch(_FILL, after_id, limit, since, until))


async def device_detail_counted(conn: asyncpg.Connection, device_id: int) -> asyncpg.Record | None:
    """The device with its poll health (as ``store.devices.device_detail``) and
    ``series_count``."""
    row: asyncpg.Record | None = await conn.fetchrow(_DEVICE_DETAIL, device_id)
    return row


async def highest_series_id(conn: asyncpg.Connection) -> int | None:
    """The highest series id there is (None without series)."""
    highest: int | None = await conn.fetchval("SELECT max(id) FROM series")
    return highest


async def series_rows(conn: asyncpg.Connection, ids: Sequence[int]) -> list[asyncpg.Record]:
    """(id, device_id, metric, labels as JSON text, unit, kind) of the series ``ids``."""
    return list(await conn.fetch(_SERIES_ROWS, list(ids)))


def choose_resolution(
    start: datetime, step: timedelta | None, storage: StorageSettings, now: datetime
) -> Resolution:
    """The coarsest resolution no coarser than ``step`` that still holds data for
    ``start``: raw for short steps, rollups for long ones and for old data."""
    age = now - start
    if step is None or step < FIVE_MINUTES:
        wanted: Resolution = "raw"
    elif step < ONE_HOUR:
        wanted = "5m"
    else:
        wanted = "1h"
    if wanted == "raw" and age > storage.raw_retention:
        wanted = "5m"
    if wanted == "5m" and age > storage.rollup_5m_retention:
        wanted = "1h"
    return wanted


_RAW = """
SELECT time, value::text AS value FROM samples
WHERE series_id = $1 AND time >= $2 AND time < $3
ORDER BY time
"""

_RAW_STEPPED = """
SELECT date_bin($4::interval, time, $5::timestamptz) AS t,
       avg(value)::double precision AS avg, min(value)::text AS min,
       max(value)::text AS max, (array_agg(value ORDER BY time DESC))[1]::text AS last,
       count(*) AS count
FROM samples
WHERE series_id = $1 AND time >= $2 AND time < $3
GROUP BY 1 ORDER BY 1
"""

_ROLLUP_STEPPED = """
SELECT date_bin($4::interval, bucket, $5::timestamptz) AS t,
       sum(avg * count) / sum(count) AS avg, min(min)::text AS min, max(max)::text AS max,
       (array_agg(last ORDER BY bucket DESC))[1]::text AS last, sum(count)::bigint AS count
FROM {table}
WHERE series_id = $1 AND bucket >= $2 AND bucket < $3
GROUP BY 1 ORDER BY 1
"""

# A step equal to the rollup width: the rows are the points, nothing to aggregate.
_ROLLUP_ROWS = """
SELECT bucket AS t, avg, min::text AS min, max::text AS max, last::text AS last, count
FROM {table}
WHERE series_id = $1 AND bucket >= $2 AND bucket < $3
ORDER BY bucket
"""


def _point(row: asyncpg.Record) -> RangePoint:
    # Positional: (t, avg, min, max, last, count), as every stepped query selects them;
    # a third cheaper than by name at hundreds of points a request.
    t, avg, low, high, last, count = row
    return RangePoint(t, float(avg), _number(low), _number(high), _number(last), int(count))


def _merge(a: RangePoint, b: RangePoint) -> RangePoint:
    """One step made of rollup buckets (``a``) and the raw samples after them (``b``)."""
    count = a.count + b.count
    return RangePoint(
        time=a.time,
        avg=(a.avg * a.count + b.avg * b.count) / count,
        min=min(a.min, b.min),
        max=max(a.max, b.max),
        last=b.last,
        count=count,
    )


async def range_query(
    conn: asyncpg.Connection,
    series_id: int,
    start: datetime,
    end: datetime,
    step: timedelta | None,
    storage: StorageSettings,
    now: datetime | None = None,
    resolution: Resolution | None = None,
) -> RangeResult:
    """Points of one series in [start, end). ``step=None`` returns raw samples as stored."""
    now = now or datetime.now(UTC)
    if start.tzinfo is None or end.tzinfo is None:
        raise QueryError("start and end must carry a timezone")
    if end <= start:
        raise QueryError("end must be after start")
    span = end - start
    if step is not None and step <= timedelta(0):
        raise QueryError("step must be positive")
    if step is not None and span / step > MAX_POINTS:
        raise QueryError(
            f"{span} at step {step} is {int(span / step)} points; at most {MAX_POINTS} "
            f"(use a step of at least {span / MAX_POINTS})"
        )
    res = resolution or choose_resolution(start, step, storage, now)
    if step is None and res != "raw":
        raise QueryError("raw samples are no longer kept for that time; give a step")

    if step is None:
        rows = await conn.fetch(_RAW, series_id, start, end)
        points: list[RangePoint] = []
        for r in rows:
            v = _number(r["value"])
            points.append(RangePoint(time=r["time"], avg=float(v), min=v, max=v, last=v, count=1))
        return RangeResult(series_id, start, end, None, "raw", points)

    if res == "raw":
        rows = await conn.fetch(_RAW_STEPPED, series_id, start, end, step, start)
        return RangeResult(series_id, start, end, step, res, [_point(r) for r in rows])

    table, width = ("samples_5m", FIVE_MINUTES) if res == "5m" else ("samples_1h", ONE_HOUR)
    # Rollup buckets sit on an epoch-aligned grid: steps start on it too, at the bucket
    # that holds ``start`` (the first point may include samples from just before it).
    origin = floor_time(start, width)
    done: datetime | None = await conn.fetchval(
        "SELECT done_through FROM rollup_state WHERE resolution = $1", res
    )
    # Rollups cover whole buckets before ``done``; the rest comes from raw samples. The cut
    # is on the bucket grid, so no sample is read from both sources; a step that straddles
    # the cut gets its two parts merged.
    cut = origin if done is None else max(origin, floor_time(min(end, done), width))
    points = []
    if cut > origin:
        if step == width:
            rows = await conn.fetch(_ROLLUP_ROWS.format(table=table), series_id, origin, cut)
        else:
            sql = _ROLLUP_STEPPED.format(table=table)
            rows = await conn.fetch(sql, series_id, origin, cut, step, origin)
        points += [_point(r) for r in rows]
    if cut < end:
        for r in await conn.fetch(_RAW_STEPPED, series_id, cut, end, step, origin):
            point = _point(r)
            if points and points[-1].time == point.time:
                points[-1] = _merge(points[-1], point)
            else:
                points.append(point)
    return RangeResult(series_id, start, end, step, res, points)
