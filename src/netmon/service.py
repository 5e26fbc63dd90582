"""``netmon run``: everything in one process for one machine.

Today that is the database (embedded or by URL), the schema, the write path with its spool,
the maintenance timer, the poller and (with ``lab.enabled``) the built-in lab of simulated
devices; the API joins here as it lands. ``netmon poller`` is the same without the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from netmon.config import Settings
from netmon.errors import DatabaseUnavailableError
from netmon.logs import get_logger
from netmon.store.batcher import Batcher
from netmon.store.database import Database
from netmon.store.maintenance import maintain
from netmon.store.schema import upgrade
from netmon.store.writer import SampleWriter

if TYPE_CHECKING:
    from netmon.lab import Lab
    from netmon.poller.service import PollerService

__all__ = ["Service"]

log = get_logger(__name__)


class Service:
    def __init__(self, settings: Settings, *, api: bool = True) -> None:
        self.settings = settings
        self.api = api  # the API issue starts it here when True
        self.db = Database(settings.database, settings.data_dir)
        self.writer: SampleWriter | None = None
        self.batcher: Batcher | None = None
        self.poller: PollerService | None = None
        self.lab: Lab | None = None
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
        self.batcher = Batcher(self.writer, self.settings.writer)
        self.batcher.start()
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="maintenance"))
        inventory = await self._start_lab() if self.settings.lab.enabled else None
        await self._start_poller(inventory)
        log.info("netmon running", data_dir=str(self.settings.data_dir))

    async def _start_lab(self) -> Path:
        """Start the built-in lab in this process; return the inventory that matches it."""
        from netmon.lab import (
            AUTH_KEY_ENV,
            DEFAULT_AUTH_KEY,
            DEFAULT_PRIV_KEY,
            PRIV_KEY_ENV,
            Lab,
            write_inventory,
        )

        # The lab's inventory refers to its keys by environment variable, as any
        # inventory must; set the lab's documented defaults unless the user chose keys.
        os.environ.setdefault(AUTH_KEY_ENV, DEFAULT_AUTH_KEY)
        os.environ.setdefault(PRIV_KEY_ENV, DEFAULT_PRIV_KEY)
        lab = self.settings.lab
        self.lab = Lab(devices=lab.devices, base_port=lab.base_port, interfaces=lab.interfaces)
        await self.lab.start()
        # `netmon lab reboot|flap|silence ...` from another terminal reach it here.
        await self.lab.serve_control(self.settings.data_dir / "lab.sock")
        folder = self.settings.data_dir / "lab" / "inventory"
        folder.mkdir(parents=True, exist_ok=True)
        write_inventory(self.lab, folder)
        log.info("lab started", devices=lab.devices, inventory=str(folder))
        return folder

    async def _start_poller(self, inventory: Path | None) -> None:
        from netmon.poller.service import PollerService

        folder = inventory or self.settings.poller.inventory
        if not (folder / "hosts.yaml").exists():
            log.warning("no inventory: nothing to poll", inventory=str(folder))
            return
        assert self.batcher is not None
        self.poller = PollerService(self.settings, self.db, self.batcher, folder)
        await self.poller.start()
        from netmon.poller.summary import show_summary

        self._tasks.append(asyncio.create_task(show_summary(self.poller), name="summary"))
        if hasattr(signal, "SIGHUP"):
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload()))

    async def _reload(self) -> None:
        if self.poller is not None:
            await self.poller.reload()

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
        if self.poller is not None:
            await self.poller.stop()
        if self.batcher is not None:
            await self.batcher.close()
        if self.writer is not None:
            await self.writer.close()
        if self.lab is not None:
            await self.lab.stop()
        await self.db.stop()
        log.info("netmon stopped")
