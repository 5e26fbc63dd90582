"""Prometheus scrape of ``/metrics`` with device samples: the real ``netmon api`` against
the export's own database query and a hand-written prometheus_client exporter, same run.

    python bench/prometheus_export.py [--quick] [--database-url URL] [--runs N]
                                      [--devices N] [--scrapes N]

Set-up (not measured), in a fresh netmon_bench_<random> database: 1,000 devices (--quick:
20) in 20 sites, each with the interfaces a lab device of its name has (8 to 48, as
``netmon.lab.Device`` picks them) and the series the lab's SNMP poll produces for them:
per interface the 12 IF-MIB counters (64-bit octets and packets, 32-bit errors and
discards), their 12 ``:rate`` gauges and 4 state gauges (admin/oper status, speed,
discontinuity time); per device sysUpTime, 2 hrProcessorLoad, and hrStorageSize/Used of
RAM and flash. Each series holds three polls 60 s apart, the newest at the start of the
benchmark (all inside the export's lookback), inserted server-side in time order, then
VACUUM ANALYZE.

Measured, per run, ``--scrapes`` times (5; --quick 3) after one unmeasured scrape:

* ``scrape_ms``: ``GET /metrics`` over HTTP from ``python -m netmon api`` (its defaults:
  device samples on) with a viewer token of every site, as Prometheus scrapes it
  (``Accept-Encoding: gzip``), until the last byte; the server started once, its last
  values filled, before the runs;
* ``scoped_scrape_ms``: the same with a token limited to one site (a twentieth).

Baseline, same run and database, in the benchmark process:

* ``query_ms``: the export's SQL alone (``fetch_device_samples``), the floor of any
  exporter reading these values from PostgreSQL;
* ``scrape_ms``: a hand-written exporter: that query, then one prometheus_client
  Gauge/CounterMetricFamily per metric filled straight from the rows and
  ``generate_latest`` of a registry holding them (no names cleaned, no HTTP).

Figures are medians of the scrapes within a run, then medians over ``runs`` (3; --quick
1). ``notes`` carries the series and body size, the target (500 ms at 1,000 devices) and
whether it was met.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _contract import emit, environment, main, median_figures, progress, stderr
from _process import Process

from api import create_token, free_port, start_netmon, wait_ready
from netmon.api.device_export import fetch_device_samples
from netmon.config import Settings, load_settings
from netmon.lab.device import Device
from netmon.records import SeriesKey
from netmon.store.database import Database
from netmon.store.partitions import ensure_partitions, partitioned_tables
from netmon.store.schema import upgrade
from netmon.store.series import SeriesCache

SITES = 20
LOOKBACK = timedelta(minutes=10)  # the export's: three 60 s polls, at least 10 minutes
TARGET_MS = 500.0

# (metric, unit) of the interfaces task's counters; each also gets a ``:rate`` gauge.
COUNTERS = [
    *((f"ifHC{d}{w}", "bytes" if w == "Octets" else "packets") for d in ("In", "Out")
      for w in ("Octets", "UcastPkts", "MulticastPkts", "BroadcastPkts")),
    *((f"if{d}{w}", "packets") for d in ("In", "Out") for w in ("Errors", "Discards")),
]  # fmt: skip
STATES = [
    ("ifAdminStatus", ""),
    ("ifOperStatus", ""),
    ("ifSpeed", "bit/s"),
    ("ifCounterDiscontinuityTime", "ticks"),
]

_LOAD = """
INSERT INTO samples (series_id, time, value)
SELECT s.id, $1::timestamptz - make_interval(secs => 60 * k),
       CASE WHEN s.kind = 'counter' THEN s.id * 1000003::numeric + (3 - k) * 7919
            ELSE (s.id % 1000)::numeric + k END
