"""The one seam between collection and storage: a Nornir Processor.

:class:`StoreProcessor` sees every task a host completes (``task_instance_completed``,
called in Nornir's worker thread) and:

1. checks the task's ``Result.result``: a list whose elements are netmon records
   (:class:`~netmon.records.Sample`, :class:`~netmon.records.DeviceEvent`,
   :class:`~netmon.records.DeviceFacts`, :class:`~netmon.records.ConfigSnapshot`). Anything
   else fails *that task* (its ``Result`` becomes failed with a
   :class:`~netmon.errors.TaskError` naming the task and the element); the records of
   other tasks and hosts are stored as usual;
2. hands the records to the event loop that owns the write path (one thread-safe queue, at
   most one wake-up of the loop per drain), where they
3. go through the ingest pipeline (counters to rates, reboots), are shown to alert
   evaluation (``observe``), and each type goes to its sink: samples and events to the
   batcher (queued, never awaited: a poll does not wait on the database), facts to
   ``facts``, configurations to ``configs``.

The poller runs its tasks with this processor; a user's own Nornir script does the same
with ``nr.with_processors([processor]).run(task=...)``, the processor coming from
:func:`open_store` (a writer on a thread of its own). See docs/tasks.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from nornir.core.inventory import Host
from nornir.core.task import AggregatedResult, MultiResult, Result, Task

from netmon.errors import TaskError
from netmon.ingest.pipeline import IngestPipeline
from netmon.logs import get_logger
from netmon.records import ConfigSnapshot, DeviceEvent, DeviceFacts, Record, Sample

if TYPE_CHECKING:
    from netmon.config import Settings

__all__ = [
    "RECORD_TYPES",
    "RecordQueue",
    "StoreProcessor",
    "check_result",
    "open_store",
]

log = get_logger(__name__)

RECORD_TYPES = (Sample, DeviceEvent, DeviceFacts, ConfigSnapshot)
_RECORD_TYPES = frozenset(RECORD_TYPES)

Observe = Callable[[Sequence[Sample], Sequence[DeviceEvent]], None]


class RecordQueue(Protocol):
    """Where samples and events go: ``netmon.store.batcher.Batcher``. ``put`` queues and
    returns at once (on the event loop). An ``observe`` attribute on it, if any, stands in
    for the processor's own."""

    def put(self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()) -> None: ...


def check_result(task_name: str, device: str, result: Result) -> list[Record] | None:
    """The records of a task's result, or None when it failed; a result that is not a
    list of records is made a failure here (a TaskError naming the task and element)."""
    if result.failed:
        return None
    value = result.result
    if type(value) is list:
        # The hot path: one set lookup per element, no call.
        types = _RECORD_TYPES
        if all(type(r) in types for r in value):
            return value
        bad = next(
            (i, r) for i, r in enumerate(value) if type(r) not in types
        )  # subclasses of records are not records: the writer encodes exact types
        message = (
            f"{device}: task {task_name} returned element {bad[0]} of type "
            f"{type(bad[1]).__name__} ({_short(bad[1])}), not a netmon record"
        )
    else:
        message = (
            f"{device}: task {task_name} returned {type(value).__name__} "
            f"({_short(value)}), not a list of netmon records"
        )
    error = TaskError(message)
    result.failed = True
    result.exception = error
    result.result = message
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class StoreProcessor:
    """A Nornir Processor that stores what tasks return (see the module docstring).

    Create it on the event loop that runs ``queue`` (the batcher). ``facts`` and
    ``configs`` receive those records on that loop; ``observe`` (alert evaluation) sees
    samples and events before they are queued. All three may be set later.
    """

    def __init__(
        self,
        queue: RecordQueue,
        *,
        facts: Callable[[list[DeviceFacts]], None] | None = None,
        configs: Callable[[list[ConfigSnapshot]], None] | None = None,
        observe: Observe | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.queue = queue
        self.facts = facts
        self.configs = configs
        self.observe = observe
        self.pipeline = IngestPipeline()
        self._loop = loop or asyncio.get_running_loop()
        self._inbox: deque[tuple[str, list[Record]]] = deque()
        self._scheduled = False
        self.tasks_failed = 0  # tasks failed here for returning something else
        self.samples = 0  # samples queued, derived ones included

    # -- the Processor protocol (Nornir's threads) -------------------------------------

    def task_started(self, task: Task) -> None:
        pass

    def task_completed(self, task: Task, result: AggregatedResult) -> None:
        pass

    def task_instance_started(self, task: Task, host: Host) -> None:
        pass

    def task_instance_completed(self, task: Task, host: Host, result: MultiResult) -> None:
        first = result[0]
        was_failed = first.failed
        records = check_result(task.name, host.name, first)
        if records is None:
            if not was_failed:
                self.tasks_failed += 1
            return
        if records:
            self.accept(host.name, records)

    def subtask_instance_started(self, task: Task, host: Host) -> None:
        pass

    def subtask_instance_completed(self, task: Task, host: Host, result: MultiResult) -> None:
        # A grouped task's records are what the task itself returns: its subtasks'
        # results are its business.
        pass

    # -- hand-over to the loop ---------------------------------------------------------

    def accept(self, device: str, records: list[Record]) -> None:
        """Queue checked records of ``device`` (any thread); the loop stores them."""
        self._inbox.append((device, records))
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self.drain)
            except RuntimeError:
                # The loop is closed: a poll abandoned at stop finished after it. Nothing
                # can store its records any more.
                log.warning("records of a task arrived after the store stopped", device=device)

    def drain(self) -> None:
        """Store everything accepted so far (on the loop)."""
        # Cleared before the queue is read: a record accepted after the last pop finds the
        # flag down and schedules the next drain.
        self._scheduled = False
        inbox = self._inbox
        while inbox:
            device, records = inbox.popleft()
            try:
                self.store(device, records)
            except Exception:
                log.exception("records of a task could not be stored", device=device)

    def store(self, device: str, records: Sequence[Record], *, derive: bool = True) -> None:
        """Records of ``device``, on the loop: rates (``derive``), alert evaluation, sinks."""
        if derive:
            records = self.pipeline.process(device, records)
        samples: list[Sample] = []
        events: list[DeviceEvent] = []
        facts: list[DeviceFacts] = []
        configs: list[ConfigSnapshot] = []
        for r in records:
            kind = type(r)
            if kind is Sample:
                samples.append(r)  # type: ignore[arg-type]
            elif kind is DeviceEvent:
                events.append(r)  # type: ignore[arg-type]
            elif kind is DeviceFacts:
                facts.append(r)  # type: ignore[arg-type]
            else:
                configs.append(r)  # type: ignore[arg-type]
        if facts and self.facts is not None:
            self.facts(facts)
        if configs and self.configs is not None:
            self.configs(configs)
        if samples or events:
            self.put(samples, events)

    def put(self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()) -> None:
        """Samples and events past the pipeline (poll health's too), on the loop: shown to
        alert evaluation, then queued for the writer."""
        observe = self.observe
        if observe is None:  # a hook set on the batcher, as before the processor
            observe = getattr(self.queue, "observe", None)
        if observe is not None:
            try:
                observe(samples, events)
            except Exception:
                # A fault in evaluation must not cost a sample: the write goes on.
                log.exception("alert evaluation failed for a submission")
        self.samples += len(samples)
        self.queue.put(samples, events)

    def forget_device(self, device: str) -> None:
        """A device left the inventory: its rate state goes (on the loop)."""
        self.pipeline.forget_device(device)


