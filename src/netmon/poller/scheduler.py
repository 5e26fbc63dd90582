"""The poller: every device on its interval, spread evenly, never stacked.

Each device has a fixed phase inside its interval (from a hash of its name) plus a little
random jitter per poll. The phase is anchored to wall-clock time: device ``d`` with
interval ``I`` is due at every UNIX time ``s`` with ``(s - phase_of(d, I)) % I == 0``
(``slot_times``), in this process and the next, so a restart moves no device's slot and
skips none. A slot that fell due while no process ran is polled at start, if the new
process knows (``last_polls``, from the store) that it was not polled yet and the first
half of its interval is not over; unknown (database away at start), it is left. A poll's
``up`` / ``poll_success`` samples are timed when the poll ends, at ingest, inside
``[s, s + I)`` for a poll that ends within its interval: each slot has exactly one ``up``
in its interval, the rule the chaos suite's judge counts cycles by. The timer runs on the
monotonic clock: each next slot is taken from the wall clock and converted afresh, so
neither an NTP step nor the clocks' drift accumulates. At most ``max_in_flight`` polls
run at once, each in a worker thread that runs the device's Nornir tasks in order (tasks
are blocking, as Nornir tasks are; the SNMP client they share does the I/O on its own
loop). When a device falls due while its previous poll is still running or still waiting
for a slot, that poll is an overrun: recorded, and the due poll skipped, never queued
behind it.

Each task's records go through the poller's StoreProcessor (netmon.ingest.processor:
checked, rates derived, alert evaluation, queued for the writer) as the task completes;
the poll's outcome goes to poll health and, as ``up`` / ``poll_success``, through the
same processor. A poll never waits for the database: its slot frees once its records
are queued. Reloading the inventory
keeps the schedule of devices that stay. Stopping lets polls in flight finish (up to
``stop_timeout``) and hands everything they returned to the writer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import math
import random
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nornir.core import Nornir
from nornir.core.processor import Processors
from nornir.core.task import Task

from netmon.config import PollerSettings
from netmon.errors import CollectionError, TaskError
from netmon.histogram import POLL_SECONDS_BUCKETS, Histogram
from netmon.ingest.processor import StoreProcessor, check_result
from netmon.logs import get_logger
from netmon.poller.inventory import PollPlan
from netmon.records import ConfigSnapshot, DeviceFacts, Record, Sample, SeriesKey
from netmon.store.health import PollHealthStore, PollOutcome

__all__ = [
    "DeviceFailure",
    "PollResult",
    "Poller",
    "PollerStats",
    "next_slot",
    "phase_of",
    "run_poll",
    "slot_times",
]

log = get_logger(__name__)


@dataclass
class PollResult:
    device: str
    records: list[Record]
    error: CollectionError | None
    duration_s: float


@dataclass(frozen=True, slots=True)
class DeviceFailure:
    """A device whose last poll failed: what went wrong, since when, how many polls."""

    since: datetime  # the first failed poll of this run of failures
    at: datetime  # the last one
    error_class: str
    message: str
    polls: int


@dataclass
class PollerStats:
    polls: int = 0
    failed: int = 0
    overruns: int = 0
    samples: int = 0
    values_per_class: Counter[str] = field(default_factory=Counter)
    last_errors: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=20))
    errors_by_class: Counter[str] = field(default_factory=Counter)
    poll_seconds: Histogram = field(default_factory=lambda: Histogram(POLL_SECONDS_BUCKETS))
    # From a poll's slot (its due time plus jitter) to its tasks starting: milliseconds
    # unless the process is starved (CPU, a blocked event loop) or max_in_flight is full.
    start_lag: Histogram = field(default_factory=lambda: Histogram(POLL_SECONDS_BUCKETS))
    late: int = 0  # polls started more than LATE_AFTER after their slot
    waited: int = 0  # polls that found max_in_flight polls running and waited
    # Devices whose last poll failed (a success removes them): the terminal view lists
    # them with their error, which poll health only keeps in the database.
    failing: dict[str, DeviceFailure] = field(default_factory=dict)


LATE_AFTER = 2.0  # seconds
AT_LIMIT_WARN_EVERY = 300.0  # seconds between warnings that max_in_flight is reached

# The tasks that read a device's configuration: what an on-demand backup runs.
CONFIG_TASKS = ("netconf_config", "cli_config")


def run_poll(nr: Nornir, plan: PollPlan, processors: Processors | None = None) -> PollResult:
    """Run one device's tasks, in order, as Nornir runs a task for a host.

    The first failed task ends the poll (its error is the poll's); records returned by the
    tasks before it are kept. With ``processors`` (the poller's StoreProcessor), they see
    each task as in ``nr.run``; without, results are checked here the same way.
    """
    started = time.perf_counter()
    records: list[Record] = []
    error: CollectionError | None = None
    checked = processors is not None and any(isinstance(p, StoreProcessor) for p in processors)
    procs = processors if processors is not None else _NO_PROCESSORS
    host = plan.host
    for fn in plan.tasks:
        result = Task(fn, nr, global_dry_run=False, processors=procs).start(host)[0]
        # The processor checked it already (and failed it if it was no list of records).
        got: list[Record] | None = (
            result.result if checked else check_result(fn.__name__, plan.name, result)
        )
        if result.failed or got is None:
            exc = result.exception
            if isinstance(exc, CollectionError):
                error = exc
            else:
                error = TaskError(f"{plan.name}: task {fn.__name__} failed: {exc!r}")
                error.__cause__ = exc
            break
        records.extend(got)
    return PollResult(plan.name, records, error, time.perf_counter() - started)


# Nornir's Task wants a Processors; an empty one shared by every poll costs nothing.
_NO_PROCESSORS = Processors()


def phase_of(device: str, interval: float) -> float:
    """Where in each interval ``device`` is polled: spread evenly over all devices, and
    the same in every process and after every restart (crc32, not ``hash()``)."""
    return zlib.crc32(device.encode()) / 2**32 * interval


def next_slot(device: str, interval: float, after: float) -> float:
    """The first UNIX time at or after ``after`` when ``device`` is due."""
    phase = phase_of(device, interval)
    return phase + math.ceil((after - phase) / interval) * interval


def slot_times(device: str, interval: float, start: float, end: float) -> list[float]:
    """Every UNIX time in ``[start, end)`` when ``device`` is due."""
    first = next_slot(device, interval, start)
    count = max(0, math.ceil((end - first) / interval))
    return [first + k * interval for k in range(count)]


@dataclass
class _Slot:
    plan: PollPlan
    phase: float
    busy: bool = False
    removed: bool = False
    wall: float = 0.0  # the UNIX time of the slot it is queued for


# A slot missed while no process ran is still polled at start within this part of its
# interval: the poll then has the rest to finish in.
CATCH_UP_FRACTION = 0.5


class Poller:
    def __init__(
        self,
        nornir: Nornir,
        plans: list[PollPlan],
        settings: PollerSettings,
        processor: StoreProcessor,
        health: PollHealthStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        last_polls: Mapping[str, float] | None = None,
    ) -> None:
        """``last_polls``: when each device's last poll ended (UNIX time; a device absent
        was not polled lately), as the store says at start; ``None`` when unknown."""
        self.nornir = nornir
        self.settings = settings
        self.processor = processor
        self._processors = Processors([processor])
        self.health = health
        self.stats = PollerStats()
        self._status_keys: dict[str, tuple[SeriesKey, SeriesKey]] = {}
        self._clock = clock
        self._wall = wall_clock
        self._slots: dict[str, _Slot] = {}
        self._queue: list[tuple[float, int, _Slot]] = []
        self._seq = 0
        self._slots_free = asyncio.Semaphore(settings.max_in_flight)
        self._warned_at_limit = -AT_LIMIT_WARN_EVERY
        self._pool = ThreadPoolExecutor(settings.max_in_flight, thread_name_prefix="netmon-poll")
        self._polls: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._start = clock()
        self._ended: dict[str, float] = {}
        self._last_polls = last_polls
        for plan in plans:
            self._add(plan, catch_up=True)
        self._last_polls = None  # a device added later is a new one

    # -- schedule -------------------------------------------------------------------

    def _add(self, plan: PollPlan, *, catch_up: bool = False) -> None:
        interval = plan.interval.total_seconds()
        phase = phase_of(plan.name, interval)
        slot = self._slots[plan.name] = _Slot(plan, phase)
        if catch_up and self._last_polls is not None:
            # The slot now open, if the previous process did not poll it (a restart
            # between a slot and its poll): polled now, not skipped.
            wall = self._wall()
            current = next_slot(plan.name, interval, wall)
            if current > wall:
                current -= interval
            last = self._last_polls.get(plan.name)
            if (last is None or last < current) and wall - current < interval * CATCH_UP_FRACTION:
                slot.wall = current
                self._push(self._clock(), slot)
                return
        self._push(self._next_due(slot), slot)

    def _next_due(self, slot: _Slot) -> float:
        """The slot's next wall-clock time (after the one it was last due at), on the
        monotonic clock the timer runs on. Converted afresh each time, so neither the two
        clocks' drift nor an NTP step accumulates over a long run."""
        wall = self._wall()
        interval = slot.plan.interval.total_seconds()
        due_wall = slot.wall + interval if slot.wall else 0.0
        if due_wall < wall - interval / 2 or due_wall > wall + interval:
            # First scheduling, or the clocks jumped: the next slot from now.
            due_wall = next_slot(slot.plan.name, interval, wall)
        slot.wall = due_wall
        return self._clock() + (due_wall - wall)

    def _push(self, due: float, slot: _Slot) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, slot))
        self._wake.set()

    def replace_plans(self, plans: list[PollPlan], nornir: Nornir) -> None:
        """Apply a reloaded inventory: new devices start, removed ones stop after their
        poll in flight, the others keep their place in the schedule."""
        self.nornir = nornir
        fresh = {p.name: p for p in plans}
        for name, slot in list(self._slots.items()):
            if name not in fresh:
                slot.removed = True
                del self._slots[name]
                self._ended.pop(name, None)
                self.stats.failing.pop(name, None)
                self.processor.forget_device(name)
        for name, plan in fresh.items():
            kept = self._slots.get(name)
            if kept is None:
                self._add(plan)
            elif plan.interval != kept.plan.interval:
                kept.removed = True  # its queued entry is dropped when it comes due
                self._add(plan)
            else:
                kept.plan = plan

    @property
    def devices(self) -> int:
        return len(self._slots)

    @property
    def device_names(self) -> list[str]:
        return list(self._slots)

    @property
    def last_polls(self) -> dict[str, float]:
        """When each device's last poll ended here (UNIX time)."""
        return dict(self._ended)

    @property
    def in_flight(self) -> int:
        return len(self._polls)

    # -- running --------------------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="netmon-poller")

    async def _run(self) -> None:
        while not self._stopping:
            now = self._clock()
            while self._queue and self._queue[0][0] <= now:
                _due, _seq, slot = heapq.heappop(self._queue)
                if not slot.removed:
                    self._due(slot, _due, now)
            self._wake.clear()
            # A timer that sets the event, not wait_for: that would make a task per wake-up
            # (one per poll, at a spread schedule).
            timer = None
            if self._queue:
                loop = asyncio.get_running_loop()
                timer = loop.call_later(self._queue[0][0] - now, self._wake.set)
            await self._wake.wait()
            if timer is not None:
                timer.cancel()

    def _due(self, slot: _Slot, due: float, now: float) -> None:
        self._push(self._next_due(slot), slot)
        if slot.busy:
            self._overrun(slot)
            return
        slot.busy = True
        jitter = random.uniform(0, self.settings.jitter.total_seconds())  # noqa: S311
        task = asyncio.create_task(
            self._poll(slot, jitter, due + jitter), name=f"poll-{slot.plan.name}"
        )
        self._polls.add(task)
        task.add_done_callback(self._polls.discard)

    def _overrun(self, slot: _Slot) -> None:
        self.stats.overruns += 1
        log.debug("poll overrun: previous poll still running; skipped", device=slot.plan.name)
        self.health.record(PollOutcome(slot.plan.name, datetime.now(UTC), 0.0, overrun=True))

    async def _poll(self, slot: _Slot, jitter: float, planned: float) -> None:
        try:
            if jitter:
                await asyncio.sleep(jitter)
            if self._slots_free.locked():
                self._at_limit()
            async with self._slots_free:
                if self._stopping:
                    return
                self._started(planned)
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._pool, run_poll, self.nornir, slot.plan, self._processors
                )
            self._ingest(result)
        except Exception:
            log.exception("poll failed unexpectedly", device=slot.plan.name)
        finally:
            slot.busy = False

    def _at_limit(self) -> None:
        self.stats.waited += 1
        now = self._clock()
        if now - self._warned_at_limit >= AT_LIMIT_WARN_EVERY:
            self._warned_at_limit = now
            log.warning(
                "poller.max_in_flight polls are running: polls wait for a slot and start "
                "late, and overrun when they wait too long; raise poller.max_in_flight",
                max_in_flight=self.settings.max_in_flight,
                waited=self.stats.waited,
            )

    def _started(self, planned: float) -> None:
        lag = max(0.0, self._clock() - planned)
        self.stats.start_lag.observe(lag)
        if lag > LATE_AFTER:
            self.stats.late += 1

    def _ingest(self, result: PollResult) -> None:
        """The poll's outcome, after its records (which the processor took, task by task):
        poll health, and ``up`` / ``poll_success`` through the same processor. Nothing
        here waits for the database: the records are queued, and the slot is free."""
        # The poll's records first, so that alert evaluation sees them before its outcome.
        self.processor.drain()
        self.stats.polls += 1
        self.stats.poll_seconds.observe(result.duration_s)
        now = datetime.now(UTC)
        self._ended[result.device] = now.timestamp()
        error = result.error
        outcome = PollOutcome(
            result.device,
            now,
            result.duration_s * 1000,
            error.error_class if error else None,
            str(error) if error else None,
        )
        if error is not None:
            self.stats.failed += 1
            self.stats.errors_by_class[error.error_class] += 1
            self.stats.last_errors.append((now.isoformat(), result.device, str(error)))
            before = self.stats.failing.get(result.device)
            self.stats.failing[result.device] = DeviceFailure(
                before.since if before else now,
                now,
                error.error_class,
                str(error),
                before.polls + 1 if before else 1,
            )
        else:
            self.stats.failing.pop(result.device, None)
        events = self.health.record(outcome)
        samples = self._status(result.device, now, outcome)
        self.processor.put(samples, events)
        self.stats.samples = self.processor.samples

    def _status(self, device: str, now: datetime, outcome: PollOutcome) -> list[Sample]:
        """Every poll's own outcome as samples, as Prometheus writes ``up`` for every
        scrape: ``up`` (the device answered) and ``poll_success`` (without an error).
        Availability graphs and the unreachable / poll-failing alert rules read them."""
        keys = self._status_keys.get(device)
        if keys is None:
            keys = self._status_keys[device] = (
                SeriesKey(device, "up"),
                SeriesKey(device, "poll_success"),
            )
        return [
            Sample(keys[0], now, 1 if outcome.reachable else 0),
            Sample(keys[1], now, 0 if outcome.error_class else 1),
        ]

    async def collect_configs(self, device: str) -> PollResult:
        """Run ``device``'s configuration tasks now, outside its schedule (an operator asked
        for a backup). Only their configurations are kept: no samples, no poll outcome,
        so the device's series and health are those of its scheduled polls. Raises
        ``KeyError`` for a device not polled here, ``LookupError`` for one without a
        configuration task."""
        slot = self._slots[device]
        picked = [
            (name, fn)
            for name, fn in zip(slot.plan.task_names, slot.plan.tasks, strict=True)
            if name in CONFIG_TASKS
        ]
        if not picked:
            raise LookupError(f"{device} has no configuration task ({', '.join(CONFIG_TASKS)})")
        plan = dataclasses.replace(
            slot.plan,
            task_names=tuple(n for n, _ in picked),
            tasks=tuple(fn for _, fn in picked),
        )
        async with self._slots_free:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, run_poll, self.nornir, plan)
        # Facts too: a config task may be the first on a new session, and say what it is.
        kept = [r for r in result.records if isinstance(r, (ConfigSnapshot, DeviceFacts))]
        if kept:
            self.processor.store(device, kept, derive=False)
        return result

    async def stop(self) -> None:
        """Stop scheduling; let polls in flight finish (bounded); store what they got."""
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            await self._runner
        if self._polls:
            timeout = self.settings.stop_timeout.total_seconds()
            _done, late = await asyncio.wait(set(self._polls), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("polls still running at stop were abandoned", count=len(late))
        self._pool.shutdown(wait=False, cancel_futures=True)
