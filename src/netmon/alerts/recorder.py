"""Alert changes into the database: rows, history, the live feed and the outbox, in one
transaction per batch of changes.

The engine hands over transitions without waiting (it runs in the ingest path); a task
here commits them in order. Inside the transaction: the ``alerts`` row changes, its
``alert_history`` row, a ``netmon_alerts`` notification (delivered at commit, so a feed
never shows an uncommitted alert), and the webhook groups' bookkeeping with any messages
due now (``groups.route``). While the database is away the changes wait, in order, and
are committed when it is back. A timer loop flushes groups whose group wait, interval or
repeat has come.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter

import asyncpg

from netmon.alerts.direct import OutageNotifier, SpoolEntry
from netmon.alerts.engine import OpenAlert, Transition
from netmon.alerts.groups import flush_due, route
from netmon.alerts.model import (
    ALERT_SELECT,
    AlertChange,
    AlertView,
    alert_view,
    encode_alert_change,
    from_jsonb,
)
from netmon.config import Settings
from netmon.histogram import WRITE_SECONDS_BUCKETS, Histogram
from netmon.logs import get_logger
from netmon.store.database import Database, is_connection_error
from netmon.store.notify import ALERTS_CHANNEL, publish

__all__ = ["AlertRecorder", "RecorderStats", "load_open"]

log = get_logger(__name__)

# Changes committed per transaction, at most.
_BATCH = 500
# Changes held while the database is away; past this the oldest are dropped (counted).
_QUEUE_MAX = 100_000
_TIMER_INTERVAL = 1.0
# Changes worth a line in the log (pending and the like are in the table and the feed).
_LOGGED = frozenset({"firing", "resolved", "flapping"})

# One statement per kind of change and wave (see _waves), each over arrays: an alert storm
# costs a few round trips, not a few per alert. Each returns the (fingerprint, id) of the
# alerts it changed; a change the table already reflects returns nothing.
_COLUMNS = """fingerprint, rule, device, labels, severity, state, value, summary, description,
              pending_at, started_at, updated_at, kind, metric"""
_ROWS = """unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[],
              $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
              $12::text[], $13::text[])
       AS i(f, r, d, l, sev, v, su, de, p, st, u, k, m)"""
_STATEMENTS: dict[str, str] = {
    "pending": f"""
INSERT INTO alerts ({_COLUMNS})
SELECT f, r, d, l::jsonb, sev, 'pending', v, su, de, p, st, u, k, m FROM {_ROWS}
ON CONFLICT (fingerprint) WHERE state <> 'resolved' DO NOTHING
RETURNING fingerprint, id
""",
    # A pending alert fires; with no pending row (for 0) a firing row is made.
    "firing": f"""
WITH i AS (SELECT * FROM {_ROWS}), up AS (
    UPDATE alerts a SET state = 'firing', started_at = i.st, value = i.v, summary = i.su,
                        description = i.de, updated_at = i.u
    FROM i WHERE a.fingerprint = i.f AND a.state = 'pending'
    RETURNING a.fingerprint, a.id
), ins AS (
    INSERT INTO alerts ({_COLUMNS})
    SELECT f, r, d, l::jsonb, sev, 'firing', v, su, de, p, st, u, k, m FROM i
    WHERE NOT EXISTS (SELECT 1 FROM up WHERE up.fingerprint = i.f)
    ON CONFLICT (fingerprint) WHERE state <> 'resolved' DO NOTHING
    RETURNING fingerprint, id
)
SELECT * FROM up UNION ALL SELECT * FROM ins
""",
    "resolved": """
UPDATE alerts a SET state = 'resolved', resolved_at = i.t, value = coalesce(i.v, a.value),
                    flapping = false, updated_at = i.t
FROM unnest($1::text[], $2::timestamptz[], $3::float8[]) AS i(f, t, v)
WHERE a.fingerprint = i.f AND a.state <> 'resolved'
RETURNING a.fingerprint, a.id
""",
    "flap": """
UPDATE alerts a SET flapping = i.fl, changes = i.c, updated_at = i.t,
                    value = coalesce(i.v, a.value)
FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::int[], $5::bool[])
     AS i(f, t, v, c, fl)
WHERE a.fingerprint = i.f AND a.state <> 'resolved'
RETURNING a.fingerprint, a.id
""",
}

_HISTORY = """
INSERT INTO alert_history (alert_id, time, event, value, detail)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::float8[], $5::text[])
"""


@dataclass
class RecorderStats:
    committed: int = 0  # transitions that changed an alert
    ignored: int = 0  # transitions the database already reflected (restart races)
    failed: int = 0  # transitions dropped after an error no retry would cure
    dropped: int = 0  # transitions dropped because the queue was full
    queued_messages: int = 0  # webhook messages written to the outbox
    # Seconds from a transition leaving the engine to its commit.
    latency: Histogram = field(default_factory=lambda: Histogram(WRITE_SECONDS_BUCKETS))


class AlertRecorder:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        external_url: str = "",
        on_outbox: Callable[[], None] | None = None,
        direct: OutageNotifier | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.external_url = external_url
        self.retry_for = settings.alerts.webhooks.retry_for
        self.stats = RecorderStats()
        # Called after a commit that queued webhook messages (wakes the deliverer).
        self.on_outbox = on_outbox
        # Called with each committed batch (the benchmark times the commit with it).
        self.on_commit: Callable[[Sequence[Transition], Sequence[AlertView]], None] | None = None
        self._queue: list[Transition] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Commits go through a connection of their own: a pool connection costs a reset
        # round trip at every release, on the path every alert takes.
        self._conn: asyncpg.Connection | None = None
        # While the database is away: the on-disk outbox and direct delivery.
        self.direct = direct
        self._down = False
        self._refreshed = 0.0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, transitions: Sequence[Transition]) -> None:
        """Queue changes for commit; returns at once."""
        self._queue.extend(transitions)
        if len(self._queue) > _QUEUE_MAX:
            extra = len(self._queue) - _QUEUE_MAX
            del self._queue[:extra]
            self.stats.dropped += extra
            log.error("alert changes dropped: queue full", dropped_total=self.stats.dropped)
        self._idle.clear()
        self._wake.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="netmon-alert-recorder"),
            asyncio.create_task(self._timer_loop(), name="netmon-alert-groups"),
        ]

    async def drain(self, within: float = 10.0) -> bool:
        """Wait until everything submitted is committed; False if ``within`` s passed."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, drain_timeout: float = 5.0) -> None:
        if self._queue:
            await self.drain(drain_timeout)
        self._closing = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._drop_connection()
        if self._queue:
            log.warning("alert changes not committed at stop", count=len(self._queue))

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self.db.connect()
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.close()

    # -- committing ----------------------------------------------------------------------

    async def reconcile(self) -> int:
        """Commit what the on-disk outbox holds, in order (at start and when the database
        is back); the number of files done. Raises on a connection error."""
        if self.direct is None:
            return 0
        async with self.direct.lock:
            return await self._reconcile(self.direct)

    async def _reconcile(self, direct: OutageNotifier) -> int:
        done = 0
        for entry in direct.entries():
            try:
                await self._commit(entry.transitions, spooled=entry)
            except Exception as exc:
                if is_connection_error(exc):
                    await self._drop_connection()
                    raise
                self.stats.failed += len(entry.transitions)
                log.exception("spooled alert changes dropped", file=entry.path.name)
            direct.done(entry)
            done += 1
        return done

    async def _database_up(self) -> None:
        if self.direct is None:
            return
        if self._down:
            self._down = False
            await self.direct.database_up()
        if perf_counter() - self._refreshed > 5.0:
            try:
                async with self.db.pool.acquire() as conn:
                    await self.direct.refresh(conn)
                self._refreshed = perf_counter()
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("webhook cache refresh failed")

    async def _database_down(self) -> None:
        """Hand what waits in memory to the on-disk outbox, which sends it directly."""
        if self.direct is None:
            return
        self._down = True
        self.direct.database_down()
        if self._queue:
            batch = list(self._queue)
            if await self.direct.spool(batch):
                del self._queue[: len(batch)]

    async def _commit_loop(self) -> None:
        retry = self.settings.writer.retry_interval.total_seconds()
        delay = retry
        while not self._closing:
            if self.direct is not None and self.direct.pending:
                try:
                    await self.reconcile()
                except Exception as exc:
                    log.debug("alert changes wait for the database", error=str(exc))
                    await self._database_down()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                await self._database_up()
                delay = retry
            if not self._queue:
                self._idle.set()
                await self._wake.wait()
                self._wake.clear()
                continue
            batch = self._queue[:_BATCH]
            try:
                await self._commit(batch)
            except Exception as exc:
                if is_connection_error(exc):
                    await self._drop_connection()
                    log.debug("alert changes wait for the database", error=str(exc))
                    await self._database_down()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0 if self.direct is not None else 30.0)
                    continue
                log.exception("alert changes failed; committing them one by one")
                await self._commit_each(batch)
            else:
                delay = retry
                await self._database_up()
            del self._queue[: len(batch)]

    async def _commit_each(self, batch: list[Transition]) -> None:
        """Isolate a change the database refuses, so it does not block the others."""
        for t in batch:
            try:
                await self._commit([t])
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                self.stats.failed += 1
                log.exception("alert change dropped", fingerprint=t.fingerprint, event=t.event)

    async def _commit(
        self, batch: Sequence[Transition], *, spooled: SpoolEntry | None = None
    ) -> None:
        now = datetime.now(UTC)
        conn = await self._connection()
        async with conn.transaction():
            changed: list[tuple[Transition, int]] = []
            for wave in _waves(batch):
                ids: dict[str, int] = {}
                for kind, items in _by_statement(wave).items():
                    rows = await conn.fetch(_STATEMENTS[kind], *_arrays(kind, items))
                    ids.update((r["fingerprint"], r["id"]) for r in rows)
                for t in wave:
                    alert_id = ids.get(t.fingerprint)
                    if alert_id is None:
                        self.stats.ignored += 1
                    else:
                        changed.append((t, alert_id))
            if not changed:
                return
            await conn.execute(
                _HISTORY,
                [i for _, i in changed],
                [t.time for t, _ in changed],
                [t.event for t, _ in changed],
                [t.value for t, _ in changed],
                [t.detail for t, _ in changed],
            )
            changed_ids = list(dict.fromkeys(i for _, i in changed))
            rows = await conn.fetch(ALERT_SELECT + " WHERE a.id = ANY($1::bigint[])", changed_ids)
            views = {r["id"]: alert_view(r) for r in rows}
            await publish(
                conn,
                ALERTS_CHANNEL,
                [
                    encode_alert_change(AlertChange(event=t.event, time=t.time, alert=views[i]))
                    for t, i in changed
                ],
            )
            if spooled is not None and spooled.routed:
                ids_of = {t.fingerprint: i for t, i in changed}
                queued = await _record_direct(conn, spooled, ids_of, now, self.retry_for)
            else:
                queued = await route(
                    conn,
                    list(views.values()),
                    now,
                    external_url=self.external_url,
                    retry_for=self.retry_for,
                )
        done = perf_counter()
        self.stats.committed += len(changed)
        self.stats.queued_messages += queued
        for t, alert_id in changed:
            self.stats.latency.observe(done - t.submitted)
            if t.event in _LOGGED and views[alert_id].started_at is not None:
                log.info(
                    f"alert {t.event}",
                    alert_id=alert_id,
                    rule=t.rule.name,
                    device=t.device,
                    severity=t.rule.severity,
                    summary=views[alert_id].summary,
                )
        if queued and self.on_outbox is not None:
            self.on_outbox()
        if self.on_commit is not None:
            self.on_commit([t for t, _ in changed], list(views.values()))

    # -- group timers ----------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(_TIMER_INTERVAL)
            try:
                async with self.db.pool.acquire() as conn, conn.transaction():
                    queued = await flush_due(
                        conn,
                        datetime.now(UTC),
                        external_url=self.external_url,
                        retry_for=self.retry_for,
                    )
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("alert group flush failed; will retry")
                elif self.direct is not None:
                    self._down = True
                    self.direct.database_down()
                continue
            if self.direct is not None:
                if self.direct.pending:
                    self._wake.set()  # the commit loop reconciles the on-disk outbox
                else:
                    await self._database_up()
            if queued:
                self.stats.queued_messages += queued
                if self.on_outbox is not None:
                    self.on_outbox()


