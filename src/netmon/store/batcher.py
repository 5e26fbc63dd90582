"""Coalesce many small submissions into COPY-sized batches.

A poller hands over one device's results at a time (tens to hundreds of samples); COPY
pays off at thousands. ``Batcher.submit`` queues the records and returns once the batch
that carried them is durable, so the write path's promise holds per submission: a
submission has been accepted (stored or spooled) when ``submit`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from netmon.config import WriterSettings
from netmon.logs import get_logger
from netmon.records import DeviceEvent, Sample
from netmon.store.writer import SampleWriter, WriteResult

__all__ = ["Batcher"]

log = get_logger(__name__)

_Pending = tuple[Sequence[Sample], Sequence[DeviceEvent], "asyncio.Future[WriteResult]"]


class Batcher:
    """Flush when ``batch_size`` samples wait or ``flush_interval`` has passed since the
    oldest waiting submission, whichever comes first."""

    def __init__(self, writer: SampleWriter, settings: WriterSettings) -> None:
        self.writer = writer
        self.batch_size = settings.batch_size
        self.flush_interval = settings.flush_interval.total_seconds()
        self._pending: list[_Pending] = []
        self._waiting = 0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Alert evaluation sees each submission as it arrives, not after the flush: an
        # alert does not wait for flush_interval or the COPY.
        self.observe: Callable[[Sequence[Sample], Sequence[DeviceEvent]], None] | None = None

    @property
    def queued(self) -> int:
        """Samples submitted and not yet flushed."""
        return self._waiting

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="netmon-batcher")

    async def submit(
        self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()
    ) -> WriteResult:
        """Queue records; return the result of the flush that made them durable."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if self.observe is not None and (samples or events):
            try:
                self.observe(samples, events)
            except Exception:
                # A fault in evaluation must not cost a sample: the write goes on.
                log.exception("alert evaluation failed for a submission")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._pending.append((samples, events, future))
        self._waiting += len(samples)
        if self._waiting >= self.batch_size or len(self._pending) == 1:
            self._kick.set()
        # Shielded: a cancelled submitter must not cancel the flush other submitters share.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while not (self._closed and not self._pending):
            await self._kick.wait()
            self._kick.clear()
            if not self._pending:
                continue
            if self._waiting < self.batch_size and not self._closed:
                # Give the batch time to fill, but flush early once it is full.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full(), timeout=self.flush_interval)
            await self._flush()
            if self._pending:
                self._kick.set()

    async def _full(self) -> None:
        while self._waiting < self.batch_size and not self._closed:
            await self._kick.wait()
            self._kick.clear()

    async def _flush(self) -> None:
        # Take whole submissions up to batch_size samples; the rest waits for the next one.
        taken = 0
        count = 0
        for batch, _, _ in self._pending:
            if taken and count + len(batch) > self.batch_size:
                break
            taken += 1
            count += len(batch)
        pending, self._pending = self._pending[:taken], self._pending[taken:]
        self._waiting -= count
        samples = [s for batch, _, _ in pending for s in batch]
        events = [e for _, batch, _ in pending for e in batch]
        try:
            result = await self.writer.write(samples, events)
        except Exception as exc:
            for _, _, future in pending:
                if not future.done():
                    future.set_exception(exc)
        else:
            for _, _, future in pending:
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        self._closed = True
        self._kick.set()
        if self._task is not None:
            await self._task
            self._task = None
