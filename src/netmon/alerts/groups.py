"""Notification groups: which webhook hears of an alert change, and when.

Alertmanager's timing, per webhook and group (``group_by`` label values): a new group
waits ``group_wait`` to collect its first alerts; later changes wait until
``group_interval`` after the last message; an unchanged group with firing alerts is sent
again after ``repeat_interval``. The timers are ``alert_groups`` rows, so they carry on
across restarts, and a flush writes ``webhook_outbox`` rows in the same transaction that
records it was sent: a message is queued once, whatever crashes when.

Silences apply here: a silenced alert is left out of the group's messages and the
silence is recorded on the alert (``silenced_by``, and an ``alert_history`` row once).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from netmon.alerts.model import ALERT_SELECT, AlertView, alert_view, from_jsonb
from netmon.alerts.payloads import GroupInfo, Message, render
from netmon.alerts.silences import Silence, load_silences
from netmon.alerts.webhooks import Webhook, load_webhooks

__all__ = ["flush_due", "group_key", "route"]

# Notifiable alert states: a pending alert has not fired yet.
_NOTIFIABLE = frozenset({"firing", "acknowledged", "resolved"})
# Groups whose alerts one query reads (the query grows with them).
_GROUPS_PER_QUERY = 100
# How many due groups one pass of the timer loop takes.
_DUE_BATCH = 200


def group_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


async def route(
    conn: asyncpg.Connection,
    alerts: Sequence[AlertView],
    now: datetime,
    *,
    external_url: str,
    retry_for: timedelta,
) -> int:
    """Note changed alerts in their webhooks' groups, record silences, and flush the groups
    that are due now. Runs in the alert change's transaction. Returns messages queued.

    A fixed number of round trips however many alerts changed: an alert storm is one
    transaction of a few statements, not a few statements per alert."""
    notifiable = [a for a in alerts if a.state in _NOTIFIABLE]
    if not notifiable:
        return 0
    webhooks = await load_webhooks(conn)
    silences = await load_silences(conn, now)
    touched: dict[tuple[int, str], tuple[Webhook, dict[str, str]]] = {}
    held: list[tuple[AlertView, list[int]]] = []
    for alert in notifiable:
        by = [s.id for s in silences if s.silences(alert)]
        if by:
            held.append((alert, by))
            continue
        for hook in webhooks:
            if hook.wants(alert):
                labels = hook.group_of(alert)
                touched.setdefault((hook.id, group_key(labels)), (hook, labels))
    await _record_silenced(conn, held, now)
    if not touched:
        return 0
    groups = list(touched.values())
    rows = await conn.fetch(
        _TOUCH,
        [h.id for h, _ in groups],
        [group_key(labels) for _, labels in groups],
        [json.dumps(labels) for _, labels in groups],
        now,
        [h.group_wait for h, _ in groups],
    )
    hooks = {h.id: h for h, _ in groups}
    due = [
        (hooks[r["webhook_id"]], r)
        for r in rows
        if r["next_at"] is not None and r["next_at"] <= now
    ]
    return await _flush(conn, due, silences, now, external_url, retry_for)


# A change: a new group waits group_wait; a group that has sent waits until group_interval
# after its last message (sooner if a repeat was due sooner); a group still in its first
# wait keeps its timer.
_TOUCH = """
INSERT INTO alert_groups AS g (webhook_id, group_key, labels, next_at)
SELECT i.w, i.k, i.l::jsonb, $4::timestamptz + i.gw
FROM unnest($1::bigint[], $2::text[], $3::text[], $5::interval[]) AS i(w, k, l, gw)
ON CONFLICT (webhook_id, group_key) DO UPDATE SET next_at = CASE
    WHEN g.last_sent_at IS NULL THEN coalesce(g.next_at, excluded.next_at)
    ELSE least(coalesce(g.next_at, 'infinity'), greatest($4::timestamptz, g.last_sent_at
               + (SELECT w.group_interval FROM webhooks w WHERE w.id = g.webhook_id)))
    END
