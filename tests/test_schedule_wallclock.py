"""The schedule is anchored to wall-clock time: a restart at any moment keeps every
device's slot, and a slot is never taken twice or skipped by a late timer.

The poller used to anchor each device's phase to its own start: after a 2-4 s restart,
116 of 200 devices skipped a slot (a chaos experiment counted them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nornir import InitNornir
from nornir.core import Nornir
from nornir.core.task import Result, Task

from netmon.config import Settings
from netmon.ingest.processor import StoreProcessor
from netmon.poller.scheduler import Poller, next_slot, phase_of, slot_times
from netmon.records import DeviceEvent, Sample

I = 30.0  # noqa: E741
T0 = 1_800_000_000.0


class Clocks:
    def __init__(self, mono: float, wall: float) -> None:
        self.mono, self.wall = mono, wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def _plan(name: str) -> Any:
    return SimpleNamespace(
        host=SimpleNamespace(name=name),
        name=name,
        interval=timedelta(seconds=I),
        task_names=(),
        tasks=(),
    )


def _poller(clocks: Clocks, names: list[str]) -> Poller:
    settings = Settings(poller={"max_in_flight": 4})  # type: ignore[arg-type]
    return Poller(
        None,  # type: ignore[arg-type]
        [_plan(n) for n in names],
        settings.poller,
        SimpleNamespace(),  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        clock=lambda: clocks.mono,
        wall_clock=lambda: clocks.wall,
    )


def _first_due_wall(p: Poller, clocks: Clocks, name: str) -> float:
    (due,) = [d for d, _s, slot in p._queue if slot.plan.name == name]
    return clocks.wall + (due - clocks.mono)


NAMES = [f"r{i}" for i in range(50)]


def test_slot_times_follow_the_phase() -> None:
    times = slot_times("r1", I, T0, T0 + 10 * I)
    assert len(times) == 10
    assert all((t - phase_of("r1", I)) % I == pytest.approx(0) for t in times)
    assert next_slot("r1", I, times[3]) == times[3]
    assert next_slot("r1", I, times[3] + 0.001) == times[4]


@pytest.mark.parametrize("down_for", [0.5, 2.0, 3.7, 29.0])
def test_a_restart_keeps_every_devices_slot(down_for: float) -> None:
    before = Clocks(mono=1_000.0, wall=T0 + 7.3)
    first = _poller(before, NAMES)
    planned = {n: _first_due_wall(first, before, n) for n in NAMES}
    # The new process: another monotonic origin, the same wall clock, down_for later.
    after = Clocks(mono=5.0, wall=before.wall + down_for)
    second = _poller(after, NAMES)
    for n in NAMES:
        got = _first_due_wall(second, after, n)
        assert (got - planned[n]) % I == pytest.approx(0, abs=1e-6), n
        # The first slot not yet passed: none skipped, none repeated.
        assert after.wall <= got < after.wall + I
    first._pool.shutdown()
    second._pool.shutdown()


async def test_a_late_timer_takes_the_next_slot_not_one_after_it() -> None:
    clocks = Clocks(mono=0.0, wall=T0)
    p = _poller(clocks, ["r1"])
    due, _seq, slot = p._queue[0]
    wall_slot = clocks.wall + due
    # The timer fires 0.4 interval late; the next due must be the very next slot.
    clocks.advance(due + 0.4 * I)
    p._queue.clear()
    slot.busy = True  # an overrun: recorded, not polled (no tasks to run here)
    p.health = SimpleNamespace(record=lambda outcome: [])  # type: ignore[assignment]
    p._due(slot, due, clocks.mono)
    (nxt, _s, _slot) = p._queue[0]
    assert clocks.wall + (nxt - clocks.mono) == pytest.approx(wall_slot + I)
    p._pool.shutdown()
    await asyncio.sleep(0)


# -- real time: a restart inside one interval skips no slot ------------------------------


def noop(task: Task) -> Result:
    return Result(host=task.host, result=[])


class _Queue:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def put(self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()) -> None:
        self.samples.extend(samples)


class _Health:
    def record(self, outcome: object) -> list[DeviceEvent]:
        return []


def _nornir(folder: Path, names: list[str]) -> Nornir:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.yaml").write_text("".join(f"{n}:\n  hostname: 127.0.0.1\n" for n in names))
    return InitNornir(
        runner={"plugin": "serial"},
        inventory={
            "plugin": "SimpleInventory",
            "options": {"host_file": str(folder / "hosts.yaml")},
        },
        logging={"enabled": False},
    )


async def _run_for(
    seconds: float,
    nr: Nornir,
    names: list[str],
    queue: _Queue,
    last_polls: dict[str, float] | None = None,
) -> dict[str, float]:
    settings = Settings(poller={"max_in_flight": 8, "jitter": "0s"})  # type: ignore[arg-type]
    plans: Any = [
        SimpleNamespace(
            host=nr.inventory.hosts[n],
            name=n,
            interval=timedelta(seconds=1),
            task_names=("noop",),
            tasks=(noop,),
        )
        for n in names
    ]
    poller = Poller(
        nr,
        plans,
        settings.poller,
        StoreProcessor(queue),
        _Health(),  # type: ignore[arg-type]
        last_polls=last_polls,
    )
    poller.start()
    await asyncio.sleep(seconds)
    await poller.stop()
    return poller.last_polls


# Short enough that each slot missed while down is still in the first half of its
# interval at start (CATCH_UP_FRACTION), as a 2-4 s restart is for a 30 s interval.
@pytest.mark.parametrize("down_for", [0.1, 0.3])
async def test_a_restart_within_the_interval_skips_no_slot(tmp_path: Path, down_for: float) -> None:
    names = [f"dev{i}" for i in range(20)]
    nr = _nornir(tmp_path / "inv", names)
    queue = _Queue()
    started = time.time()
    polled = await _run_for(2.7, nr, names, queue)
    await asyncio.sleep(down_for)  # the restart: no process for a moment
    # The new process learns from the store when each device was last polled.
    await _run_for(2.7, nr, names, queue, polled)
    ended = time.time()
    ups: dict[str, list[float]] = {n: [] for n in names}
    for s in queue.samples:
        if s.series.metric == "up":
            ups[s.series.device].append(s.time.timestamp())
    # Every slot from the first full one to the last that had time to finish: exactly one
    # ``up`` sample in [slot, slot + I), as the chaos suite counts (slot_times is its rule).
    for n in names:
        for slot in slot_times(n, 1.0, started + 0.1, ended - 1.2):
            got = [t for t in ups[n] if slot <= t < slot + 1.0]
            assert len(got) == 1, (n, slot, got, down_for)
