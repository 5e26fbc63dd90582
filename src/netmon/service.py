"""``netmon run``: everything in one process for one machine.

Today that is the database (embedded or by URL), the schema, the write path with its spool
and the maintenance timer; the poller and the API join here as they land.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from netmon.config import Settings
from netmon.errors import DatabaseUnavailableError
from netmon.logs import get_logger
from netmon.store.database import Database
from netmon.store.maintenance import maintain
from netmon.store.schema import upgrade
from netmon.store.writer import SampleWriter

__all__ = ["Service"]

log = get_logger(__name__)


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database, settings.data_dir)
        self.writer: SampleWriter | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not await self._connect():
            return  # stopped while waiting
        await upgrade(self.db)
        await maintain(self.db, self.settings.storage)
        self.writer = SampleWriter(self.db, self.settings)
        await self.writer.start()
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="maintenance"))
        log.info("netmon running", data_dir=str(self.settings.data_dir))

    async def _connect(self) -> bool:
        """Wait for an external database that is not up yet (a host booting, a failover)
        rather than exit; the embedded one either starts or fails for good."""
        delay = 1.0
        while True:
            try:
                await self.db.start()
                return True
            except DatabaseUnavailableError as exc:
                if self.db.embedded is not None:
                    raise
                log.warning("waiting for the database", error=str(exc), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                if self._stop.is_set():
                    return False
                delay = min(delay * 2, 30.0)

    async def _maintenance_loop(self) -> None:
        interval = self.settings.storage.maintenance_interval.total_seconds()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            if self._stop.is_set():
                return
            try:
                await maintain(self.db, self.settings.storage)
            except Exception:
                # The database may be away; the writer spools meanwhile and the next
                # run catches up (maintenance is idempotent).
                log.exception("maintenance failed; will retry")

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        log.info("netmon stopping")
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.writer is not None:
            await self.writer.close()
        await self.db.stop()
        log.info("netmon stopped")