RETURNING webhook_id, group_key, labels, next_at, last_sent_at, sent_digest
"""


async def _record_silenced(
    conn: asyncpg.Connection, held: Sequence[tuple[AlertView, list[int]]], now: datetime
) -> None:
    """Record silences on the alerts they hold back: once per alert and silence."""
    ids: list[int] = []
    news: list[str] = []
    for alert, by in held:
        new = [i for i in by if i not in alert.silenced_by]
        if new:
            ids.append(alert.id)
            news.append(",".join(map(str, new)))
    if not ids:
        return
    await conn.execute(
        """
        WITH i AS (
            SELECT a, string_to_array(n, ',')::bigint[] AS new
            FROM unnest($1::bigint[], $2::text[]) AS i(a, n)
        ), up AS (
            UPDATE alerts SET silenced_by = silenced_by || i.new FROM i WHERE alerts.id = i.a
        )
        INSERT INTO alert_history (alert_id, time, event, detail)
        SELECT i.a, $3, 'silenced', 'notifications held back by silence '
               || array_to_string(array(SELECT '#' || x FROM unnest(i.new) AS x), ', ')
        FROM i
        """,
        ids,
        news,
        now,
    )


async def flush_due(
    conn: asyncpg.Connection, now: datetime, *, external_url: str, retry_for: timedelta
) -> int:
    """Flush groups whose timer has passed (the timer loop; call in a transaction).
    Groups another process is flushing are skipped."""
    rows = await conn.fetch(
        """
        SELECT g.webhook_id, g.group_key, g.labels, g.next_at, g.last_sent_at, g.sent_digest
        FROM alert_groups g JOIN webhooks w ON w.id = g.webhook_id
        WHERE g.next_at <= $1 AND w.enabled
        ORDER BY g.next_at
        LIMIT $2
        FOR UPDATE OF g SKIP LOCKED
        """,
        now,
        _DUE_BATCH,
    )
    if not rows:
        return 0
    hooks = {h.id: h for h in await load_webhooks(conn)}
    silences = await load_silences(conn, now)
    due = [(hooks[r["webhook_id"]], r) for r in rows if r["webhook_id"] in hooks]
    return await _flush(conn, due, silences, now, external_url, retry_for)


async def _flush(
    conn: asyncpg.Connection,
    due: Sequence[tuple[Webhook, asyncpg.Record]],
    silences: Sequence[Silence],
    now: datetime,
    external_url: str,
    retry_for: timedelta,
) -> int:
    """Send what each due group holds, if it changed or a repeat is due."""
    if not due:
        return 0
    members: dict[int, list[AlertView]] = {}
    for start in range(0, len(due), _GROUPS_PER_QUERY):
        chunk = await _group_alerts(conn, due[start : start + _GROUPS_PER_QUERY])
        members.update({start + i: alerts for i, alerts in chunk.items()})
    out = _Writes()
    for index, (hook, group) in enumerate(due):
        alerts = [
            a
            for a in members.get(index, [])
            if hook.wants(a) and not any(s.silences(a) for s in silences)
        ]
        _decide(out, hook, group, alerts, now, external_url)
    await out.apply(conn, now, retry_for)
    return len(out.messages)


class _Writes:
    """What a flush writes, gathered so it goes out in a few statements."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, str, Message]] = []  # webhook, group key, message
        self.notified: list[tuple[int, str]] = []  # alert id, detail
        self.updates: list[tuple[int, str, datetime | None, str | None, datetime | None]] = []
        self.deletes: list[tuple[int, str]] = []

    async def apply(self, conn: asyncpg.Connection, now: datetime, retry_for: timedelta) -> None:
        if self.messages:
            await conn.execute(
                """
                INSERT INTO webhook_outbox (webhook_id, message_id, group_key, alert_ids,
                                            payload, created_at, next_attempt_at, expires_at)
                SELECT w, m, k, string_to_array(ids, ',')::bigint[], p, $6::timestamptz,
                       $6::timestamptz, $6::timestamptz + $7::interval
                FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
                     AS i(w, m, k, p, ids)
                """,
                [w for w, _, _ in self.messages],
                [f"msg_{uuid.uuid4().hex}" for _ in self.messages],
                [k for _, k, _ in self.messages],
                [m.payload for _, _, m in self.messages],
                [",".join(map(str, m.alert_ids)) for _, _, m in self.messages],
                now,
                retry_for,
            )
        if self.notified:
            await conn.execute(
                """
                INSERT INTO alert_history (alert_id, time, event, detail)
                SELECT a, $3, 'notified', d FROM unnest($1::bigint[], $2::text[]) AS i(a, d)
                """,
                [a for a, _ in self.notified],
                [d for _, d in self.notified],
                now,
            )
        if self.updates:
            await conn.execute(
                """
                UPDATE alert_groups g SET last_sent_at = i.ls, sent_digest = i.d, next_at = i.n
                FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[],
                            $5::timestamptz[]) AS i(w, k, ls, d, n)
                WHERE g.webhook_id = i.w AND g.group_key = i.k
                """,
                *(list(col) for col in zip(*self.updates, strict=True)),
            )
        if self.deletes:
            await conn.execute(
                """
                DELETE FROM alert_groups g USING unnest($1::bigint[], $2::text[]) AS i(w, k)
                WHERE g.webhook_id = i.w AND g.group_key = i.k
                """,
                [w for w, _ in self.deletes],
                [k for _, k in self.deletes],
            )


