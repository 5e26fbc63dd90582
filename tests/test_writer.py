"""The write path against real PostgreSQL (system and embedded): idempotence, exact values,
rejection, events, series identity, and a full spool that counts what it drops."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog

from netmon.config import Settings, load_settings
from netmon.errors import DatabaseUnavailableError
from netmon.records import U64_MAX, DeviceEvent, Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.writer import SampleWriter
from tests.write_helpers import closed_url, expected, spool_files, stored, wait_until

# Piccolo warns when the engine cannot reach the server: some tests do that on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*Unable to (connect to database|fetch server version)"
)

NOW = datetime.now(UTC).replace(microsecond=0)
BASE = NOW - timedelta(hours=1)


def key(i: int, *, device: str | None = None) -> SeriesKey:
    return SeriesKey.of(
        device or f"dev{i % 3}", "ifHCInOctets", {"ifName": f"eth{i}"}, kind="counter", unit="B"
    )


def grid(n_series: int, times: range, *, base: datetime = BASE, offset: int = 0) -> list[Sample]:
    """n_series x len(times) samples; value encodes both, plus ``offset``."""
    return [
        Sample(key(i), base + timedelta(seconds=t), i * 1_000_000 + t + offset)
        for t in times
        for i in range(n_series)
    ]


async def count(conn: asyncpg.Connection, table: str = "samples") -> int:
    n: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return n


@pytest.fixture
async def writer(db: Database, settings: Settings) -> AsyncIterator[SampleWriter]:
    async with SampleWriter(db, settings) as w:
        yield w


def unreachable_settings(settings: Settings, **writer: object) -> Settings:
    """The test's settings (same data_dir, so the same spool) but a database nobody serves."""
    return load_settings(
        None,
        data_dir=settings.data_dir,
        database={"url": closed_url(), "connect_timeout": "2s"},
        writer={"retry_interval": "100ms", **writer},
    )


async def unreachable_database(settings: Settings) -> Database:
    database = Database(settings.database, settings.data_dir)
    with pytest.raises(DatabaseUnavailableError):
        await database.start()
    return database


# -- idempotence ---------------------------------------------------------------------------


async def test_redelivered_batch_adds_nothing(writer, conn):
    batch = grid(10, range(10))
    first = await writer.write(batch)
    assert (first.stored, first.duplicates, first.spooled, first.rejected) == (100, 0, 0, 0)
    assert await count(conn) == 100

    again = await writer.write(batch)
    assert (again.stored, again.duplicates, again.spooled) == (0, 100, 0)
    assert again.accepted == 100
    assert await count(conn) == 100
    assert await stored(conn) == expected(batch)
    assert (writer.stats.stored, writer.stats.duplicates) == (100, 100)


async def test_partly_overlapping_batch_stores_only_new_rows(writer, conn):
    first = grid(5, range(0, 50))
    # Overlapping rows carry different values: the first delivery must win, untouched.
    second = grid(5, range(25, 75), offset=7)
    r1 = await writer.write(first)
    r2 = await writer.write(second)
    assert (r1.stored, r1.duplicates) == (250, 0)
    assert (r2.stored, r2.duplicates) == (125, 125)
    want = expected(second) | expected(first)
    assert await stored(conn) == want
    assert len(want) == 375


async def test_duplicates_within_one_batch_are_stored_once(writer, conn):
    batch = grid(4, range(5))
    doubled = batch + batch[:7] + [batch[3]]
    result = await writer.write(doubled)
    assert (result.stored, result.duplicates) == (20, 8)
    assert await stored(conn) == expected(batch)


@pytest.mark.parametrize("order", ["overlap-first", "new-first"])
async def test_overlap_reaching_into_a_missing_partition(writer, conn, order):
    """A re-delivered batch that also holds samples for a day with no partition yet (the
    fresh database has none at all): both the duplicate and the missing partition must be
    handled, whichever the COPY meets first. COPY buffers rows (about 1,000 at a time)
    before inserting them, so the overlap must be longer than that to be met first."""
    old = grid(40, range(50))
    assert (await writer.write(old)).stored == 2000
    new = grid(40, range(5), base=BASE - timedelta(days=3))
    batch = old + new if order == "overlap-first" else new + old
    result = await writer.write(batch)
    assert (result.stored, result.duplicates, result.spooled) == (200, 2000, 0)
    assert await stored(conn) == expected(old + new)