async def _record_direct(
    conn: asyncpg.Connection,
    entry: SpoolEntry,
    ids_of: dict[str, int],
    now: datetime,
    retry_for: object,
) -> int:
    """The messages rendered while the database was away, as outbox rows under the same
    message id: delivered ones as delivered (the deliverer leaves them), the others
    pending (it sends them). Returns the pending ones queued."""
    messages = entry.messages
    if not messages:
        return 0
    await conn.execute(
        """
        INSERT INTO webhook_outbox (webhook_id, message_id, group_key, alert_ids, payload,
                                    created_at, next_attempt_at, expires_at, state,
                                    attempts, delivered_at)
        SELECT w, m, k, string_to_array(ids, ',')::bigint[], p, $7::timestamptz,
               $7::timestamptz, $7::timestamptz + $8::interval,
               CASE WHEN d THEN 'delivered' ELSE 'pending' END,
               CASE WHEN d THEN 1 ELSE 0 END, CASE WHEN d THEN $7::timestamptz END
        FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[])
             AS i(w, m, k, p, ids, d)
        WHERE EXISTS (SELECT 1 FROM webhooks x WHERE x.id = i.w)
        ON CONFLICT (message_id) DO NOTHING
        """,
        [m["webhook_id"] for m in messages],
        [m["message_id"] for m in messages],
        [m["group_key"] for m in messages],
        [m["payload"] for m in messages],
        [str(ids_of[m["fingerprint"]]) if m["fingerprint"] in ids_of else "" for m in messages],
        [bool(m["delivered"]) for m in messages],
        now,
        retry_for,
    )
    return sum(1 for m in messages if not m["delivered"])