FROM generate_series(2, 0, -1) AS k
CROSS JOIN (SELECT id, kind FROM series ORDER BY id) AS s
ORDER BY 2, 1
"""


def device_keys(name: str) -> list[SeriesKey]:
    """The series a polled lab device of this name has (tasks system, interfaces,
    resources, and the ingest pipeline's rates)."""
    keys = [SeriesKey.of(name, "sysUpTime", unit="s")]
    for cpu in ("196608", "196609"):
        keys.append(SeriesKey.of(name, "hrProcessorLoad", {"cpu": cpu}, unit="percent"))
    for storage in ("Physical memory", "Flash"):
        for metric in ("hrStorageSize", "hrStorageUsed"):
            keys.append(SeriesKey.of(name, metric, {"storage": storage}, unit="bytes"))
    for iface in Device(name).interfaces:
        labels = {"interface": iface.name}
        for metric, unit in COUNTERS:
            keys.append(SeriesKey.of(name, metric, labels, kind="counter", unit=unit))
            keys.append(SeriesKey.of(name, f"{metric}:rate", labels, unit=f"{unit}/s"))
        for metric, unit in STATES:
            keys.append(SeriesKey.of(name, metric, labels, unit=unit))
    return keys


async def load(db: Database, settings: Settings, n_devices: int, now: datetime) -> int:
    samples = partitioned_tables(settings.storage)[0]
    async with db.pool.acquire() as conn:
        await ensure_partitions(
            conn, samples, now - LOOKBACK, now + settings.storage.premake, timedelta(seconds=5)
        )
        cache = SeriesCache()
        names = [f"lab-{n:04d}" for n in range(1, n_devices + 1)]
        with progress() as bar:
            task = bar.add_task(f"series of {n_devices:,} devices", total=n_devices)
            for start in range(0, n_devices, 25):
                batch = names[start : start + 25]
                await cache.resolve(conn, [k for name in batch for k in device_keys(name)])
                bar.advance(task, len(batch))
        await conn.execute(
            "UPDATE devices SET site = 'site-' || lpad((id % $1)::text, 2, '0'), "
            "role = CASE WHEN id % 10 = 0 THEN 'distribution' ELSE 'access' END",
            SITES,
        )
        stderr.print("inserting three polls of every series")
        await conn.execute(_LOAD, now, timeout=1800)
        await conn.execute("VACUUM (ANALYZE)", timeout=1800)
        n: int = await conn.fetchval("SELECT count(*) FROM series")
    return n


class Families:
    """The hand-written exporter of the baseline: a family per metric, straight from the
    rows (labels are decoded from the JSON text and used as they are)."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def collect(self) -> Iterable[Any]:
        import json

        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families: dict[str, Any] = {}
        for device, site, role, metric, labels_json, kind, _unit, value in self.rows:
            labels = json.loads(labels_json)
            name = "x_" + metric.replace(":", "_")
            family = families.get(name)
            if family is None:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                keys = ["device", "site", "role", *sorted(labels)]
                family = families[name] = (cls(name, metric, labels=keys), sorted(labels))
            family[0].add_metric(
                [device, site or "", role or "", *(labels[k] for k in family[1])], value
            )
        return [f for f, _ in families.values()]


def scrape(url: str, token: str, timeout: float = 60.0) -> tuple[float, bytes]:
    """Milliseconds until the last byte of one scrape, as Prometheus asks for it; the
    page."""
    request = urllib.request.Request(url)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "text/plain;version=0.0.4;q=0.3,*/*;q=0.1")
    request.add_header("Accept-Encoding", "gzip")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
        encoding = response.headers.get("Content-Encoding")
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, gzip.decompress(body) if encoding == "gzip" else body


def exported(page: bytes) -> tuple[float, float]:
    """The page's own account: device series on it, and whether the query succeeded (a
    query past its timeout leaves them out, which must not pass for a fast scrape)."""
    found = {}
    for line in page[-2000:].decode().splitlines():
        if line.startswith("netmon_exported_device_"):
            name, value = line.split()
            found[name] = float(value)
    return found.get("netmon_exported_device_series", 0), found.get(
        "netmon_exported_device_samples_ok", 0
    )


async def wait_filled(base: str, token: str, within: float) -> None:
    """Until the server holds every series' newest value in memory (its first fill from
    the database is done), as bench/api.py waits; with room for a slow page."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        _, page = await asyncio.to_thread(scrape, f"{base}/metrics", token, within)
        for line in page.decode().splitlines():
            if line.startswith("netmon_api_last_values_fills_total") and float(line.split()[1]):
                return
        await asyncio.sleep(1)
    raise RuntimeError(f"the last values were not filled within {within:.0f} s")