def _decide(
    out: _Writes,
    hook: Webhook,
    group: asyncpg.Record,
    alerts: list[AlertView],
    now: datetime,
    external_url: str,
) -> None:
    key = (hook.id, group["group_key"])
    last_sent: datetime | None = group["last_sent_at"]
    if not alerts:
        out.deletes.append(key)
        return
    digest = _digest(alerts)
    firing = any(a.state == "firing" for a in alerts)
    repeat_due = last_sent is not None and last_sent + hook.repeat_interval <= now
    if digest == group["sent_digest"] and not (firing and repeat_due):
        assert last_sent is not None
        next_at = last_sent + hook.repeat_interval if firing else None
        out.updates.append((*key, last_sent, digest, next_at))
        return
    info = GroupInfo(
        webhook_id=hook.id,
        webhook_name=hook.name,
        group_key=group["group_key"],
        group_labels=from_jsonb(group["labels"]),
    )
    for message in render(hook.format, info, alerts, external_url=external_url, now=now):
        out.messages.append((hook.id, group["group_key"], message))
    detail = f"webhook {hook.name!r} ({hook.format})"
    out.notified += [(a.id, detail) for a in alerts]
    if all(a.state == "resolved" for a in alerts):
        # Nothing open is left to repeat: the next alert starts a new group (group_wait).
        out.deletes.append(key)
    else:
        out.updates.append((*key, now, digest, now + hook.repeat_interval if firing else None))


async def _group_alerts(
    conn: asyncpg.Connection, due: Sequence[tuple[Webhook, asyncpg.Record]]
) -> dict[int, list[AlertView]]:
    """Each due group's open alerts, and those resolved since its last message (that
    fired), in one query: group index -> alerts."""
    parts: list[str] = []
    args: list[Any] = []
    for index, (_, group) in enumerate(due):
        args.append(group["last_sent_at"])
        where = [
            "(a.state IN ('firing', 'acknowledged') OR (a.state = 'resolved'"
            " AND a.started_at IS NOT NULL"
            f" AND a.resolved_at > coalesce(${len(args)}::timestamptz, '-infinity')))"
        ]
        for name, value in from_jsonb(group["labels"]).items():
            args.append(value)
            n = len(args)
            column = _GROUP_COLUMNS.get(name)
            if column is not None:
                where.append(f"coalesce({column}, '') = ${n}")
            else:
                args.append(name)
                where.append(f"coalesce(a.labels ->> ${n + 1}, '') = ${n}")
        parts.append(
            f"SELECT {index} AS g, q.* FROM ({ALERT_SELECT} WHERE {' AND '.join(where)}) q"
        )
    out: dict[int, list[AlertView]] = {}
    for r in await conn.fetch(" UNION ALL ".join(parts) + " ORDER BY g, id", *args):
        out.setdefault(r["g"], []).append(alert_view(r))
    return out


_GROUP_COLUMNS = {
    "rule": "a.rule",
    "device": "a.device",
    "severity": "a.severity",
    "site": "d.site",
    "role": "d.role",
}


def _digest(alerts: Iterable[AlertView]) -> str:
    h = hashlib.sha256()
    for a in sorted(alerts, key=lambda a: a.fingerprint):
        h.update(f"{a.fingerprint}:{a.state}:{a.flapping}\n".encode())
    return h.hexdigest()
