"""Device detail and /metrics/last from each API process's memory (api/last_values.py):
fed by the real writer's NOTIFY, filled from PostgreSQL at start and after a gap.

The proof that a read comes from memory: another connection holds ``samples`` locked
(ACCESS EXCLUSIVE) while the API answers; any query that touches the table would wait
for the lock, and the request would time out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import msgspec

from netmon.records import Sample, SeriesKey
from netmon.store.spool import Spool
from netmon.store.writer import Batch, SampleWriter
from tests.api_helpers import Api, api, api_database_url, api_settings

__all__ = ["api", "api_database_url", "api_settings"]

# How long a notification may take to reach the API's memory on a loaded test machine.
LAG = 5.0


def _key(device: str, metric: str, interface: str | None = None) -> SeriesKey:
    labels = {"interface": interface} if interface else {}
    return SeriesKey.of(device, metric, labels, unit="bytes/s")


async def _write(api: Api, samples: list[Sample]) -> None:
    async with SampleWriter(api.db, api.ctx.settings) as writer:
        result = await writer.write(samples)
        assert result.stored == len(samples)


async def _filled(api: Api, fills: int = 1) -> None:
    last = api.ctx.hub.last  # type: ignore[union-attr]
    deadline = time.monotonic() + LAG
    while not (last.complete and last.fills >= fills and last.usable()):
        assert time.monotonic() < deadline, "the last values were not filled"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def samples_locked(api: Api) -> AsyncIterator[None]:
    """``samples`` locked against every reader until the block ends."""
    conn = await asyncpg.connect(api.db.url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE samples IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def _last(c: httpx.AsyncClient, **params: Any) -> dict[tuple[str, str], Any]:
    r = await c.get("/api/v1/metrics/last", params=params, timeout=3)
    assert r.status_code == 200, r.text
    return {
        (v["series"]["device"], v["series"]["metric"]): (v["time"], v["value"])
        for v in r.json()["items"]
    }


async def _until(check: Any, what: str, within: float = LAG) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, what
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _device_id(api: Api, name: str) -> int:
    async with api.db.pool.acquire() as conn:
        device_id: int = await conn.fetchval("SELECT id FROM devices WHERE name = $1", name)
    return device_id


async def _in_memory(api: Api, device: str, count: int) -> bool:
    """Whether the API holds ``count`` values of ``device`` in memory, its series all
    known there."""
    last = api.ctx.hub.last  # type: ignore[union-attr]
    async with api.db.pool.acquire() as conn:
        device_id = await conn.fetchval("SELECT id FROM devices WHERE name = $1", device)
        ids = [
            r["id"]
            for r in await conn.fetch("SELECT id FROM series WHERE device_id = $1", device_id)
        ]
    known = last.device_series(device_id)
    if known is None or sorted(known) != sorted(ids):
        return False
    now = datetime.now(UTC)
    found, missing = last.values_of(ids, now - timedelta(hours=1), now)
    return not missing and len(found) == count


def _z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_values_written_by_the_writer_are_served_from_memory(api: Api) -> None:
    await _filled(api)
    now = datetime.now(UTC).replace(microsecond=0)
    samples = [
        Sample(_key("r1", "ifHCInOctets:rate", "eth0"), now, 125.5),
        Sample(_key("r1", "ifOperStatus", "eth0"), now, 1),
        Sample(_key("r1", "cpu"), now, 2**64 - 1),
    ]
    await _write(api, samples)
    device_id = await _device_id(api, "r1")
    async with api.client("viewer") as c:
        await _until(lambda: _in_memory(api, "r1", 3), "the writer's samples did not come")
        async with samples_locked(api):
            values = await _last(c, device="r1")
            detail = await c.get(f"/api/v1/devices/{device_id}", timeout=3)
            by_metric = await _last(c, metric="cpu")
    assert values[("r1", "cpu")] == (_z(now), 2**64 - 1)  # exact, not a float
    assert values[("r1", "ifHCInOctets:rate")] == (_z(now), 125.5)
    assert values[("r1", "ifOperStatus")] == (_z(now), 1)
    assert by_metric == {("r1", "cpu"): (_z(now), 2**64 - 1)}
    assert detail.status_code == 200, detail.text
    (interface,) = detail.json()["interfaces"]
    assert interface["name"] == "eth0"
    assert interface["in_bps"] == 125.5 * 8
    assert interface["oper_status"] == "up"
    assert interface["updated_at"] == _z(now)


async def test_a_read_after_a_commit_sees_it_within_the_feed_lag(api: Api) -> None:
    await _filled(api)
    key = _key("r1", "ifHCInOctets:rate", "eth0")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    await _write(api, [Sample(key, start, 0)])
    await _until(lambda: _in_memory(api, "r1", 1), "the first sample did not come")
    lags = []
    async with api.client("viewer") as c:
        for i in range(1, 6):
            moment = start + timedelta(minutes=i)
            await _write(api, [Sample(key, moment, i)])
            committed = time.monotonic()

            async def seen(moment: datetime = moment) -> bool:
                got = (await _last(c, device="r1")).get(("r1", "ifHCInOctets:rate"))
                return got is not None and got[0] == _z(moment)

            async with samples_locked(api):  # and from memory
                await _until(seen, f"sample {i} not seen within {LAG} s")
            lags.append(time.monotonic() - committed)
    assert max(lags) < LAG


async def test_a_gap_is_filled_again_from_the_database(api: Api) -> None:
    """Samples committed without a notification reaching the API (as while its LISTEN
    connection is away) are read by the refill that follows the reconnect; the refill
    keeps each series' newest sample, not the one committed last."""
    await _filled(api)
    hub = api.ctx.hub
    assert hub is not None
    now = datetime.now(UTC).replace(microsecond=0)
    await _write(
        api,
        [
            Sample(_key("r1", "gapped"), now - timedelta(minutes=5), 1),
            Sample(_key("r1", "kept"), now, 10),
        ],
    )
    async with api.client("viewer") as c:

        async def seen() -> bool:
            return len(await _last(c, device="r1")) == 2

        await _until(seen, "the samples were not notified")
        async with api.db.pool.acquire() as conn:
            ids = dict(await conn.fetch("SELECT metric, id FROM series"))
            # Committed unannounced: a newer sample of one series, an older of the other.
            await conn.execute(
                "INSERT INTO samples (series_id, time, value) VALUES ($1, $2, 2), ($3, $4, 9)",
                ids["gapped"],
                now,
                ids["kept"],
                now - timedelta(minutes=1),
            )
        before = await _last(c, device="r1")
        assert before[("r1", "gapped")] == (_z(now - timedelta(minutes=5)), 1)  # not notified
        fills = hub.last.fills
        reconnects = hub.reconnects
        async with api.db.pool.acquire() as conn:
            # The hub's LISTEN connection: the only one of this database listening here.
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
            )
            assert len(pids) == 1, pids
            await conn.execute("SELECT pg_terminate_backend($1)", pids[0]["pid"])
        await _until(lambda: _true(hub.reconnects > reconnects), "the hub did not reconnect")
        await _filled(api, fills + 1)
        async with samples_locked(api):
            after = await _last(c, device="r1")
    assert after[("r1", "gapped")] == (_z(now), 2)
    assert after[("r1", "kept")] == (_z(now), 10)


