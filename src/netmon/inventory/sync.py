"""Keeping the devices table and the poller in step with an inventory source.

:class:`InventorySync` holds the hosts the source last gave, applies each read to the
devices the source owns (``netmon.store.inventory.apply_sync``) and hands the poller the
plans of the hosts to poll. Two loops for NetBox: a full reconcile at start and every
``full_sync_interval``, and an incremental one that reads the change log every
``changes_interval`` (and at once when the webhook nudges it), re-reading only the hosts
that changed.

What goes wrong is contained:
- a fetch that fails, or a full read that would retire more than ``retire_guard`` of the
  devices, retires nothing; it is recorded as a run and raised as an alert
  (``inventory-sync``, device ``inventory/<source>``);
- one host that cannot be taken (no address, a secret where a reference belongs, a bad
  ``netmon`` config context, a name another source holds) is skipped with its reason;
  the others sync;
- NetBox away at start: the hosts of the last good read (kept in the data folder) are
  polled until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from nornir.core import Nornir

from netmon.config import Settings
from netmon.errors import ConfigError
from netmon.inventory.model import Fetched, InventoryHost, MaintenanceWindow, Skipped
from netmon.logs import get_logger
from netmon.poller.inventory import PollPlan
from netmon.records import DeviceEvent
from netmon.store.database import Database
from netmon.store.inventory import ApplyResult, SourceKey, apply_sync, record_run

__all__ = [
    "ChangeBatch",
    "ChangeFeed",
    "InventorySource",
    "InventorySync",
    "SyncReport",
    "SyncStats",
]

log = get_logger(__name__)

ApplyPlans = Callable[[Nornir, list[PollPlan]], Awaitable[None]]
SYNC_EVENT = "inventory.sync_failed"


class InventorySource(Protocol):
    """Where hosts come from. ``plan`` turns hosts into poll plans and the Nornir object
    they run on; a host it cannot plan is returned as skipped (YAML raises instead: a
    broken file is the user's to fix before anything changes)."""

    owner: str
    incremental: bool

    async def fetch_all(self) -> Fetched: ...

    async def fetch_ids(self, ids: Collection[str]) -> Fetched: ...

    def plan(self, hosts: list[InventoryHost]) -> tuple[Nornir, list[PollPlan], list[Skipped]]: ...

    async def close(self) -> None: ...


class ChangeBatch(Protocol):
    """What a change log said since the last read: the hosts to read again, whether
    something changed that touches many (a site, a config context: a full sync), where
    to read from next time, and when the newest change was made (unix time). NetBox's
    is ``netmon.inventory.netbox.source.ChangeBatch``."""

    @property
    def ids(self) -> frozenset[str]: ...

    @property
    def full(self) -> bool: ...

    @property
    def cursor(self) -> Any: ...

    @property
    def newest(self) -> float | None: ...


class ChangeFeed(Protocol):
    async def changes_since(self, cursor: Any) -> ChangeBatch: ...


@dataclass
class SyncReport:
    """One sync, as the CLI prints it and the API shows it."""

    kind: str  # full, incremental
    ok: bool
    dry_run: bool = False
    error: str | None = None
    held: str | None = None
    fetched: int = 0
    result: ApplyResult | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        base: dict[str, Any] = (
            self.result.diff.summary()
            if self.result is not None
            else {"added": [], "changed": [], "retired": [], "unchanged": 0}
        )
        return base


@dataclass
class SyncStats:
    """What /metrics shows of the sync."""

    last_full_ok: float | None = None  # unix time of the last full sync that applied
    last_incremental_ok: float | None = None
    incremental_lag_s: float | None = None  # change made at the source -> applied here
    runs: dict[tuple[str, bool], int] = field(default_factory=dict)  # (kind, ok) -> count
    synced: int = 0  # hosts the source holds that are devices now
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> hosts, last run
    retired: int = 0  # devices retired, all runs
    added: int = 0
    changed: int = 0
    held: int = 0


class InventorySync:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        source: InventorySource,
        *,
        apply_plans: ApplyPlans | None = None,
        alert: Callable[[DeviceEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.source = source
        self.key = SourceKey(source.owner, settings.poller_id)
        self.apply_plans = apply_plans
        self.alert = alert
        self.stats = SyncStats()
        self.hosts: dict[str, InventoryHost] = {}
        self._lock = asyncio.Lock()
        self._plans: list[PollPlan] = []
        self._wake = asyncio.Event()
        self._pending: set[str] = set()
        self._pending_full = False
        self._pending_at: float | None = None
        self._cursor: Any = None  # where the change log was read up to
        self._cache = settings.data_dir / "inventory" / f"{source.owner}.json"

    @property
    def alert_device(self) -> str:
        return f"inventory/{self.key.owner}"

    # -- the reads -------------------------------------------------------------------------

    async def reconcile(
        self,
        *,
        dry_run: bool = False,
        force: bool = False,
        use_cache: bool = False,
        strict: bool = False,
    ) -> SyncReport:
        """Read everything the source selects and apply it. ``force`` lifts the guard once.
        ``use_cache``: if the source cannot be read, poll the hosts of the last good read.
        ``strict``: a ConfigError of the source (a broken YAML file) is raised, not
        recorded."""
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        await self._start_feed(dry_run)
        try:
            fetched = await self.source.fetch_all()
        except Exception as exc:  # a source error of any kind: nothing is retired
            if strict and isinstance(exc, ConfigError):
                raise
            return await self._fetch_failed(exc, started, dry_run, use_cache)
        report = await self._apply("full", fetched, started, dry_run=dry_run, force=force)
        report.seconds = time.perf_counter() - t0
        return report

    async def _start_feed(self, dry_run: bool) -> None:
        """Place the change log's cursor before the first full read: a change made while
        that read runs is then read again by the incremental loop, not lost between the
        two (a cursor placed after the read would start past it)."""
        feed: ChangeFeed | None = getattr(self.source, "feed", None)
        if feed is None or dry_run or self._cursor is not None:
            return
        try:
            self._cursor = (await feed.changes_since(None)).cursor
        except Exception as exc:  # the full read will say what is wrong with the source
            log.debug("change log cursor not placed", error=str(exc))

    async def _fetch_failed(
        self, exc: Exception, started: datetime, dry_run: bool, use_cache: bool
    ) -> SyncReport:
        message = f"cannot read the {self.key.owner} inventory: {exc}"
        log.error("inventory sync failed", source=self.key.owner, error=message)
        if not dry_run:
            await self._failed("full", started, message)
            if use_cache:
                await self._from_cache()
        return SyncReport("full", ok=False, dry_run=dry_run, error=message)

    async def refresh(self, ids: Collection[str], *, changed_at: float | None = None) -> SyncReport:
        """Re-read the hosts of these external ids (a change at the source)."""
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            fetched = await self.source.fetch_ids(ids)
        except Exception as exc:
            message = f"cannot read changed hosts from the {self.key.owner} inventory: {exc}"
            log.warning("incremental inventory sync failed", error=message)
            await self._failed("incremental", started, message)
            return SyncReport("incremental", ok=False, error=message)
        report = await self._apply("incremental", fetched, started, requested=ids)
        report.seconds = time.perf_counter() - t0
        if report.ok and changed_at is not None:
            self.stats.incremental_lag_s = max(0.0, time.time() - changed_at)
        return report

    async def _apply(
        self,
        kind: str,
        fetched: Fetched,
        started: datetime,
        *,
        requested: Collection[str] = (),
        dry_run: bool = False,
        force: bool = False,
    ) -> SyncReport:
        async with self._lock:
            hosts = dict(self.hosts) if fetched.complete is False else {}
            for ext in requested:
                hosts.pop(ext, None)
            for host in fetched.hosts:
                hosts[host.external_id] = host
            # Plan every host the source holds (retired ones are not polled, nor planned).
            candidates = [h for h in hosts.values() if h.lifecycle != "retired"]
            nr, plans, bad = await asyncio.to_thread(self.source.plan, candidates)
            bad_ids = {s.external_id for s in bad}
            usable = [h for h in fetched.hosts if h.external_id not in bad_ids]
            view = Fetched(
                hosts=usable,
                skipped=[*fetched.skipped, *(s for s in bad if _in(s, fetched))],
                complete=fetched.complete,
                total=fetched.total,
                cables=fetched.cables,
            )
            guard = (
                None if force or self.key.owner == "yaml" else self.settings.inventory.retire_guard
            )
            async with self.db.pool.acquire() as conn, conn.transaction():
                result = await apply_sync(
                    conn, self.key, view, requested=requested, guard=guard, dry_run=dry_run
                )
                if not dry_run:
                    await record_run(
                        conn,
                        self.key,
                        kind=kind,
                        started_at=started,
                        result=result,
                        fetched=len(fetched.hosts) + len(fetched.skipped),
                    )
            report = SyncReport(
                kind,
                ok=True,
                dry_run=dry_run,
                held=result.held_reason or None,
                fetched=len(fetched.hosts) + len(fetched.skipped),
                result=result,
            )
            if dry_run:
                return report
            skipped_ids = {s.external_id for s in result.skipped} - bad_ids
            held_back = {r.external_id for r in result.held_back}
            # Held: the hosts that would have been retired stay, and are polled as before.
            kept = {k: h for k, h in self.hosts.items() if k in held_back}
            self.hosts = {**kept, **{k: h for k, h in hosts.items() if k not in skipped_ids}}
            by_name = {h.name: h for h in self.hosts.values()}
            polled = [
                p
                for p in plans
                if (h := by_name.get(p.name)) is not None and h.lifecycle in ("active", "muted")
            ]
            names = {p.name for p in polled}
            polled += [p for p in self._plans if p.name in {h.name for h in kept.values()} - names]
            self._plans = polled
            self._count(kind, result)
            applied = getattr(self.source, "applied", None)
            if applied is not None:
                applied(result)
            if self.apply_plans is not None:
                await self.apply_plans(nr, polled)
            await asyncio.to_thread(self._save_cache, list(self.hosts.values()))
            self._log(kind, result)
            if result.held:
                self._raise(result.held_reason)
            return report

    def _count(self, kind: str, result: ApplyResult) -> None:
        s = self.stats
        s.runs[(kind, True)] = s.runs.get((kind, True), 0) + 1
        now = time.time()
        if kind == "full" and not result.held:
            s.last_full_ok = now
        if kind == "incremental":
            s.last_incremental_ok = now
        diff = result.diff
        s.added += len(diff.added)
        s.changed += len(diff.changed)
        s.retired += len(diff.retired)
        s.held += int(result.held)
        s.synced = sum(1 for h in self.hosts.values() if h.lifecycle != "retired")
        reasons: dict[str, int] = {}
        for skipped in diff.skipped:
            reasons[skipped.reason] = reasons.get(skipped.reason, 0) + 1
        if kind == "full" or reasons:
            s.skipped = reasons

    def _log(self, kind: str, result: ApplyResult) -> None:
        diff = result.diff
        for skipped in diff.skipped:
            log.warning("inventory host skipped", reason=skipped.reason, error=skipped.message)
        if diff.empty and kind == "incremental":
            return
        log.info(
            "inventory synced",
            source=self.key.owner,
            kind=kind,
            added=len(diff.added),
            changed=len(diff.changed),
            retired=len(diff.retired),
            unchanged=len(diff.unchanged),
            skipped=len(diff.skipped),
            held=result.held_reason or None,
        )

    async def _failed(self, kind: str, started: datetime, message: str) -> None:
        self.stats.runs[(kind, False)] = self.stats.runs.get((kind, False), 0) + 1
        with contextlib.suppress(Exception):  # the database may be what failed
            async with self.db.pool.acquire() as conn:
                await record_run(
                    conn, self.key, kind=kind, started_at=started, result=None, error=message
                )
        self._raise(message)

    def _raise(self, message: str) -> None:
        if self.alert is not None:
            self.alert(
                DeviceEvent(
                    device=self.alert_device,
                    time=datetime.now(UTC),
                    kind=SYNC_EVENT,
                    message=message,
                    severity="warning",
                    attributes={"source": self.key.owner, "poller": self.key.poller},
                )
            )

    # -- the loops ------------------------------------------------------------------------

    def nudge(
        self, ids: Collection[str] = (), *, full: bool = False, at: float | None = None
    ) -> None:
        """A change the webhook told of: read these hosts (or all) again, soon."""
        self._pending.update(ids)
        self._pending_full = self._pending_full or full
        if at is not None:
            self._pending_at = min(self._pending_at or at, at)
        self._wake.set()

    async def run(self) -> None:
        """The full reconcile every ``full_sync_interval`` and the incremental loop: the
        change log every ``changes_interval``, and at once after a webhook's nudge."""
        netbox = self.settings.inventory.netbox
        assert netbox is not None
        feed: ChangeFeed | None = getattr(self.source, "feed", None)
        full_every = netbox.full_sync_interval.total_seconds()
        changes_every = netbox.changes_interval.total_seconds()
        loop = asyncio.get_running_loop()
        next_full = loop.time() + full_every
        while True:
            timeout = max(0.0, min(next_full - loop.time(), changes_every))
            nudged = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
                    nudged = True
            self._wake.clear()
            try:
                # A webhook's nudge says what changed: the change log is for the rounds
                # the timer starts.
                if feed is not None and not nudged:
                    try:
                        batch = await feed.changes_since(self._cursor)
                    except Exception as exc:
                        log.warning("inventory change log not read", error=str(exc))
                    else:
                        self._cursor = batch.cursor
                        self._pending.update(batch.ids)
                        self._pending_full = self._pending_full or batch.full
                        if batch.newest is not None and (batch.ids or batch.full):
                            self._pending_at = min(self._pending_at or batch.newest, batch.newest)
                ids, self._pending = self._pending, set()
                full, self._pending_full = self._pending_full, False
                at, self._pending_at = self._pending_at, None
                if full or loop.time() >= next_full:
                    await self.reconcile()
                    next_full = loop.time() + full_every
                    if at is not None:
                        self.stats.incremental_lag_s = max(0.0, time.time() - at)
                elif ids:
                    await self.refresh(ids, changed_at=at)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: the next round tries again
                log.warning("inventory sync round failed", error=str(exc))

    # -- the last good read, for a start without the source ------------------------------

    def _save_cache(self, hosts: list[InventoryHost]) -> None:
        """In a thread: at tens of thousands of hosts this is a second of work."""
        if self.key.owner == "yaml":
            return  # the folder is its own cache
        try:
            self._cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._cache.with_suffix(".tmp")
            tmp.write_text(json.dumps([_host_json(h) for h in hosts]))
            tmp.replace(self._cache)
        except OSError as exc:
            log.warning("inventory cache not written", path=str(self._cache), error=str(exc))

    async def _from_cache(self) -> None:
        if self.hosts or self.apply_plans is None or not self._cache.is_file():
            return
        try:
            hosts = [_host_from_json(h) for h in json.loads(self._cache.read_text())]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("inventory cache unreadable", path=str(self._cache), error=str(exc))
            return
        self.hosts = {h.external_id: h for h in hosts}
        nr, plans, _ = await asyncio.to_thread(
            self.source.plan, [h for h in hosts if h.lifecycle in ("active", "muted")]
        )
        self._plans = plans
        await self.apply_plans(nr, plans)
        log.warning(
            "polling the hosts of the last good inventory read until the source answers",
            devices=len(plans),
            path=str(self._cache),
        )


def _in(skipped: Skipped, fetched: Fetched) -> bool:
    return any(h.external_id == skipped.external_id for h in fetched.hosts)


def _host_json(host: InventoryHost) -> dict[str, Any]:
    out = asdict(host)
    out["maintenance"] = [
        {
            "starts_at": w.starts_at.isoformat(),
            "ends_at": w.ends_at.isoformat(),
            "comment": w.comment,
        }
        for w in host.maintenance
    ]
    return out


def _host_from_json(raw: dict[str, Any]) -> InventoryHost:
    raw = dict(raw)
    raw["tags"] = tuple(raw.get("tags", ()))
    raw["groups"] = tuple(raw.get("groups", ()))
    raw["maintenance"] = tuple(
        MaintenanceWindow(
            datetime.fromisoformat(w["starts_at"]),
            datetime.fromisoformat(w["ends_at"]),
            w.get("comment", ""),
        )
        for w in raw.get("maintenance", ())
    )
    return InventoryHost(**raw)