# -- a user's own script -----------------------------------------------------------------


class _StoreThread:
    """netmon's write path (database, writer with its spool, batcher, configuration
    backups, facts) on an event loop in a thread of its own, for a synchronous script."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="netmon-store")
        self.processor: StoreProcessor | None = None
        self._parts: dict[str, Any] = {}
        self._facts: dict[str, dict[str, object]] = {}

    def start(self) -> StoreProcessor:
        self.thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self) -> StoreProcessor:
        from netmon.poller.configs import ConfigBackups
        from netmon.store.batcher import Batcher
        from netmon.store.database import Database
        from netmon.store.schema import upgrade
        from netmon.store.writer import SampleWriter

        settings = self.settings
        db = Database(settings.database, settings.data_dir)
        await db.start()
        self._parts["db"] = db
        await upgrade(db)
        writer = SampleWriter(db, settings)
        await writer.start()
        self._parts["writer"] = writer
        batcher = Batcher(writer, settings.writer)
        batcher.start()
        self._parts["batcher"] = batcher
        processor = StoreProcessor(batcher, facts=self._keep_facts)
        configs = ConfigBackups(
            db, publish=settings.writer.publish, observe=lambda: processor.observe
        )
        configs.start()
        self._parts["configs"] = configs
        processor.configs = configs.submit
        self.processor = processor
        return processor

    def _keep_facts(self, facts: list[DeviceFacts]) -> None:
        for f in facts:
            self._facts.setdefault(f.device, {}).update(f.facts)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result()
        finally:
            self._stop_loop()

    async def _stop(self) -> None:
        from datetime import UTC, datetime

        from netmon.store.devices import update_facts

        if self.processor is not None:
            self.processor.drain()
        parts = self._parts
        if "batcher" in parts:
            await parts["batcher"].close()
        if "configs" in parts:
            await parts["configs"].drain(10.0)
            await parts["configs"].stop()
        if self._facts and "writer" in parts and parts["writer"].database_up:
            now = datetime.now(UTC)
            try:
                await update_facts(
                    parts["db"], [DeviceFacts(d, now, v) for d, v in self._facts.items()]
                )
            except Exception as exc:
                log.warning("device facts not stored", error=str(exc))
        if "writer" in parts:
            await parts["writer"].close()
        if "db" in parts:
            await parts["db"].stop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@contextmanager
def open_store(settings: Settings | None = None) -> Iterator[StoreProcessor]:
    """A :class:`StoreProcessor` that stores into netmon's database, for a synchronous
    Nornir script::

        with open_store(load_settings(Path("netmon.yaml"))) as store:
            nr.with_processors([store]).run(task=interfaces)

    The write path (writer, spool, batcher) runs on an event loop in a thread of its own;
    leaving the block flushes everything queued (in PostgreSQL, or in the spool when the
    database is away) and stops it. Without ``settings``, netmon's defaults and
    ``NETMON_*`` environment variables apply, as for ``netmon run``.
    """
    if settings is None:
        from netmon.config import load_settings

        settings = load_settings(None)
    runner = _StoreThread(settings)
    processor = runner.start()
    try:
        yield processor
    finally:
        runner.stop()
