"""NetBox as the poller's inventory source: the NetBox reads, the planner that turns
hosts into poll plans on the local folder's groups and defaults, and the optional
write-back of a journal entry when netmon starts or stops monitoring a host."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from nornir.core import Nornir

from netmon.config import NetBoxSettings
from netmon.inventory.model import Fetched, InventoryHost, Skipped
from netmon.inventory.netbox.source import NetBoxSource
from netmon.inventory.netbox.writeback import journal
from netmon.inventory.planning import NornirPlanner
from netmon.logs import get_logger
from netmon.poller.inventory import PollPlan
from netmon.store.inventory import ApplyResult

__all__ = ["NetBoxInventorySource"]

log = get_logger(__name__)


class NetBoxInventorySource:
    owner = "netbox"
    incremental = True

    def __init__(self, settings: NetBoxSettings, planner: NornirPlanner) -> None:
        self.settings = settings
        self.netbox = NetBoxSource(settings)
        self.planner = planner
        self._background: set[asyncio.Task[None]] = set()

    @property
    def feed(self) -> NetBoxSource:
        return self.netbox

    async def fetch_all(self) -> Fetched:
        return await self.netbox.fetch_all()

    async def fetch_ids(self, ids: Collection[str]) -> Fetched:
        return await self.netbox.fetch_ids(ids)

    def plan(self, hosts: list[InventoryHost]) -> tuple[Nornir, list[PollPlan], list[Skipped]]:
        return self.planner.plan(hosts)

    def applied(self, result: ApplyResult) -> None:
        """Write-back, when asked for: a journal entry on each NetBox object netmon
        started or stopped monitoring. In the background: NetBox being slow or refusing
        the entry never holds the sync (the failure is logged)."""
        if not self.settings.write_back:
            return
        entries = [
            (h.external_id, "success", "netmon started monitoring this device")
            for h in result.diff.added
        ]
        entries += [
            (
                c.host.external_id,
                "success",
                "netmon monitors this device again",
            )
            for c in result.diff.changed
            if c.row.lifecycle == "retired"
        ]
        entries += [
            (r.external_id, "warning", "netmon stopped monitoring this device (retired)")
            for r in result.diff.retired
        ]
        if entries:
            task = asyncio.create_task(self._write(entries), name="netbox-journal")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _write(self, entries: list[tuple[str, str, str]]) -> None:
        for ref, kind, text in entries:
            await journal(self.netbox.client, ref, kind, text)  # type: ignore[arg-type]

    async def close(self) -> None:
        for task in list(self._background):
            try:
                async with asyncio.timeout(5):
                    await task
            except (TimeoutError, Exception) as exc:
                log.warning("netbox journal entries not all written", error=str(exc))
        await self.netbox.close()