# -- values --------------------------------------------------------------------------------

VALUES: list[int | float] = [
    U64_MAX,
    U64_MAX - 1,
    2**63,
    2**63 - 1,
    0,
    -(2**63),
    0.1,
    -273.15,
    -1e-300,
    1.7976931348623157e308,
    5e-324,
    -0.0,
    math.inf,
    -math.inf,
]


def value_samples(base: datetime) -> list[Sample]:
    counter = SeriesKey.of("r1", "ifHCInOctets", {"ifName": "xe-0/0/0"}, kind="counter")
    gauge = SeriesKey.of("r1", "temperature", {"sensor": "cpu"}, unit="C")
    return [
        Sample(counter if isinstance(v, int) else gauge, base + timedelta(seconds=i), v)
        for i, v in enumerate(VALUES)
    ]


def assert_exact(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, int):
            assert got[k] == v, (k, got[k], v)  # Decimal == int: exact
        else:
            assert float(got[k]) == v, (k, got[k], v)


async def test_counter_max_and_floats_round_trip_through_copy(writer, conn):
    samples = value_samples(BASE)
    result = await writer.write(samples)
    assert (result.stored, result.rejected) == (len(VALUES), 0)
    assert_exact(await stored(conn), expected(samples))
    assert await conn.fetchval("SELECT pg_typeof(value)::text FROM samples LIMIT 1") == "numeric"
    top = await conn.fetchval(
        "SELECT max(value) FROM samples sm JOIN series s ON s.id = sm.series_id "
        "WHERE s.kind = 'counter'"
    )
    assert top == U64_MAX


async def test_counter_max_round_trips_through_the_conflict_path(writer, conn):
    """A batch that hits a unique violation goes through INSERT ... unnest($3::numeric[]):
    its new rows must keep the same exactness."""
    samples = value_samples(BASE)
    await writer.write(samples[:1])
    result = await writer.write(samples)
    assert (result.stored, result.duplicates) == (len(VALUES) - 1, 1)
    assert_exact(await stored(conn), expected(samples))


async def test_counter_max_round_trips_through_the_spool(db, settings, conn):
    """Spooled (msgpack on disk), then replayed: still exact, times in any zone intact."""
    east = timezone(timedelta(hours=5, minutes=30))
    samples = value_samples(BASE.astimezone(east))
    down = unreachable_settings(settings)
    async with SampleWriter(await unreachable_database(down), down) as offline:
        result = await offline.write(samples)
    assert (result.spooled, result.stored) == (len(VALUES), 0)
    assert len(spool_files(settings.spool_dir)) == 1
    async with SampleWriter(db, settings) as online:
        await wait_until(lambda: len(online.spool) == 0, 10, "spool replayed")
        assert online.stats.replayed == len(VALUES)
    assert_exact(await stored(conn), expected(samples))


# -- rejection -----------------------------------------------------------------------------