class Runs:
    def __init__(
        self, db: Database, base: str, tokens: dict[str, str], scrapes: int, now: datetime
    ) -> None:
        self.db = db
        self.base = base
        self.tokens = tokens
        self.scrapes = scrapes
        self.now = now
        self.sizes: dict[str, int] = {}
        self.series: dict[str, int] = {}

    async def netmon(self, key: str) -> float:
        url = f"{self.base}/metrics"
        await asyncio.to_thread(scrape, url, self.tokens[key])  # warm-up
        times = []
        for _ in range(self.scrapes):
            ms, page = await asyncio.to_thread(scrape, url, self.tokens[key])
            times.append(ms)
            self.sizes[key] = len(page)
            series, ok = exported(page)
            if not ok:
                raise RuntimeError(f"a scrape ({key}) without device samples: query failed")
            self.series[key] = int(series)
        return statistics.median(times)

    async def hand_written(self) -> tuple[float, float]:
        from prometheus_client.exposition import generate_latest

        queries, totals = [], []
        for i in range(self.scrapes + 1):
            started = time.perf_counter()
            rows = await fetch_device_samples(self.db, LOOKBACK, now=self.now)
            queried = time.perf_counter()
            body = await asyncio.to_thread(generate_latest, Families(rows))  # type: ignore[arg-type]
            done = time.perf_counter()
            assert body
            if i:
                queries.append((queried - started) * 1000)
                totals.append((done - started) * 1000)
        return statistics.median(queries), statistics.median(totals)

    async def once(self, index: int) -> tuple[dict[str, float], dict[str, float]]:
        figures: dict[str, float] = {}
        baseline: dict[str, float] = {}

        async def ours() -> None:
            figures["scrape_ms"] = await self.netmon("all")
            figures["scoped_scrape_ms"] = await self.netmon("scoped")

        async def theirs() -> None:
            baseline["query_ms"], baseline["scrape_ms"] = await self.hand_written()

        # Alternate which side goes first from run to run.
        for side in (ours, theirs) if index % 2 == 0 else (theirs, ours):
            await side()
        return figures, baseline


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=None, help="devices (lab-like)")
    parser.add_argument("--scrapes", type=int, default=None, help="timed scrapes per run")


async def bench(args: argparse.Namespace, url: str, data_dir: Path) -> dict[str, Any]:
    n_devices = args.devices or (20 if args.quick else 1_000)
    scrapes = args.scrapes or (3 if args.quick else 5)
    runs = args.runs or (1 if args.quick else 3)
    database = {"url": url, "pool_min": 1, "pool_max": 2, "command_timeout": timedelta(minutes=30)}
    settings = load_settings(None, data_dir=data_dir, database=database)
    db = Database(settings.database, settings.data_dir)
    await db.start()
    server: Process | None = None
    try:
        await upgrade(db)
        started = time.perf_counter()
        now = datetime.now(UTC)
        n_series = await load(db, settings, n_devices, now)
        load_seconds = time.perf_counter() - started
        stderr.print(f"{n_series:,} series loaded in {load_seconds:.0f} s")
        tokens = {
            "all": create_token(url, data_dir, "bench"),
            "scoped": create_token(url, data_dir, "bench-site", ["site-01"]),
        }
        port = free_port()
        server = start_netmon(url, data_dir, 1, port, None)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(server, base)
        await wait_filled(base, tokens["all"], within=600)
        measure = Runs(db, base, tokens, scrapes, now)
        figure_runs: list[dict[str, float]] = []
        baseline_runs: list[dict[str, float]] = []
        for index in range(runs):
            figures, baseline = await measure.once(index)
            stderr.print(f"run {index + 1}/{runs} figures={figures} baseline={baseline}")
            figure_runs.append(figures)
            baseline_runs.append(baseline)
        figures = median_figures(figure_runs)
        stderr.print(
            f"scrape {figures['scrape_ms']:.0f} ms at {n_devices:,} devices "
            f"(target {TARGET_MS:.0f} ms)"
        )
        return emit(
            "prometheus_export",
            figures,
            median_figures(baseline_runs),
            runs,
            notes={
                "devices": n_devices,
                "series": n_series,
                "exported_series": measure.series.get("all", 0),
                "scoped_exported_series": measure.series.get("scoped", 0),
                "sites": SITES,
                "scrapes_per_run": scrapes,
                "body_mb": round(measure.sizes.get("all", 0) / 1e6, 1),
                "scoped_body_mb": round(measure.sizes.get("scoped", 0) / 1e6, 2),
                "load_seconds": round(load_seconds, 1),
                "target_ms": TARGET_MS,
                "target_met": figures["scrape_ms"] <= TARGET_MS,
                "baseline": "the export's SQL alone (query_ms); that query and "
                "prometheus_client generate_latest of plain families from its rows "
                "(scrape_ms), in the benchmark process, no HTTP",
                **environment(),
            },
        )
    finally:
        if server is not None:
            server.stop()
        await db.stop()


if __name__ == "__main__":
    sys.exit(main(__doc__, options, bench))
