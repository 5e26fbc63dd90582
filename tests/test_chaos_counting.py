"""The chaos judge: due cycles against what the database holds, on its own.

The pure tally is tested on hand-made cycles; the SQL that builds them runs against the
real ``samples`` table, filled through the real write path, so a change of the schema or
of how a poll's samples are timed breaks these tests and not a chaos run an hour later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from netmon.chaos.counting import CycleRow, count_cycles, false_unreachable, slots, tally
from netmon.config import Settings
from netmon.poller.scheduler import phase_of
from netmon.records import DeviceEvent, Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.writer import SampleWriter

I = 10.0  # noqa: E741 - the interval, as in the module's docstring
T0 = 1_700_000_000.0


def test_slots_are_the_devices_phase_plus_whole_intervals() -> None:
    phase = phase_of("r1", I)
    cycles = slots("r1", I, T0, T0 + 100)
    assert len(cycles) == 10
    for c in cycles:
        slot = phase + c * I
        assert T0 <= slot < T0 + 100
        assert (slot - phase) % I == 0


def _row(device: str, cycle: int, series: int = 5, most: int = 1, up: int = 1, ok: bool = True):
    return CycleRow(device, cycle, series, most, up, ok)


def test_tally_sorts_every_due_cycle() -> None:
    cycles = slots("r1", I, T0, T0 + 60)
    assert len(cycles) == 6
    a, b, _c, d, e, f = cycles
    rows = [
        _row("r1", a),
        _row("r1", b, most=2),  # a series stored twice
        # c: nothing at all
        _row("r1", d, series=3),  # poll succeeded, two series absent
        _row("r1", e, series=2, ok=False),  # a failed poll: up and poll_success only
        _row("r1", f),
    ]
    t = tally(rows, {"r1": I}, T0, T0 + 60)
    assert (t.produced, t.stored_once, t.duplicated, t.missing, t.partial) == (6, 3, 1, 1, 1)
    assert t.missing_by_device == {"r1": 1}
    assert not t.clean


def test_excluded_spans_are_not_due_and_killed_spans_are_counted_apart() -> None:
    cycles = slots("r1", I, T0, T0 + 60)
    phase = phase_of("r1", I)
    slot = [phase + c * I for c in cycles]
    rows = [_row("r1", c) for c in cycles[:2]]  # the rest absent
    t = tally(
        rows,
        {"r1": I},
        T0,
        T0 + 60,
        excluded=[(slot[3] - 0.1, slot[5] + 0.1)],
        killed=[(slot[2] - 0.1, slot[2] + 0.1)],
    )
    assert (t.produced, t.stored_once, t.missing, t.in_flight_at_kill) == (2, 2, 0, 1)
    assert t.clean


def test_a_missing_up_row_is_missing_even_when_other_series_landed() -> None:
    (c,) = slots("r1", I, T0, T0 + I)
    t = tally([_row("r1", c, up=0)], {"r1": I}, T0, T0 + I)
    assert t.missing == 1


# -- against the real samples table -----------------------------------------------------


@pytest.fixture
async def writer(db: Database, settings: Settings) -> AsyncIterator[SampleWriter]:
    async with SampleWriter(db, settings) as w:
        yield w


def _poll(device: str, cycle: int, *, extra: float = 0.5, ok: bool = True) -> list[Sample]:
    """What one poll writes: ``up``, ``poll_success`` and two counters, timed ``extra``
    seconds after the slot (when the poll ended)."""
    when = datetime.fromtimestamp(phase_of(device, I) + cycle * I + extra, UTC)
    out = [
        Sample(SeriesKey(device, "up"), when, 1),
        Sample(SeriesKey(device, "poll_success"), when, 1 if ok else 0),
    ]
    if ok:
        out += [
            Sample(SeriesKey.of(device, "ifHCInOctets", {"ifIndex": "1"}, kind="counter"), when, 7),
            Sample(SeriesKey.of(device, "ifHCInOctets", {"ifIndex": "2"}, kind="counter"), when, 9),
        ]
    return out


async def test_count_cycles_reads_what_the_writer_stored(
    writer: SampleWriter, conn: asyncpg.Connection
) -> None:
    now = datetime.now(UTC).timestamp()
    start, end = now - 3600, now - 3600 + 5 * I
    cycles = {d: slots(d, I, start, end) for d in ("r1", "r2")}
    batch: list[Sample] = []
    for c in cycles["r1"]:
        batch += _poll("r1", c)
    r2 = cycles["r2"]
    batch += _poll("r2", r2[0])
    batch += _poll("r2", r2[1], ok=False)
    batch += _poll("r2", r2[2])[:3]  # a counter of a successful poll lost
    # r2[3]: absent; r2[4]: two polls landed in one cycle
    batch += _poll("r2", r2[4], extra=0.5) + _poll("r2", r2[4], extra=1.5)
    await writer.write(batch)
    t = await count_cycles(conn, {"r1": I, "r2": I}, start, end)
    assert t.produced == 10
    assert t.stored_once == 5 + 2  # r1's five; r2's complete one and its failed poll
    assert (t.partial, t.missing, t.duplicated) == (1, 1, 1)
    assert t.missing_by_device == {"r2": 1}


async def test_false_unreachable_counts_devices_not_made_to_fail(
    writer: SampleWriter, conn: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    await writer.write(
        [Sample(SeriesKey(d, "up"), now, 0) for d in ("r1", "r2")],
        [
            DeviceEvent(d, now, "device.unreachable", "no answer", severity="critical")
            for d in ("r1", "r2")
        ],
    )
    t = now.timestamp()
    assert await false_unreachable(conn, t - 5, t + 5) == {"r1": 1, "r2": 1}
    assert await false_unreachable(conn, t - 5, t + 5, really_down=["r1"]) == {"r2": 1}
