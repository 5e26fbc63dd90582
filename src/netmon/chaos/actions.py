"""Chaos Toolkit actions on a netmon rig: open and close the judged window, and the
faults. Each fault marks when it started and ended, holds for its duration (``seconds``,
or ``quick_seconds`` under ``--quick``) and undoes itself; the experiments' rollbacks call
the undo again, which does nothing when there is nothing to undo.

A fault acts only on what the target file names: its own PostgreSQL, its own relays, its
own lab and netmon process. A target given by URL has none of those, and those faults
refuse (``FaultUnavailable``) rather than act on something else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from netmon import control_socket
from netmon.chaos.postgres import PrivatePostgres
from netmon.chaos.relay import relay_request
from netmon.chaos.stress import Stress
from netmon.chaos.target import Target, metric
from netmon.chaos.window import (
    SETTLE_MARGIN_S,
    close_window,
    current,
    longest_interval,
    open_window,
)

__all__ = [
    "FaultUnavailable",
    "api_restart_under_load",
    "begin",
    "close",
    "cpu_exhaustion",
    "database_freeze",
    "database_latency",
    "database_outage",
    "database_restore",
    "device_fails_during_outage",
    "device_latency",
    "disk_saturation",
    "ensure_running",
    "memory_pressure",
    "poller_restart",
    "poller_sigkill",
    "restore_all",
    "settle",
    "wait_recovered",
]


class FaultUnavailable(RuntimeError):
    """The target does not give this fault anything of ours to act on."""


def _duration(seconds: float, quick_seconds: float | None, target: Target) -> float:
    return float(quick_seconds if target.quick and quick_seconds is not None else seconds)


def _hold(seconds: float) -> None:
    time.sleep(max(0.0, seconds))


def _postgres(target: Target) -> PrivatePostgres:
    if target.postgres_root is None or target.postgres_port is None:
        raise FaultUnavailable("the target's database is not one this rig started")
    return PrivatePostgres(target.postgres_root, target.postgres_port)


def _relay(path: Path | None, what: str) -> Path:
    if path is None:
        raise FaultUnavailable(f"the target has no relay in front of {what}")
    return path


# -- the window ---------------------------------------------------------------------------


def begin(name: str = "experiment") -> dict[str, Any]:
    """Open the judged window: from now, every due cycle must be stored once."""
    target = Target.load()
    window = open_window(name, target)
    return {"start": window.start}


def close() -> None:
    """Close the window (the last rollback: it also runs when the method failed)."""
    close_window()


def settle(cycles: int = 1) -> float:
    """Wait until every cycle due before the fault's end (and ``cycles - 1`` more after
    it: a restart is judged on the cycles that follow it) is complete in the database."""
    target = Target.load()
    window = current()
    last = window.fault_end() if window is not None else None
    until = (last or time.time()) + cycles * longest_interval(target) + SETTLE_MARGIN_S + 1.0
    wait = max(0.0, until - time.time())
    _hold(wait)
    return wait


def wait_recovered(timeout_s: float = 300.0) -> float | None:
    """Wait for the backlog to be written and netmon ready again; seconds from the fault's
    end, or None if it did not recover within ``timeout_s``."""
    window = current()
    if window is None:
        return None
    end = window.fault_end() or time.time()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        at = window.watcher.recovered_at(end)
        if at is not None:
            return round(at - end, 2)
        time.sleep(0.5)
    return None


def _keep(figures: dict[str, Any]) -> dict[str, Any]:
    """A fault's own figures, also in the experiment's line of the report."""
    window = current()
    if window is not None:
        window.extra.update(figures)
    return figures


def _fault_start(target: Target, kind: str, **detail: Any) -> None:
    target.mark("fault_start", fault=kind, **detail)


def _fault_end(target: Target, kind: str) -> None:
    target.mark("fault_end", fault=kind)


# -- network latency ---------------------------------------------------------------------


def _latency(control: Path, fault: str, delay_s: float, hold_s: float) -> None:
    target = Target.load()
    _fault_start(target, fault, delay_s=delay_s)
    relay_request(control, "set_delay", seconds=delay_s)
    try:
        _hold(hold_s)
    finally:
        relay_request(control, "set_delay", seconds=0.0)
        _fault_end(target, fault)


def device_latency(
    delay_s: float = 0.5, seconds: float = 120.0, quick_seconds: float | None = 20.0
) -> None:
    """Add ``delay_s`` each way to every datagram between netmon and the devices."""
    target = Target.load()
    control = _relay(target.device_relay, "the devices")
    _latency(control, "device_latency", delay_s, _duration(seconds, quick_seconds, target))


def database_latency(
    delay_s: float = 0.5, seconds: float = 120.0, quick_seconds: float | None = 20.0
) -> None:
    """Add ``delay_s`` each way to netmon's database connections."""
    target = Target.load()
    control = _relay(target.database_relay, "the database")
    _latency(control, "database_latency", delay_s, _duration(seconds, quick_seconds, target))