def _waves(batch: Sequence[Transition]) -> list[list[Transition]]:
    """Split a batch where a fingerprint comes again: within a wave each alert changes at
    most once, so the statements of a wave may run in any order; waves run in order."""
    waves: list[list[Transition]] = [[]]
    seen: set[str] = set()
    for t in batch:
        if t.fingerprint in seen:
            waves.append([])
            seen.clear()
        seen.add(t.fingerprint)
        waves[-1].append(t)
    return waves


def _by_statement(wave: Sequence[Transition]) -> dict[str, list[Transition]]:
    out: dict[str, list[Transition]] = {}
    for t in wave:
        kind = "flap" if t.event in ("flapping", "stable") else t.event
        out.setdefault(kind, []).append(t)
    return out


def _arrays(kind: str, items: Sequence[Transition]) -> list[list[object]]:
    if kind in ("pending", "firing"):
        return [
            [t.fingerprint for t in items],
            [t.rule.name for t in items],
            [t.device for t in items],
            [json.dumps(dict(t.labels)) for t in items],
            [t.rule.severity for t in items],
            [t.value for t in items],
            [t.summary for t in items],
            [t.description for t in items],
            [t.since for t in items],
            [t.time if kind == "firing" else None for t in items],
            [t.time for t in items],
            [t.rule.kind for t in items],
            [t.rule.metric for t in items],
        ]
    columns: list[list[object]] = [
        [t.fingerprint for t in items],
        [t.time for t in items],
        [t.value for t in items],
    ]
    if kind == "flap":
        columns += [[t.changes for t in items], [t.event == "flapping" for t in items]]
    return columns


async def load_open(conn: asyncpg.Connection) -> list[OpenAlert]:
    """Alerts the database holds open, for the engine after a restart."""
    rows = await conn.fetch(
        "SELECT rule, device, labels, state, pending_at, flapping FROM alerts"
        " WHERE state <> 'resolved'"
    )
    out = []
    for r in rows:
        labels = from_jsonb(r["labels"])
        out.append(
            OpenAlert(
                rule=r["rule"],
                device=r["device"],
                labels=tuple(sorted(labels.items())),
                state=r["state"],
                pending_at=r["pending_at"],
                flapping=r["flapping"],
            )
        )
    return out
