"""Chaos Toolkit probes of netmon: is it ready, is every device polled, and the judge:
what the schedule says was due against what the database holds.

Each is a plain function Chaos Toolkit calls by name (``type: python``, ``module:
netmon.chaos.probes``); the target comes from ``$NETMON_CHAOS_TARGET``.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from netmon.chaos.counting import Tally, count_cycles, false_unreachable
from netmon.chaos.receiver import read_deliveries
from netmon.chaos.target import Target
from netmon.chaos.window import SETTLE_MARGIN_S, current, longest_interval

__all__ = [
    "alert_delivered",
    "every_device_polled",
    "figures",
    "ready",
    "window_clean",
]


def ready(within_s: float = 2.0) -> bool:
    """``/health/ready`` answers 200 within ``within_s`` (the readiness promise)."""
    target = Target.load()
    started = time.monotonic()
    try:
        with httpx.Client(base_url=target.api_url, timeout=within_s + 1) as c:
            ok = c.get("/health/ready").status_code == 200
    except httpx.HTTPError:
        return False
    return ok and time.monotonic() - started <= within_s


_RECENT_UP = """
SELECT dv.name FROM devices dv
WHERE dv.name = ANY($1::text[]) AND EXISTS (
    SELECT 1 FROM series se JOIN samples s ON s.series_id = se.id
    WHERE se.device_id = dv.id AND se.metric = 'up' AND s.time >= $2 AND s.value = 1)
"""


def every_device_polled() -> bool:
    """Every device of the target answered a poll within its last two intervals."""
    target = Target.load()
    since = datetime.now(UTC) - timedelta(seconds=2 * longest_interval(target) + SETTLE_MARGIN_S)

    async def go() -> int:
        conn = await asyncpg.connect(target.database_url, timeout=10)
        try:
            return len(await conn.fetch(_RECENT_UP, list(target.devices), since))
        finally:
            await conn.close()

    return asyncio.run(go()) == len(target.devices)


def _judge(start: float, end: float) -> tuple[Tally, dict[str, int]]:
    target = Target.load()
    window = current()
    excluded = window.excluded() if window else []
    killed = window.killed() if window else []
    down = window.really_down if window else set()

    async def go() -> tuple[Tally, dict[str, int]]:
        conn = await asyncpg.connect(target.database_url, timeout=10)
        try:
            tally = await count_cycles(
                conn, target.devices, start, end, excluded=excluded, killed=killed
            )
            alarms = await false_unreachable(conn, start, time.time(), really_down=down)
            return tally, alarms
        finally:
            await conn.close()

    return asyncio.run(go())


def _span() -> tuple[float, float]:
    """The window to judge: the experiment's, from its start, when one is open (the
    hypothesis after the method); else the last two cycles (the hypothesis before)."""
    target = Target.load()
    interval = longest_interval(target)
    end = time.time() - interval - SETTLE_MARGIN_S
    window = current()
    if window is not None:
        return window.start, end
    # Before a fault: the last two cycles, but none that the previous experiment judged
    # already (its window ended one interval and the margin before it closed), and none
    # before the rig's second cycle (the first poll of a counter gives no rate yet).
    # Every cycle is judged once, and a fault whose damage outlasts its own window fails
    # the next experiment's hypothesis, as it should.
    floor = 0.0
    polling = target.last_mark("polling")
    if polling is not None:
        floor = polling.time + interval + 1.0
    closed = target.last_mark("close")
    if closed is not None:
        floor = max(floor, closed.time - interval - SETTLE_MARGIN_S)
    return max(end - 2 * interval, floor), end


def window_clean() -> bool:
    """No cycle missing, duplicated or partial and no false ``unreachable`` in the window.
    Each judgement is kept in the work folder's ``judgements.jsonl``: a failed hypothesis
    says there which cycles were wrong."""
    start, end = _span()
    tally, alarms = _judge(start, end)
    target = Target.load()
    record = {"time": time.time(), "start": start, "end": end, **tally.as_dict()}
    record["false_unreachable"] = alarms
    with (target.workdir / "judgements.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    return tally.clean and not alarms


def figures() -> dict[str, Any]:
    """The experiment's line of the report: produced, stored once, missing, duplicated,
    false unreachable, recovery time, spool peak, API p99 during the fault."""
    window = current()
    start, end = _span()
    tally, alarms = _judge(start, end)
    out: dict[str, Any] = tally.as_dict()
    out["false_unreachable"] = sum(alarms.values())
    out["false_unreachable_devices"] = sorted(alarms)
    out["window_s"] = round(end - start, 1)
    if window is not None:
        w = window.watcher
        fault = window.fault_span()
        fault_end = window.fault_end()
        recovered = w.recovered_at(fault_end) if fault_end is not None else None
        out["recovery_s"] = (
            round(recovered - fault_end, 2)
            if recovered is not None and fault_end is not None
            else None
        )
        out["spool_peak_bytes"] = int(w.spool_peak())
        if fault is not None:
            p99 = w.api_p99_ms(*fault)
            out["api_p99_ms"] = round(p99, 1) if p99 is not None else None
            out["api_errors"] = w.api_errors(*fault)
            out["fault_s"] = round(fault[1] - fault[0], 1)
        out.update(window.extra)
    return out


def alert_delivered(device: str, status: str, within_s: float = 0.0) -> bool:
    """The receiver got a notification with ``status`` (firing or resolved) naming
    ``device`` since the window opened (waiting up to ``within_s``)."""
    target = Target.load()
    window = current()
    since = window.start if window is not None else 0.0
    deadline = time.monotonic() + within_s
    while True:
        if target.receiver_log is not None and any(
            _names(d["body"], device, status) for d in read_deliveries(target.receiver_log, since)
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _names(body: Any, device: str, status: str) -> bool:
    """Whether a delivery's body (any of netmon's formats) says ``device`` is ``status``:
    the text of the body holds both, and the status is the alert's, not a neighbour's."""
    alerts: list[Any] = []
    if isinstance(body, dict):
        for key in ("alerts", "data"):
            value = body.get(key)
            if isinstance(value, list):
                alerts.extend(value)
        if not alerts:
            alerts = [body]
    for alert in alerts:
        if isinstance(alert, dict):
            state = alert.get("state") or alert.get("status")
            if state == status and device in str(alert):
                return True
        elif device in str(alert) and status in str(alert).lower():
            return True
    return False
