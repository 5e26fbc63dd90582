"""A netmon that the experiments may hurt: every part of it started here, and only here.

``netmon chaos run`` without ``--target`` builds this rig in a work folder:

* a private PostgreSQL cluster (Debian's server binaries; never the system's server),
  which the database faults stop, freeze and start again;
* two relay processes (``netmon chaos relay``), in front of the lab's SNMP ports and of
  the database: the latency faults add delay there, since this kernel has no netem;
* the built-in lab of simulated SNMPv3 devices in a process of its own, at a higher
  priority than netmon (real devices are not on the poller's machine, so CPU stress on
  this one must not slow their answers);
* netmon itself (``netmon run``, with its API), polling the lab through the relay;
* a webhook receiver, subscribed to every alert, that records what reaches it.

Everything is stopped by its own PID at the end; the work folder keeps the logs, the
journal and the report.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from netmon.chaos.postgres import PrivatePostgres
from netmon.chaos.receiver import Receiver
from netmon.chaos.relay import relay_request
from netmon.chaos.target import Target, metric
from netmon.lab.inventory import write_inventory
from netmon.lab.lab import LAB_SECRETS, LabParams
from netmon.logs import get_logger

__all__ = ["Rig", "RigOptions", "warm_up_s"]

log = get_logger(__name__)

_PORTS = (31000, 32600)  # below Linux's ephemeral range (32768-60999), above the lab's


@dataclass
class RigOptions:
    workdir: Path
    devices: int = 20
    interval_s: float = 10.0
    quick: bool = True
    jitter_s: float = 0.0
    interfaces: int | None = None  # per lab device; None: the lab's 8..48, fixed per name


def warm_up_s(interval_s: float) -> float:
    """How long to let a new rig poll before the first judgement: its first cycle has no
    rates, and the hypothesis before a fault judges the two cycles before it."""
    return 3 * interval_s + 5


class RigError(RuntimeError):
    pass


class Rig:
    def __init__(self, options: RigOptions) -> None:
        self.options = options
        self.workdir = options.workdir
        self.postgres: PrivatePostgres | None = None
        self.receiver: Receiver | None = None
        self._relays: list[subprocess.Popen[bytes]] = []
        self._lab: subprocess.Popen[bytes] | None = None
        self.target: Target | None = None

    # -- start ------------------------------------------------------------------------

    def start(self, progress: object = None) -> Target:
        o = self.options
        w = self.workdir
        for sub in ("data", "inventory", "stress"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        self.postgres = PrivatePostgres(w / "postgres")
        self.postgres.start()
        lab_base, relay_base = _free_udp_ranges(o.devices, 2)
        db_relay = _free_tcp_port()
        api_port = _free_tcp_port()
        device_relay = w / "relay-devices.sock"
        database_relay = w / "relay-database.sock"
        lab_control = w / "lab.sock"
        py = sys.executable
        last = relay_base + o.devices
        self._relays = [
            _spawn(
                [
                    py,
                    "-m",
                    "netmon",
                    "chaos",
                    "relay",
                    "--control",
                    str(device_relay),
                    "--udp",
                    f"{relay_base + 1}-{last}=127.0.0.1:{lab_base + 1}",
                ],
                w / "relay-devices.log",
            ),
            _spawn(
                [
                    py,
                    "-m",
                    "netmon",
                    "chaos",
                    "relay",
                    "--control",
                    str(database_relay),
                    "--tcp",
                    f"{db_relay}=127.0.0.1:{self.postgres.port}",
                ],
                w / "relay-database.log",
            ),
        ]
        self._lab = _spawn(
            [
                py,
                "-m",
                "netmon",
                "lab",
                "serve",
                "--devices",
                str(o.devices),
                "--base-port",
                str(lab_base),
                "--snmp-only",
                "--control",
                str(lab_control),
                *([] if o.interfaces is None else ["--interfaces", str(o.interfaces)]),
            ],
            w / "lab.log",
            nice=-10,
        )
        for control in (device_relay, database_relay):
            _wait(lambda c=control: _relay_ok(c), 30, f"a relay did not start ({w}/relay-*.log)")
        _wait(lambda: _lab_ok(lab_control), 60, "the lab did not start (lab.log)")
        interval = timedelta(seconds=o.interval_s)
        params = LabParams(devices=o.devices, base_port=relay_base, ssh=False)
        write_inventory(params, w / "inventory", interval)
        config = w / "netmon.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(w / "data"),
                    "database": {
                        "url": f"postgresql://postgres@127.0.0.1:{db_relay}/netmon",
                        "pool_min": 2,
                        "pool_max": 10,
                    },
                    "poller": {
                        "inventory": str(w / "inventory"),
                        "interval": f"{o.interval_s:g}s",
                        "jitter": f"{o.jitter_s:g}s",
                    },
                    "lab": {"enabled": False},
                    "api": {
                        "host": "127.0.0.1",
                        "port": api_port,
                        "workers": 1,
                        "metrics_public": True,
                    },
                    "alerts": {"enabled": True, "webhooks": {"allow": ["127.0.0.1/32"]}},
                    "log": {"level": "info", "format": "json"},
                }
            )
        )
        self.receiver = Receiver(w / "receiver.jsonl")
        self.receiver.start()
        env = {**LAB_SECRETS, "NETMON_CONFIG": str(config)}
        target = Target(
            workdir=w,
            api_url=f"http://127.0.0.1:{api_port}",
            database_url=self.postgres.url,
            devices={params.names()[i]: o.interval_s for i in range(o.devices)},
            jitter_s=o.jitter_s,
            quick=o.quick,
            netmon_command=[py, "-m", "netmon", "-c", str(config), "run"],
            netmon_env=env,
            device_relay=device_relay,
            database_relay=database_relay,
            postgres_root=self.postgres.root,
            postgres_port=self.postgres.port,
            lab_control=lab_control,
            receiver_log=self.receiver.log,
            receiver_url=self.receiver.url,
            stress_dir=w / "stress",
        )
        self.target = target
        target.save()
        target.start_netmon()
        _wait(lambda: _ready(target), 120, "netmon did not become ready (netmon.log)")
        target.mark("polling")
        target.admin_token = _admin_token(config, env)
        target.save()
        _subscribe(target)
        return target

    # -- stop -------------------------------------------------------------------------

    def stop(self, *, keep_database: bool = False) -> None:
        """Stop everything the rig started; ``keep_database`` stops PostgreSQL cleanly and
        keeps its cluster (``postgres/cluster`` names the folder), to query afterwards."""
        if self.target is not None:
            with contextlib.suppress(Exception):
                # A frozen database would keep netmon's stop waiting.
                if self.postgres is not None:
                    self.postgres.thaw()
                # The file, not this object: an experiment that restarted netmon wrote
                # the new process's PID there (the old one left a netmon running).
                Target.load(self.target.path).stop_netmon()
        for proc in (self._lab, *self._relays):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self.receiver is not None:
            self.receiver.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.thaw()
            if keep_database:
                self.postgres.stop("fast")
            else:
                self.postgres.destroy()  # its log stays in the work folder


def _spawn(command: list[str], log: Path, *, nice: int = 0) -> subprocess.Popen[bytes]:
    def lift() -> None:
        if nice:
            with contextlib.suppress(OSError):  # not root: same priority, still correct
                os.setpriority(os.PRIO_PROCESS, 0, nice)

    out = log.open("ab")
    try:
        return subprocess.Popen(  # noqa: S603 - our own command line
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **LAB_SECRETS},
            preexec_fn=lift,
        )
    finally:
        out.close()


def _wait(check: object, seconds: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    raise RigError(what)


def _relay_ok(control: Path) -> bool:
    return bool(control.exists() and relay_request(control, "status").get("ok"))


def _lab_ok(control: Path) -> bool:
    from netmon import control_socket

    return bool(control.exists() and control_socket.request(control, {"command": "status"}))


def _ready(target: Target) -> bool:
    polled = metric(target.metrics(), "netmon_poller_devices")
    return polled >= len(target.devices)


def _admin_token(config: Path, env: dict[str, str]) -> str:
    out = subprocess.run(  # noqa: S603 - our own command line
        [
            sys.executable,
            "-m",
            "netmon",
            "-c",
            str(config),
            "token",
            "create",
            "--role",
            "admin",
            "--name",
            "chaos",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RigError(f"netmon token create failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[0]


def _subscribe(target: Target) -> None:
    with target.client(10) as c:
        r = c.post(
            "/api/v1/webhooks",
            json={
                "name": "chaos-receiver",
                "url": target.receiver_url,
                "group_wait": "1s",
                "group_interval": "5s",
            },
        )
    if r.status_code != 201:
        raise RigError(f"webhook subscription refused: {r.status_code} {r.text}")


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_udp_ranges(length: int, count: int) -> list[int]:
    """``count`` bases such that base+1..base+length are free UDP ports, apart."""
    low, high = _PORTS
    span = length + 1
    if span * count > high - low:
        raise RigError(f"{count} x {length} ports do not fit in {low}..{high}")
    for _attempt in range(50):
        start = random.randrange(low, high - span * count)  # noqa: S311
        bases = [start + i * span for i in range(count)]
        if all(_udp_free(b + n) for b in bases for n in range(1, length + 1)):
            return bases
    raise RigError(f"no {count} free ranges of {length} UDP ports in {low}..{high}")
