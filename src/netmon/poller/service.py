"""The poller with everything around it: inventory, devices table, poll health, facts.

Used by ``netmon run`` and ``netmon poller``. ``reload()`` (SIGHUP) re-reads the
inventory; a broken inventory on reload is logged and the running one kept. At start the
rate state is seeded from the store (``netmon.ingest.seed``), so the first poll after a
restart gives rates; with the database away, the poller starts without (logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nornir.core import Nornir
from nornir.core.inventory import Defaults, Groups, Hosts, Inventory

from netmon.config import Settings
from netmon.errors import ConfigError
from netmon.ingest.processor import StoreProcessor
from netmon.ingest.seed import RateSeeds, load_rate_seeds
from netmon.inventory.model import Fetched, InventoryHost, Skipped
from netmon.inventory.planning import NornirPlanner, YamlSource
from netmon.inventory.sync import InventorySource, InventorySync, SyncReport
from netmon.logs import get_logger
from netmon.netconf.hosts import forget_netconf_targets
from netmon.netconf.shared import (
    close_shared_pool,
    configure_shared_pool,
    shared_pool,
)
from netmon.poller.configs import ConfigBackups
from netmon.poller.inventory import PollPlan
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import Poller, PollResult
from netmon.records import DeviceEvent, DeviceFacts
from netmon.snmp.hosts import forget_targets
from netmon.ssh.drivers import napalm_pool
from netmon.ssh.hosts import forget_cli_targets
from netmon.ssh.session import cli_pool
from netmon.store.batcher import Batcher
from netmon.store.database import Database, is_connection_error
from netmon.store.devices import update_facts
from netmon.store.health import PollHealthStore

__all__ = ["PollerService", "ReloadResult"]

log = get_logger(__name__)
FLUSH_INTERVAL_S = 1.0
# Rate seeds: the newest values within two intervals and this margin; the query may take
# at most SEED_TIMEOUT_S (the first polls wait for it).
SEED_MARGIN = timedelta(seconds=30)
SEED_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    devices: int  # polled from now on
    error: str | None = None


# How long the poller waits at start for a spool left by a crash to be replayed.
SPOOL_WAIT_S = 30.0


class PollerService:
    def __init__(
        self, settings: Settings, db: Database, batcher: Batcher, inventory: Path | None = None
    ) -> None:
        self.settings = settings
        self.db = db
        self.batcher = batcher
        self.inventory = inventory or settings.poller.inventory
        self.registry = TaskRegistry.discover(settings.poller.task_modules)
        self.health = PollHealthStore(db)
        self.poller: Poller | None = None
        # The seam between collection and storage: every task's records go through it.
        # Alerting sets its ``observe``.
        self.processor = StoreProcessor(batcher, facts=self._keep_facts)
        self.configs = ConfigBackups(
            db, publish=settings.writer.publish, observe=lambda: self.processor.observe
        )
        self.processor.configs = self.configs.submit
        self._facts: dict[str, dict[str, object]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.source = make_source(settings, self.inventory, self.registry)
        self.sync = InventorySync(
            settings, db, self.source, apply_plans=self._apply_plans, alert=self._alert
        )
        self._initial: tuple[Nornir, list[PollPlan]] | None = None
        self._sync_loop: asyncio.Task[None] | None = None

    async def _apply_plans(self, nr: Nornir, plans: list[PollPlan]) -> None:
        """The sync's answer: poll these plans from now on."""
        if self.poller is None:
            self._initial = (nr, plans)
            return
        gone = set(self.poller.device_names) - {p.name for p in plans}
        self.poller.replace_plans(plans, nr)
        for name in gone:  # their sessions would otherwise wait for the idle timeout
            await asyncio.to_thread(_close_sessions, name)

    def _alert(self, event: DeviceEvent) -> None:
        observe = self.processor.observe
        if observe is not None:
            observe([], [event])

    async def start(self) -> None:
        poller = self.settings.poller
        configure_shared_pool(
            max_sessions=poller.netconf_sessions,
            idle_timeout=poller.netconf_idle_timeout.total_seconds(),
        )
        await self.sync.reconcile(strict=isinstance(self.source, YamlSource), use_cache=True)
        nr, plans = self._initial or (Nornir(inventory=_empty_inventory()), [])
        await self.health.load()
        # A spool left by a process that died holds its last polls: the store says when
        # each device was polled only once it is replayed. Without that, the first slot
        # would be polled again (a cycle stored twice, seen in poller-sigkill-during-outage).
        replayed = await self.batcher.writer.spool_replayed(SPOOL_WAIT_S)
        seeds = await self._seed_rates(plans)
        if not replayed:
            log.info("spool not replayed yet: the slot open now is not caught up")
        self.configs.start()
        self.poller = Poller(
            nr,
            plans,
            self.settings.poller,
            self.processor,
            self.health,
            last_polls=seeds.last_polls if seeds is not None and replayed else None,
        )
        self.poller.start()
        self._flusher = asyncio.create_task(self._flush_loop(), name="netmon-poll-health")
        if self.source.incremental:
            self._sync_loop = asyncio.create_task(self.sync.run(), name="netmon-inventory-sync")
        log.info(
            "poller started",
            devices=len(plans),
            inventory=self.source.owner,
            poller_id=self.settings.poller_id,
        )

    async def _seed_rates(self, plans: list[PollPlan]) -> RateSeeds | None:
        """The rate state from the store: the last counter values and sysUpTime of the
        inventory's devices, and when each was last polled (one query). Without the
        database, None: the first poll then starts the rates, as a first poll always did,
        and the schedule does not catch up a slot missed during the restart."""
        if not plans:
            return RateSeeds()
        lookback = 2 * max(p.interval for p in plans) + SEED_MARGIN
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(SEED_TIMEOUT_S):
                async with self.db.pool.acquire() as conn:
                    seeds = await load_rate_seeds(conn, [p.name for p in plans], lookback)
        except Exception as exc:
            log.warning("rate state not read from the store; rates start anew", error=str(exc))
            return None
        taken = self.processor.pipeline.seed(seeds.counters, seeds.uptimes)
        log.info(
            "rate state seeded from the store",
            counters=taken,
            devices=len(seeds.uptimes),
            ms=round((asyncio.get_running_loop().time() - started) * 1000),
        )
        return seeds

    async def reload(self) -> ReloadResult:
        """Re-read the inventory (a full sync); a broken one is reported and the running
        one kept."""
        assert self.poller is not None
        try:
            report = await self.sync.reconcile(strict=True)
        except ConfigError as exc:
            log.error("inventory reload failed; keeping the running inventory", error=str(exc))
            return ReloadResult(ok=False, devices=self.poller.devices, error=str(exc))
        if not report.ok:
            return ReloadResult(ok=False, devices=self.poller.devices, error=report.error)
        log.info("inventory reloaded", devices=self.poller.devices)
        return ReloadResult(ok=True, devices=self.poller.devices)

    async def sync_now(self, *, dry_run: bool = False, force: bool = False) -> SyncReport:
        return await self.sync.reconcile(dry_run=dry_run, force=force)

    def _keep_facts(self, facts: list[DeviceFacts]) -> None:
        for f in facts:
            self._facts.setdefault(f.device, {}).update(f.facts)

    async def _flush(self) -> None:
        if self._facts:
            batch, self._facts = self._facts, {}
            now = datetime.now(UTC)
            try:
                await update_facts(self.db, [DeviceFacts(d, now, v) for d, v in batch.items()])
            except BaseException:
                for device, facts in batch.items():
                    self._facts.setdefault(device, facts)
                raise
        await self.health.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self._flush()
            except Exception as exc:
                # Health and facts are state: the next flush carries the latest values.
                # A database outage is said once, by the writer; not here every second.
                if is_connection_error(exc):
                    log.debug("poll health not written; will retry", error=str(exc))
                else:
                    log.warning("poll health not written; will retry", error=str(exc))

    def polls(self, device: str) -> bool:
        return self.poller is not None and device in self.poller.device_names

    async def backup_configs(self, device: str) -> PollResult:
        """Read ``device``'s configuration now and store it (see ``Poller.collect_configs``);
        returns when it is stored, or the database is away and it waits in memory."""
        assert self.poller is not None
        result = await self.poller.collect_configs(device)
        await self.configs.drain(5.0)
        return result

    async def stop(self) -> None:
        if self._sync_loop is not None:
            self._sync_loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_loop
        with contextlib.suppress(Exception):
            await self.source.close()
        if self.poller is not None:
            await self.poller.stop()
        await self.configs.stop()
        await asyncio.to_thread(_close_all_sessions)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(Exception):
            await self._flush()