async def test_bad_samples_are_rejected_and_counted_the_rest_stored(writer, conn, settings):
    k = key(0)
    now = datetime.now(UTC)
    raw = settings.storage.raw_retention
    ahead = settings.storage.max_future
    good = [
        Sample(k, now - timedelta(minutes=1), 1),
        Sample(k, now - raw + timedelta(hours=1), 2),  # old, but inside retention
        Sample(k, now + ahead - timedelta(hours=1), 3),  # ahead, but inside max_future
        Sample(k, now - timedelta(minutes=2), U64_MAX),
        Sample(k, now - timedelta(minutes=3), -(2**63)),
    ]
    bad = [
        Sample(k, datetime.now(), 4),  # naive
        Sample(k, (now - timedelta(minutes=4)).replace(tzinfo=None), 5),  # naive
        Sample(k, now - raw - timedelta(hours=1), 6),  # older than raw retention
        Sample(k, now - timedelta(days=400), 7),
        Sample(k, now + ahead + timedelta(hours=1), 8),  # too far ahead
        Sample(k, now - timedelta(minutes=5), U64_MAX + 1),  # beyond a 64-bit counter
        Sample(k, now - timedelta(minutes=6), -(2**63) - 1),
    ]
    mixed = [bad[0], good[0], bad[1], bad[2], good[1], bad[3], good[2], bad[4], good[3]]
    mixed += [bad[5], good[4], bad[6]]
    result = await writer.write(mixed)
    assert (result.rejected, result.stored, result.duplicates, result.spooled) == (7, 5, 0, 0)
    assert result.accepted == 5
    assert writer.stats.rejected == 7
    assert await stored(conn) == expected(good)

    only_bad = await writer.write(bad)
    assert (only_bad.rejected, only_bad.accepted) == (7, 0)
    assert writer.stats.rejected == 14
    assert await count(conn) == 5


async def test_records_the_database_would_refuse_are_rejected_up_front(db, settings, conn):
    """A record the database can never store (an unknown series kind, a value that is no
    number, an event severity the schema refuses) is rejected and counted whether the
    database is up or not. Accepted into the spool, it would fail on every replay and
    block every batch queued behind it."""
    bogus_kind = SeriesKey("r9", "ifHCInOctets", (), kind="bogus")  # type: ignore[arg-type]
    bad_samples = [
        Sample(bogus_kind, BASE, 1),
        Sample(key(1), BASE, "12"),  # type: ignore[arg-type]
        Sample(key(1), BASE, None),  # type: ignore[arg-type]
        Sample(key(2), BASE, True),  # a bool is no counter value
    ]
    bad_event = DeviceEvent("r9", BASE, "reboot", severity="debug")  # type: ignore[arg-type]
    good_event = DeviceEvent("r9", BASE, "reboot")
    good = grid(3, range(3))
    later = grid(3, range(3, 6))
    down = unreachable_settings(settings)
    async with SampleWriter(await unreachable_database(down), down) as offline:
        result = await offline.write([*bad_samples, *good], [bad_event, good_event])
        assert (result.rejected, result.spooled) == (5, len(good))
        assert (await offline.write(later)).spooled == len(later)
    async with SampleWriter(db, settings) as online:
        await wait_until(lambda: len(online.spool) == 0, 10, "spool replayed")
        assert online.spool.corrupt == 0
        more = grid(3, range(6, 9))
        result = await online.write([*more, *bad_samples], [bad_event])
        assert (result.rejected, result.stored) == (5, len(more))
    assert await stored(conn) == expected(good + later + more)
    assert_events(await event_rows(conn), [good_event])
    assert await count(conn, "series") == 3


async def test_a_spool_file_that_is_no_batch_is_set_aside(db, settings, conn):
    """Intact on disk (the CRC matches) but not a batch this version can read: moved aside
    and counted like a corrupt file, and replay goes on."""
    first, last = grid(2, range(2)), grid(2, range(2, 4))
    down = unreachable_settings(settings)
    async with SampleWriter(await unreachable_database(down), down) as offline:
        await offline.write(first)
        assert offline.spool.append(b"\x93\x01\x02\x03")  # msgpack, but no Batch
        await offline.write(last)
    async with SampleWriter(db, settings) as online:
        await wait_until(lambda: len(online.spool) == 0, 10, "spool replayed")
        # Replay reads ahead, so the offline writer's attempts may already have found it.
        assert offline.spool.corrupt + online.spool.corrupt == 1
    assert len(list((settings.spool_dir / "corrupt").iterdir())) == 1
    assert await stored(conn) == expected(first + last)


# -- events --------------------------------------------------------------------------------


