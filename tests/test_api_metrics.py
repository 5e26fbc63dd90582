"""Series, newest values and ranges through the API, on data written by the real writer
and rolled up by the real maintenance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from netmon.records import Sample, SeriesKey
from netmon.store.maintenance import maintain
from netmon.store.writer import SampleWriter
from tests.api_helpers import Api, api, api_database_url, api_settings

__all__ = ["api", "api_database_url", "api_settings"]


def _hour() -> datetime:
    """A top of the hour (on every rollup grid) whose hour before is closed for the
    rollups (2 min lateness): taken per test, never at import, since a run can cross an
    hour between collection and the test."""
    return (datetime.now(UTC) - timedelta(minutes=3)).replace(minute=0, second=0, microsecond=0)


def _key(device: str, metric: str, interface: str | None = None) -> SeriesKey:
    labels = {"interface": interface} if interface else {}
    return SeriesKey.of(device, metric, labels, unit="bytes/s")


async def _write(api: Api, samples: list[Sample]) -> None:
    async with SampleWriter(api.db, api.ctx.settings) as writer:
        result = await writer.write(samples)
        assert result.stored == len(samples)


async def test_last_values_by_device_metric_and_label(api: Api) -> None:
    now = datetime.now(UTC)  # within /last's default 1 h lookback
    samples = []
    for device in ("r1", "r2"):
        for iface in ("eth0", "eth1"):
            for i in range(3):
                t = now - timedelta(minutes=2 - i)
                samples.append(Sample(_key(device, "ifHCInOctets:rate", iface), t, 100 * i))
        samples.append(Sample(_key(device, "cpu"), now, 2**64 - 1))
    await _write(api, samples)
    async with api.client("viewer") as c:
        r1 = (await c.get("/api/v1/metrics/last", params={"device": "r1"})).json()["items"]
        assert len(r1) == 3
        cpu = next(v for v in r1 if v["series"]["metric"] == "cpu")
        assert cpu["value"] == 2**64 - 1  # exact, not a float
        picked = await c.get(
            "/api/v1/metrics/last",
            params=[("metric", "ifHCInOctets:rate"), ("label", "interface=eth1")],
        )
        items = picked.json()["items"]
        assert sorted(v["series"]["device"] for v in items) == ["r1", "r2"]
        assert {v["value"] for v in items} == {200}
        assert all(v["series"]["labels"] == {"interface": "eth1"} for v in items)
        none = await c.get("/api/v1/metrics/last", params={})
        assert none.status_code == 400
        assert "device or metric" in none.json()["detail"]


async def test_a_range_over_too_many_series_is_refused(api: Api) -> None:
    api.ctx.settings.api.__dict__["series_max"] = 2  # frozen model; a test-only shortcut
    now = datetime.now(UTC)
    await _write(api, [Sample(_key("r1", f"m{i}"), now, i) for i in range(3)])
    async with api.client("viewer") as c:
        r = await c.get("/api/v1/metrics/range", params={"device": "r1"})
    assert r.status_code == 400
    assert "more than 2 series" in r.json()["detail"]


async def test_a_devices_last_values_come_in_pages_whatever_its_series(api: Api) -> None:
    # A lab device has 289 to 1,000+ series: `/last?device=...` (the README's example)
    # was a 400 over api.series_max (200). Now it pages.
    now = datetime.now(UTC)
    metrics = [f"m{i:04d}" for i in range(1200)]
    await _write(api, [Sample(_key("big", m, "eth0"), now, i) for i, m in enumerate(metrics)])
    seen: list[str] = []
    cursor = None
    pages = 0
    async with api.client("viewer") as c:
        while True:
            params = {"device": "big", **({"cursor": cursor} if cursor else {})}
            r = await c.get("/api/v1/metrics/last", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [v["series"]["metric"] for v in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        small = await c.get("/api/v1/metrics/last", params={"device": "big", "limit": 500})
        assert len(small.json()["items"]) == 500
    assert pages == 2  # 1,000 series a page by default
    assert sorted(seen) == metrics


async def test_range_raw_and_stepped_and_from_rollups(api: Api) -> None:
    key = _key("r1", "ifHCInOctets:rate", "eth0")
    hour = _hour()
    start = hour - timedelta(hours=3)
    samples = [Sample(key, start + timedelta(minutes=i), i) for i in range(180)]
    await _write(api, samples)
    await maintain(api.db, api.ctx.settings.storage)  # rolls the closed buckets up
    params = [("device", "r1"), ("metric", "ifHCInOctets:rate"), ("label", "interface=eth0")]
    async with api.client("viewer") as c:
        raw = await c.get(
            "/api/v1/metrics/range",
            params=[*params, ("start", (hour - timedelta(minutes=10)).isoformat())],
        )
        body = raw.json()
        assert body["resolution"] == "raw"
        assert body["step_seconds"] is None
        points = body["items"][0]["points"]
        assert [p["last"] for p in points] == list(range(170, 180))
        stepped = await c.get(
            "/api/v1/metrics/range",
            params=[
                *params,
                ("start", start.isoformat()),
                ("end", hour.isoformat()),
                ("step", "1h"),
            ],
        )
        body = stepped.json()
        assert body["resolution"] == "1h"
        hours = body["items"][0]["points"]
        assert sum(p["count"] for p in hours) == 180
        assert hours[0]["min"] == 0
        assert hours[-1]["max"] == 179
        five = await c.get(
            "/api/v1/metrics/range",
            params=[
                *params,
                ("start", start.isoformat()),
                ("end", hour.isoformat()),
                ("step", "5m"),
            ],
        )
        assert five.json()["resolution"] == "5m"
        assert len(five.json()["items"][0]["points"]) == 36


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"start": "2026-01-01T00:00:00"}, "timezone"),
        ({"start": "2020-01-01T00:00:00Z", "step": "1h"}, "spans"),
        ({"start": "2026-11-01T00:00:00Z"}, "give a step"),
        ({"step": "0s"}, "between 1s"),
        ({"step": "766809081w"}, "between 1s"),  # more days than a timedelta holds
        ({"step": "1s", "start": "2026-11-20T00:00:00Z"}, "points"),
        ({"start": "2100-01-01T00:00:00Z"}, "after start"),
        ({"step": "5 minutes"}, "step"),
        ({"label": "no-equals-sign"}, "label"),
    ],
)
async def test_bad_ranges_are_refused_with_the_reason(api: Api, params, reason) -> None:
    hour = _hour()
    await _write(api, [Sample(_key("r1", "cpu"), hour, 1)])
    query = {"device": "r1", "end": hour.isoformat(), **params}
    async with api.client("viewer") as c:
        r = await c.get("/api/v1/metrics/range", params=query)
    assert r.status_code == 400, r.text
    assert reason in r.text


async def test_series_of_a_device_page_by_page(api: Api) -> None:
    await _write(api, [Sample(_key("r1", f"m{i:02}"), _hour(), i) for i in range(5)])
    async with api.db.pool.acquire() as conn:
        device_id = await conn.fetchval("SELECT id FROM devices WHERE name = 'r1'")
    async with api.client("viewer") as c:
        page = (await c.get(f"/api/v1/devices/{device_id}/series", params={"limit": 2})).json()
        metrics = [s["metric"] for s in page["items"]]
        while page["next_cursor"]:
            page = (
                await c.get(
                    f"/api/v1/devices/{device_id}/series",
                    params={"limit": 2, "cursor": page["next_cursor"]},
                )
            ).json()
            metrics += [s["metric"] for s in page["items"]]
        assert metrics == [f"m{i:02}" for i in range(5)]
        assert (await c.get("/api/v1/devices/999999/series")).status_code == 404
