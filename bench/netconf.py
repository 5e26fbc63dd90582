"""NETCONF collection: netmon's poller against the lab's NETCONF devices, and bare ncclient
on the same servers.

    python bench/netconf.py [--quick] [--devices N] [--interval S] [--runs N] [--database-url URL]

Set-up (not measured): the built-in lab runs in a process of its own (``netmon lab``) with
4 x N devices, of which N (lab-0002, lab-0006, ...) serve NETCONF over SSH (8 interfaces
each; ietf-interfaces, running and candidate datastores). The inventory is cut to those N
devices. netmon's poller runs in this process on a fresh database, as ``netmon run``
would (scheduler, Nornir tasks, the shared NETCONF session pool, ingest pipeline,
batcher, COPY, configuration store). Default N = 50 devices polled every 30 s (--quick:
8 devices every 5 s); the session pool keeps its default size (64), so every device keeps
its session from one poll to the next.

Measured, for each of two task sets, after two whole intervals of warm-up (sessions
opened, capabilities read, rate series made): one more interval, in which the device
polls that finished and the CPU time of this process (the poller: its threads, ncclient's
and paramiko's threads, the writer; the lab and PostgreSQL are other processes):

* ``netconf_interfaces`` (one ``<get>`` with the ietf-interfaces subtree filter, parsed
  into IF-MIB-named samples, stored): ``cpu_ms_per_device``,
  ``devices_per_min_per_core`` (device polls per CPU-minute), ``devices_polled_per_min``;
* ``netconf_config`` (``<get-config>`` of running and candidate, normalised, redacted,
  hashed, stored when changed): ``backup_cpu_ms_per_device``,
  ``backup_devices_per_min_per_core``, ``backup_devices_polled_per_min``.

Where that CPU went, from each thread's CPU time (``/proc/self/task/*/schedstat``), per
device poll: ``loop_cpu_ms_per_device`` (the event loop: scheduler, ingest pipeline,
batcher, writer COPY, NOTIFY, poll health: what every protocol shares after collection),
``task_cpu_ms_per_device`` (the poller's worker threads: Nornir task, session pool, RPC,
parsing, records), ``transport_cpu_ms_per_device`` (ncclient's and paramiko's threads:
SSH, framing, routing replies) and ``other_cpu_ms_per_device`` (anything else, and
threads that ended during the interval); ``backup_`` ones for ``netconf_config``.

Then the task alone, as the poller's threads run it (Nornir task, shared session pool,
parsing, records) but without scheduler, ingest pipeline or store: three rounds over the
devices on ``max_in_flight`` threads: ``collect_cpu_ms_per_device`` and
``backup_collect_cpu_ms_per_device``. The difference from the figures above is what
storing costs.

Baseline, same run, same servers, in a child process (its CPU is its own): bare ncclient
``manager.connect`` to each device once (not measured), then three rounds of the same
``<get>`` with the same filter (``cpu_ms_per_device``) and of ``<get-config>`` running and
candidate (``backup_cpu_ms_per_device``) on a thread pool as wide as the poller's
``max_in_flight``. It parses nothing beyond what ncclient parses and writes nothing.
Ratio = netmon / baseline (CPU: lower is better; ``ratio.cpu_ms_per_device``, the whole
poller against the bare ``<get>``, has the target <= 1.5); the collect ratios compare like
with like (the baseline's cost stands for both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paramiko
import yaml
from _contract import environment, main, repeat, stderr
from _lab import LabProcess, polling
from ncclient.transport.session import Session as NcSession

from netmon.config import load_settings
from netmon.lab import DEFAULT_SSH_PASSWORD, SSH_PASSWORD_ENV, use_lab_secrets
from netmon.netconf.interfaces import subtree_filter
from netmon.poller.inventory import load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import run_poll

BASE_PORT = 24000  # below Linux's ephemeral ports (32768+), which clients take
INTERFACES = 8
NETCONF_GROUP = "lab-netconf"
PHASES = {"": "netconf_interfaces", "backup_": "netconf_config"}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=None, help="NETCONF devices polled")
    parser.add_argument("--interval", type=float, default=None, help="poll interval, seconds")


def netconf_inventory(lab: Path, folder: Path, task: str, interval: float) -> list[int]:
    """An inventory of the lab's NETCONF devices only, polling ``task`` every ``interval``;
    returns their NETCONF ports."""
    hosts = yaml.safe_load((lab / "hosts.yaml").read_text())
    groups = yaml.safe_load((lab / "groups.yaml").read_text())
    kept = {n: h for n, h in hosts.items() if NETCONF_GROUP in (h.get("groups") or [])}
    groups[NETCONF_GROUP]["data"]["tasks"] = [task]
    groups[NETCONF_GROUP]["data"]["poll_interval"] = f"{interval:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.yaml").write_text(yaml.safe_dump(kept))
    (folder / "groups.yaml").write_text(yaml.safe_dump(groups))
    shutil.copy(lab / "defaults.yaml", folder / "defaults.yaml")
    return [int(h["data"]["netconf"]["port"]) for h in kept.values()]


async def measure_netmon(
    url: str, scratch: Path, inventory: Path, interval: float
) -> dict[str, float]:
    async with polling(url, scratch, inventory) as service:
        assert service.poller is not None
        stats = service.poller.stats
        stderr.print(f"  warm-up: two intervals ({2 * interval:g} s)")
        await asyncio.sleep(2 * interval + min(10.0, interval / 2))
        polls, failed = stats.polls, stats.failed
        threads = thread_cpu()
        cpu, wall = time.process_time(), time.monotonic()
        stderr.print(f"  measuring one interval ({interval:g} s)")
        await asyncio.sleep(interval)
        cpu = time.process_time() - cpu
        wall = time.monotonic() - wall
        by_role = cpu_by_role(threads, thread_cpu(), cpu)
        polls = stats.polls - polls
        failed = stats.failed - failed
        if polls == 0:
            raise RuntimeError("no poll finished in the measured interval")
        if failed:
            errors = list(stats.last_errors)[-3:]
            stderr.print(f"  [yellow]{failed} polls failed[/yellow]: {errors}")
        return {
            "cpu_ms_per_device": cpu * 1000 / polls,
            "devices_per_min_per_core": polls / (cpu / 60),
            "devices_polled_per_min": polls / wall * 60,
            "failed_polls": float(failed),
            **{f"{role}_cpu_ms_per_device": s * 1000 / polls for role, s in by_role.items()},
        }


ROLES = ("loop", "task", "transport", "other")


def _role(thread: threading.Thread) -> str:
    """Where a thread's CPU belongs: the event loop (scheduler, ingest pipeline, batcher,
    writer, NOTIFY, poll health: the path every protocol shares after collection), the
    poller's worker threads (the Nornir task: session pool, RPC call, parsing, records),
    ncclient's and paramiko's threads (framing, SSH), or anything else."""
    if thread is threading.main_thread():
        return "loop"
    if thread.name.startswith("netmon-poll"):
        return "task"
    if isinstance(thread, NcSession | paramiko.Transport):
        return "transport"
    return "other"


def thread_cpu() -> dict[int, tuple[str, int]]:
    """Each live thread of this process: (role, nanoseconds on a CPU so far).

    From ``/proc/self/task/*/schedstat``: ``stat``'s clock ticks (10 ms) would round each
    of ncclient's and paramiko's threads, a fraction of a millisecond per poll, to 0."""
    roles = {t.native_id: _role(t) for t in threading.enumerate() if t.native_id is not None}
    out: dict[int, tuple[str, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/schedstat").read_text()
        except OSError:
            continue  # ended meanwhile
        out[int(tid)] = (roles.get(int(tid), "other"), int(stat.split()[0]))
    return out


def cpu_by_role(
    before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], total: float
) -> dict[str, float]:
    """CPU seconds per role between two ``thread_cpu``; what threads that ended in
    between used goes to "other"."""
    out = dict.fromkeys(ROLES, 0.0)
    for tid, (role, ns) in after.items():
        out[role] += (ns - before.get(tid, (role, 0))[1]) / 1e9
    out["other"] += max(0.0, total - sum(out.values()))
    return out


def measure_collection(inventory: Path, workers: int) -> dict[str, float]:
    """The tasks alone, as the poller's threads run them (Nornir task, shared session
    pool, parsing, records), without the scheduler, ingest pipeline or store: three rounds
    after one unmeasured, on a pool of ``workers`` threads."""
    settings = load_settings(None)
    nr = load_inventory(inventory)
    plans = plan_polls(nr, settings.poller, TaskRegistry.discover())
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: run_poll(nr, p), plans))
        cpu = time.process_time()
        results = [r for _ in range(3) for r in pool.map(lambda p: run_poll(nr, p), plans)]
        cpu = time.process_time() - cpu
    failed = [r.error for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} collections failed: {failed[:3]}")
    return {"collect_cpu_ms_per_device": cpu * 1000 / len(results)}


def measure_ncclient(ports: list[int], user: str, workers: int) -> dict[str, float]:
    password = os.environ.get(SSH_PASSWORD_ENV, DEFAULT_SSH_PASSWORD)
    done = subprocess.run(
        [sys.executable, "-c", BARE_NCCLIENT],
        input=json.dumps(
            {
                "ports": ports,
                "user": user,
                "password": password,
                "filter": list(subtree_filter("ietf")),
                "workers": workers,
            }
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the bare ncclient loop failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "cpu_ms_per_device": out["get_ms"],
        "collect_cpu_ms_per_device": out["get_ms"],
        "backup_collect_cpu_ms_per_device": out["config_ms"],
        "devices_per_min_per_core": 60_000 / out["get_ms"],
        "backup_cpu_ms_per_device": out["config_ms"],
        "backup_devices_per_min_per_core": 60_000 / out["config_ms"],
    }


BARE_NCCLIENT = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from lxml import etree
from ncclient import manager
job = json.loads(sys.stdin.read())
CANDIDATE = "urn:ietf:params:netconf:capability:candidate:1.0"
def connect(port):
    return manager.connect(host="127.0.0.1", port=port, username=job["user"],
                           password=job["password"], hostkey_verify=False,
                           allow_agent=False, look_for_keys=False, timeout=30)
def get(m):
    filt = [etree.fromstring(part) for part in job["filter"]]
    return len(m.get(filter=filt).xml)
def get_config(m):
    n = len(m.get_config("running").xml)
    if CANDIDATE in m.server_capabilities:
        n += len(m.get_config("candidate").xml)
    return n
with ThreadPoolExecutor(job["workers"]) as pool:
    sessions = list(pool.map(connect, job["ports"]))
    out = {}
    for name, call in (("get_ms", get), ("config_ms", get_config)):
        list(pool.map(call, sessions))  # once unmeasured
        cpu = time.process_time()
        for _ in range(3):
            list(pool.map(call, sessions))
        out[name] = (time.process_time() - cpu) * 1000 / (3 * len(sessions))
    for m in sessions:
        m.close_session()
print(json.dumps(out))
"""


async def bench(args: argparse.Namespace, url: str, scratch: Path) -> dict[str, Any]:
    # The lab's inventory refers to its secrets by environment variable (its hosts keep
    # their snmp section, which is checked at load even when no SNMP task runs).
    use_lab_secrets()
    devices = args.devices or (8 if args.quick else 50)
    interval = args.interval or (5.0 if args.quick else 30.0)
    runs = args.runs or 1
    settings = load_settings(None)
    workers = settings.poller.max_in_flight

    async def once(index: int) -> tuple[dict[str, float], dict[str, float]]:
        figures: dict[str, float] = {}
        lab = scratch / f"lab-{index}"
        stderr.print(f"[bold]{devices} NETCONF devices[/bold] ({4 * devices} in the lab)")
        with LabProcess(4 * devices, lab, base_port=BASE_PORT, interfaces=INTERFACES):
            groups = yaml.safe_load((lab / "groups.yaml").read_text())
            user = groups[NETCONF_GROUP]["data"]["netconf"]["username"]
            for prefix, task in PHASES.items():
                folder = scratch / f"inventory-{index}-{task}"
                ports = netconf_inventory(lab, folder, task, interval)
                assert len(ports) == devices, (len(ports), devices)
                stderr.print(f"  {task}")
                poller_dir = scratch / f"poller-{index}-{task}"
                got = await measure_netmon(url, poller_dir, folder, interval)
                stderr.print(f"  netmon: {got}")
                for key, value in got.items():
                    figures[f"{prefix}{key}"] = value
                alone = await asyncio.to_thread(measure_collection, folder, workers)
                stderr.print(f"  the task alone: {alone}")
                for key, value in alone.items():
                    figures[f"{prefix}{key}"] = value
            stderr.print("  baseline: bare ncclient")
            bare = await asyncio.to_thread(measure_ncclient, ports, user, workers)
            stderr.print(f"  baseline: {bare}")
        with contextlib.suppress(OSError):
            shutil.rmtree(lab)
        return figures, bare

    return await repeat(
        "netconf",
        runs,
        once,
        notes={
            "devices": devices,
            "interval_s": interval,
            "interfaces_per_device": INTERFACES,
            "tasks": list(PHASES.values()),
            "baseline": "ncclient manager, persistent sessions, same filter, same datastores",
            "baseline_workers": workers,
            **environment(),
        },
    )


if __name__ == "__main__":
    sys.exit(main(__doc__, options, bench))
