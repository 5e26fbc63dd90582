"""Rollups and the query path against real PostgreSQL: 5-minute and 1-hour aggregates
exactly as computed in Python, late data recomputed, last values, and range queries at
every resolution with the not-yet-rolled-up tail read from raw samples."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import asyncpg
import pytest

from netmon.config import Settings, load_settings
from netmon.errors import QueryError
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.maintenance import maintain
from netmon.store.partitions import floor_time
from netmon.store.queries import (
    MAX_POINTS,
    LastValue,
    RangePoint,
    choose_resolution,
    last_values,
    range_query,
)
from netmon.store.writer import SampleWriter
from tests.conftest import with_storage

MINUTE = timedelta(minutes=1)
FIVE = timedelta(minutes=5)
HOUR = timedelta(hours=1)
U64_MAX = 2**64 - 1
N = 180  # three hours of 1-minute samples

CPU = SeriesKey.of("r1", "cpu", {"cpu": "0"}, unit="%")
TEMP = SeriesKey.of("r1", "temperature", {"sensor": "inlet"}, unit="C")
OCTETS = SeriesKey.of("r1", "ifHCInOctets", {"ifName": "eth0"}, kind="counter", unit="B")
KEYS = (CPU, TEMP, OCTETS)

Value = int | float


def cpu_value(i: int) -> float:
    return (i * 7) % 23 + 0.5


def temp_value(i: int) -> int:
    return i % 11 - 3


def octets_value(i: int) -> int:
    # Rises to exactly 2**64 - 1 at the last minute.
    return U64_MAX - (N - 1 - i) * 1_000_003


VALUES: dict[SeriesKey, Callable[[int], Value]] = {
    CPU: cpu_value,
    TEMP: temp_value,
    OCTETS: octets_value,
}


@dataclass
class Loaded:
    base: datetime
    ids: dict[SeriesKey, int]
    points: dict[SeriesKey, list[tuple[datetime, Value]]]

    def id(self, key: SeriesKey) -> int:
        return self.ids[key]


@dataclass(frozen=True)
class Agg:
    min: Value
    max: Value
    avg: float
    count: int
    last: Value


def aggregate(points: Iterable[tuple[datetime, Value]], width: timedelta) -> dict[datetime, Agg]:
    """What a rollup of ``width`` must hold, computed in Python (exact avg via Fraction)."""
    buckets: dict[datetime, list[tuple[datetime, Value]]] = {}
    for t, v in points:
        buckets.setdefault(floor_time(t, width), []).append((t, v))
    result = {}
    for bucket, rows in buckets.items():
        rows.sort()
        values = [v for _, v in rows]
        total = sum(Fraction(v) for v in values)
        result[bucket] = Agg(
            min=min(values),
            max=max(values),
            avg=float(total / len(values)),
            count=len(values),
            last=values[-1],
        )
    return result


async def load(db: Database, settings: Settings, keys: Iterable[SeriesKey] = KEYS) -> Loaded:
    """Three hours of 1-minute samples, hour-aligned, ending at least an hour ago."""
    base = floor_time(datetime.now(UTC), HOUR) - 4 * HOUR
    points: dict[SeriesKey, list[tuple[datetime, Value]]] = {}
    samples = []
    for key in keys:
        points[key] = [(base + i * MINUTE, VALUES[key](i)) for i in range(N)]
        samples += [Sample(key, t, v) for t, v in points[key]]
    async with SampleWriter(db, settings) as writer:
        result = await writer.write(samples)
        assert (result.stored, result.rejected, result.spooled) == (len(samples), 0, 0)
        ids = {key: writer.series.get(key) for key in points}
    assert all(isinstance(i, int) for i in ids.values())
    return Loaded(base, {k: v for k, v in ids.items() if v is not None}, points)


async def rollup_rows(conn: asyncpg.Connection, table: str, series_id: int) -> dict[datetime, Agg]:
    rows = await conn.fetch(
        f"SELECT bucket, min, max, avg, count, last FROM {table} WHERE series_id = $1",
        series_id,
    )
    return {
        r["bucket"]: Agg(min=r["min"], max=r["max"], avg=r["avg"], count=r["count"], last=r["last"])
        for r in rows
    }


async def done_through(conn: asyncpg.Connection) -> dict[str, datetime | None]:
    rows = await conn.fetch("SELECT resolution, done_through FROM rollup_state")
    return {r["resolution"]: r["done_through"] for r in rows}


def assert_points(points: list[RangePoint], expected: dict[datetime, Agg], exact_avg: bool) -> None:
    assert [p.time for p in points] == sorted(expected)
    for p in points:
        want = expected[p.time]
        assert (p.min, p.max, p.last, p.count) == (want.min, want.max, want.last, want.count), p
        assert type(p.min) is type(want.min)
        assert type(p.last) is type(want.last)
        if exact_avg:
            assert p.avg == want.avg, p
        else:
            assert p.avg == pytest.approx(want.avg, rel=1e-12), p


def assert_hourly(got: dict[datetime, Agg], want: dict[datetime, Agg]) -> None:
    assert sorted(got) == sorted(want)
    for bucket, agg in want.items():
        row = got[bucket]
        assert (row.min, row.max, row.count, row.last) == (agg.min, agg.max, agg.count, agg.last)
        assert row.avg == pytest.approx(agg.avg, rel=1e-12)


# -- rollups -------------------------------------------------------------------------------


async def test_rollups_equal_python_aggregates(db, settings, conn):
    data = await load(db, settings)
    now = data.base + 3 * HOUR + 10 * MINUTE
    report = await maintain(db, settings.storage, now=now)

    assert report.rollups.rows_5m == 3 * 36
    assert report.rollups.rows_1h == 3 * 3
    assert report.rollups.done_5m == data.base + 3 * HOUR + 5 * MINUTE  # now - 2 min, floored
    assert report.rollups.done_1h == data.base + 3 * HOUR
    assert await done_through(conn) == {
        "5m": data.base + 3 * HOUR + 5 * MINUTE,
        "1h": data.base + 3 * HOUR,
    }
    for key in KEYS:
        sid = data.id(key)
        five = await rollup_rows(conn, "samples_5m", sid)
        want5 = aggregate(data.points[key], FIVE)
        assert len(want5) == 36
        # min, max, count, last exactly; avg exactly the nearest double of the true mean.
        assert five == want5, key.metric
        assert_hourly(await rollup_rows(conn, "samples_1h", sid), aggregate(data.points[key], HOUR))

    octets = await rollup_rows(conn, "samples_5m", data.id(OCTETS))
    top = octets[data.base + 175 * MINUTE]
    assert top.max == U64_MAX
    assert top.last == U64_MAX
    assert int(top.max) == 18446744073709551615

    # Idempotent: the same run again computes nothing and changes nothing.
    before = {k: await rollup_rows(conn, "samples_5m", data.id(k)) for k in KEYS}
    again = await maintain(db, settings.storage, now=now)
    assert (again.rollups.rows_5m, again.rollups.rows_1h) == (0, 0)
    assert {k: await rollup_rows(conn, "samples_5m", data.id(k)) for k in KEYS} == before


async def test_rollups_advance_only_over_closed_buckets(db, settings, conn):
    data = await load(db, settings)
    # 1h 7m after base: lateness 2 min -> 5-minute buckets before 1h05m, hours before 1h.
    report = await maintain(db, settings.storage, now=data.base + HOUR + 7 * MINUTE)
    assert report.rollups.done_5m == data.base + HOUR + 5 * MINUTE
    assert report.rollups.done_1h == data.base + HOUR
    assert report.rollups.rows_5m == 3 * 13
    assert report.rollups.rows_1h == 3
    five = await rollup_rows(conn, "samples_5m", data.id(CPU))
    assert max(five) == data.base + HOUR
    hours = await rollup_rows(conn, "samples_1h", data.id(CPU))
    assert list(hours) == [data.base]

    # Time moves on: the next run continues where the last one stopped.
    report = await maintain(db, settings.storage, now=data.base + 2 * HOUR + 3 * MINUTE)
    assert report.rollups.done_5m == data.base + 2 * HOUR
    assert report.rollups.rows_5m == 3 * 11
    assert report.rollups.rows_1h == 3
    assert await rollup_rows(conn, "samples_5m", data.id(CPU)) == {
        b: a for b, a in aggregate(data.points[CPU], FIVE).items() if b < data.base + 2 * HOUR
    }


async def test_late_sample_lowers_watermark_and_bucket_is_recomputed(db, settings, conn):
    data = await load(db, settings)
    now = data.base + 3 * HOUR + 10 * MINUTE
    await maintain(db, settings.storage, now=now)
    bucket = data.base + 30 * MINUTE
    late_time = bucket + 4 * MINUTE + timedelta(seconds=30)
    assert (await rollup_rows(conn, "samples_5m", data.id(CPU)))[bucket].count == 5

    async with SampleWriter(db, settings) as writer:
        result = await writer.write([Sample(CPU, late_time, 100.25)])
    assert result.stored == 1
    # Only lowered, to the buckets holding the late sample.
    assert await done_through(conn) == {"5m": bucket, "1h": data.base}
    # Not recomputed yet: the rollup still has the old bucket.
    assert (await rollup_rows(conn, "samples_5m", data.id(CPU)))[bucket].count == 5

    report = await maintain(db, settings.storage, now=now)
    # Everything from the lowered mark on is upserted again (30 buckets, 3 series).
    assert report.rollups.rows_5m == 3 * 30
    assert report.rollups.rows_1h == 3 * 3
    assert await done_through(conn) == {
        "5m": data.base + 3 * HOUR + 5 * MINUTE,
        "1h": data.base + 3 * HOUR,
    }
    points = sorted([*data.points[CPU], (late_time, 100.25)])
    want5 = aggregate(points, FIVE)
    got5 = await rollup_rows(conn, "samples_5m", data.id(CPU))
    assert got5 == want5
    assert got5[bucket].count == 6
    assert got5[bucket].max == 100.25
    assert got5[bucket].last == 100.25
    got1 = await rollup_rows(conn, "samples_1h", data.id(CPU))
    assert got1[data.base].count == 61
    assert_hourly(got1, aggregate(points, HOUR))


async def test_late_sample_inside_lateness_window_leaves_watermark(db, settings, conn):
    data = await load(db, settings)
    await maintain(db, settings.storage, now=data.base + HOUR + 10 * MINUTE)
    marks = await done_through(conn)
    # A sample newer than now - rollup_lateness is not late: nothing to lower.
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(CPU, datetime.now(UTC), 1.0)])
    assert await done_through(conn) == marks


# -- last values ---------------------------------------------------------------------------


async def test_last_values_newest_within_lookback(db, settings, conn):
    data = await load(db, settings)
    stale = SeriesKey.of("r2", "cpu", {"cpu": "0"})
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(stale, data.base, 42.0)])
        stale_id = writer.series.get(stale)
    assert stale_id is not None
    ids = [data.id(k) for k in KEYS]
    end = data.base + 3 * HOUR

    got = await last_values(conn, [*ids, stale_id, 987654], lookback=HOUR, now=end)
    assert sorted(got, key=lambda v: v.series_id) == sorted(
        [LastValue(data.id(k), data.base + (N - 1) * MINUTE, VALUES[k](N - 1)) for k in KEYS],
        key=lambda v: v.series_id,
    )
    by_id = {v.series_id: v for v in got}
    octets = by_id[data.id(OCTETS)].value
    assert octets == U64_MAX
    assert type(octets) is int
    assert type(by_id[data.id(TEMP)].value) is int
    assert type(by_id[data.id(CPU)].value) is float
    assert stale_id not in by_id
    assert 987654 not in by_id

    # `now` bounds it from above too: samples after it are not "last".
    mid = data.base + 90 * MINUTE + timedelta(seconds=30)
    got = await last_values(conn, ids, lookback=10 * MINUTE, now=mid)
    assert {v.series_id: (v.time, v.value) for v in got} == {
        data.id(k): (data.base + 90 * MINUTE, VALUES[k](90)) for k in KEYS
    }
    # A lookback that reaches the stale series' only sample finds it.
    got = await last_values(conn, [stale_id], lookback=5 * HOUR, now=end)
    assert got == [LastValue(stale_id, data.base, 42)]
    # Nothing in the window: nothing returned.
    assert await last_values(conn, ids, lookback=HOUR, now=data.base - MINUTE) == []
    assert await last_values(conn, [], now=end) == []


async def test_last_values_default_lookback_with_real_clock(db, settings, conn):
    key = SeriesKey.of("r9", "uptime", kind="counter")
    now = datetime.now(UTC)
    async with SampleWriter(db, settings) as writer:
        await writer.write(
            [Sample(key, now - 2 * HOUR, 1), Sample(key, now - 30 * MINUTE, U64_MAX)]
        )
        sid = writer.series.get(key)
    assert sid is not None
    assert await last_values(conn, [sid]) == [LastValue(sid, now - 30 * MINUTE, U64_MAX)]
    assert await last_values(conn, [sid], lookback=10 * MINUTE) == []


# -- range queries -------------------------------------------------------------------------


async def test_range_raw_points_in_order(db, settings, conn):
    data = await load(db, settings)
    sid = data.id(OCTETS)
    start, end = data.base + 10 * MINUTE, data.base + 20 * MINUTE
    result = await range_query(conn, sid, start, end, None, settings.storage, now=end)
    assert result.resolution == "raw"
    assert (result.series_id, result.start, result.end, result.step) == (sid, start, end, None)
    assert [p.time for p in result.points] == [start + i * MINUTE for i in range(10)]
    for i, p in enumerate(result.points, start=10):
        v = octets_value(i)
        assert (p.min, p.max, p.last, p.count) == (v, v, v, 1)
        assert type(p.last) is int
        assert p.avg == float(v)
    # [start, end): the sample at `end` itself is not included; the last one is exact.
    tail = await range_query(
        conn, sid, data.base + (N - 1) * MINUTE, data.base + N * MINUTE, None, settings.storage
    )
    assert [p.last for p in tail.points] == [U64_MAX]

    cpu = await range_query(conn, data.id(CPU), start, end, None, settings.storage, now=end)
    assert [(p.time, p.last) for p in cpu.points] == data.points[CPU][10:20]


async def test_range_raw_with_short_step(db, settings, conn):
    data = await load(db, settings)
    start, end = data.base, data.base + HOUR
    step = 2 * MINUTE
    result = await range_query(conn, data.id(TEMP), start, end, step, settings.storage, now=end)
    assert result.resolution == "raw"
    assert result.step == step
    want = aggregate([(t, v) for t, v in data.points[TEMP] if t < end], step)
    assert len(want) == 30
    assert_points(result.points, want, exact_avg=True)


async def test_range_from_rollups_5m_and_1h(db, settings, conn):
    data = await load(db, settings)
    now = data.base + 3 * HOUR + 10 * MINUTE
    await maintain(db, settings.storage, now=now)
    start, end = data.base, data.base + 3 * HOUR

    for key in KEYS:
        sid = data.id(key)
        five = await range_query(conn, sid, start, end, FIVE, settings.storage, now=now)
        assert five.resolution == "5m"
        assert len(five.points) == 36
        # avg from a rollup is sum(avg * count) / sum(count) in double precision: within
        # an ulp or so of the true mean, not bit-exact.
        assert_points(five.points, aggregate(data.points[key], FIVE), exact_avg=False)

        hour = await range_query(conn, sid, start, end, HOUR, settings.storage, now=now)
        assert hour.resolution == "1h"
        assert len(hour.points) == 3
        assert_points(hour.points, aggregate(data.points[key], HOUR), exact_avg=False)

        quarter = await range_query(conn, sid, start, end, 15 * MINUTE, settings.storage, now=now)
        assert quarter.resolution == "5m"
        assert [p.count for p in quarter.points] == [15] * 12
        assert_points(quarter.points, aggregate(data.points[key], 15 * MINUTE), exact_avg=False)

    hour = await range_query(conn, data.id(OCTETS), start, end, HOUR, settings.storage, now=now)
    assert hour.points[-1].max == U64_MAX
    assert type(hour.points[-1].max) is int

    # The rollup really is the source: change one stored bucket and the answer follows.
    await conn.execute(
        "UPDATE samples_5m SET max = 999 WHERE series_id = $1 AND bucket = $2",
        data.id(CPU),
        data.base + 5 * MINUTE,
    )
    five = await range_query(conn, data.id(CPU), start, end, FIVE, settings.storage, now=now)
    assert five.points[1].max == 999


async def test_range_tail_past_done_through_comes_from_raw(db, settings, conn):
    data = await load(db, settings)
    await maintain(db, settings.storage, now=data.base + HOUR + 10 * MINUTE)
    done = await done_through(conn)
    assert done == {"5m": data.base + HOUR + 5 * MINUTE, "1h": data.base + HOUR}
    assert (
        await conn.fetchval("SELECT count(*) FROM samples_5m WHERE bucket >= $1", done["5m"]) == 0
    )
    now = data.base + 3 * HOUR + 10 * MINUTE
    start, end = data.base, data.base + 3 * HOUR
    for key in KEYS:
        sid = data.id(key)
        five = await range_query(conn, sid, start, end, FIVE, settings.storage, now=now)
        assert five.resolution == "5m"
        assert_points(five.points, aggregate(data.points[key], FIVE), exact_avg=False)
        hour = await range_query(conn, sid, start, end, HOUR, settings.storage, now=now)
        assert hour.resolution == "1h"
        assert_points(hour.points, aggregate(data.points[key], HOUR), exact_avg=False)
        # 15-minute steps: the step 1h00-1h15 is one rollup bucket plus ten raw samples.
        quarter = await range_query(conn, sid, start, end, 15 * MINUTE, settings.storage, now=now)
        assert quarter.resolution == "5m"
        assert [p.count for p in quarter.points] == [15] * 12
        assert_points(quarter.points, aggregate(data.points[key], 15 * MINUTE), exact_avg=False)

    # Prove the split: the rolled-up head from samples_5m, the tail from raw samples.
    await conn.execute("UPDATE samples_5m SET count = 1000 WHERE series_id = $1", data.id(CPU))
    five = await range_query(conn, data.id(CPU), start, end, FIVE, settings.storage, now=now)
    assert [p.count for p in five.points] == [1000] * 13 + [5] * 23

    # Nothing rolled up yet at all: the whole range from raw.
    await conn.execute("UPDATE rollup_state SET done_through = NULL")
    five = await range_query(conn, data.id(TEMP), start, end, FIVE, settings.storage, now=now)
    assert_points(five.points, aggregate(data.points[TEMP], FIVE), exact_avg=True)


async def test_range_over_data_older_than_raw_retention_uses_rollups(db, settings, conn):
    data = await load(db, settings)
    now = data.base + 4 * HOUR + 10 * MINUTE
    await maintain(db, settings.storage, now=now)
    # Raw data is gone for this range: the answer can only come from the rollups.
    await conn.execute("TRUNCATE samples")
    start, end = data.base, data.base + HOUR

    short_raw = with_storage(settings, raw_retention="2h").storage
    assert choose_resolution(start, MINUTE, short_raw, now) == "5m"
    result = await range_query(conn, data.id(CPU), start, end, MINUTE, short_raw, now=now)
    assert result.resolution == "5m"
    want = {b: a for b, a in aggregate(data.points[CPU], FIVE).items() if b < end}
    assert_points(result.points, want, exact_avg=False)
    with pytest.raises(QueryError, match="give a step"):
        await range_query(conn, data.id(CPU), start, end, None, short_raw, now=now)

    short_5m = with_storage(settings, raw_retention="1h", rollup_5m_retention="3h").storage
    assert choose_resolution(start, FIVE, short_5m, now) == "1h"
    result = await range_query(
        conn, data.id(OCTETS), start, end + 2 * HOUR, FIVE, short_5m, now=now
    )
    assert result.resolution == "1h"
    assert_points(result.points, aggregate(data.points[OCTETS], HOUR), exact_avg=False)


def test_choose_resolution():
    storage = load_settings(None).storage
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    recent = now - HOUR
    assert choose_resolution(recent, None, storage, now) == "raw"
    assert choose_resolution(recent, MINUTE, storage, now) == "raw"
    assert choose_resolution(recent, FIVE - timedelta(seconds=1), storage, now) == "raw"
    assert choose_resolution(recent, FIVE, storage, now) == "5m"
    assert choose_resolution(recent, 30 * MINUTE, storage, now) == "5m"
    assert choose_resolution(recent, HOUR, storage, now) == "1h"
    assert choose_resolution(recent, timedelta(days=1), storage, now) == "1h"
    # Beyond raw retention (30 days): 5-minute; beyond 5-minute retention (180 days): 1-hour.
    assert choose_resolution(now - timedelta(days=29), MINUTE, storage, now) == "raw"
    assert choose_resolution(now - timedelta(days=31), None, storage, now) == "5m"
    assert choose_resolution(now - timedelta(days=31), MINUTE, storage, now) == "5m"
    assert choose_resolution(now - timedelta(days=31), HOUR, storage, now) == "1h"
    assert choose_resolution(now - timedelta(days=181), MINUTE, storage, now) == "1h"
    assert choose_resolution(now - timedelta(days=181), FIVE, storage, now) == "1h"


async def test_range_query_errors(conn, settings):
    storage = settings.storage
    now = datetime.now(UTC)
    start = now - HOUR
    with pytest.raises(QueryError, match="after start"):
        await range_query(conn, 1, start, start, None, storage, now=now)
    with pytest.raises(QueryError, match="after start"):
        await range_query(conn, 1, start, start - MINUTE, FIVE, storage, now=now)
    naive = datetime(2026, 1, 1, 12)
    with pytest.raises(QueryError, match="timezone"):
        await range_query(conn, 1, naive, naive + HOUR, None, storage, now=now)
    with pytest.raises(QueryError, match="timezone"):
        await range_query(conn, 1, start, now.replace(tzinfo=None), None, storage, now=now)
    with pytest.raises(QueryError, match="positive"):
        await range_query(conn, 1, start, now, timedelta(0), storage, now=now)
    # 1 day at 7 s is 12,342 points, more than 11,000.
    with pytest.raises(QueryError, match="at most 11000"):
        await range_query(conn, 1, now - timedelta(days=1), now, timedelta(seconds=7), storage)
    with pytest.raises(QueryError, match="points"):
        await range_query(conn, 1, now - timedelta(days=30), now, MINUTE, storage, now=now)
    # Exactly the limit is fine.
    ok = await range_query(
        conn, 1, now - MAX_POINTS * MINUTE, now, MINUTE, storage, now=now, resolution="raw"
    )
    assert ok.points == []
    with pytest.raises(QueryError, match="give a step"):
        await range_query(conn, 1, start, now, None, storage, now=now, resolution="5m")


async def test_range_with_unaligned_start_counts_every_sample_once(db, settings, conn):
    """A dashboard's start is rarely on the 5-minute grid. Where rollups end and raw
    samples take over, no sample may be counted twice (nor dropped)."""
    data = await load(db, settings)
    await maintain(db, settings.storage, now=data.base + HOUR + 10 * MINUTE)
    done = (await done_through(conn))["5m"]
    assert done == data.base + HOUR + 5 * MINUTE
    now = data.base + 3 * HOUR + 10 * MINUTE
    start, end = data.base + 2 * MINUTE, data.base + 3 * HOUR
    for step in (FIVE, 15 * MINUTE, 7 * MINUTE):
        result = await range_query(conn, data.id(TEMP), start, end, step, settings.storage, now=now)
        assert result.resolution == "5m"
        times = [p.time for p in result.points]
        assert times == sorted(set(times)), f"step {step}: a step appears twice"
        # Steps from rollups start on the rollup grid, at the bucket holding ``start``
        # (data.base); from there on, every sample is in exactly one point.
        first_bucket = data.base
        assert result.points[0].time == first_bucket
        samples = [v for t, v in data.points[TEMP] if first_bucket <= t < end]
        assert sum(p.count for p in result.points) == len(samples), f"step {step}"
        assert min(p.min for p in result.points) == min(samples)
        assert max(p.max for p in result.points) == max(samples)
        assert result.points[-1].last == data.points[TEMP][-1][1]
        total = sum(p.avg * p.count for p in result.points)
        assert total == pytest.approx(sum(samples), rel=1e-12), f"step {step}"