# -- the database ------------------------------------------------------------------------


def database_outage(seconds: float = 60.0, quick_seconds: float | None = 10.0) -> None:
    """Stop the database server (connections fail at once), then start it again."""
    target = Target.load()
    pg = _postgres(target)
    _fault_start(target, "database_outage")
    pg.stop()
    try:
        _hold(_duration(seconds, quick_seconds, target))
    finally:
        pg.start()
        _fault_end(target, "database_outage")


def database_freeze(seconds: float = 60.0, quick_seconds: float | None = 10.0) -> None:
    """SIGSTOP the database server: connections hang instead of failing."""
    target = Target.load()
    pg = _postgres(target)
    _fault_start(target, "database_freeze")
    pg.freeze()
    try:
        _hold(_duration(seconds, quick_seconds, target))
    finally:
        pg.thaw()
        _fault_end(target, "database_freeze")


def database_restore() -> None:
    """Rollback: the database running, unfrozen, with no delay or cut before it."""
    target = Target.load()
    with contextlib.suppress(FaultUnavailable):
        pg = _postgres(target)
        pg.thaw()
        if not pg.is_running():
            pg.start()
    if target.database_relay is not None:
        relay_request(target.database_relay, "restore")
        relay_request(target.database_relay, "set_delay", seconds=0.0)


# -- the machine -------------------------------------------------------------------------


def cpu_exhaustion(
    workers: int = 16, seconds: float = 120.0, quick_seconds: float | None = 20.0
) -> None:
    """``workers`` CPU hogs (stress-ng --cpu) on this machine for the duration."""
    target = Target.load()
    _fault_start(target, "cpu_exhaustion", workers=workers)
    stress = Stress.cpu(workers, _duration(seconds, quick_seconds, target))
    try:
        stress.wait()
    finally:
        stress.stop()
        _fault_end(target, "cpu_exhaustion")


def memory_pressure(
    fraction: float = 0.8,
    seconds: float = 120.0,
    quick_seconds: float | None = 20.0,
    ramp_s: float = 60.0,
    quick_ramp_s: float | None = 15.0,
) -> dict[str, float]:
    """Take the machine's used memory to ``fraction`` of the total, ramping up over
    ``ramp_s``, and hold it for the duration."""
    target = Target.load()
    ramp = _duration(ramp_s, quick_ramp_s, target)
    hold = _duration(seconds, quick_seconds, target)
    _fault_start(target, "memory_pressure", fraction=fraction)
    stress = Stress.memory(fraction, hold + ramp, ramp)
    try:
        stress.wait()
    finally:
        stress.stop()
        _fault_end(target, "memory_pressure")
    return _keep({"peak_memory_fraction": round(stress.peak_memory_fraction, 3)})


def disk_saturation(
    workers: int = 4,
    seconds: float = 120.0,
    quick_seconds: float | None = 20.0,
    outage_s: float = 30.0,
    quick_outage_s: float | None = 5.0,
) -> None:
    """Saturate the disk that holds netmon's data folder (stress-ng --hdd there), with a
    database outage inside it, so the spool is written while the disk is busy."""
    target = Target.load()
    if target.stress_dir is None:
        raise FaultUnavailable("the target names no folder on netmon's disk to stress")
    hold = _duration(seconds, quick_seconds, target)
    outage = _duration(outage_s, quick_outage_s, target)
    _fault_start(target, "disk_saturation", workers=workers)
    stress = Stress.disk(target.stress_dir, workers, hold)
    pg: PrivatePostgres | None = None
    try:
        if outage > 0:
            pg = _postgres(target)
            _hold(max(0.0, (hold - outage) / 2))
            pg.stop()
            _hold(outage)
            pg.start()
        stress.wait()
    finally:
        if pg is not None and not pg.is_running():
            pg.start()
        stress.stop()
        _fault_end(target, "disk_saturation")


# -- netmon itself -----------------------------------------------------------------------