def make_source(settings: Settings, folder: Path, registry: TaskRegistry) -> InventorySource:
    """NetBox when ``inventory.netbox`` is set (the folder gives groups and defaults),
    else the YAML folder. Secrets are read again, and checked, at every plan."""
    netbox = settings.inventory.netbox
    if netbox is None:
        return _Forgetting(YamlSource(folder, settings.poller, registry))
    from netmon.inventory.netbox.adapter import NetBoxInventorySource

    planner = NornirPlanner(folder if folder.is_dir() else None, settings.poller, registry)
    return _Forgetting(NetBoxInventorySource(netbox, planner))


class _Forgetting:
    """A source whose plans read secrets anew: the targets cached for the last plans go."""

    def __init__(self, inner: InventorySource) -> None:
        self.inner = inner
        self.owner = inner.owner
        self.incremental = inner.incremental

    async def fetch_all(self) -> Fetched:
        _forget()
        return await self.inner.fetch_all()

    async def fetch_ids(self, ids: Collection[str]) -> Fetched:
        _forget()
        return await self.inner.fetch_ids(ids)

    def plan(self, hosts: list[InventoryHost]) -> tuple[Nornir, list[PollPlan], list[Skipped]]:
        return self.inner.plan(hosts)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _forget() -> None:
    forget_targets()
    forget_netconf_targets()
    forget_cli_targets()


def _empty_inventory() -> Inventory:
    return Inventory(hosts=Hosts(), groups=Groups(), defaults=Defaults())


def _close_sessions(device: str) -> None:
    """A device left the inventory: its NETCONF and SSH sessions go now."""
    shared_pool().drop(device)
    cli_pool().close(device)
    napalm_pool().close(device)


def _close_all_sessions() -> None:
    close_shared_pool()
    cli_pool().close_all()
    napalm_pool().close_all()
