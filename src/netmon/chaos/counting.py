"""What was produced against what was stored, counted from the database alone.

netmon's own counters cannot be the judge of netmon: a lost batch that no counter saw is
exactly what a chaos experiment looks for. The schedule is: device ``d`` with interval
``I`` is due at every UNIX time ``s`` with ``(s - phase_of(d, I)) % I == 0``, and each poll
writes one ``up`` sample (also when it fails) timed when the poll ends, inside
``[s, s + I)``. So for every device and every slot of the window, the ``samples`` table
must hold exactly one ``up`` row in that cycle, and as many rows of every other series
as the device's complete cycles hold.

A cycle is *stored once* when it does; *missing* when its ``up`` row is absent;
*duplicated* when any series has two rows in it; *partial* when the poll succeeded
(``poll_success`` 1) but series that the device's complete cycles have are absent.
Slots inside an *excluded* span (netmon was not running, so nothing could be due) are
not counted; slots that fall where a SIGKILL took what netmon held in memory are counted
apart as ``in_flight_at_kill`` (see docs/chaos.md).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from netmon.poller.scheduler import phase_of, slot_times

__all__ = ["CycleRow", "Span", "Tally", "count_cycles", "false_unreachable", "slots", "tally"]

Span = tuple[float, float]  # UNIX seconds, [start, end)


@dataclass(frozen=True, slots=True)
class CycleRow:
    """One (device, cycle) as the database holds it."""

    device: str
    cycle: int  # slot number: slot time = phase + cycle * interval
    series: int  # distinct series with a row in this cycle
    most: int  # the most rows any one series has in this cycle
    up_rows: int
    success: bool  # poll_success was 1


@dataclass
class Tally:
    produced: int = 0  # cycles that the schedule says must exist in the window
    stored_once: int = 0
    missing: int = 0
    duplicated: int = 0
    partial: int = 0
    in_flight_at_kill: int = 0
    samples: int = 0  # rows of the window's counted cycles
    missing_by_device: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def clean(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.partial == 0


def slots(device: str, interval: float, start: float, end: float) -> list[int]:
    """The cycle numbers of ``device`` whose slot time lies in ``[start, end)``."""
    phase = phase_of(device, interval)
    return [round((t - phase) / interval) for t in slot_times(device, interval, start, end)]


def _inside(t: float, spans: Sequence[Span]) -> bool:
    return any(a <= t < b for a, b in spans)


def tally(
    rows: Iterable[CycleRow],
    devices: Mapping[str, float],
    start: float,
    end: float,
    *,
    excluded: Sequence[Span] = (),
    killed: Sequence[Span] = (),
) -> Tally:
    """Judge every due cycle of ``devices`` (name -> interval in seconds) whose slot is in
    ``[start, end)`` against ``rows``. Slots in ``excluded`` are not due; slots in
    ``killed`` that are absent count as ``in_flight_at_kill``, not as missing."""
    by_cycle: dict[tuple[str, int], CycleRow] = {}
    full: dict[str, int] = {}
    for row in rows:
        by_cycle[(row.device, row.cycle)] = row
        if row.success:
            full[row.device] = max(full.get(row.device, 0), row.series)
    result = Tally()
    missing: Counter[str] = Counter()
    for device, interval in devices.items():
        phase = phase_of(device, interval)
        for cycle in slots(device, interval, start, end):
            slot = phase + cycle * interval
            got = by_cycle.get((device, cycle))
            if _inside(slot, excluded):
                # Not due (no netmon ran), but a cycle stored twice is never right.
                if got is not None and got.most > 1:
                    result.duplicated += 1
                continue
            if got is None or got.up_rows == 0:
                if _inside(slot, killed):
                    result.in_flight_at_kill += 1
                    continue
                result.produced += 1
                result.missing += 1
                missing[device] += 1
                continue
            result.produced += 1
            result.samples += got.series  # rows beyond one per series are duplicates
            if got.most > 1:
                result.duplicated += 1
            elif got.success and got.series < full.get(device, 0):
                result.partial += 1
            else:
                result.stored_once += 1
    result.missing_by_device = dict(missing.most_common(10))
    return result


# Rows per (device, cycle): the cycle of a sample is where its time falls after the
# device's phase; computed in PostgreSQL so a window of millions of rows comes back as
# one row per device and cycle.
_CYCLES = """
WITH d AS (
    SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[]) AS d(name, phase, iv)
), per_series AS (
    SELECT d.name, floor((extract(epoch FROM s.time) - d.phase) / d.iv)::bigint AS cycle,
           se.metric, count(*) AS n, max(s.value) AS top
    FROM samples s
    JOIN series se ON se.id = s.series_id
    JOIN devices dv ON dv.id = se.device_id
    JOIN d ON d.name = dv.name
    WHERE s.time >= $4 AND s.time < $5
    GROUP BY 1, 2, s.series_id, se.metric
)
SELECT name, cycle, count(*) AS series, max(n) AS most,
       coalesce(sum(n) FILTER (WHERE metric = 'up'), 0) AS up_rows,
       coalesce(bool_or(metric = 'poll_success' AND top = 1), false) AS success
FROM per_series GROUP BY 1, 2
"""


async def count_cycles(
    conn: asyncpg.Connection,
    devices: Mapping[str, float],
    start: float,
    end: float,
    *,
    excluded: Sequence[Span] = (),
    killed: Sequence[Span] = (),
) -> Tally:
    names = list(devices)
    phases = [phase_of(n, devices[n]) for n in names]
    intervals = [devices[n] for n in names]
    longest = max(intervals, default=0.0)
    records = await conn.fetch(
        _CYCLES,
        names,
        phases,
        intervals,
        datetime.fromtimestamp(start - longest, UTC),
        datetime.fromtimestamp(end + longest, UTC),
    )
    rows = [
        CycleRow(r["name"], r["cycle"], r["series"], r["most"], r["up_rows"], r["success"])
        for r in records
    ]
    return tally(rows, devices, start, end, excluded=excluded, killed=killed)


_UNREACHABLE = """
SELECT dv.name, count(*) AS n
FROM device_events e JOIN devices dv ON dv.id = e.device_id
WHERE e.kind = 'device.unreachable' AND e.time >= $1 AND e.time < $2
GROUP BY 1
"""


async def false_unreachable(
    conn: asyncpg.Connection, start: float, end: float, *, really_down: Iterable[str] = ()
) -> dict[str, int]:
    """``device.unreachable`` events in the window for devices that were never made to
    fail: each is an alarm a NOC would have chased for nothing."""
    down = set(really_down)
    rows = await conn.fetch(
        _UNREACHABLE, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    )
    found: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["name"] not in down:
            found[r["name"]] += r["n"]
    return dict(found)
