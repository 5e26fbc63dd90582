"""``netmon run``: everything netmon does, on one machine.

This process (the core) holds the database (embedded or by URL), the schema, the write
path with its spool, the maintenance timer, alerting, the poller and, with
``lab.enabled``, the built-in lab of simulated devices. The API (``api.enabled``) runs as
``api.workers`` processes of its own that this one starts, watches and stops
(``netmon.api.processes``): API load cannot starve polling. They ask the core what only it
knows (an inventory reload, a backup now, its figures) over a control socket in the data
directory (``netmon.core_control``). ``netmon poller`` is the core without the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netmon import control_socket
from netmon.config import Settings
from netmon.core_control import LocalCore, core_socket
from netmon.errors import DatabaseUnavailableError
from netmon.logs import get_logger
from netmon.store.batcher import Batcher
from netmon.store.database import Database, is_connection_error
from netmon.store.maintenance import maintain
from netmon.store.schema import upgrade
from netmon.store.writer import SampleWriter

if TYPE_CHECKING:
    from netmon.alerts.service import AlertService
    from netmon.lab import Lab
    from netmon.poller.service import PollerService
    from netmon.store.notify import Control

__all__ = ["Service"]

log = get_logger(__name__)


class Service:
    def __init__(self, settings: Settings, *, api: bool = True, config: Path | None = None) -> None:
        self.settings = settings
        self.config = config  # the file the settings came from: the API processes read it too
        self.api = api and settings.api.enabled
        self.db = Database(settings.database, settings.data_dir)
        self.writer: SampleWriter | None = None
        self.batcher: Batcher | None = None
        self.poller: PollerService | None = None
        self.lab: Lab | None = None
        self.alerts: AlertService | None = None
        self.api_processes: Any = None  # netmon.api.processes.ApiProcesses, when used
        self.core: LocalCore | None = None
        self._control: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not await self._connect():
            return  # stopped while waiting
        await upgrade(self.db)
        # Maintenance (partitions ahead, rollups, retention) starts in the background, not
        # before the poller: it is dozens of statements, a minute at 500 ms a round trip,
        # and nothing waits for it (a COPY makes the partitions it lacks).
        self.writer = SampleWriter(self.db, self.settings)
        await self.writer.start()
        self.batcher = Batcher(self.writer, self.settings.writer)
        self.batcher.start()
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="maintenance"))
        self.writer.on_control = self._on_control
        if self.settings.alerts.enabled:
            await self._start_alerts()
        inventory = await self._start_lab() if self.settings.lab.enabled else None
        await self._start_poller(inventory)
        if self.alerts is not None:
            await self.alerts.reload_devices()  # the poller has synced its inventory
        if self.api:
            await self._start_api()
        log.info("netmon running", data_dir=str(self.settings.data_dir))

    async def _start_alerts(self) -> None:
        from netmon.alerts.service import AlertService

        api = self.settings.api
        url = f"http://{api.host}:{api.port}" if self.api else ""
        self.alerts = AlertService(self.db, self.settings, external_url=url)
        await self.alerts.start()

    async def _start_api(self) -> None:
        from netmon.api.processes import ApiProcesses

        self.core = LocalCore(
            poller=self.poller,
            writer=self.writer,
            batcher=self.batcher,
            alerts=self.alerts,
            reload=self.alerts.reload_devices if self.alerts is not None else None,
        )
        path = core_socket(self.settings.data_dir)
        self._control = await control_socket.serve(path, self.core.handle, what="netmon")
        self.api_processes = ApiProcesses(
            self.settings, database_url=self.db.url, core_socket=path, config=self.config
        )
        await self.api_processes.start()

    def _on_control(self, control: Control) -> None:
        from netmon.store.notify import ORIGIN

        if control.op == "config_backup":
            device = control.args.get("device")
            if control.args.get("origin") != ORIGIN and isinstance(device, str):
                self._tasks.append(
                    asyncio.create_task(self._backup(device), name=f"config-backup-{device}")
                )
            return
        if control.op == "inventory_changed":
            if self.poller is not None:
                ids = control.args.get("ids")
                at = control.args.get("at")
                self.poller.sync.nudge(
                    [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else (),
                    full=control.args.get("full") is True,
                    at=float(at) if isinstance(at, int | float) else None,
                )
            return
        if control.op != "inventory_reload":
            if self.alerts is not None:
                self.alerts.on_control(control.op)
            return
        if control.args.get("origin") != ORIGIN:
            # Reload the poller, then what alerting knows of its devices (_reload).
            self._tasks.append(asyncio.create_task(self._reload(), name="inventory-reload"))
        elif self.alerts is not None:
            # An API in this process reloaded this poller before it asked.
            self._tasks.append(
                asyncio.create_task(self.alerts.reload_devices(), name="alert-devices")
            )

    async def _backup(self, device: str) -> None:
        """An on-demand backup another process's API asked for, if this poller polls it."""
        if self.poller is None or not self.poller.polls(device):
            return
        try:
            result = await self.poller.backup_configs(device)
        except LookupError as exc:
            log.warning("on-demand backup refused", device=device, error=str(exc))
            return
        if result.error is not None:
            log.warning("on-demand backup failed", device=device, error=str(result.error))

    async def _start_lab(self) -> Path:
        """Start the built-in lab in this process; return the inventory that matches it."""
        from netmon.lab import Lab, use_lab_secrets, write_inventory

        use_lab_secrets()
        lab = self.settings.lab
        self.lab = Lab(
            devices=lab.devices,
            base_port=lab.base_port,
            interfaces=lab.interfaces,
            ssh=lab.ssh,
            # Kept across restarts: an operator's known_hosts entry stays valid.
            host_key_dir=self.settings.data_dir / "lab",
        )
        await self.lab.start()
        # `netmon lab reboot|flap|silence ...` from another terminal reach it here.
        await self.lab.serve_control(self.settings.data_dir / "lab.sock")
        folder = self.settings.data_dir / "lab" / "inventory"
        folder.mkdir(parents=True, exist_ok=True)
        write_inventory(self.lab, folder, self.settings.poller.interval)
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
        from netmon.poller.summary import RecentEvents, show_summary

        # Alert evaluation sees every sample and event as the processor queues it; the
        # summary notes the events (and alert changes) on the way for the terminal view.
        recent = RecentEvents()
        alerts = self.alerts
        self.poller.processor.observe = recent.observer(alerts.observe if alerts else None)
        if alerts is not None:
            alerts.watch = recent.alerts
        await self.poller.start()
        summary = show_summary(self.poller, events=recent, writer=self.writer)
        self._tasks.append(asyncio.create_task(summary, name="summary"))
        if hasattr(signal, "SIGHUP"):
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload()))

    async def _reload(self) -> None:
        if self.poller is not None:
            await self.poller.reload()
        if self.alerts is not None:
            await self.alerts.reload_devices()

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
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                if self._stop.is_set():
                    return False
                delay = min(delay * 2, 30.0)

    async def _maintenance_loop(self) -> None:
        interval = self.settings.storage.maintenance_interval.total_seconds()
        first = True
        while not self._stop.is_set():
            if not first:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._stop.wait()
            first = False
            if self._stop.is_set():
                return
            try:
                await maintain(self.db, self.settings.storage)
            except Exception as exc:
                # The database may be away; the writer spools meanwhile (and says so once)
                # and the next run catches up (maintenance is idempotent).
                if is_connection_error(exc) or isinstance(exc, DatabaseUnavailableError):
                    log.info("maintenance skipped: no database", error=str(exc))
                else:
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
        if self.api_processes is not None:
            await self.api_processes.stop()
        if self._control is not None:
            self._control.close()
        if self.poller is not None:
            await self.poller.stop()
        if self.batcher is not None:
            await self.batcher.close()
        if self.alerts is not None:
            await self.alerts.close()
        if self.writer is not None:
            await self.writer.close()
        if self.lab is not None:
            await self.lab.stop()
        await self.db.stop()
        log.info("netmon stopped")
