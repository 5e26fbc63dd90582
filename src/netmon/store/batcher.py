"""Coalesce many small submissions into COPY-sized batches, without making anyone wait.

A poller hands over one device's results at a time (tens to hundreds of samples); COPY
pays off at thousands. ``Batcher.put`` queues the records and returns at once: a poll's
slot frees as soon as its records are queued, whatever the database does. A flush starts
at ``writer.batch_size`` samples or ``writer.flush_interval`` after the oldest waiting
submission; up to ``FLUSHES_IN_FLIGHT`` flushes run at once (the next batch is encoded and
sent while the previous one commits). Each flush is bounded by the writer's
``write_deadline``: past it the batch goes to the spool (``SampleWriter.write``).

The queue is bounded: when more than ``writer.queue_limit`` samples wait (the database is
slow, or stalls before the writer has noticed), what waits goes to the spool at once, in
order, and the writer replays it when the database keeps up again.

``submit`` is ``put`` plus waiting for the flush that carried the records: it returns once
they are durable (stored or spooled), for callers that want that promise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from netmon.config import WriterSettings
from netmon.logs import get_logger
from netmon.records import DeviceEvent, Sample
from netmon.store.writer import SampleWriter, WriteResult

__all__ = ["FLUSHES_IN_FLIGHT", "Batcher", "BatcherStats"]

log = get_logger(__name__)

# Flushes running at once: one committing while the next is encoded and sent. More would
# only add COPYs competing for the same server.
FLUSHES_IN_FLIGHT = 2


class _Pending:
    __slots__ = ("events", "future", "samples")

    def __init__(
        self,
        samples: Sequence[Sample],
        events: Sequence[DeviceEvent],
        future: asyncio.Future[WriteResult] | None,
    ) -> None:
        self.samples = samples
        self.events = events
        self.future = future


class BatcherStats:
    __slots__ = ("overflowed", "overflows", "submissions")

    def __init__(self) -> None:
        self.submissions = 0
        self.overflows = 0  # times the queue overflowed to the spool
        self.overflowed = 0  # samples that went to the spool that way


class Batcher:
    """Flush when ``batch_size`` samples wait or ``flush_interval`` has passed since the
    oldest waiting submission, whichever comes first."""

    def __init__(self, writer: SampleWriter, settings: WriterSettings) -> None:
        self.writer = writer
        self.batch_size = settings.batch_size
        self.flush_interval = settings.flush_interval.total_seconds()
        self.queue_limit = settings.queue_limit
        self.stats = BatcherStats()
        self._pending: list[_Pending] = []
        self._waiting = 0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flights: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(FLUSHES_IN_FLIGHT)
        self._closed = False
        # Alert evaluation for records handed to ``submit`` directly (tools, benchmarks).
        # The poller's records are shown to it by its StoreProcessor, which uses this hook
        # when it has none of its own; ``put`` never calls it (the processor did).
        self.observe: Callable[[Sequence[Sample], Sequence[DeviceEvent]], None] | None = None

    @property
    def queued(self) -> int:
        """Samples submitted and not yet flushed."""
        return self._waiting

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="netmon-batcher")

    def put(self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()) -> None:
        """Queue records; return at once (on the loop)."""
        self._queue(samples, events, None)

    async def submit(
        self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()
    ) -> WriteResult:
        """Queue records; return the result of the flush that made them durable."""
        if self.observe is not None and (samples or events):
            try:
                self.observe(samples, events)
            except Exception:
                # A fault in evaluation must not cost a sample: the write goes on.
                log.exception("alert evaluation failed for a submission")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue(samples, events, future)
        # Shielded: a cancelled submitter must not cancel the flush other submitters share.
        return await asyncio.shield(future)

    def _queue(
        self,
        samples: Sequence[Sample],
        events: Sequence[DeviceEvent],
        future: asyncio.Future[WriteResult] | None,
    ) -> None:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        self.stats.submissions += 1
        self._pending.append(_Pending(samples, events, future))
        self._waiting += len(samples)
        if self._waiting > self.queue_limit:
            self._overflow()
        elif self._waiting >= self.batch_size or len(self._pending) == 1:
            self._kick.set()

    def _overflow(self) -> None:
        """More waits than the queue may hold: all of it goes to the spool now."""
        pending, self._pending = self._pending, []
        count, self._waiting = self._waiting, 0
        self.stats.overflows += 1
        self.stats.overflowed += count
        log.warning(
            "write queue full: spooling what waits",
            samples=count,
            queue_limit=self.queue_limit,
            overflows=self.stats.overflows,
        )
        samples = [s for p in pending for s in p.samples]
        events = [e for p in pending for e in p.events]
        self._start_flight(self.writer.spool_batch(samples, events), pending)

    async def _run(self) -> None:
        while not (self._closed and not self._pending):
            await self._kick.wait()
            self._kick.clear()
            if not self._pending:
                continue
            if self._waiting < self.batch_size and not self._closed:
                # Give the batch time to fill, but flush early once it is full.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval):
                        await self._full()
            # At most FLUSHES_IN_FLIGHT at once; the batch is taken only once a slot is
            # free, so it is as full as it can be.
            await self._slots.acquire()
            if not self._pending:
                self._slots.release()
                continue
            self._flush()
            if self._pending:
                self._kick.set()
        if self._flights:
            await asyncio.gather(*self._flights, return_exceptions=True)

    async def _full(self) -> None:
        while self._waiting < self.batch_size and not self._closed:
            await self._kick.wait()
            self._kick.clear()

    def _flush(self) -> None:
        # Take whole submissions up to batch_size samples; the rest waits for the next one.
        taken = 0
        count = 0
        for p in self._pending:
            n = len(p.samples)
            if taken and count + n > self.batch_size:
                break
            taken += 1
            count += n
        pending, self._pending = self._pending[:taken], self._pending[taken:]
        self._waiting -= count
        if taken == 1:
            samples, events = pending[0].samples, pending[0].events
        else:
            samples = [s for p in pending for s in p.samples]
            events = [e for p in pending for e in p.events]
        self._start_flight(self.writer.write(samples, events), pending, slot=True)

    def _start_flight(
        self,
        write: Coroutine[Any, Any, WriteResult],
        pending: list[_Pending],
        *,
        slot: bool = False,
    ) -> None:
        task = asyncio.create_task(self._fly(write, pending, slot))
        self._flights.add(task)
        task.add_done_callback(self._flights.discard)

    async def _fly(
        self, write: Coroutine[Any, Any, WriteResult], pending: list[_Pending], slot: bool
    ) -> None:
        try:
            result = await write
        except Exception as exc:
            log.error(
                "a batch was neither stored nor spooled", error=f"{type(exc).__name__}: {exc}"
            )
            for p in pending:
                if p.future is not None and not p.future.done():
                    p.future.set_exception(exc)
        else:
            for p in pending:
                if p.future is not None and not p.future.done():
                    p.future.set_result(result)
        finally:
            if slot:
                self._slots.release()

    async def drained(self) -> None:
        """Wait until nothing is queued or in flight (benchmarks, tests)."""
        while self._pending or self._flights:
            if self._flights:
                await asyncio.wait(set(self._flights))
            else:
                self._kick.set()
                await asyncio.sleep(self.flush_interval / 2)

    async def close(self) -> None:
        """Flush what is queued, wait for the flushes in flight, then stop."""
        self._closed = True
        self._kick.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._flights:
            await asyncio.gather(*self._flights, return_exceptions=True)