async def event_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT e.uid, d.name AS device, e.time, e.kind, e.severity, e.message,
               e.attributes::text AS attributes
        FROM device_events e JOIN devices d ON d.id = e.device_id
        ORDER BY e.time, e.kind
        """
    )


def assert_events(rows: list[asyncpg.Record], events: list[DeviceEvent]) -> None:
    by_uid = {row["uid"]: row for row in rows}
    assert len(rows) == len(by_uid) == len(events)
    for e in events:
        row = by_uid[e.uid]
        assert (row["device"], row["time"], row["kind"], row["severity"], row["message"]) == (
            e.device,
            e.time,
            e.kind,
            e.severity,
            e.message,
        )
        assert json.loads(row["attributes"]) == e.attributes


async def test_device_events_are_stored_once(writer, conn):
    events = [
        DeviceEvent("edge1", BASE, "reboot", "rebooted", "warning", {"uptime": "12"}),
        DeviceEvent("edge2", BASE + timedelta(seconds=1), "unreachable", severity="critical"),
        DeviceEvent("edge1", BASE + timedelta(seconds=2), "config_changed"),
    ]
    await writer.write([], events)
    await writer.write([], events)
    samples = grid(2, range(3))
    await writer.write(samples, events[:2])
    assert_events(await event_rows(conn), events)
    assert await count(conn, "device_events") == 3
    # The events' devices were created; the samples landed too.
    names = {r["name"] for r in await conn.fetch("SELECT name FROM devices")}
    assert {"edge1", "edge2"} <= names
    assert await stored(conn) == expected(samples)


async def test_spooled_events_are_stored_once_after_replay_and_redelivery(db, settings, conn):
    events = [DeviceEvent("core1", BASE, "reboot"), DeviceEvent("core2", BASE, "link_down")]
    samples = grid(2, range(2))
    down = unreachable_settings(settings)
    async with SampleWriter(await unreachable_database(down), down) as offline:
        await offline.write(samples, events)
        await offline.write([], events)  # the same events, spooled twice
    assert len(spool_files(settings.spool_dir)) == 2
    async with SampleWriter(db, settings) as online:
        await wait_until(lambda: len(online.spool) == 0, 10, "spool replayed")
        await online.write(samples, events)  # and delivered a third time, directly
    assert_events(await event_rows(conn), events)
    assert await stored(conn) == expected(samples)


# -- series identity -----------------------------------------------------------------------


async def series_count(conn: asyncpg.Connection) -> int:
    return await count(conn, "series")


async def test_series_created_once_and_reused(db, settings, writer, conn):
    keys = [key(i) for i in range(12)]
    await writer.write([Sample(k, BASE, 1) for k in keys])
    assert await series_count(conn) == 12
    ids = {k: writer.series.get(k) for k in keys}
    assert None not in ids.values()
    assert len(set(ids.values())) == 12

    await writer.write([Sample(k, BASE + timedelta(seconds=1), 2) for k in keys])
    # Equal keys built anew (labels given in another order) are the same series.
    rebuilt = [
        SeriesKey.of(k.device, k.metric, dict(reversed(k.labels)), kind="counter", unit="B")
        for k in keys
    ]
    await writer.write([Sample(k, BASE + timedelta(seconds=2), 3) for k in rebuilt])
    assert await series_count(conn) == 12
    assert {k: writer.series.get(k) for k in rebuilt} == ids

    # A second writer (empty cache) finds the same ids in the database.
    async with SampleWriter(db, settings) as other:
        await other.write([Sample(k, BASE + timedelta(seconds=3), 4) for k in keys])
        assert {k: other.series.get(k) for k in keys} == ids
    assert await series_count(conn) == 12
    per_series = await conn.fetch("SELECT series_id, count(*) AS n FROM samples GROUP BY 1")
    assert {r["series_id"]: r["n"] for r in per_series} == {i: 4 for i in ids.values()}
    db_ids = await conn.fetch(
        "SELECT s.id, d.name, s.metric, s.labels::text AS labels, s.kind, s.unit "
        "FROM series s JOIN devices d ON d.id = s.device_id"
    )
    assert {
        (r["name"], r["metric"], tuple(sorted(json.loads(r["labels"]).items()))): r["id"]
        for r in db_ids
    } == {(k.device, k.metric, k.labels): i for k, i in ids.items()}
    assert {(r["kind"], r["unit"]) for r in db_ids} == {("counter", "B")}


async def test_two_writers_resolve_the_same_new_series_concurrently(db, settings, conn, tmp_path):
    other_settings = load_settings(
        None, data_dir=tmp_path / "other", database=settings.database.model_dump()
    )
    total_series = 0
    async with SampleWriter(db, settings) as w1, SampleWriter(db, other_settings) as w2:
        for round_ in range(6):
            # New devices and new series every round, the same ones for both writers.
            keys = [
                SeriesKey.of(f"r{round_}-dev{i % 7}", "ifHCOutOctets", {"ifName": f"ge-{i}"})
                for i in range(150)
            ]
            batch = [Sample(k, BASE + timedelta(seconds=round_), i) for i, k in enumerate(keys)]
            r1, r2 = await asyncio.gather(w1.write(batch), w2.write(batch))
            total_series += len(keys)
            for k in keys:
                assert w1.series.get(k) is not None
                assert w1.series.get(k) == w2.series.get(k)
            assert r1.stored + r2.stored == len(batch)
            assert r1.duplicates + r2.duplicates == len(batch)
            assert r1.spooled == r2.spooled == 0
    assert await series_count(conn) == total_series
    assert await count(conn) == total_series
    assert await count(conn, "devices") == 6 * 7


async def test_two_writers_storing_the_same_rows_in_opposite_orders(db, settings, conn, tmp_path):
    """Both COPY the same new rows, one in reverse: whichever waits for the other may be
    chosen as a deadlock victim; it must retry, not fail the write."""
    # What is tested is the deadlock retry: each retry waits out PostgreSQL's 1 s
    # deadlock_timeout, and on a loaded 2-core machine a write could pass the 5 s write
    # deadline and be spooled (lost by nobody, but not what this test looks at; the
    # deadline has its own tests in tests/test_frozen_database.py).
    patient = {"write_deadline": "60s"}
    mine = load_settings(
        None, data_dir=tmp_path / "mine", database=settings.database.model_dump(), writer=patient
    )
    other_settings = load_settings(
        None,
        data_dir=tmp_path / "other",
        database=settings.database.model_dump(),
        writer=patient,
    )
    keys = [SeriesKey.of("edge9", "ifHCInOctets", {"ifName": f"ge-{i}"}) for i in range(2000)]
    async with SampleWriter(db, mine) as w1, SampleWriter(db, other_settings) as w2:
        await w1.write([Sample(k, BASE, 0) for k in keys])  # series and partition exist
        await w2.write([Sample(k, BASE, 0) for k in keys])
        everything = []
        for round_ in range(1, 9):
            batch = [Sample(k, BASE + timedelta(seconds=round_), round_) for k in keys]
            everything += batch
            r1, r2 = await asyncio.gather(w1.write(batch), w2.write(batch[::-1]))
            assert r1.stored + r2.stored == len(batch)
            assert r1.duplicates + r2.duplicates == len(batch)
    assert await count(conn) == len(keys) * 9
    got = await stored(conn)
    assert {k: got[k] for k in expected(everything)} == expected(everything)


async def test_a_refused_login_spools_instead_of_failing(db, settings, conn, database_url):
    """The server is up but refuses the login (an unknown role: SQLSTATE class 28). That is
    reported as DatabaseUnavailableError, not a raw asyncpg error; the writer spools
    meanwhile, and nothing is lost once it can log in."""
    parts = urlsplit(database_url)
    netloc = "netmon_no_such_role@" + parts.netloc.rsplit("@", 1)[-1]
    refused = load_settings(
        None,
        data_dir=settings.data_dir,
        database={"url": urlunsplit(parts._replace(netloc=netloc))},
    )
    database = Database(refused.database, refused.data_dir)
    with pytest.raises(DatabaseUnavailableError, match="netmon_no_such_role"):
        await database.start()
    batch = grid(3, range(3))
    async with SampleWriter(database, refused) as offline:
        assert (await offline.write(batch)).spooled == len(batch)
    async with SampleWriter(db, settings) as online:
        await wait_until(lambda: len(online.spool) == 0, 10, "spool replayed")
    assert await stored(conn) == expected(batch)


# -- a full spool --------------------------------------------------------------------------


async def test_full_spool_drops_and_counts_and_loses_nothing_silently(db, settings, conn):
    down = unreachable_settings(settings, spool_max_bytes=1 << 20)
    results = []
    batches = []
    with structlog.testing.capture_logs() as logs:
        async with SampleWriter(await unreachable_database(down), down) as offline:
            for n in range(40):
                batch = grid(50, range(n * 20, n * 20 + 20))  # 1,000 samples
                batches.append(batch)
                results.append(await offline.write(batch))
                if sum(r.dropped for r in results) >= 3 * len(batch):
                    break
            stats = offline.stats
            spool_bytes = offline.spool.bytes_used
            spool_len = len(offline.spool)
    spooled = [b for b, r in zip(batches, results, strict=True) if r.spooled]
    dropped = [b for b, r in zip(batches, results, strict=True) if r.dropped]
    for batch, r in zip(batches, results, strict=True):
        assert (r.rejected, r.stored) == (0, 0)
        # Each batch is wholly spooled or wholly dropped, and says which.
        assert sorted((r.spooled, r.dropped)) == [0, len(batch)]
    assert spooled
    assert len(dropped) >= 3
    # The spool filled, then refused: nothing spooled after the first drop.
    first_drop = next(i for i, r in enumerate(results) if r.dropped)
    assert all(r.dropped for r in results[first_drop:])
    assert stats.dropped == sum(r.dropped for r in results) == sum(map(len, dropped))
    assert stats.spooled == sum(r.spooled for r in results) == sum(map(len, spooled))
    assert stats.spooled + stats.dropped == sum(map(len, batches))
    files = spool_files(settings.spool_dir)
    assert len(files) == spool_len == len(spooled)
    assert spool_bytes == sum(f.stat().st_size for f in files) <= 1 << 20
    # One error log line per dropped batch, carrying the running total.
    full = [e for e in logs if e["event"] == "spool full: batch dropped"]
    assert [e["dropped_total"] for e in full] == [
        sum(r.dropped for r in results[: first_drop + i + 1]) for i in range(len(full))
    ]
    assert len(full) == len(dropped)
    assert all(e["log_level"] == "error" for e in full)

    # What was spooled is all there when the database returns; what was dropped is not.
    async with SampleWriter(db, settings) as online:
        await wait_until(lambda: len(online.spool) == 0, 20, "spool replayed")
        assert online.stats.replayed == stats.spooled
    want = expected(s for b in spooled for s in b)
    assert await stored(conn) == want
    assert not spool_files(settings.spool_dir)


async def test_replay_groups_spool_files_into_few_copies(db, settings, conn):
    """Replay stores many small spooled batches per COPY, so a spool fed by a steady stream
    of polls still drains; and floats are stored by their shortest repr."""
    batches = [grid(5, range(i, i + 1)) for i in range(40)]
    down = unreachable_settings(settings)
    async with SampleWriter(await unreachable_database(down), down) as offline:
        for batch in batches:
            assert (await offline.write(batch)).spooled == 5
    async with SampleWriter(db, settings) as online:
        await wait_until(lambda: len(online.spool) == 0, 10, "spool replayed")
        assert online.stats.replayed == 200
        assert online.stats.batches == 1  # 200 samples < writer.batch_size: one COPY
    assert await stored(conn) == expected([s for b in batches for s in b])
    key = SeriesKey.of("float-device", "temperature")
    async with SampleWriter(db, settings) as writer:
        await writer.write([Sample(key, datetime.now(UTC), 0.1)])
    assert (
        await conn.fetchval(
            "SELECT s.value::text FROM samples s JOIN series r ON r.id = s.series_id "
            "WHERE r.metric = 'temperature'"
        )
        == "0.1"
    )