async def _true(value: bool) -> bool:
    return value


async def test_an_older_notification_never_replaces_a_newer_value(api: Api) -> None:
    await _filled(api)
    now = datetime.now(UTC).replace(microsecond=0)
    key = _key("r1", "ifHCInOctets:rate", "eth0")
    await _write(api, [Sample(key, now, 200)])
    async with api.client("viewer") as c:

        async def newest() -> bool:
            got = (await _last(c, device="r1")).get(("r1", "ifHCInOctets:rate"))
            return got == (_z(now), 200)

        await _until(newest, "the newer sample was not notified")
        # A late sample, older: stored, notified, and not the newest.
        await _write(api, [Sample(key, now - timedelta(minutes=1), 100)])
        # Notifications are applied in order: once a later marker is seen, so was it.
        await _write(api, [Sample(_key("r1", "marker"), now, 1)])

        await _until(lambda: _in_memory(api, "r1", 2), "the marker was not notified")
        async with samples_locked(api):
            got = await _last(c, device="r1")
    assert got[("r1", "ifHCInOctets:rate")] == (_z(now), 200)


async def test_a_deleted_device_and_its_series_disappear(api: Api) -> None:
    await _filled(api)
    hub = api.ctx.hub
    assert hub is not None
    now = datetime.now(UTC).replace(microsecond=0)
    await _write(
        api,
        [Sample(_key("gone", "cpu"), now, 5), Sample(_key("stays", "cpu"), now, 6)],
    )
    async with api.client("viewer") as c:

        async def seen() -> bool:
            return len(await _last(c, metric="cpu")) == 2

        await _until(seen, "the samples were not notified")
        gone = await _device_id(api, "gone")
        await _until(lambda: _true(len(hub.last.device_series(gone) or ()) == 1), "not learned")
        async with api.client("operator") as op:
            assert (await op.delete(f"/api/v1/devices/{gone}")).status_code == 204
        # At once, in this process and any other: which devices exist is read each time.
        assert await _last(c, device="gone") == {}
        assert await _last(c, metric="cpu") == {("stays", "cpu"): (_z(now), 6)}
        assert (await c.get(f"/api/v1/devices/{gone}")).status_code == 404
    # And its memory is given back once the series_forget notification comes round.
    await _until(
        lambda: _true(gone not in hub.last._devices and hub.last.series == 1),
        "the series were kept",
    )