def _wait_polling(target: Target, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metric(target.metrics(timeout=2.0), "netmon_poller_devices") >= len(target.devices):
            return True
        time.sleep(0.2)
    return False


def _restart(target: Target) -> None:
    target.start_netmon()
    if not _wait_polling(target):
        raise RuntimeError("netmon did not come back within 120 s (netmon.log)")
    target.mark("down_end")


def poller_sigkill(
    during_outage: bool = False, outage_s: float = 30.0, quick_outage_s: float | None = 10.0
) -> dict[str, Any]:
    """SIGKILL netmon's core and start it again. With ``during_outage``, the database is
    stopped first and the kill comes once the spool holds samples: they must all reach
    the database after the restart."""
    target = Target.load()
    pg: PrivatePostgres | None = None
    spooled = 0.0
    _fault_start(target, "poller_sigkill", during_outage=during_outage)
    try:
        if during_outage:
            pg = _postgres(target)
            pg.stop()
            deadline = time.monotonic() + _duration(outage_s, quick_outage_s, target) + 30
            while time.monotonic() < deadline:
                spooled = target.metrics(timeout=2.0).get("netmon_spool_bytes", 0.0)
                if spooled > 0:
                    break
                time.sleep(0.5)
            _hold(_duration(outage_s, quick_outage_s, target) / 2)
            spooled = target.metrics(timeout=2.0).get("netmon_spool_bytes", spooled)
        else:
            # Kill it mid-cycle, when polls are in flight and batches queued.
            _hold(longest_interval(target) / 2)
        target.mark("kill")
        target.mark("down_start")
        target.signal_netmon(signal.SIGKILL)
        _wait_dead(target)
        if pg is not None:
            # netmon starts only with its database (schema, inventory sync): the outage
            # ends first, then the new process replays what the dead one spooled.
            _hold(_duration(outage_s, quick_outage_s, target) / 2)
            pg.start()
        _restart(target)
    finally:
        if pg is not None and not pg.is_running():
            pg.start()
        if not target.netmon_alive():
            _restart(target)
        _fault_end(target, "poller_sigkill")
    return _keep({"spool_bytes_at_kill": int(spooled)})


def poller_restart() -> None:
    """Stop netmon as an operator does (SIGTERM) and start it again: no slot may be
    skipped after it, and the first poll after it must give rates."""
    target = Target.load()
    _fault_start(target, "poller_restart")
    try:
        target.mark("down_start")
        target.stop_netmon()
        _restart(target)
    finally:
        if not target.netmon_alive():
            _restart(target)
        _fault_end(target, "poller_restart")


def _wait_dead(target: Target, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while target.netmon_alive() and time.monotonic() < deadline:
        time.sleep(0.05)


def ensure_running() -> None:
    """Rollback: netmon running and polling."""
    target = Target.load()
    if not target.netmon_alive():
        _restart(target)


# -- alerts ------------------------------------------------------------------------------


def device_fails_during_outage(
    device: str = "lab-0001",
    seconds: float = 90.0,
    quick_seconds: float | None = 30.0,
) -> dict[str, Any]:
    """Stop the database; make ``device`` silent until its firing reaches the receiver,
    then revive it until its resolved does; start the database. The notifications must
    leave netmon while the database is away."""
    from netmon.chaos.probes import alert_delivered

    target = Target.load()
    if target.lab_control is None:
        raise FaultUnavailable("the target has no lab of ours to fail a device in")
    window = current()
    if window is not None:
        window.really_down.add(device)
    pg = _postgres(target)
    budget = _duration(seconds, quick_seconds, target)
    _fault_start(target, "device_fails_during_outage", device=device)
    result: dict[str, Any] = {"firing": False, "resolved": False}
    pg.stop()
    try:
        started = time.monotonic()
        _lab(target, {"command": "silence", "device": device, "on": True})
        result["firing"] = alert_delivered(device, "firing", within_s=budget)
        result["firing_after_s"] = round(time.monotonic() - started, 1)
        _lab(target, {"command": "silence", "device": device, "on": False})
        revived = time.monotonic()
        result["resolved"] = alert_delivered(device, "resolved", within_s=budget)
        result["resolved_after_s"] = round(time.monotonic() - revived, 1)
        result["database_down_throughout"] = not pg.is_running()
        if not (result["firing"] and result["resolved"]):
            missed = [k for k in ("firing", "resolved") if not result[k]]
            raise AssertionError(
                f"{device}: no {' and no '.join(missed)} notification reached the receiver "
                f"within {budget:g} s while the database was away"
            )
    finally:
        with contextlib.suppress(Exception):
            _lab(target, {"command": "silence", "device": device, "on": False})
        pg.start()
        _fault_end(target, "device_fails_during_outage")
    return _keep(result)


def _lab(target: Target, request: dict[str, Any]) -> dict[str, Any]:
    assert target.lab_control is not None
    return control_socket.request(target.lab_control, request)


# -- the API -----------------------------------------------------------------------------


def api_restart_under_load(seconds: float = 60.0, quick_seconds: float | None = 15.0) -> None:
    """SIGKILL netmon's API process while the watcher's requests run; the core starts
    another. Polling must not notice."""
    target = Target.load()
    if target.netmon_pid is None:
        raise FaultUnavailable("the target's netmon is not a process of ours")
    _fault_start(target, "api_restart_under_load")
    try:
        for pid in _children(target.netmon_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _hold(_duration(seconds, quick_seconds, target))
    finally:
        _fault_end(target, "api_restart_under_load")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(p) for p in task.read_text().split())
    return found


def restore_all() -> None:
    """Rollback for every experiment: no delay, no cut, database up, netmon running."""
    target = Target.load()
    for control in (target.device_relay, target.database_relay):
        if control is not None:
            with contextlib.suppress(Exception):
                relay_request(control, "restore")
                relay_request(control, "set_delay", seconds=0.0)
    database_restore()
    ensure_running()
