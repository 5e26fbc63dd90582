"""Alerting as one piece for ``netmon run`` / ``netmon poller``: the rules (file or
built-in, synced into ``alert_rules``, plus the API's), the engine fed by the batcher, the
recorder, and the webhook deliverer.

Control messages (``NOTIFY netmon_control``, through the writer's listener) keep it
current: ``rules_reload`` after an API change to the rules, ``outbox_wake`` after a
redelivery, ``device_changed`` for the attributes matchers see (after an inventory
reload the Service calls ``reload_devices`` once its poller has synced the devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from netmon import __version__
from netmon.alerts.delivery import Deliverer
from netmon.alerts.direct import OutageNotifier
from netmon.alerts.engine import AlertEngine, DeviceAttrs, Transition
from netmon.alerts.matchers import parse_matchers
from netmon.alerts.model import from_jsonb
from netmon.alerts.recorder import AlertRecorder, load_open
from netmon.alerts.rules import (
    BUILTIN_RULES,
    Rule,
    RuleError,
    RulesFile,
    RuleSpec,
    load_rules_file,
    parse_rule,
)
from netmon.config import Settings
from netmon.logs import get_logger
from netmon.records import DeviceEvent, Sample
from netmon.store.database import Database

__all__ = ["AlertService", "sync_rules_file"]

log = get_logger(__name__)

_TICK = 1.0


class AlertService:
    def __init__(self, db: Database, settings: Settings, *, external_url: str = "") -> None:
        alerts = settings.alerts
        self.db = db
        self.settings = settings
        self.engine = AlertEngine(
            flap_window_s=alerts.flap_window.total_seconds(),
            flap_threshold=alerts.flap_threshold,
        )
        self.deliverer = Deliverer(db, alerts.webhooks, user_agent=f"netmon/{__version__}")
        self.direct: OutageNotifier | None = None
        if alerts.direct_delivery:
            self.direct = OutageNotifier(
                settings.data_dir / "alert-spool",
                max_bytes=alerts.spool_max_bytes,
                external_url=external_url,
                down_notify_after=alerts.database_down_notify_after,
                send=self.deliverer.send_direct,
            )
        self.recorder = AlertRecorder(
            db,
            settings,
            external_url=external_url,
            on_outbox=self.deliverer.wake,
            direct=self.direct,
        )
        self._tick: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Sees every change as it is queued for commit (the terminal view's recent events).
        self.watch: Callable[[Sequence[Transition]], None] | None = None

    async def start(self) -> None:
        """Sync the rules file, load rules and devices, take up open alerts, start."""
        await sync_rules_file(self.db, self.settings)
        await self.reload_rules()
        await self.reload_devices()
        # Changes left in the on-disk outbox by a stop during an outage go in first, so
        # the engine takes up the alerts they opened or closed.
        await self.recorder.reconcile()
        async with self.db.pool.acquire() as conn:
            if self.direct is not None:
                await self.direct.refresh(conn)
            taken = self.engine.restore(await load_open(conn))
        # Alerts of devices retired while netmon was stopped resolve now.
        self._submit(self.engine.prune())
        await self.recorder.start()
        await self.deliverer.start()
        if self.direct is not None:
            await self.direct.start()
        self._tick = asyncio.create_task(self._tick_loop(), name="netmon-alert-tick")
        log.info("alerting started", rules=len(self.engine.rules), open_alerts=taken)

    async def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        for task in list(self._background):
            task.cancel()
        await self.recorder.close()
        if self.direct is not None:
            await self.direct.close()
        await self.deliverer.close()

    # -- the ingest hook -----------------------------------------------------------------

    def observe(self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()) -> None:
        """Evaluate a submitted batch (the batcher calls this before queueing it)."""
        transitions = self.engine.observe(samples) if samples else []
        if events:
            transitions += self.engine.observe_events(events)
        self._submit(transitions)

    def _submit(self, transitions: list[Transition]) -> None:
        if not transitions:
            return
        self.recorder.submit(transitions)
        if self.watch is not None:
            try:
                self.watch(transitions)
            except Exception:  # a display's fault must not cost an alert
                log.exception("alert watcher failed")

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            self._submit(self.engine.tick())

    # -- reloads ---------------------------------------------------------------------------

    async def reload_rules(self) -> None:
        rows = await self.db.pool.fetch(
            "SELECT name, source, definition FROM alert_rules ORDER BY name"
        )
        rules: list[Rule] = []
        for row in rows:
            try:
                spec = parse_rule(from_jsonb(row["definition"]), "stored rule")
            except RuleError as exc:
                # Stored rules were checked when written; a newer netmon may read them
                # differently. Skip the one, keep the rest.
                log.error("stored alert rule skipped", rule=row["name"], error=str(exc))
                continue
            rules.append(Rule.from_spec(spec, row["source"]))
        self._submit(self.engine.set_rules(rules))

    async def reload_devices(self) -> None:
        """The devices alerts may be about: the polled ones. Alerts of a retired or
        unpolled device resolve, saying why."""
        rows = await self.db.pool.fetch(
            "SELECT name, site, role, tags, lifecycle, retired_reason FROM devices"
        )
        attrs = {
            r["name"]: DeviceAttrs(r["site"], r["role"], tuple(r["tags"] or ()))
            for r in rows
            if r["lifecycle"] in ("active", "muted")
        }
        gone = {
            r["name"]: (
                f"device retired: {r['retired_reason'] or 'left the inventory'}"
                if r["lifecycle"] == "retired"
                else "device no longer polled (its inventory status)"
            )
            for r in rows
            if r["lifecycle"] not in ("active", "muted")
        }
        self._submit(self.engine.set_devices(attrs, gone))

    def on_control(self, op: str) -> None:
        """Act on a netmon_control op (others are not alerting's). An inventory reload
        is the Service's: the devices are read again once its poller has synced them."""
        if op == "rules_reload":
            self._spawn(self.reload_rules())
        elif op == "device_changed":
            self._spawn(self.reload_devices())
        elif op == "outbox_wake":
            self.deliverer.wake()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alerting reload failed", error=str(task.exception()))


async def sync_rules_file(db: Database, settings: Settings) -> RulesFile:
    """Make ``alert_rules`` and ``silences`` hold what the rules file says (source 'file'):
    the built-in rules when no file is configured. A rule the API owns under the same
    name is left alone (logged). Errors in the file raise RuleError before anything
    changes."""
    path = settings.alerts.rules_file
    if path is None:
        content = RulesFile(list(BUILTIN_RULES), [])
    else:
        content = await asyncio.to_thread(load_rules_file, path)
    async with db.pool.acquire() as conn, conn.transaction():
        await _sync_rules(conn, content.rules, "builtin" if path is None else str(path))
        await _sync_silences(conn, content, str(path or "builtin"))
    return content


async def _sync_rules(conn: asyncpg.Connection, specs: Sequence[RuleSpec], origin: str) -> None:
    names = [s.name for s in specs]
    await conn.execute(
        "DELETE FROM alert_rules WHERE source = 'file' AND NOT (name = ANY($1::text[]))", names
    )
    for spec in specs:
        done = await conn.fetchval(
            """
            INSERT INTO alert_rules AS r (name, source, definition, created_by)
            VALUES ($1, 'file', $2::jsonb, $3)
            ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                updated_at = now(), created_by = excluded.created_by
            WHERE r.source = 'file'
            RETURNING 1
            """,
            spec.name,
            json.dumps(spec.definition()),
            origin,
        )
        if done is None:
            log.warning("file rule skipped: the API owns a rule of that name", rule=spec.name)


async def _sync_silences(conn: asyncpg.Connection, content: RulesFile, origin: str) -> None:
    names = [s.name for s in content.silences]
    await conn.execute(
        "DELETE FROM silences WHERE source = 'file' AND NOT (name = ANY($1::text[]))", names
    )
    for s in content.silences:
        matchers = [str(m) for m in parse_matchers(s.matchers)]
        await conn.execute(
            """
            INSERT INTO silences AS s (name, source, matchers, starts_at, ends_at, comment,
                                       created_by)
            VALUES ($1, 'file', $2::jsonb, $3, $4, $5, $6)
            ON CONFLICT (name) DO UPDATE SET matchers = excluded.matchers,
                starts_at = excluded.starts_at, ends_at = excluded.ends_at,
                comment = excluded.comment
            WHERE s.source = 'file'
            """,
            s.name,
            json.dumps(matchers),
            s.starts_at,
            s.ends_at,
            s.comment,
            origin,
        )
