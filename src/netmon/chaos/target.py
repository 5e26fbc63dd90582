"""The deployment an experiment acts on, as a file the actions and probes read.

Chaos Toolkit calls an extension's functions by name, in whatever process runs the
experiment (``netmon chaos run`` itself, or ``chaos run chaos/x.yaml`` by hand), so the
deployment is described in ``target.json`` (the path in ``$NETMON_CHAOS_TARGET``): where
its API and database are, which processes are netmon's and how to start it again, the
relay and PostgreSQL it may act on, and a journal of *marks* (when a fault started and
ended, when netmon was down) that the counting reads. What the file does not name, an
action does not touch: a target given by URL has no relay or PostgreSQL of ours, and the
faults that need them refuse to run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["TARGET_ENV", "Mark", "Target", "metric", "parse_metrics"]

TARGET_ENV = "NETMON_CHAOS_TARGET"


@dataclass(frozen=True)
class Mark:
    kind: str  # experiment_start, fault_start, fault_end, down_start, down_end, ...
    time: float  # UNIX seconds
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    workdir: Path
    api_url: str
    database_url: str  # direct to the server, never through the relay: the judge's line
    devices: dict[str, float]  # name -> interval in seconds
    jitter_s: float = 0.0
    flush_s: float = 0.2
    quick: bool = False
    admin_token: str | None = None
    netmon_pid: int | None = None
    netmon_command: list[str] = field(default_factory=list)
    netmon_env: dict[str, str] = field(default_factory=dict)
    device_relay: Path | None = None  # control socket of the relay before the devices
    database_relay: Path | None = None  # control socket of the relay before the database
    postgres_root: Path | None = None
    postgres_port: int | None = None
    lab_control: Path | None = None
    receiver_log: Path | None = None
    receiver_url: str | None = None
    stress_dir: Path | None = None

    # -- the file ---------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.workdir / "target.json"

    def save(self) -> Path:
        data = asdict(self)
        text = json.dumps(data, default=str, indent=2)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.chmod(0o600)  # it holds an admin token
        temporary.replace(self.path)
        return self.path

    @classmethod
    def load(cls, path: Path | None = None) -> Target:
        if path is None:
            where = os.environ.get(TARGET_ENV)
            if not where:
                raise RuntimeError(
                    f"${TARGET_ENV} is not set: run experiments with `netmon chaos run`, or "
                    "point it at the target.json of a rig"
                )
            path = Path(where)
        data = json.loads(path.read_text())
        for key in ("workdir", "device_relay", "database_relay", "postgres_root", "lab_control"):
            if data.get(key) is not None:
                data[key] = Path(data[key])
        for key in ("receiver_log", "stress_dir"):
            if data.get(key) is not None:
                data[key] = Path(data[key])
        return cls(**data)

    # -- marks ------------------------------------------------------------------------

    @property
    def marks_path(self) -> Path:
        return self.workdir / "marks.jsonl"

    def mark(self, kind: str, when: float | None = None, **detail: Any) -> Mark:
        m = Mark(kind, time.time() if when is None else when, detail)
        with self.marks_path.open("a") as f:
            f.write(json.dumps(asdict(m)) + "\n")
        return m

    def marks(self, since: float = 0.0) -> list[Mark]:
        if not self.marks_path.exists():
            return []
        found = []
        for line in self.marks_path.read_text().splitlines():
            if line.strip():
                m = Mark(**json.loads(line))
                if m.time >= since:
                    found.append(m)
        return found

    def last_mark(self, kind: str) -> Mark | None:
        found = [m for m in self.marks() if m.kind == kind]
        return found[-1] if found else None

    # -- netmon, the process ------------------------------------------------------------

    def netmon_alive(self) -> bool:
        if self.netmon_pid is None:
            return False
        try:
            os.kill(self.netmon_pid, 0)
        except ProcessLookupError:
            return False
        # A zombie (dead, not reaped by us in this process) is not alive.
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{self.netmon_pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return False
        return True

    def start_netmon(self) -> int:
        """Start netmon as the rig started it (same command, environment and log)."""
        if not self.netmon_command:
            raise RuntimeError("this target's netmon was not started by netmon chaos: cannot")
        log = (self.workdir / "netmon.log").open("ab")
        env = {**os.environ, **self.netmon_env}
        process = subprocess.Popen(  # noqa: S603 - our own command line
            self.netmon_command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.netmon_pid = process.pid
        self.save()
        return process.pid

    def signal_netmon(self, sig: int) -> bool:
        if self.netmon_pid is None or not self.netmon_alive():
            return False
        os.kill(self.netmon_pid, sig)
        return True

    def stop_netmon(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL past ``timeout``: netmon's API processes are its children
        and end with it."""
        if not self.signal_netmon(signal.SIGTERM):
            return
        deadline = time.monotonic() + timeout
        while self.netmon_alive() and time.monotonic() < deadline:
            _reap(self.netmon_pid)
            time.sleep(0.1)
        if self.netmon_alive():
            self.signal_netmon(signal.SIGKILL)
            _kill_group_leftovers(self.netmon_pid)
        _reap(self.netmon_pid)

    # -- what netmon says ---------------------------------------------------------------

    def client(self, timeout: float = 5.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout)

    def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        """netmon's /metrics, flattened (``name{labels}`` -> value); empty when the API or
        the core does not answer."""
        try:
            with self.client(timeout) as c:
                r = c.get("/metrics")
        except httpx.HTTPError:
            return {}
        if r.status_code != 200:
            return {}
        return parse_metrics(r.text)


def metric(metrics: dict[str, float], name: str) -> float:
    """The value of ``name``, summed over its label sets (0 when absent)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def _reap(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _kill_group_leftovers(pid: int | None) -> None:
    """netmon runs in a session of its own (start_new_session): its API processes share
    its process group, which is netmon's PID. End what is left of that group only."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
