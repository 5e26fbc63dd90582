"""API throughput and live-feed latency: the real ``netmon api`` against a bare Litestar
handler, in the same run.

    python bench/api.py [--quick] [--database-url URL] [--runs N] [--workers 1,2]
                        [--devices N] [--duration S] [--ws-seconds S] [--profile DIR]

Set-up (not measured), in a fresh netmon_bench_<random> database: 1,000 devices (--quick:
100) in 10 sites and 3 roles, with facts and a poll_health row each; per device 20
interfaces x the 9 interface metrics the device detail reads (``INTERFACE_METRICS``:
admin/oper status, speed, octet/error/discard rates; label ``{"interface": name}``) and 4
device-level series (sysUpTime, hrProcessorLoad, hrStorageSize/Used): 184 series a device,
under ``api.series_max`` (200), so "every series of a device" is one legal request. The
series the range query reads (``ifHCInOctets:rate`` of Ethernet1 and Ethernet2) hold 24
hours at 60 s; every other series the last 15 minutes, topped up to the current minute
before each run, as a poller would have kept them. Rows go in by a server-side
INSERT ... SELECT in time order (as bench/query.py), then VACUUM ANALYZE and the real
rollups (``maintain``).

HTTP, per worker count (``--workers``, default 1 and 2; --quick: 1): the real server,
``python -m netmon api --workers N`` (a subprocess, rate limit off:
NETMON_API__RATE_LIMIT=0, a viewer token from ``netmon token create``), loaded by ``wrk``
with 64 connections over 2 threads (bench/api.lua rotates over every device), each
endpoint for ``--duration`` s (10; --quick 3) after a warm-up (2 s; --quick 1):

* device: ``GET /api/v1/devices/{id}`` (device, facts, health, 20 interfaces);
* last: ``GET /api/v1/metrics/last?device=NAME`` (the newest value of all 184 series);
* range: ``GET /api/v1/metrics/range?device=NAME&metric=ifHCInOctets:rate&label=
  interface=EthernetK&start=now-24h&end=now&step=5m`` (one series, 288 points).

Figures: ``rps_<endpoint>`` (requests/s), ``p50_ms_<endpoint>``, ``p99_ms_<endpoint>``;
keys without a suffix are at 1 worker (``netmon api``'s default), ``_w2`` at 2.

Device detail and last values are answered from each API process's memory of the newest
values (``api/last_values.py``), which it fills from the database once it LISTENs: the
measurement starts once the 1-worker server reports its first fill done (its
``/metrics``). ``last_values_fill_s`` (from ready to filled), ``last_values_series``,
``last_values_mb`` (its arrays) and ``api_rss_mb`` (the server's resident memory then)
are of that server.

Baseline, same run, served as ``netmon api`` serves (uvicorn with the options of
``netmon.api.server._config``, uvloop, one process per worker on one SO_REUSEPORT port),
same wrk settings and paths: a bare Litestar app whose handlers return a precomputed JSON
body of the size the real endpoint answered (no auth, no database). ``baseline.rps`` is the
device-detail-sized one (the "bare handler" of the targets); ``baseline.rps_<endpoint>`` and
``p99_ms_<endpoint>`` give the ratios.

Live feed, at the first worker count: N subscribers (one per device; 1,000) on
``/ws/metrics?access_token=`` in two client processes, each subscribed to one device, and
a producer writing 1,000 samples/s spread over those devices through the real
``SampleWriter`` (writer.publish on: PostgreSQL NOTIFY to the server's feed hub), 50 per
write every 50 ms, for ``--ws-seconds`` (20; --quick 5). Each sample is stamped with the
wall clock when it is handed to the writer; latency = receive time - sample time.
Figures: ``ws_p50_ms``, ``ws_p99_ms``, ``ws_gaps`` (gap messages), ``ws_delivered``,
``ws_expected`` (samples stored for subscribed devices), ``ws_lost`` (expected minus
delivered).

``notes`` carries the targets and whether they were met, response sizes, where the CPU
went during each measurement (API processes, PostgreSQL backends, wrk, the rest of the
machine), versions and the commit. Progress goes to stderr; the last line of stdout is the
JSON result (bench/_contract.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from _contract import emit, environment, main, median_figures, percentile, progress, stderr
from _process import Process
from litestar import Litestar, MediaType, Response, get

from netmon.api.schemas.devices import INTERFACE_METRICS
from netmon.config import Settings, load_settings
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.maintenance import maintain
from netmon.store.partitions import ensure_partitions, list_partitions, partitioned_tables
from netmon.store.schema import upgrade
from netmon.store.writer import SampleWriter

SCRIPT = Path(__file__).resolve()
LUA = SCRIPT.parent / "api.lua"
CONNECTIONS = 64
WRK_THREADS = 2
INTERFACES = 20
RANGE_INTERFACES = ("Ethernet1", "Ethernet2")
RANGE_METRIC = "ifHCInOctets:rate"
SITES = 10
ROLES = ("core", "distribution", "access")
LIVE_METRIC = ("hrProcessorLoad", {"cpu": "1"})
ENDPOINTS = ("device", "last", "range")
SUBSCRIBER_PROCESSES = 2

# The API's targets (on this 2-core machine), checked on the headline (1-worker) figures.
TARGET_RPS = 2_000
TARGET_P99_MS = 50.0
TARGET_WS_P99_MS = 100.0

# -- the data ------------------------------------------------------------------------------

# (metric, labels SQL, unit): the series of one device. Interface series are repeated for
# Ethernet1..Ethernet20.
_UNITS = {
    "ifAdminStatus": "",
    "ifOperStatus": "",
    "ifHighSpeed": "Mbit/s",
    "ifHCInOctets:rate": "bytes/s",
    "ifHCOutOctets:rate": "bytes/s",
}
DEVICE_SERIES = [
    ("sysUpTime", {}, "s"),
    ("hrProcessorLoad", {"cpu": "1"}, "percent"),
    ("hrStorageSize", {"storage": "RAM"}, "bytes"),
    ("hrStorageUsed", {"storage": "RAM"}, "bytes"),
]

_DEVICES = """
INSERT INTO devices (name, address, site, role, platform, tags, owner, facts)
SELECT format('bench-sw%s', lpad(i::text, 4, '0')),
       format('10.%s.%s.%s', 1 + i / 65536, (i / 256) % 256, i % 256),
       format('site%s', i % $2), ($3::text[])[1 + i % array_length($3::text[], 1)],
       'eos', ARRAY['bench', format('rack%s', i % 40)], 'inventory',
       jsonb_build_object(
           'sysName', format('bench-sw%s.example.net', lpad(i::text, 4, '0')),
           'sysDescr', 'Arista Networks EOS version 4.30.1F running on an Arista Networks '
                       'DCS-7050SX3-48YC8',
           'sysObjectID', '1.3.6.1.4.1.30065.1.3011.7050.3741.48',
           'interfaces', (SELECT jsonb_agg(format('Ethernet%s', k) ORDER BY k)
                          FROM generate_series(1, $4) AS k))