async def test_scope_confines_reads_from_memory(api: Api) -> None:
    await _filled(api)
    now = datetime.now(UTC).replace(microsecond=0)
    async with api.client("admin") as admin:
        for name, site in (("l1", "lon1"), ("p1", "par2")):
            r = await admin.post("/api/v1/devices", json={"name": name, "site": site})
            assert r.status_code in (200, 201), r.text
    await _write(
        api,
        [
            Sample(_key("l1", "ifHCInOctets:rate", "eth0"), now, 1),
            Sample(_key("p1", "ifHCInOctets:rate", "eth0"), now, 2),
        ],
    )
    l1, p1 = await _device_id(api, "l1"), await _device_id(api, "p1")
    for name in ("l1", "p1"):
        await _until(lambda name=name: _in_memory(api, name, 1), "not notified")
    async with api.client("lon1") as c:
        async with samples_locked(api):
            assert set(await _last(c, device=["l1", "p1"])) == {("l1", "ifHCInOctets:rate")}
            assert await _last(c, device="p1") == {}
            assert set(await _last(c, metric="ifHCInOctets:rate")) == {("l1", "ifHCInOctets:rate")}
            assert (await c.get(f"/api/v1/devices/{l1}", timeout=3)).status_code == 200
            assert (await c.get(f"/api/v1/devices/{p1}", timeout=3)).status_code == 404
        # Moved unannounced (as an inventory sync moves it): confined at once.
        async with api.db.pool.acquire() as conn:
            await conn.execute("UPDATE devices SET site = 'par2' WHERE id = $1", l1)
        assert await _last(c, device=["l1", "p1"]) == {}
        assert (await c.get(f"/api/v1/devices/{l1}")).status_code == 404


async def test_until_filled_reads_come_from_the_database(api: Api) -> None:
    await _filled(api)
    hub = api.ctx.hub
    assert hub is not None
    now = datetime.now(UTC).replace(microsecond=0)
    await _write(api, [Sample(_key("r1", "cpu"), now - timedelta(seconds=2), 7)])
    await _until(lambda: _in_memory(api, "r1", 1), "the sample was not notified")
    async with api.db.pool.acquire() as conn:
        # Committed unannounced, and the memory left as a gap leaves it, not filled again.
        sid = await conn.fetchval("SELECT id FROM series WHERE metric = 'cpu'")
        await conn.execute(
            "INSERT INTO samples (series_id, time, value) VALUES ($1, $2, $3)",
            sid,
            now - timedelta(seconds=1),
            Decimal(8),
        )
    hub.last.lost()
    await hub.last.stop()
    assert not hub.last.complete
    async with api.client("viewer") as c:
        assert await _last(c, device="r1") == {("r1", "cpu"): (_z(now - timedelta(seconds=1)), 8)}
        detail = await c.get(f"/api/v1/devices/{await _device_id(api, 'r1')}")
        assert detail.status_code == 200


