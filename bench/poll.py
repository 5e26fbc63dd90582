"""Polling: netmon's poller against the lab, and bare gufo-snmp and pysnmp loops on the
same agents.

    python bench/poll.py [--quick] [--sizes 1000,20000] [--runs N] [--database-url URL]

Set-up (not measured): the built-in lab runs in a process of its own (``netmon lab
--snmp-only``) with N devices of 8 interfaces each, SNMPv3 authPriv SHA/AES-128; netmon's
poller runs in this process on a fresh database, every device every 60 s (--quick: 50
devices every 5 s) with the tasks system, interfaces and resources, exactly as ``netmon
run`` would (scheduler, Nornir tasks, ingest pipeline, batcher, COPY, poll health).

Measured: after two whole intervals of warm-up (every device polled twice: engine IDs
discovered, USM rows made, walks sized, rate series created), one more interval. In that
window: device polls finished, the CPU time of this process (the poller; the lab and
PostgreSQL are other processes), SNMP values received and overruns. Figures per size N:

* ``devices_per_min_per_core``: device polls per CPU-minute of the poller;
* ``cpu_ms_per_device_poll``, ``cpu_ms_per_value``; ``devices_polled_per_min``;
* ``overruns_at_N``: polls skipped because the previous poll of the device still ran.

The poller uses its default engine, gufo-snmp (``snmp.engine``).

Baselines, same run, same agents: a bare gufo-snmp loop (one session per device kept, one
``get_many`` of the system scalars and one GETBULK walk per column, in one thread:
``gufo_cpu_ms_per_device_poll``), and a bare pysnmp 7 loop (one engine, hlapi ``get_cmd`` /
``bulk_cmd`` with ``lookupMib=False``, 50 requests in flight) fetching the same OIDs the
tasks fetch (4 system scalars; 19 ifTable/ifXTable columns x 9 rows; 5 HOST-RESOURCES
columns x 3 rows: the lab's 2 CPUs and 2 storage areas, plus the row that ends the walk)
from 200 of the devices (--quick: all), after one unmeasured pass. It writes nothing.
Ratio = netmon / baseline of the same name: ``cpu_ms_per_device_poll`` is the pysnmp loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _contract import environment, main, repeat, stderr
from _lab import LabProcess, polling

from netmon.lab import AUTH_KEY_ENV, DEFAULT_AUTH_KEY, DEFAULT_PRIV_KEY, PRIV_KEY_ENV
from netmon.snmp.gufo_engine import shared_gufo

BASE_PORT = 10000  # 20,000 devices on 10001..30000: below the ephemeral ports (32768+) clients take
BASELINE_DEVICES = 200
# Devices per lab process: each device is a socket, and a process's open-file limit (the
# hard limit here is 20,000) caps them; bigger fleets run as several labs.
PER_LAB = 10_000
INTERFACES = 8
SYSTEM = ["1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0"]
IFX = "1.3.6.1.2.1.31.1.1.1."
IF = "1.3.6.1.2.1.2.2.1."
INTERFACE_COLUMNS = [
    *(IFX + c for c in ("1", "18", "19", "6", "10", "7", "11", "8", "12", "9", "13", "15")),
    *(IF + c for c in ("7", "8", "5", "14", "20", "13", "19")),
]
RESOURCE_COLUMNS = [
    "1.3.6.1.2.1.25.3.3.1.2",
    *(f"1.3.6.1.2.1.25.2.3.1.{c}" for c in (3, 4, 5, 6)),
]


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=None, help="lab sizes, e.g. 1000,5000")
    parser.add_argument("--interval", type=float, default=None, help="poll interval, seconds")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="poller.max_in_flight (default: 50, or one per 80 devices for big fleets)",
    )


def join_inventories(folder: Path) -> None:
    """One inventory for the labs' parts: every part's hosts, the first part's groups and
    defaults (the same in every part)."""
    parts = sorted(folder.glob("part-*"), key=lambda p: int(p.name.split("-")[1]))
    for name in ("groups.yaml", "defaults.yaml"):
        shutil.copy(parts[0] / name, folder / name)
    with (folder / "hosts.yaml").open("w") as hosts:
        for part in parts:
            hosts.write((part / "hosts.yaml").read_text())


def set_interval(folder: Path, interval: float) -> None:
    groups = folder / "groups.yaml"
    text, n = re.subn(r"poll_interval: \S+", f"poll_interval: {interval:g}s", groups.read_text())
    if not n:
        raise RuntimeError(f"{groups}: no poll_interval to set")
    groups.write_text(text)


def in_flight_for(devices: int, asked: int | None) -> int:
    """Polls in flight: what a fleet of ``devices`` needs to finish in an interval when a
    poll waits on the lab for tens of milliseconds (Little's law), as an operator sets
    ``poller.max_in_flight``: threads that wait on gufo-snmp hold no GIL."""
    return asked or max(50, devices // 80)


async def measure_netmon(
    url: str, scratch: Path, inventory: Path, interval: float, in_flight: int
) -> dict[str, float]:
    async with polling(url, scratch, inventory, max_in_flight=in_flight) as service:
        assert service.poller is not None
        stats, client = service.poller.stats, shared_gufo()
        # Two intervals: the first poll discovers and sizes; the second makes the rate
        # series. Both are one-time costs, not the steady state measured next.
        stderr.print(f"  warm-up: two intervals ({2 * interval:g} s)")
        await asyncio.sleep(2 * interval + min(10.0, interval / 2))
        polls, overruns, values = stats.polls, stats.overruns, client.stats["values"]
        failed, cpu, wall = stats.failed, time.process_time(), time.monotonic()
        stderr.print(f"  measuring one interval ({interval:g} s)")
        await asyncio.sleep(interval)
        cpu = time.process_time() - cpu
        wall = time.monotonic() - wall
        polls = stats.polls - polls
        values = client.stats["values"] - values
        return {
            "devices_per_min_per_core": polls / (cpu / 60),
            "cpu_ms_per_device_poll": cpu * 1000 / polls,
            "cpu_ms_per_value": cpu * 1000 / values,
            "devices_polled_per_min": polls / wall * 60,
            "overruns": float(stats.overruns - overruns),
            "overruns_total": float(stats.overruns),
            "failed_polls": float(stats.failed - failed),
            "values_per_device_poll": values / polls,
        }


def run_bare_loop(source: str, what: str, devices: int) -> list[str]:
    """A bare loop in a child process (its CPU its own, its engine fresh); its output."""
    done = subprocess.run(
        [sys.executable, "-c", source, str(BASE_PORT), str(min(devices, BASELINE_DEVICES))],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    if done.returncode != 0:
        raise RuntimeError(f"the bare {what} loop failed:\n{done.stderr[-3000:]}")
    return done.stdout.split()


def measure_gufo(devices: int) -> float:
    """CPU ms per device poll of the bare gufo-snmp loop."""
    return float(run_bare_loop(BARE_GUFO, "gufo-snmp", devices)[0])


BARE_GUFO = f"""
import sys, time
from gufo.snmp import Aes128Key, Sha1Key, User
from gufo.snmp.sync import SnmpSession
base, n = int(sys.argv[1]), int(sys.argv[2])
SYSTEM = {SYSTEM!r}
TABLES = (({INTERFACE_COLUMNS!r}, {INTERFACES + 1}), ({RESOURCE_COLUMNS!r}, 3))
user = User("netmon", auth_key=Sha1Key(b"{DEFAULT_AUTH_KEY}"),
            priv_key=Aes128Key(b"{DEFAULT_PRIV_KEY}"))
sessions = []
for port in range(base + 1, base + n + 1):
    s = SnmpSession(addr="127.0.0.1", port=port, user=user, timeout=2)
    s.refresh()
    sessions.append(s)
def poll(s):
    got = len(s.get_many(SYSTEM))
    for columns, reps in TABLES:
        for column in columns:
            got += sum(1 for _ in s.getbulk(column, max_repetitions=reps))
    return got
for s in sessions:
    poll(s)
values = polls = 0
cpu = time.process_time()
for _ in range(3):
    for s in sessions:
        values += poll(s)
        polls += 1
cpu = time.process_time() - cpu
print(cpu * 1000 / polls, values / polls)
"""


def measure_pysnmp(devices: int) -> dict[str, float]:
    """The bare pysnmp loop's figures."""
    out = run_bare_loop(BARE_LOOP, "pysnmp", devices)
    cpu_per_value, cpu_per_poll, errors = float(out[0]), float(out[1]), int(out[2])
    if errors:
        stderr.print(f"  baseline: {errors} requests failed (counted out of the figures)")
    return {
        "cpu_ms_per_value": cpu_per_value,
        "cpu_ms_per_device_poll": cpu_per_poll,
        "pysnmp_cpu_ms_per_device_poll": cpu_per_poll,
        "devices_per_min_per_core": 60_000 / cpu_per_poll,
    }


BARE_LOOP = f"""
import asyncio, sys, time
from pysnmp.hlapi.v3arch.asyncio import *
base, n = int(sys.argv[1]), int(sys.argv[2])
SYSTEM = {SYSTEM!r}
TABLES = (({INTERFACE_COLUMNS!r}, {INTERFACES + 1}), ({RESOURCE_COLUMNS!r}, 3))
async def poll(engine, user, port, counts):
    target = await UdpTransportTarget.create(("127.0.0.1", port), timeout=2, retries=1)
    oids = [ObjectType(ObjectIdentity(o)) for o in SYSTEM]
    e, s, i, vbs = await get_cmd(engine, user, target, ContextData(), *oids, lookupMib=False)
    if e is not None:
        counts[2] += 1
        return
    got = len(vbs)
    for columns, reps in TABLES:
        oids = [ObjectType(ObjectIdentity(o)) for o in columns]
        e, s, i, vbs = await bulk_cmd(engine, user, target, ContextData(), 0, reps, *oids,
                                      lookupMib=False)
        if e is not None:
            counts[2] += 1
            return
        got += len(vbs)
    counts[0] += got
    counts[1] += 1
async def main():
    engine = SnmpEngine()
    user = UsmUserData("netmon", "{DEFAULT_AUTH_KEY}", "{DEFAULT_PRIV_KEY}",
                       authProtocol=usmHMACSHAAuthProtocol, privProtocol=usmAesCfb128Protocol)
    ports = range(base + 1, base + n + 1)
    slots = asyncio.Semaphore(50)
    async def one(port, counts):
        async with slots:
            await poll(engine, user, port, counts)
    await asyncio.gather(*[one(p, [0, 0, 0]) for p in ports])
    counts = [0, 0, 0]
    cpu = time.process_time()
    for _ in range(3):
        await asyncio.gather(*[one(p, counts) for p in ports])
    cpu = time.process_time() - cpu
    print(cpu * 1000 / counts[0], cpu * 1000 / counts[1], counts[2])
asyncio.run(main())
"""


async def bench(args: argparse.Namespace, url: str, scratch: Path) -> dict[str, Any]:
    os.environ.setdefault(AUTH_KEY_ENV, DEFAULT_AUTH_KEY)
    os.environ.setdefault(PRIV_KEY_ENV, DEFAULT_PRIV_KEY)
    sizes = [int(s) for s in (args.sizes or ("50" if args.quick else "1000,20000")).split(",")]
    _raise_fd_limit(max(sizes))
    interval = args.interval or (5.0 if args.quick else 60.0)
    runs = args.runs or 1

    async def once(index: int) -> tuple[dict[str, float], dict[str, float]]:
        figures: dict[str, float] = {}
        baseline: dict[str, float] = {}
        for size in sizes:
            folder = scratch / f"lab-{size}-{index}"
            stderr.print(f"[bold]{size} devices[/bold]: lab starting")
            with contextlib.ExitStack() as labs:
                for k, first in enumerate(range(1, size + 1, PER_LAB)):
                    part = folder / f"part-{k}"
                    labs.enter_context(
                        LabProcess(
                            min(PER_LAB, size - first + 1),
                            part,
                            base_port=BASE_PORT,
                            interfaces=INTERFACES,
                            snmp_only=True,
                            first=first,
                        )
                    )
                join_inventories(folder)
                set_interval(folder, interval)
                stderr.print("  baseline: bare pysnmp loop, bare gufo-snmp loop")
                bare = await asyncio.to_thread(measure_pysnmp, size)
                bare["gufo_cpu_ms_per_device_poll"] = await asyncio.to_thread(measure_gufo, size)
                stderr.print(f"  baseline: {bare}")
                in_flight = in_flight_for(size, args.max_in_flight)
                got = await measure_netmon(
                    url, scratch / f"poller-{size}-{index}", folder, interval, in_flight
                )
                stderr.print(f"  netmon: {got}")
            suffix = "" if size == max(sizes) else f"_at_{size}"
            for key, value in got.items():
                name = f"overruns_at_{size}" if key == "overruns" else f"{key}{suffix}"
                figures[name] = value
            for key, value in bare.items():
                baseline[f"{key}{suffix}"] = value
            shared_gufo().close()  # this size's sessions: sockets, and their ports
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
        return figures, baseline

    return await repeat(
        "poll",
        runs,
        once,
        notes={
            "sizes": sizes,
            "interval_s": interval,
            "interfaces_per_device": INTERFACES,
            "baseline_devices": min(max(sizes), BASELINE_DEVICES),
            "security": "authPriv SHA-1/AES-128",
            "tasks": ["system", "interfaces", "resources"],
            "figures_without_suffix_are_for": max(sizes),
            "max_in_flight": {size: in_flight_for(size, args.max_in_flight) for size in sizes},
            **environment(),
        },
    )


def _raise_fd_limit(devices: int) -> None:
    """A session (one socket) per device here and one socket per device in the lab: raise
    the descriptor limit (root may raise the hard one; the lab inherits it)."""
    need = 2 * devices + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        stderr.print(f"  descriptor limit {hard}: fewer than {need}; sessions will be evicted")


if __name__ == "__main__":
    sys.exit(main(__doc__, options, bench))