FROM generate_series(0, $1 - 1) AS i
"""

_HEALTH = """
INSERT INTO poll_health (device_id, last_poll, last_success, last_error_class, last_error,
    last_error_at, duration_ms, consecutive_failures, overruns, reachable)
SELECT id, $1::timestamptz, $1::timestamptz, CASE WHEN id % 50 = 0 THEN 'timeout' END,
       CASE WHEN id % 50 = 0 THEN 'no answer within 2 s (1 retry)' END,
       CASE WHEN id % 50 = 0 THEN $1::timestamptz - interval '3 hours' END,
       20 + (id % 17) * 1.5, 0, 0, true
FROM devices
"""

_INTERFACE_SERIES = """
INSERT INTO series (device_id, metric, labels, kind, unit)
SELECT d.id, m.metric, jsonb_build_object('interface', format('Ethernet%s', k)), 'gauge', m.unit
FROM devices d
CROSS JOIN generate_series(1, $1) AS k
CROSS JOIN unnest($2::text[], $3::text[]) AS m(metric, unit)
ORDER BY d.id, m.metric, k
"""

_DEVICE_SERIES = """
INSERT INTO series (device_id, metric, labels, kind, unit)
SELECT d.id, m.metric, m.labels, 'gauge', m.unit
FROM devices d CROSS JOIN unnest($1::text[], $2::jsonb[], $3::text[]) AS m(metric, labels, unit)
ORDER BY d.id, m.metric
"""

# One row per selected series and minute in [lo, hi], in time order; values shaped like
# what the poller stores (statuses 1/2, speeds, float rates, integer gauges).
_LOAD = """
INSERT INTO samples (series_id, time, value)
SELECT s.id, t,
       CASE s.metric
           WHEN 'ifAdminStatus' THEN 1
           WHEN 'ifOperStatus' THEN CASE WHEN s.id % 7 = 0 THEN 2 ELSE 1 END
           WHEN 'ifHighSpeed' THEN 10000
           WHEN 'sysUpTime' THEN 86400 * 40 + extract(epoch FROM t)::bigint % 86400
           WHEN 'hrProcessorLoad' THEN (random() * 100)::int
           WHEN 'hrStorageSize' THEN 17179869184
           WHEN 'hrStorageUsed' THEN 8589934592 + (random() * 1e9)::bigint
           ELSE (random() * 1e8)::float8::numeric
       END
FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') AS t
CROSS JOIN (
    SELECT id, metric FROM series
    WHERE ($3::bool IS NULL OR (metric = $4 AND labels->>'interface' = ANY($5::text[])) = $3)
      AND device_id BETWEEN $6 AND $7
) AS s
ORDER BY t, s.id
"""


@dataclass
class Data:
    devices: list[tuple[int, str]]  # (id, name)
    loaded_through: datetime  # the newest minute every series has
    series: int = 0
    rows: int = 0


async def _two_at_a_time(url: str, jobs: Sequence[tuple[str, tuple[Any, ...]]], label: str) -> None:
    """Run (sql, args) jobs over two connections, with a progress bar."""
    queue: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    with progress() as bar:
        task = bar.add_task(label, total=len(jobs))

        async def worker() -> None:
            conn = await asyncpg.connect(url, command_timeout=None)
            try:
                await conn.execute("SET work_mem = '256MB'")
                while not queue.empty():
                    sql, args = queue.get_nowait()
                    await conn.execute(sql, *args)
                    bar.advance(task)
            finally:
                await conn.close()

        await asyncio.gather(worker(), worker())


def _slices(n_devices: int, parts: int) -> list[tuple[int, int]]:
    """Device id ranges (ids are 1..n) for splitting a load over statements."""
    size = -(-n_devices // parts)
    return [(lo, min(lo + size - 1, n_devices)) for lo in range(1, n_devices + 1, size)]


async def load(db: Database, url: str, settings: Settings, n_devices: int, now: datetime) -> Data:
    samples = partitioned_tables(settings.storage)[0]
    first = now - timedelta(hours=24)
    recent = now - timedelta(minutes=14)
    conn = await db.connect()
    try:
        await ensure_partitions(
            conn, samples, first, now + settings.storage.premake, settings.storage.lock_timeout
        )
        async with conn.transaction():
            await conn.execute(_DEVICES, n_devices, SITES, list(ROLES), INTERFACES)
            await conn.execute(_HEALTH, now)
            metrics = list(INTERFACE_METRICS)
            await conn.execute(
                _INTERFACE_SERIES,
                INTERFACES,
                metrics,
                [_UNITS.get(m, "packets/s") for m in metrics],
            )
            await conn.execute(
                _DEVICE_SERIES,
                [m for m, _, _ in DEVICE_SERIES],
                [json.dumps(labels) for _, labels, _ in DEVICE_SERIES],
                [u for _, _, u in DEVICE_SERIES],
            )
        devices = [(r["id"], r["name"]) for r in await conn.fetch("SELECT id, name FROM devices")]
        n_series = await conn.fetchval("SELECT count(*) FROM series")
    finally:
        await conn.close()
    # The range series: 24 hours, in 6-hour slices; the rest: the last 15 minutes, in
    # slices of devices.
    ranges = list(RANGE_INTERFACES)
    jobs: list[tuple[str, tuple[Any, ...]]] = []
    hours = 6
    for h in range(0, 24, hours):
        lo = first + timedelta(hours=h)
        hi = min(now, lo + timedelta(hours=hours) - timedelta(minutes=1))
        if h + hours >= 24:
            hi = now
        jobs.append((_LOAD, (lo, hi, True, RANGE_METRIC, ranges, 1, n_devices)))
    for lo_id, hi_id in _slices(n_devices, 8):
        jobs.append((_LOAD, (recent, now, False, RANGE_METRIC, ranges, lo_id, hi_id)))
    await _two_at_a_time(url, jobs, f"loading {n_devices:,} devices, {n_series:,} series")
    conn = await asyncpg.connect(url, command_timeout=None)
    try:
        partitions = [p.name for p in await list_partitions(conn, "samples")]
        for name in partitions:
            await conn.execute(f"VACUUM (ANALYZE) {name}")
        await conn.execute("VACUUM (ANALYZE) devices, series, poll_health")
        rows = await conn.fetchval("SELECT count(*) FROM samples")
    finally:
        await conn.close()
    return Data(devices=devices, loaded_through=now, series=n_series, rows=rows)


async def top_up(url: str, data: Data, n_devices: int) -> int:
    """Every series gets the minutes it misses up to now (what the poller would have
    written meanwhile), so the 15-minute lookback of the device detail keeps finding them."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    if now <= data.loaded_through:
        return 0
    lo = data.loaded_through + timedelta(minutes=1)
    jobs = [
        (_LOAD, (lo, now, None, RANGE_METRIC, list(RANGE_INTERFACES), a, b))
        for a, b in _slices(n_devices, 4)
    ]
    await _two_at_a_time(url, jobs, f"top-up {lo:%H:%M}..{now:%H:%M}")
    data.loaded_through = now
    return int((now - lo).total_seconds() // 60 + 1)


async def rollups(db: Database, settings: Settings, now: datetime) -> dict[str, Any]:
    started = time.perf_counter()
    result = await maintain(db, settings.storage, now=now)
    conn = await db.connect()
    try:
        await conn.execute("VACUUM (ANALYZE) samples_5m, samples_1h")
    finally:
        await conn.close()
    return {
        "maintain_seconds": round(time.perf_counter() - started, 1),
        "rollup_rows_5m": result.rollups.rows_5m,
        "rollup_rows_1h": result.rollups.rows_1h,
    }


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(process group, CPU seconds) of a process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / _TICK


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the live processes of a process group."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _proc_cpu(int(entry))
            if found is not None and found[0] == pgid:
                total += found[1]
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


def http_get(url: str, token: str | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def wait_ready(process: Process, base: str, within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"the server exited ({process.proc.returncode}):\n{process.tail()}")
        with contextlib.suppress(OSError):
            status, _ = await asyncio.to_thread(http_get, f"{base}/health/live", None, 2.0)
            if status == 200:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not answer within {within:.0f} s:\n{process.tail()}")


async def wait_filled(
    process: Process, base: str, token: str, within: float = 120.0
) -> dict[str, float]:
    """Wait until the server holds every series' newest value in memory (its first fill
    from the database is done); its ``netmon_api_last_values*`` figures then."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"the server exited ({process.proc.returncode}):\n{process.tail()}")
        status, body = await asyncio.to_thread(http_get, f"{base}/metrics", token, 5.0)
        if status == 200:
            found = {
                line.split()[0]: float(line.split()[1])
                for line in body.decode().splitlines()
                if line.startswith("netmon_api_last_values")
            }
            if found.get("netmon_api_last_values_fills_total", 0) >= 1:
                return found
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the last values were not filled within {within:.0f} s")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def netmon_env(url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
    env.update(
        NETMON_DATABASE__URL=url,
        NETMON_DATA_DIR=str(data_dir),
        NETMON_API__RATE_LIMIT="0",  # the benchmark is one token at thousands of requests/s
        # ... and its live-feed stage holds 100 clients of that one token.
        NETMON_API__WS_MAX_CLIENTS_PER_TOKEN="1000",
        NETMON_LOG__LEVEL="warning",
        NETMON_LOG__FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return env


def create_token(url: str, data_dir: Path, name: str = "bench", sites: Sequence[str] = ()) -> str:
    """A viewer token made by `netmon token create`, limited to ``sites`` if any."""
    argv = [sys.executable, "-m", "netmon", "token", "create", "--role", "viewer"]
    argv += ["--name", name, *(a for s in sites for a in ("--site", s))]
    out = subprocess.run(
        argv,
        env=netmon_env(url, data_dir),
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"netmon token create failed:\n{out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def start_netmon(
    url: str, data_dir: Path, workers: int, port: int, profile: Path | None
) -> Process:
    argv = [sys.executable]
    if profile is not None:
        argv += ["-m", "cProfile", "-o", str(profile)]
    argv += ["-m", "netmon", "api", "--workers", str(workers), "--host", "127.0.0.1"]
    argv += ["--port", str(port)]
    log = data_dir / f"netmon-api-w{workers}.log"
    return Process(argv, netmon_env(url, data_dir), log, data_dir)


def start_baseline(data_dir: Path, workers: int, port: int, bodies: Path) -> Process:
    argv = [sys.executable, str(SCRIPT), "_baseline", str(workers), str(port)]
    env = netmon_env("postgresql://unused@127.0.0.1/unused", data_dir)
    env["NETMON_BENCH_BODIES"] = str(bodies)
    log = data_dir / f"baseline-w{workers}.log"
    return Process(argv, env, log, data_dir)


# -- the baseline server -------------------------------------------------------------------


def baseline_app() -> Litestar:
    """uvicorn's factory: a Litestar app with one handler per endpoint, each returning
    the body the real endpoint answered, precomputed (no auth, no database)."""
    bodies = {
        k: v.encode()
        for k, v in json.loads(Path(os.environ["NETMON_BENCH_BODIES"]).read_text()).items()
    }
    device_body, last_body, range_body = bodies["device"], bodies["last"], bodies["range"]

    @get("/api/v1/devices/{device_id:int}")
    async def device(device_id: int) -> Response[bytes]:
        return Response(device_body, media_type=MediaType.JSON)

    @get("/api/v1/metrics/last")
    async def last() -> Response[bytes]:
        return Response(last_body, media_type=MediaType.JSON)

    @get("/api/v1/metrics/range")
    async def range_() -> Response[bytes]:
        return Response(range_body, media_type=MediaType.JSON)

    @get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([device, last, range_, live], logging_config=None, debug=False)


def serve_baseline(workers: int, port: int, reuse_port: bool = False) -> None:
    """Serve baseline_app as ``netmon api`` serves the real one: uvicorn with the options of
    ``netmon.api.server._config`` on uvloop, one process per worker on one SO_REUSEPORT
    port (``netmon.api.server.bind_socket``), as ``serve_workers`` runs them."""
    import uvicorn
    import uvloop

    from netmon.api.server import _config, bind_socket

    settings = load_settings(None, api={"host": "127.0.0.1", "port": port, "workers": 1})
    if workers == 1:
        sock = bind_socket("127.0.0.1", port, reuse_port=reuse_port)
        uvloop.install()
        asyncio.run(uvicorn.Server(_config(baseline_app(), settings)).serve(sockets=[sock]))
        return
    holder = bind_socket("127.0.0.1", port, reuse_port=True)
    argv = [sys.executable, str(SCRIPT), "_baseline", "1", str(port), "reuse"]
    children = [subprocess.Popen(argv) for _ in range(workers)]
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(0.2) and all(c.poll() is None for c in children):
        pass
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        child.wait(timeout=15)
    holder.close()


# -- wrk -----------------------------------------------------------------------------------


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: dict[str, int]
    cpu: dict[str, float] = field(default_factory=dict)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError(
            "wrk is not installed: DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk"
        )
    return found


async def wrk(
    base: str, token: str | None, paths_file: Path, seconds: float
) -> tuple[dict[str, Any], float]:
    """One wrk run; its JSON summary and the CPU seconds wrk used."""
    argv = [wrk_binary(), f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s"]
    argv += ["--timeout", "10s", "--latency", "-s", str(LUA)]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    argv += [base, "--", str(paths_file)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    # The child's CPU: wrk is our only child reaped meanwhile.
    cpu = _reaped_cpu()
    for line in out.decode().splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:]), cpu
    raise RuntimeError(f"wrk gave no summary:\n{out.decode()[-2000:]}\n{err.decode()[-2000:]}")


_children_seen = [0.0]


def _reaped_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    delta = total - _children_seen[0]
    _children_seen[0] = total
    return delta


async def backend_pids(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    return [r["pid"] for r in rows]


def _pids_cpu(pids: Sequence[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        found = _proc_cpu(pid)
        if found is not None:
            out[pid] = found[1]
    return out


async def measure(
    conn: asyncpg.Connection,
    server: Process,
    base: str,
    token: str | None,
    paths_file: Path,
    seconds: float,
    warmup: float,
) -> Load:
    """Warm up, then one measured wrk run; CPU of server, PostgreSQL, wrk and the rest."""
    await wrk(base, token, paths_file, warmup)
    pg_before = _pids_cpu(await backend_pids(conn))
    api_before = group_cpu(server.pid)
    busy_before, total_before = machine_cpu()
    _reaped_cpu()
    summary, wrk_cpu = await wrk(base, token, paths_file, seconds)
    busy_after, total_after = machine_cpu()
    api_cpu = group_cpu(server.pid) - api_before
    pg_after = _pids_cpu(await backend_pids(conn))
    pg_cpu = sum(v - pg_before.get(pid, 0.0) for pid, v in pg_after.items())
    elapsed = summary["duration_us"] / 1e6
    requests = summary["requests"]
    errors = {k: summary[k] for k in ("connect", "read", "write", "status", "timeout")}
    if errors["status"] or errors["connect"] or errors["timeout"]:
        raise RuntimeError(f"{paths_file.name}: wrk saw errors {errors}:\n{server.tail()}")
    busy = busy_after - busy_before
    cores = (total_after - total_before) / max(elapsed, 1e-9)
    cpu = {
        "api_ms_per_req": 1000 * api_cpu / max(requests, 1),
        "pg_ms_per_req": 1000 * pg_cpu / max(requests, 1),
        "api_cores": api_cpu / elapsed,
        "pg_cores": pg_cpu / elapsed,
        "wrk_cores": wrk_cpu / elapsed,
        "other_cores": max(0.0, busy / elapsed - (api_cpu + pg_cpu + wrk_cpu) / elapsed),
        "cores": cores,
    }
    return Load(
        rps=requests / elapsed,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        requests=requests,
        errors=errors,
        cpu={k: round(v, 3) for k, v in cpu.items()},
    )


# -- the live feed -------------------------------------------------------------------------


def subscriber_main(ws_url: str, names_file: str) -> None:
    """A client process: one WebSocket per device name in ``names_file``, each subscribed
    to its device. Prints READY once all are subscribed, then reads until a line arrives
    on stdin, then prints one JSON line: latencies (ms) and counts."""
    import websockets

    names = [n for n in Path(names_file).read_text().split() if n]

    async def run() -> None:
        gate = asyncio.Semaphore(32)
        latencies: list[float] = []
        counts = {"samples": 0, "gaps": 0, "missed": 0, "errors": 0, "other": 0}

        async def open_one(name: str) -> Any:
            async with gate:
                for attempt in range(5):
                    try:
                        ws = await websockets.connect(
                            ws_url, open_timeout=60, ping_interval=None, max_size=1 << 22
                        )
                        break
                    except (OSError, TimeoutError, websockets.InvalidStatus):
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.5)
                await ws.send(json.dumps({"subscribe": {"devices": [name]}}))
                reply = json.loads(await ws.recv())
                if reply.get("type") != "subscribed":
                    raise RuntimeError(f"subscribe {name}: {reply}")
                return ws

        sockets = await asyncio.gather(*(open_one(n) for n in names))

        async def read(ws: Any) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    now = time.time()
                    data = json.loads(message)
                    kind = data.get("type")
                    if kind == "samples":
                        for sample in data["samples"]:
                            stamp = datetime.fromisoformat(sample["time"]).timestamp()
                            latencies.append(round((now - stamp) * 1000, 3))
                            counts["samples"] += 1
                    elif kind == "gap":
                        counts["gaps"] += 1
                        counts["missed"] += int(data.get("missed") or 0)
                    elif kind == "error":
                        counts["errors"] += 1
                    else:
                        counts["other"] += 1

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for ws in sockets:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        print(json.dumps({"latencies": latencies, **counts}), flush=True)

    asyncio.run(run())


async def live_feed(
    url: str,
    data_dir: Path,
    base: str,
    token: str,
    names: list[str],
    rate: int,
    seconds: float,
    server: Process,
) -> tuple[dict[str, float], dict[str, float]]:
    """Subscribers in SUBSCRIBER_PROCESSES processes; a producer at ``rate`` samples/s.
    Returns the figures and where the CPU went while the producer ran."""
    ws_url = base.replace("http://", "ws://") + "/ws/metrics?access_token=" + token
    clients: list[asyncio.subprocess.Process] = []
    parts = [names[i::SUBSCRIBER_PROCESSES] for i in range(SUBSCRIBER_PROCESSES)]
    try:
        for i, part in enumerate(parts):
            names_file = data_dir / f"subscribers-{i}.txt"
            names_file.write_text("\n".join(part))
            clients.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(SCRIPT),
                    "_subscribers",
                    ws_url,
                    str(names_file),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=1 << 26,  # the result line holds every latency
                    stderr=(data_dir / f"subscribers-{i}.log").open("ab"),
                    start_new_session=True,
                )
            )
        for client in clients:
            assert client.stdout is not None
            line = await asyncio.wait_for(client.stdout.readline(), 120)
            if line.strip() != b"READY":
                raise RuntimeError(
                    f"subscribers did not start: {line!r}\n"
                    + (data_dir / "subscribers-0.log").read_text()[-2000:]
                )
        api_before = group_cpu(server.pid)
        clients_before = sum(group_cpu(c.pid) for c in clients)
        busy_before, _ = machine_cpu()
        own_before = time.process_time()
        started = time.monotonic()
        expected = await produce(url, data_dir, names, rate, seconds)
        elapsed = time.monotonic() - started
        cpu = {
            "api_cores": (group_cpu(server.pid) - api_before) / elapsed,
            "subscriber_cores": (sum(group_cpu(c.pid) for c in clients) - clients_before) / elapsed,
            # the producer (SampleWriter) runs in this process
            "producer_cores": (time.process_time() - own_before) / elapsed,
            # all of it, PostgreSQL (COPY, NOTIFY) and other users of the machine included
            "machine_busy_cores": (machine_cpu()[0] - busy_before) / elapsed,
        }
        await asyncio.sleep(2.0)  # let the last samples arrive
        results = []
        for client in clients:
            assert client.stdin is not None
            assert client.stdout is not None
            client.stdin.write(b"stop\n")
            await client.stdin.drain()
            line = await asyncio.wait_for(client.stdout.readline(), 60)
            results.append(json.loads(line))
            async with asyncio.timeout(30):
                await client.wait()
    finally:
        for client in clients:
            if client.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    client.kill()
                await client.wait()
    latencies = [ms for r in results for ms in r["latencies"]]
    delivered = sum(r["samples"] for r in results)
    figures = {
        "ws_p50_ms": percentile(latencies, 50) if latencies else float("nan"),
        "ws_p99_ms": percentile(latencies, 99) if latencies else float("nan"),
        "ws_max_ms": max(latencies) if latencies else float("nan"),
        "ws_gaps": float(sum(r["gaps"] for r in results)),
        "ws_missed": float(sum(r["missed"] for r in results)),
        "ws_errors": float(sum(r["errors"] for r in results)),
        "ws_delivered": float(delivered),
        "ws_expected": float(expected),
        "ws_lost": float(expected - delivered),
    }
    return figures, cpu


async def produce(url: str, data_dir: Path, names: list[str], rate: int, seconds: float) -> int:
    """``rate`` samples/s over ``names`` through SampleWriter (publish on), 20 writes a
    second, each a task of its own (as concurrent polls would be); returns samples stored."""
    settings = load_settings(
        None,
        data_dir=data_dir / "producer",
        database={"url": url, "pool_min": 2, "pool_max": 8},
        writer={"publish": True},
    )
    metric, labels = LIVE_METRIC
    keys = [SeriesKey.of(name, metric, labels, unit="percent") for name in names]
    per_tick = max(1, rate // 20)
    interval = per_tick / rate
    db = Database(settings.database, settings.data_dir)
    await db.start()
    stored = 0
    try:
        async with SampleWriter(db, settings) as writer:
            # Series ids resolved before the clock starts (a poller's are after its first poll).
            async with db.pool.acquire() as conn:
                await writer.series.resolve(conn, keys)
            pending: set[asyncio.Task[Any]] = set()
            rng = random.Random(7)
            next_key = 0
            started = time.monotonic()
            tick = 0
            while time.monotonic() - started < seconds:
                batch = []
                for _ in range(per_tick):
                    batch.append(Sample(keys[next_key], datetime.now(UTC), rng.randrange(101)))
                    next_key = (next_key + 1) % len(keys)
                pending.add(asyncio.create_task(writer.write(batch)))
                tick += 1
                delay = started + tick * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            results = await asyncio.gather(*pending)
            stored = sum(r.stored for r in results)
    finally:
        await db.stop()
    return stored


# -- the benchmark -------------------------------------------------------------------------


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_paths(data: Data, out: Path, seed: int) -> dict[str, Path]:
    """One file of request paths per endpoint, devices in a shuffled order."""
    rng = random.Random(seed)
    devices = list(data.devices)
    rng.shuffle(devices)
    end = data.loaded_through
    start = end - timedelta(hours=24)
    window = f"&start={_rfc3339(start)}&end={_rfc3339(end)}&step=5m"
    quote = urllib.parse.quote
    lines = {
        "device": [f"/api/v1/devices/{i}" for i, _ in devices],
        "last": [f"/api/v1/metrics/last?device={quote(n)}" for _, n in devices],
        "range": [
            f"/api/v1/metrics/range?device={quote(n)}&metric={quote(RANGE_METRIC)}"
            f"&label={quote('interface=' + RANGE_INTERFACES[k % len(RANGE_INTERFACES)])}" + window
            for k, (_, n) in enumerate(devices)
        ],
    }
    files = {}
    for name, paths in lines.items():
        files[name] = out / f"paths-{name}.txt"
        files[name].write_text("\n".join(paths) + "\n")
    return files


def check_responses(base: str, token: str, files: dict[str, Path]) -> dict[str, str]:
    """One request per endpoint, checked for what the benchmark means to measure; the
    bodies (for the baseline's sizes)."""
    bodies = {}
    for name, path_file in files.items():
        path = path_file.read_text().split("\n", 1)[0]
        status, body = http_get(base + path, token)
        if status != 200:
            raise RuntimeError(f"{name}: {path} answered {status}: {body[:500]!r}")
        doc = json.loads(body)
        if name == "device":
            assert len(doc["interfaces"]) == INTERFACES, doc["interfaces"]
        elif name == "last":
            want = INTERFACES * len(INTERFACE_METRICS) + len(DEVICE_SERIES)
            assert len(doc["items"]) == want, (len(doc["items"]), want)
        else:
            assert len(doc["items"]) == 1, doc
            assert len(doc["items"][0]["points"]) >= 287, len(doc["items"][0]["points"])
        bodies[name] = body.decode()
    return bodies


def profile_path(directory: str, index: int) -> Path:
    where = Path(directory).resolve()
    where.mkdir(parents=True, exist_ok=True)
    return where / f"api-run{index + 1}.prof"


@dataclass
class Bench:
    args: argparse.Namespace
    url: str
    data_dir: Path
    data: Data
    token: str
    workers: list[int]
    seconds: float
    warmup: float
    ws_seconds: float
    ws_rate: int
    monitor: asyncpg.Connection
    sizes: dict[str, int] = field(default_factory=dict)
    # "netmon_device_w2" -> one dict of CPU figures per run
    cpu: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    live: dict[str, float] = field(default_factory=dict)
    ws_unavailable: str | None = None
    # Per netmon server started: its last-value fill (seconds, series, MB) and RSS.
    last_values: list[dict[str, float]] = field(default_factory=list)

    async def server_run(
        self, kind: str, workers: int, files: dict[str, Path], bodies_file: Path, index: int
    ) -> dict[str, Load]:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        profile = None
        if kind == "netmon" and self.args.profile and workers == 1:
            profile = profile_path(self.args.profile, index)
        if kind == "netmon":
            server = start_netmon(self.url, self.data_dir, workers, port, profile)
        else:
            server = start_baseline(self.data_dir, workers, port, bodies_file)
        try:
            await wait_ready(server, base)
            token = self.token if kind == "netmon" else None
            if kind == "netmon":
                ready = time.monotonic()
                filled = await wait_filled(server, base, self.token)
                self.last_values.append(
                    {
                        "last_values_fill_s": time.monotonic() - ready,
                        "last_values_series": filled["netmon_api_last_values_series"],
                        "last_values_mb": filled["netmon_api_last_values_bytes"] / 1e6,
                        "api_rss_mb": rss_mb(server.proc.pid),
                    }
                )
                bodies = await asyncio.to_thread(check_responses, base, self.token, files)
                self.sizes = {name: len(body.encode()) for name, body in bodies.items()}
                await asyncio.to_thread(bodies_file.write_text, json.dumps(bodies))
            loads = {}
            for endpoint in ENDPOINTS:
                load = await measure(
                    self.monitor, server, base, token, files[endpoint], self.seconds, self.warmup
                )
                loads[endpoint] = load
                stderr.print(
                    f"  {kind} w{workers} {endpoint}: {load.rps:,.0f} req/s, "
                    f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, cpu {load.cpu}"
                )
            if kind == "netmon" and workers == self.workers[0] and self.ws_seconds > 0:
                self.live = await self.live_run(base, server)
            return loads
        finally:
            server.stop()

    async def live_run(self, base: str, server: Process) -> dict[str, float]:
        reason = await probe_feed(base, self.token)
        if reason is not None:
            self.ws_unavailable = reason
            stderr.print(f"[yellow]live feed not measured: {reason}[/yellow]")
            return {}
        names = [n for _, n in self.data.devices]
        result, cpu = await live_feed(
            self.url,
            self.data_dir,
            base,
            self.token,
            names,
            self.ws_rate,
            self.ws_seconds,
            server,
        )
        self.cpu.setdefault("netmon_ws", []).append(cpu)
        stderr.print(f"  live feed: {result}")
        return result

    async def once(self, index: int) -> tuple[dict[str, float], dict[str, float]]:
        minutes = await top_up(self.url, self.data, len(self.data.devices))
        if minutes:
            stderr.print(f"topped up {minutes} minute(s) of samples")
        files = write_paths(self.data, self.data_dir, seed=index)
        bodies_file = self.data_dir / "bodies.json"
        figures: dict[str, float] = {}
        baseline: dict[str, float] = {}
        self.live = {}
        for workers in self.workers:
            suffix = "" if workers == self.workers[0] else f"_w{workers}"
            # The real server first: its answers are the baseline's bodies.
            for kind, target in (("netmon", figures), ("baseline", baseline)):
                loads = await self.server_run(kind, workers, files, bodies_file, index)
                for endpoint, load in loads.items():
                    target[f"rps_{endpoint}{suffix}"] = load.rps
                    target[f"p50_ms_{endpoint}{suffix}"] = load.p50_ms
                    target[f"p99_ms_{endpoint}{suffix}"] = load.p99_ms
                    self.cpu.setdefault(f"{kind}_{endpoint}{suffix}", []).append(load.cpu)
            baseline[f"rps{suffix}"] = baseline[f"rps_device{suffix}"]
        figures.update(self.live)
        # The 1-worker server's (the first started this run).
        figures.update(self.last_values[-len(self.workers)])
        return figures, baseline


async def probe_feed(base: str, token: str) -> str | None:
    """None if /ws/metrics takes a subscription, else why not."""
    import websockets

    url = base.replace("http://", "ws://") + "/ws/metrics?access_token=" + token
    try:
        async with websockets.connect(url, open_timeout=10, ping_interval=None) as ws:
            await ws.send(json.dumps({"subscribe": {"devices": ["bench-sw0000"]}}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        return f"/ws/metrics: {exc}"
    if reply.get("type") != "subscribed":
        return f"/ws/metrics answered {reply}"
    return None


def targets(figures: dict[str, float]) -> dict[str, Any]:
    """The API's targets, on the headline (1-worker) figures."""
    out: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        rps, p99 = figures.get(f"rps_{endpoint}"), figures.get(f"p99_ms_{endpoint}")
        out[endpoint] = {
            "target": f"rps_{endpoint} >= {TARGET_RPS} and p99_ms_{endpoint} <= {TARGET_P99_MS:g}",
            "met": rps is not None
            and p99 is not None
            and rps >= TARGET_RPS
            and p99 <= TARGET_P99_MS,
        }
    if "ws_p99_ms" in figures:
        out["ws"] = {
            "target": f"ws_p99_ms <= {TARGET_WS_P99_MS:g} and no silent gaps "
            "(ws_lost <= ws_missed announced by gap messages)",
            "met": figures["ws_p99_ms"] <= TARGET_WS_P99_MS
            and figures["ws_lost"] <= figures["ws_missed"],
        }
    return out


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=None, help="devices (1,000)")
    parser.add_argument(
        "--workers", default=None, help="comma-separated worker counts (1,2; --quick: 1)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per endpoint")
    parser.add_argument("--ws-seconds", type=float, default=None, help="live feed seconds")
    parser.add_argument("--ws-rate", type=int, default=1000, help="live samples per second")
    parser.add_argument(
        "--profile", default=None, help="a directory: run the 1-worker server under cProfile"
    )


async def bench(args: argparse.Namespace, url: str, data_dir: Path) -> dict[str, Any]:
    wrk_binary()
    n_devices = args.devices or (100 if args.quick else 1_000)
    workers = [int(w) for w in (args.workers or ("1" if args.quick else "1,2")).split(",")]
    seconds = args.duration or (3.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 2.0
    ws_seconds = args.ws_seconds if args.ws_seconds is not None else (5.0 if args.quick else 20.0)
    runs = args.runs or (1 if args.quick else 3)
    database = {"url": url, "pool_min": 2, "pool_max": 4, "command_timeout": timedelta(minutes=30)}
    settings = load_settings(None, data_dir=data_dir, database=database)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        await upgrade(db)
        started = time.perf_counter()
        data = await load(db, url, settings, n_devices, now)
        load_seconds = time.perf_counter() - started
        stderr.print(f"loaded {data.rows:,} rows of {data.series:,} series in {load_seconds:.0f} s")
        maintenance = await rollups(db, settings, now)
        stderr.print(f"maintain: {maintenance}")
    finally:
        await db.stop()
    token = await asyncio.to_thread(create_token, url, data_dir)
    monitor = await asyncpg.connect(url)
    try:
        server_version = await monitor.fetchval("SHOW server_version")
        runner = Bench(
            args=args,
            url=url,
            data_dir=data_dir,
            data=data,
            token=token,
            workers=workers,
            seconds=seconds,
            warmup=warmup,
            ws_seconds=ws_seconds,
            ws_rate=args.ws_rate,
            monitor=monitor,
        )
        figure_runs, baseline_runs = [], []
        for index in range(runs):
            figures, baseline = await runner.once(index)
            stderr.print(
                f"[bold]run {index + 1}/{runs}[/bold] figures={figures} baseline={baseline}"
            )
            figure_runs.append(figures)
            baseline_runs.append(baseline)
    finally:
        await monitor.close()
    figures = median_figures(figure_runs)
    cpu = {
        name: {k: round(v, 3) for k, v in median_figures(per_run).items()}
        for name, per_run in runner.cpu.items()
    }
    import uvicorn  # versions for the notes

    return emit(
        "api",
        figures,
        median_figures(baseline_runs),
        runs,
        notes={
            "targets": targets(figures),
            "headline": "; ".join(
                [f"keys without a suffix: {workers[0]} worker(s) (api.workers defaults to 1)"]
                + [f"_w{w}: {w} workers" for w in workers[1:]]
            ),
            "rate_limit": "off (NETMON_API__RATE_LIMIT=0)",
            "devices": n_devices,
            "series": data.series,
            "rows": data.rows,
            "series_per_device": data.series // n_devices,
            "response_bytes": runner.sizes,
            "connections": CONNECTIONS,
            "wrk_threads": WRK_THREADS,
            "seconds": seconds,
            "warmup_seconds": warmup,
            "load_seconds": round(load_seconds, 1),
            **maintenance,
            "cpu": cpu,
            "ws": runner.ws_unavailable
            or f"{len(data.devices)} subscribers in {SUBSCRIBER_PROCESSES} processes, "
            f"{args.ws_rate} samples/s for {ws_seconds:g} s, at {workers[0]} worker(s)",
            "baseline": "a bare Litestar app (no auth, no database) returning the body the "
            "real endpoint answered, precomputed, under the same uvicorn options and workers; "
            "baseline.rps is the device-detail-sized one",
            "uvicorn": f"{uvicorn.__version__}, http=auto, loop=auto",
            "server_version": server_version,
            **environment(),
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["_baseline"]:
        serve_baseline(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:5] == ["reuse"])
    elif sys.argv[1:2] == ["_subscribers"]:
        subscriber_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main(__doc__, options, bench))
