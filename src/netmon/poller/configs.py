"""The configurations the poller reads, on their way to the store.

Tasks (``netconf_config``, ``cli_config``) return :class:`ConfigSnapshot` records; the
poller hands them here. Each is saved with :func:`netmon.store.configs.save_config`
(redacted, deduplicated against the newest version, diffed, a ``device.config_changed``
event stored and published in the same transaction), and that event is handed to the
alert engine (``Batcher.observe``) as the writer's events are.

A configuration is a state, not a series: while the database is away only the newest
snapshot per device and source is kept, and saved when it is back (an older one would
only be a version nobody saw in between, as if that poll had not happened). Nothing is
kept on disk: after a restart the next poll reads the configuration again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netmon.logs import get_logger
from netmon.records import ConfigSnapshot, DeviceEvent, Sample
from netmon.store.configs import save_config
from netmon.store.database import Database, is_connection_error

__all__ = ["ConfigBackupStats", "ConfigBackups"]

log = get_logger(__name__)
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0

Observe = Callable[[Sequence[Sample], Sequence[DeviceEvent]], None]


@dataclass
class ConfigBackupStats:
    received: int = 0
    stored: int = 0  # new versions, first ones included
    changed: int = 0  # new versions after an earlier one (a config_changed event each)
    unchanged: int = 0
    superseded: int = 0  # replaced by a newer snapshot before it could be saved
    failed: int = 0  # save attempts that failed (retried)


class ConfigBackups:
    def __init__(
        self, db: Database, *, publish: bool = True, observe: Callable[[], Observe | None]
    ) -> None:
        self.db = db
        self.publish = publish
        self.stats = ConfigBackupStats()
        # Read at every event: alerting attaches its hook to the batcher after we start.
        self._observe = observe
        self._pending: dict[tuple[str, str], ConfigSnapshot] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="netmon-config-backups")

    def submit(self, snapshots: Sequence[ConfigSnapshot]) -> None:
        for snap in snapshots:
            self.stats.received += 1
            if self._pending.pop((snap.device, snap.source), None) is not None:
                self.stats.superseded += 1
            self._pending[snap.device, snap.source] = snap
        if snapshots:
            self._idle.clear()
            self._wake.set()

    async def drain(self, wait_s: float | None = None) -> bool:
        """Wait until everything submitted so far is saved; False after ``wait_s``."""
        try:
            async with asyncio.timeout(wait_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.save_pending()
            except Exception as exc:
                self.stats.failed += 1
                if not is_connection_error(exc):
                    log.exception("configuration not stored; will retry")
                else:
                    log.warning("configurations wait for the database", pending=self.pending)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._wake.set()
                continue
            delay = RETRY_FIRST_S
            if not self._pending:
                self._idle.set()

    async def save_pending(self) -> None:
        """Save every pending snapshot, oldest first; one that fails stays pending (unless
        a newer one of its device and source arrived meanwhile) and the error is raised."""
        while self._pending:
            key, snap = next(iter(self._pending.items()))
            async with self.db.pool.acquire() as conn:
                result = await save_config(
                    conn,
                    snap.device,
                    snap.source,
                    snap.protocol,
                    snap.format,
                    snap.content,
                    snap.time,
                    publish=self.publish,
                )
            if self._pending.get(key) is snap:
                del self._pending[key]
            if not result.changed:
                self.stats.unchanged += 1
                continue
            self.stats.stored += 1
            if result.event is not None:
                self.stats.changed += 1
                log.info(
                    "configuration changed",
                    device=snap.device,
                    source=snap.source,
                    version=result.version_id,
                    added=result.lines_added,
                    removed=result.lines_removed,
                )
                observe = self._observe()
                if observe is not None:
                    try:
                        observe((), (result.event,))
                    except Exception:  # alerting's fault must not lose the backup loop
                        log.exception("alert engine refused a config_changed event")

    async def stop(self, drain_s: float = 5.0) -> None:
        """Save what is pending (bounded), then stop."""
        if self._runner is None:
            return
        if self._pending:
            await self.drain(drain_s)
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        if self._pending:
            log.warning("configurations not stored at stop", count=len(self._pending))
