"""/metrics: the exposition passes promtool, counters move with polls and writes, device
samples appear with their labels only when enabled, tokens are needed unless public.

Against the real app served by uvicorn on a loopback port and real PostgreSQL servers.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from netmon.alerts.rules import BUILTIN_RULES
from netmon.alerts.service import AlertService
from netmon.api.context import ApiContext
from netmon.api.device_export import device_metric_name, device_samples_page
from netmon.api.http_stats import HttpMetricsMiddleware, HttpStats
from netmon.api.server import ApiServer
from netmon.config import Role, Settings, load_settings
from netmon.core_control import LocalCore
from netmon.histogram import POLL_SECONDS_BUCKETS, WRITE_SECONDS_BUCKETS, Histogram
from netmon.poller.scheduler import PollerStats
from netmon.records import Sample, SeriesKey
from netmon.store.batcher import Batcher
from netmon.store.database import Database
from netmon.store.tokens import create_token
from netmon.store.writer import SampleWriter, WriterStats
from tests.peer_check import missing_peer
from tests.poller_helpers import eventually, fast_inventory, running_poller

PROMTOOL = shutil.which("promtool")


@asynccontextmanager
async def running_alerts(settings: Settings, db: Database) -> AsyncIterator[AlertService]:
    alerts = AlertService(db, settings)
    await alerts.start()
    try:
        yield alerts
    finally:
        await alerts.close()


def promtool_check(page: bytes) -> None:
    """``promtool check metrics``: format errors and lint problems alike fail the test."""
    if PROMTOOL is None:
        missing_peer("promtool is not installed (Debian: apt-get install prometheus; .ci/run does)")
    out = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=page, capture_output=True, timeout=60, check=False
    )
    problems = (out.stdout + out.stderr).decode().strip()
    assert out.returncode == 0, f"promtool check metrics failed:\n{problems}"
    assert not problems, f"promtool check metrics:\n{problems}"


Key = tuple[str, frozenset[tuple[str, str]]]


def parse(page: bytes) -> dict[Key, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page.decode())
        for s in family.samples
    }


def value(samples: dict[Key, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def named(samples: dict[Key, float], name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in samples if n == name]


# -- histograms and names, no server -----------------------------------------------------


def test_histogram_buckets_are_upper_bounds_inclusive():
    h = Histogram([0.1, 1.0])
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert h.counts == [2, 2, 1]
    assert h.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert h.count == 5
    assert h.sum == pytest.approx(8.65)


@pytest.mark.parametrize("bounds", [[1.0, 0.5], [0.5, 0.5], [0.1, math.inf], [math.nan]])
def test_histogram_refuses_bounds_out_of_order(bounds):
    with pytest.raises(ValueError, match="ascending"):
        Histogram(bounds)


def test_stats_start_with_empty_histograms_of_their_own():
    a, b = PollerStats(), PollerStats()
    a.poll_seconds.observe(0.2)
    assert b.poll_seconds.count == 0
    assert a.poll_seconds.bounds == POLL_SECONDS_BUCKETS
    w = WriterStats()
    assert w.write_latency.bounds == WRITE_SECONDS_BUCKETS
    assert w.write_latency.count == 0


@pytest.mark.parametrize(
    ("metric", "name"),
    [
        ("ifHCInOctets", "netmon_device_if_hc_in_octets"),
        ("ifInOctets", "netmon_device_if_in_octets"),
        ("ifHCInOctets:rate", "netmon_device_if_hc_in_octets_per_second"),
        ("hrStorageUsed", "netmon_device_hr_storage_used"),
        ("sysUpTime", "netmon_device_sys_up_time"),
        ("temp.celsius-max", "netmon_device_temp_celsius_max"),
        ("packetsTotal", "netmon_device_packets"),
        ("??", "netmon_device_unnamed"),
        # Words promtool's linter objects to are fused with a neighbour.
        ("ifCounterDiscontinuityTime", "netmon_device_ifcounter_discontinuity_time"),
        ("errorCount", "netmon_device_errorcount"),
        ("bufferSum", "netmon_device_buffersum"),
        ("uptimeMs", "netmon_device_uptimems"),
        ("powerOnHours", "netmon_device_power_onhours"),
        ("kilobytesFree", "netmon_device_kilobytesfree"),
        ("gauge", "netmon_device_gaugevalue"),
    ],
)
def test_device_metric_names(metric, name):
    assert device_metric_name(metric) == name


def test_device_families_pass_promtool_whatever_the_names():
    rows = [
        # device, site, role, metric, labels (JSON), kind, unit, value
        ("r1", "lon1", "core", "ifHCInOctets", '{"interface": "ge-0/0/0"}', "counter", "bytes", 12),
        ("r1", "lon1", "core", "ifHCInOctets:rate", '{"interface": "ge-0/0/0"}', "gauge", "", 1.5),
        ("r1", None, None, "sysUpTime", "{}", "gauge", "s", 100.0),
        # Labels that are not Prometheus names, or that clash with netmon's own.
        ("r2", "par2", "edge", "odd", '{"1st": "a", "__x": "b", "device": "c"}', "gauge", "", 1),
        ("r2", "par2", "edge", "odd", '{"ifName": "x\\"y\\n", "le": "1"}', "gauge", "", 2),
        # Names promtool would lint: type names, units that are not base units.
        ("r2", "par2", "edge", "ifCounterDiscontinuityTime", "{}", "gauge", "ticks", 5),
        ("r2", "par2", "edge", "uptimeMinutes", "{}", "gauge", "", 6),
        ("r2", "par2", "edge", "errorCount", "{}", "gauge", "", 7),
        # Two metrics that meet after sanitising: one family, first kind wins.
        ("r2", "par2", "edge", "if_in_octets", "{}", "counter", "", 3),
        ("r2", "par2", "edge", "ifInOctets", "{}", "gauge", "", 4),  # same labels: left out
        ("r2", "par2", "edge", "noValue", "{}", "gauge", "", float("nan")),
    ]
    page = device_samples_page(rows)
    promtool_check(page)
    samples = parse(page)
    assert (
        value(
            samples,
            "netmon_device_if_hc_in_octets_total",
            device="r1",
            site="lon1",
            role="core",
            interface="ge-0/0/0",
        )
        == 12
    )
    assert value(samples, "netmon_device_sys_up_time", device="r1") == 100.0
    odd = sorted(named(samples, "netmon_device_odd"), key=lambda labels: labels.get("_1st", ""))
    assert {"_1st": "a", "x": "b", "exported_device": "c", "device": "r2"}.items() <= odd[1].items()
    # An empty label is an absent one to Prometheus: left out.
    assert {"if_name": 'x"y\n', "exported_le": "1"}.items() <= odd[0].items()
    assert "_1st" not in odd[0]
    assert (
        value(samples, "netmon_device_if_in_octets_total", device="r2", site="par2", role="edge")
        == 3
    )
    assert value(samples, "netmon_device_errorcount", device="r2", site="par2", role="edge") == 7
    assert value(samples, "netmon_exported_device_series") == 10


async def test_http_middleware_costs_microseconds():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        pass

    middleware = HttpMetricsMiddleware(app)  # type: ignore[arg-type]
    middleware.stats = HttpStats()
    scope = {"type": "http", "method": "GET", "path_template": "/api/v1/devices/{id:int}"}
    n = 20_000

    async def per_call(target: Any) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await target(scope, None, send)
        return (time.perf_counter() - started) / n

    bare = min([await per_call(app) for _ in range(5)])
    wrapped = min([await per_call(middleware) for _ in range(5)])
    cost_us = (wrapped - bare) * 1e6
    print(f"HttpMetricsMiddleware: {cost_us:.2f} µs per request")
    assert cost_us < 10, f"{cost_us:.1f} µs per request"
    route = middleware.stats.routes["GET", "/api/v1/devices/{id:int}"]
    assert route.statuses == {200: 5 * n}
    assert route.seconds.count == 5 * n


# -- the served app ----------------------------------------------------------------------


def api_settings(settings: Settings, **api: Any) -> Settings:
    assert settings.database.url is not None
    return load_settings(
        None,
        data_dir=settings.data_dir,
        database={"url": settings.database.url, "pool_min": 2, "pool_max": 10},
        writer={"flush_interval": "50ms"},
        poller={"jitter": "0s", "stop_timeout": "10s"},
        api={"port": 0, **api},
    )


@dataclass
class Api:
    url: str
    token: str
    ctx: ApiContext

    async def get(self, path: str = "/metrics", token: str | None = "") -> httpx.Response:
        headers = {}
        token = self.token if token == "" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            return await client.get(path, headers=headers)

    async def scrape(self, token: str | None = "") -> bytes:
        response = await self.get(token=token)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        return response.content


async def token_for(
    db: Database, settings: Settings, sites: list[str] | None = None, role: Role = "viewer"
) -> str:
    async with db.pool.acquire() as conn:
        _, token = await create_token(
            conn,
            name=f"scraper-{role}-{'-'.join(sites or [])}",
            role=role,
            created_by="test",
            pepper=settings.api.resolved_pepper(),
            sites=sites,
        )
    return token


@asynccontextmanager
async def served(
    settings: Settings, db: Database, core: LocalCore | None = None
) -> AsyncIterator[Api]:
    ctx = ApiContext(settings=settings, db=db, core=core or LocalCore())
    server = ApiServer(ctx)
    await server.start()
    try:
        yield Api(f"http://127.0.0.1:{server.port}", await token_for(db, settings), ctx)
    finally:
        await server.stop()


@asynccontextmanager
async def writing(settings: Settings, db: Database) -> AsyncIterator[LocalCore]:
    writer = SampleWriter(db, settings)
    await writer.start()
    batcher = Batcher(writer, settings.writer)
    batcher.start()
    try:
        yield LocalCore(writer=writer, batcher=batcher)
    finally:
        await batcher.close()
        await writer.close()


def interface_samples(device: str, when: datetime, octets: int) -> list[Sample]:
    out = []
    for interface in ("ge-0/0/0", "ge-0/0/1"):
        key = SeriesKey.of(
            device, "ifHCInOctets", {"interface": interface}, kind="counter", unit="bytes"
        )
        out.append(Sample(key, when, octets))
    out.append(Sample(SeriesKey.of(device, "sysUpTime", unit="s"), when, 1234.5))
    return out


async def place(db: Database, sites: dict[str, tuple[str, str]]) -> None:
    async with db.pool.acquire() as conn:
        for device, (site, role) in sites.items():
            await conn.execute(
                "UPDATE devices SET site = $2, role = $3 WHERE name = $1", device, site, role
            )


async def test_a_write_moves_the_writer_counters(settings: Settings, db: Database):
    settings = api_settings(settings)
    async with writing(settings, db) as core, served(settings, db, core) as api:
        before = parse(await api.scrape())
        assert value(before, "netmon_writer_samples_stored_total") == 0
        assert value(before, "netmon_batcher_queued_samples") == 0
        assert value(before, "netmon_database_up") == 1
        assert core.batcher is not None
        result = await core.batcher.submit(interface_samples("r1", datetime.now(UTC), 10))
        assert result.stored == 3
        page = await api.scrape()
        promtool_check(page)
        after = parse(page)
        assert value(after, "netmon_writer_samples_stored_total") == 3
        assert value(after, "netmon_writer_batches_total") == 1
        assert value(after, "netmon_writer_batch_duration_seconds_count") == 1
        assert value(after, "netmon_writer_batch_duration_seconds_bucket", le="+Inf") == 1
        assert value(after, "netmon_spool_files") == 0
        assert value(after, "netmon_spool_bytes") == 0
        # No poller in this process: its families are left out, not zeros.
        assert not named(after, "netmon_polls_total")
        # The scrape's own connection is open; none was refused.
        assert value(after, "netmon_http_connections") >= 1
        assert value(after, "netmon_http_connections_refused_total") == 0
        # netmon_api's own requests: the first scrape is counted by the second.
        assert (
            value(after, "netmon_http_requests_total", method="GET", route="/metrics", status="200")
            == 1
        )
        # Device samples are on by default: the three series just written.
        assert value(after, "netmon_exported_device_series") == 3


async def test_device_samples_on_unless_turned_off(settings: Settings, db: Database):
    now = datetime.now(UTC)
    for enabled in (False, None):
        # None: the default, not set at all.
        extra = {} if enabled is None else {"metrics_device_samples": enabled}
        s = api_settings(settings, **extra)
        async with writing(s, db) as core, served(s, db, core) as api:
            assert core.writer is not None
            await core.writer.write(interface_samples("r1", now, 100))
            await core.writer.write(interface_samples("r2", now, 200))
            # Older than the lookback: a device that stopped answering is not current.
            await core.writer.write(interface_samples("gone", now - timedelta(hours=2), 1))
            await place(db, {"r1": ("lon1", "core"), "r2": ("par2", "edge")})
            page = await api.scrape()
            promtool_check(page)
            samples = parse(page)
            devices = [k for k in samples if k[0].startswith("netmon_device_")]
            if enabled is False:
                assert not devices
                assert value(samples, "netmon_exported_device_series") is None
                continue
            octets = named(samples, "netmon_device_if_hc_in_octets_total")
            assert sorted((o["device"], o["interface"], o["site"], o["role"]) for o in octets) == [
                ("r1", "ge-0/0/0", "lon1", "core"),
                ("r1", "ge-0/0/1", "lon1", "core"),
                ("r2", "ge-0/0/0", "par2", "edge"),
                ("r2", "ge-0/0/1", "par2", "edge"),
            ]
            assert (
                value(
                    samples,
                    "netmon_device_if_hc_in_octets_total",
                    device="r2",
                    site="par2",
                    role="edge",
                    interface="ge-0/0/1",
                )
                == 200
            )
            assert (
                value(samples, "netmon_device_sys_up_time", device="r1", site="lon1", role="core")
                == 1234.5
            )
            assert value(samples, "netmon_exported_device_series") == 6
            assert value(samples, "netmon_exported_device_samples_ok") == 1
            assert b"# TYPE netmon_device_if_hc_in_octets_total counter" in page
            assert b"# TYPE netmon_device_sys_up_time gauge" in page

            # A token limited to sites sees those sites' devices only, and none of
            # netmon's own figures (they are of every site's polls).
            lon1 = await token_for(db, s, sites=["lon1"])
            scoped = parse(await api.scrape(token=lon1))
            seen = {o["device"] for o in named(scoped, "netmon_device_if_hc_in_octets_total")}
            assert seen == {"r1"}
            assert value(scoped, "netmon_exported_device_series") == 3
            assert not named(scoped, "process_resident_memory_bytes")
            assert not named(scoped, "netmon_writer_samples_stored_total")
            nowhere = await token_for(db, s, sites=["nowhere"])
            assert (
                value(parse(await api.scrape(token=nowhere)), "netmon_exported_device_series") == 0
            )
            # Every role may read /metrics (viewer is the least).
            for role in ("operator", "admin"):
                assert (await api.get(token=await token_for(db, s, role=role))).status_code == 200


async def test_device_samples_from_memory_once_filled(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
):
    """With the API's memory of last values filled, a scrape reads the values from there
    (the all-series query would take seconds at a large fleet): the devices and their
    sites still come from the database, so scope holds."""
    import netmon.api.device_export as device_export

    now = datetime.now(UTC)
    s = api_settings(settings)
    async with writing(s, db) as core:
        assert core.writer is not None
        await core.writer.write(interface_samples("r1", now, 100))
        await core.writer.write(interface_samples("r2", now, 200))
    await place(db, {"r1": ("lon1", "core"), "r2": ("par2", "edge")})
    async with served(s, db) as api:
        assert api.ctx.hub is not None
        held = api.ctx.hub.last

        async def filled() -> bool:
            return held.fills >= 1

        await eventually(filled, what="the last values' first fill")
        # The query for every series would now fail the scrape's device samples.
        monkeypatch.setattr(device_export, "_LATEST", "SELECT no_such_column FROM series")
        page = await api.scrape()
        promtool_check(page)
        samples = parse(page)
        assert value(samples, "netmon_exported_device_samples_ok") == 1
        assert value(samples, "netmon_exported_device_series") == 6
        assert (
            value(
                samples,
                "netmon_device_if_hc_in_octets_total",
                device="r2",
                site="par2",
                role="edge",
                interface="ge-0/0/1",
            )
            == 200
        )
        lon1 = parse(await api.scrape(token=await token_for(db, s, sites=["lon1"])))
        seen = {o["device"] for o in named(lon1, "netmon_device_if_hc_in_octets_total")}
        assert seen == {"r1"}
        # A device moved to another site leaves the scoped page at once.
        await place(db, {"r1": ("par2", "core")})
        lon1 = parse(await api.scrape(token=await token_for(db, s, sites=["lon1"])))
        assert value(lon1, "netmon_exported_device_series") == 0


async def test_public_metrics_carry_device_samples_only_when_said(settings: Settings, db: Database):
    """metrics_public opens /metrics to anyone who reaches it: device names, sites and
    interfaces go there only if the operator wrote metrics_device_samples: true, not by
    the default."""
    now = datetime.now(UTC)
    for explicit, expected in ((None, None), (True, 3), (False, None)):
        extra = {} if explicit is None else {"metrics_device_samples": explicit}
        s = api_settings(settings, metrics_public=True, **extra)
        async with writing(s, db) as core, served(s, db, core) as api:
            assert core.writer is not None
            await core.writer.write(interface_samples("r1", now, 100))
            samples = parse(await api.scrape(token=None))
            assert bool(named(samples, "netmon_device_if_hc_in_octets_total")) == bool(expected)
            assert value(samples, "netmon_exported_device_series") == expected


async def test_token_needed_unless_public(settings: Settings, db: Database):
    s = api_settings(settings)
    async with served(s, db) as api:
        missing = await api.get(token=None)
        assert missing.status_code == 401
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert (await api.get(token="nmt_nothere_nothing")).status_code == 401
        page = await api.scrape()
        promtool_check(page)
        samples = parse(page)
        # What authentication refused is counted too.
        assert (
            value(
                samples, "netmon_http_requests_total", method="GET", route="/metrics", status="401"
            )
            == 2
        )
        assert value(samples, "netmon_build_info", version=__import__("netmon").__version__) == 1
        assert named(samples, "process_resident_memory_bytes")
    public = api_settings(settings, metrics_public=True)
    async with served(public, db) as api:
        page = await api.scrape(token=None)
        promtool_check(page)
        # Public /metrics only: the rest of the API still wants a token.
        assert (await api.get("/api/v1/devices", token=None)).status_code == 401


async def test_device_samples_left_out_when_the_database_fails(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
):
    import netmon.api.prometheus as prometheus

    async def refused(*_: Any, **__: Any) -> Any:
        raise ConnectionRefusedError("database away")

    s = api_settings(settings, metrics_device_samples=True)
    async with served(s, db) as api:
        # Patched where the exporter looks it up, not in device_export where it is defined.
        monkeypatch.setattr(prometheus, "fetch_device_samples", refused)
        page = await api.scrape()
        promtool_check(page)
        samples = parse(page)
        assert value(samples, "netmon_exported_device_samples_ok") == 0
        assert value(samples, "netmon_exported_device_series") == 0


@pytest.mark.slow
async def test_polls_move_the_poller_counters_and_devices_appear(
    settings: Settings, db: Database, lab: Any, tmp_path: Path
):
    s = api_settings(settings, metrics_device_samples=True)
    inventory = fast_inventory(lab, tmp_path / "inventory", interval="1s")
    async with running_poller(s, db, inventory) as service, running_alerts(s, db) as alerts:
        service.batcher.observe = alerts.observe
        core = LocalCore(
            writer=service.batcher.writer, batcher=service.batcher, poller=service, alerts=alerts
        )
        async with served(s, db, core) as api:
            first = parse(await api.scrape())
            assert value(first, "netmon_poller_devices", reachability="unknown") is not None

            async def polled_and_written() -> bool:
                samples = parse(await api.scrape())
                return (value(samples, "netmon_polls_total", outcome="success") or 0) >= 6 and (
                    value(samples, "netmon_poller_devices", reachability="reachable") == 3
                )

            await eventually(polled_and_written, what="two rounds of polls")
            await asyncio.sleep(0.3)  # the last batch lands
            page = await api.scrape()
            promtool_check(page)
            samples = parse(page)
            polls = sum(v for (n, _), v in samples.items() if n == "netmon_polls_total")
            assert value(samples, "netmon_poll_duration_seconds_count") == polls
            assert polls > (value(first, "netmon_poll_duration_seconds_count") or 0)
            assert value(samples, "netmon_poll_overruns_total") is not None
            assert value(samples, "netmon_config_backups_total", outcome="stored") == 0
            assert value(samples, "netmon_config_backups_pending") == 0
            assert value(samples, "netmon_polls_total", outcome="failure") == 0
            assert value(samples, "netmon_poll_samples_total") > 0
            assert value(samples, "netmon_writer_samples_stored_total") > 0
            assert value(samples, "netmon_writer_deadlines_total") == 0
            assert value(samples, "netmon_batcher_overflows_total") == 0
            assert value(samples, "netmon_snmp_requests_total", engine="gufo") > 0
            assert value(samples, "netmon_snmp_values_total", engine="gufo") > 0
            assert value(samples, "netmon_snmp_sessions") >= 3
            assert value(samples, "netmon_snmp_session_events_total", event="opened") >= 3
            batches = value(samples, "netmon_writer_batches_total")
            assert batches
            assert value(samples, "netmon_writer_batch_duration_seconds_count") == batches
            octets = named(samples, "netmon_device_if_hc_in_octets_total")
            assert {o["device"] for o in octets} == set(service.poller.device_names)
            assert all(o["interface"] and o["site"] == "lab" for o in octets)
            assert named(samples, "netmon_device_if_hc_in_octets_per_second")

            # A device that stops answering: its failed polls are counted by class.
            lab.device("lab-0003").silence(True)

            async def timed_out() -> bool:
                samples = parse(await api.scrape())
                return (
                    value(samples, "netmon_poll_errors_total", **{"class": "timeout"}) or 0
                ) >= 1

            await eventually(timed_out, what="a timed-out poll")
            page = await api.scrape()
            promtool_check(page)
            samples = parse(page)
            assert value(samples, "netmon_polls_total", outcome="failure") >= 1
            assert value(samples, "netmon_poll_duration_seconds_bucket", le="+Inf") == sum(
                v for (n, _), v in samples.items() if n == "netmon_polls_total"
            )

            # ... and the built-in rule says so: the alert change is counted and timed.
            async def alerted() -> bool:
                samples = parse(await api.scrape())
                return (value(samples, "netmon_alerts_transitions_committed_total") or 0) >= 1

            await eventually(alerted, what="the device-unreachable alert")
            page = await api.scrape()
            promtool_check(page)
            samples = parse(page)
            assert value(samples, "netmon_alerts_rules") == len(BUILTIN_RULES)
            assert value(samples, "netmon_alerts_samples_evaluated_total") > 0
            assert value(samples, "netmon_alerts_commit_seconds_count") >= 1
            assert value(samples, "netmon_alerts_transitions_lost_total") == 0
            # The database stayed up: nothing went the direct way.
            assert value(samples, "netmon_alerts_direct_delivered_total") == 0
            assert value(samples, "netmon_alerts_spool_bytes") == 0