async def test_the_memory_is_reported_on_metrics(api: Api) -> None:
    await _filled(api)
    await _write(api, [Sample(_key("r1", "cpu"), datetime.now(UTC), 1)])
    async with api.client("viewer") as c:
        await _until(lambda: _in_memory(api, "r1", 1), "the sample was not notified")
        text = (await c.get("/metrics")).text
    gauges = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("netmon_api_last_values")
    }
    assert gauges["netmon_api_last_values"] == 1
    assert gauges["netmon_api_last_values_series"] == 1
    assert gauges["netmon_api_last_values_bytes"] > 0
    assert gauges["netmon_api_last_values_fills_total"] >= 1


async def _pages(c: httpx.AsyncClient, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    pages = []
    cursor = None
    while True:
        r = await c.get(
            "/api/v1/metrics/last",
            params=params + ([("cursor", cursor)] if cursor else []),
            timeout=3,
        )
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages


async def test_pages_and_selectors_from_memory_are_the_databases(api: Api) -> None:
    """The same pages, cursors and items from memory as from PostgreSQL."""
    await _filled(api)
    now = datetime.now(UTC).replace(microsecond=0)
    samples = [
        Sample(_key(device, metric, f"eth{i}"), now - timedelta(minutes=i % 3), i)
        for i in range(12)
        for device in ("a", "b")
        for metric in ("ifHCInOctets:rate", "ifOperStatus")
    ]
    # One series with nothing in the default hour: selected, so it counts in a page.
    samples.append(Sample(_key("a", "old"), now - timedelta(hours=3), 1))
    await _write(api, samples)
    await _until(lambda: _in_memory(api, "a", 24), "a's samples did not come")
    await _until(lambda: _in_memory(api, "b", 24), "b's samples did not come")
    selectors = [
        [("device", "a"), ("device", "b"), ("limit", "7")],
        [("device", "b"), ("limit", "5"), ("metric", "ifOperStatus")],
        [("device", "a"), ("device", "nothing"), ("label", "interface=eth3")],
        [("device", "a"), ("lookback", "4h"), ("limit", "30")],
        [("device", "a"), ("label", "interface=eth3"), ("label", "interface=eth4")],
    ]
    async with api.client("viewer") as c:
        async with samples_locked(api):
            from_memory = [await _pages(c, s) for s in selectors]
        hub = api.ctx.hub
        assert hub is not None
        hub.last.lost()  # and not filled again: every read from PostgreSQL
        await hub.last.stop()
        from_database = [await _pages(c, s) for s in selectors]
    assert from_memory == from_database
    # 49 series, 48 with a value within the hour: the old one counts in its page.
    assert len(from_memory[0]) == 7
    assert sum(len(p["items"]) for p in from_memory[0]) == 48
    assert from_memory[3][-1]["items"][-1]["series"]["metric"] == "old"
    assert from_memory[4] == [{"items": [], "next_cursor": None}]


async def test_samples_replayed_from_the_spool_reach_the_last_values(api: Api) -> None:
    """A writer replays spooled samples without publishing them (a backlog would flood
    the feeds), then says so: the last values refill and show the newest."""
    await _filled(api)
    settings = api.ctx.settings
    now = datetime.now(UTC).replace(microsecond=0)
    key = _key("r9", "replayed")
    await _write(api, [Sample(key, now - timedelta(minutes=5), 1)])
    async with api.client("viewer") as c:

        async def shows(expected: tuple[str, int]) -> bool:
            return (await _last(c, device="r9")).get(("r9", "replayed")) == expected

        await _until(lambda: shows((_z(now - timedelta(minutes=5)), 1)), "not notified")
        # Spooled as a writer spools while the database is away; the next writer replays.
        spool = Spool(settings.spool_dir, settings.writer.spool_max_bytes)
        assert spool.append(msgspec.msgpack.encode(Batch(samples=[Sample(key, now, 2)])))
        async with SampleWriter(api.db, settings) as writer:
            await _until(lambda: _true(not len(writer.spool)), "the spool was not replayed")
            assert writer.stats.replayed == 1
        await _until(lambda: shows((_z(now), 2)), "the replayed sample was not shown")
