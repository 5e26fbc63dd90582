"""Webhook subscriptions and their deliveries (the outbox) in the database, as the API
reads and writes them. Secrets are stored, never returned (``WebhookRow`` has none).

Plain functions on a connection: the caller holds the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from netmon.alerts.matchers import Matcher, MatcherError, matches_all, parse_matchers
from netmon.alerts.model import AlertView, from_jsonb, to_jsonb
from netmon.alerts.payloads import Format
from netmon.durations import format_duration
from netmon.logs import get_logger

__all__ = [
    "DeliveryRow",
    "DeliveryState",
    "Webhook",
    "WebhookRow",
    "delete_webhook",
    "delivery_sites",
    "get_delivery",
    "get_webhook",
    "insert_webhook",
    "list_deliveries",
    "list_webhooks",
    "load_webhooks",
    "redeliver",
    "update_webhook",
]

DeliveryState = Literal["pending", "delivered", "dead"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook as notifying sees it: where its alerts go and how they are grouped."""

    id: int
    name: str
    format: Format
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    send_resolved: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Webhook:
        return cls(
            id=row["id"],
            name=row["name"],
            format=row["format"],
            matchers=tuple(parse_matchers(from_jsonb(row["matchers"]))),
            group_by=tuple(row["group_by"]),
            group_wait=row["group_wait"],
            group_interval=row["group_interval"],
            repeat_interval=row["repeat_interval"],
            send_resolved=row["send_resolved"],
        )

    def wants(self, alert: AlertView) -> bool:
        if alert.state == "resolved" and not self.send_resolved:
            return False
        return matches_all(self.matchers, alert.match_labels(), alert.tags)

    def group_of(self, alert: AlertView) -> dict[str, str]:
        labels = alert.match_labels()
        return {name: labels.get(name, "") for name in self.group_by}


async def load_webhooks(conn: asyncpg.Connection) -> list[Webhook]:
    rows = await conn.fetch("SELECT * FROM webhooks WHERE enabled ORDER BY id")
    webhooks = []
    for r in rows:
        try:
            webhooks.append(Webhook.from_row(r))
        except MatcherError as exc:
            # Checked when written, but an older netmon took what RE2 refuses (lookahead):
            # skip the one rather than fail every delivery.
            log.error("stored webhook skipped", webhook=r["id"], name=r["name"], error=str(exc))
    return webhooks


# -- webhooks ----------------------------------------------------------------------------


class WebhookRow(msgspec.Struct, frozen=True):
    """A webhook as the API shows it: never its secret. Durations as written ("30s")."""

    id: int
    name: str
    url: str
    format: str
    matchers: list[str]
    group_by: list[str]
    group_wait: str
    group_interval: str
    repeat_interval: str
    send_resolved: bool
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime


_WEBHOOK_COLUMNS = """
id, name, url, format, matchers::text AS matchers, group_by, group_wait, group_interval,
repeat_interval, send_resolved, enabled, disabled_reason, created_at, created_by, updated_at
"""
# What update_webhook may set; durations as timedelta, matchers as a list of strings.
WEBHOOK_FIELDS = (
    "name",
    "url",
    "secret",
    "format",
    "matchers",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "send_resolved",
    "enabled",
    "disabled_reason",
)


def _duration(value: timedelta) -> str:
    return format_duration(value) if value else "0s"


def _webhook(r: asyncpg.Record) -> WebhookRow:
    return WebhookRow(
        id=r["id"],
        name=r["name"],
        url=r["url"],
        format=r["format"],
        matchers=[str(m) for m in from_jsonb(r["matchers"])],
        group_by=list(r["group_by"]),
        group_wait=_duration(r["group_wait"]),
        group_interval=_duration(r["group_interval"]),
        repeat_interval=_duration(r["repeat_interval"]),
        send_resolved=r["send_resolved"],
        enabled=r["enabled"],
        disabled_reason=r["disabled_reason"],
        created_at=r["created_at"],
        created_by=r["created_by"],
        updated_at=r["updated_at"],
    )


async def list_webhooks(conn: asyncpg.Connection) -> list[WebhookRow]:
    rows = await conn.fetch(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks ORDER BY id")
    return [_webhook(r) for r in rows]


async def get_webhook(
    conn: asyncpg.Connection, webhook_id: int, *, lock: bool = False
) -> WebhookRow | None:
    sql = f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, webhook_id)
    return _webhook(row) if row is not None else None


async def insert_webhook(
    conn: asyncpg.Connection,
    *,
    name: str,
    url: str,
    secret: str,
    format: str,
    matchers: Sequence[str],
    group_by: Sequence[str],
    group_wait: timedelta,
    group_interval: timedelta,
    repeat_interval: timedelta,
    send_resolved: bool,
    enabled: bool,
    created_by: str,
) -> WebhookRow | None:
    """A new webhook; None if the name is taken."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO webhooks (name, url, secret, format, matchers, group_by, group_wait,
                              group_interval, repeat_interval, send_resolved, enabled,
                              created_by)
        VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12)
        ON CONFLICT (name) DO NOTHING
        RETURNING {_WEBHOOK_COLUMNS}
        """,
        name,
        url,
        secret,
        format,
        to_jsonb(list(matchers)),
        list(group_by),
        group_wait,
        group_interval,
        repeat_interval,
        send_resolved,
        enabled,
        created_by,
    )
    return _webhook(row) if row is not None else None


async def update_webhook(
    conn: asyncpg.Connection, webhook_id: int, changes: dict[str, Any]
) -> WebhookRow | None:
    """Set the ``changes`` (names of :data:`WEBHOOK_FIELDS`); None if the new name is
    another webhook's (tried in a savepoint, so the caller's transaction stays usable)."""
    unknown = set(changes) - set(WEBHOOK_FIELDS)
    if unknown:
        raise ValueError(f"not webhook fields: {sorted(unknown)}")
    sets: list[str] = ["updated_at = now()"]
    args: list[object] = [webhook_id]
    for name, value in changes.items():
        args.append(to_jsonb(list(value)) if name == "matchers" else value)
        cast = "::jsonb" if name == "matchers" else ""
        sets.append(f"{name} = ${len(args)}{cast}")
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE webhooks SET {', '.join(sets)} WHERE id = $1 RETURNING {_WEBHOOK_COLUMNS}",
                *args,
            )
    except asyncpg.UniqueViolationError:
        return None
    assert row is not None, "update_webhook: the caller holds the row"
    return _webhook(row)


async def delete_webhook(conn: asyncpg.Connection, webhook_id: int) -> bool:
    """Delete a webhook, its groups and its outbox."""
    return bool(await conn.execute("DELETE FROM webhooks WHERE id = $1", webhook_id) == "DELETE 1")


# -- deliveries --------------------------------------------------------------------------


class DeliveryRow(msgspec.Struct, frozen=True):
    """One outbox message; ``payload`` (the exact body) only when asked for."""

    id: int
    webhook_id: int
    message_id: str
    group_key: str
    alert_ids: list[int]
    created_at: datetime
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    expires_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    dead_at: datetime | None
    payload: str | None = None


_DELIVERY_COLUMNS = """
id, webhook_id, message_id, group_key, alert_ids, created_at, state, attempts,
next_attempt_at, expires_at, last_attempt_at, last_status, last_error, delivered_at, dead_at
"""


def _delivery(r: asyncpg.Record) -> DeliveryRow:
    return DeliveryRow(
        id=r["id"],
        webhook_id=r["webhook_id"],
        message_id=r["message_id"],
        group_key=r["group_key"],
        alert_ids=list(r["alert_ids"]),
        created_at=r["created_at"],
        state=r["state"],
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        expires_at=r["expires_at"],
        last_attempt_at=r["last_attempt_at"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        delivered_at=r["delivered_at"],
        dead_at=r["dead_at"],
        payload=r["payload"],
    )


async def list_deliveries(
    conn: asyncpg.Connection,
    webhook_id: int,
    *,
    limit: int,
    before_id: int | None = None,
    state: DeliveryState | None = None,
    payload: bool = False,
) -> list[DeliveryRow]:
    """A webhook's messages, newest first; ``before_id`` pages."""
    rows = await conn.fetch(
        f"""
        SELECT {_DELIVERY_COLUMNS}, CASE WHEN $4 THEN payload END AS payload
        FROM webhook_outbox
        WHERE webhook_id = $1 AND ($2::bigint IS NULL OR id < $2)
          AND ($3::text IS NULL OR state = $3)
        ORDER BY id DESC LIMIT $5
        """,
        webhook_id,
        before_id,
        state,
        payload,
        limit,
    )
    return [_delivery(r) for r in rows]


async def get_delivery(
    conn: asyncpg.Connection, outbox_id: int, *, lock: bool = False
) -> DeliveryRow | None:
    sql = f"SELECT {_DELIVERY_COLUMNS}, NULL::text AS payload FROM webhook_outbox WHERE id = $1" + (
        " FOR UPDATE" if lock else ""
    )
    row = await conn.fetchrow(sql, outbox_id)
    return _delivery(row) if row is not None else None


async def delivery_sites(conn: asyncpg.Connection, alert_ids: Sequence[int]) -> list[str | None]:
    """The sites of the devices of ``alert_ids`` (None for an alert gone or a device
    without a site), one per alert."""
    rows = await conn.fetch(
        """
        SELECT d.site FROM unnest($1::bigint[]) AS i(id)
        LEFT JOIN alerts a ON a.id = i.id LEFT JOIN devices d ON d.name = a.device
        """,
        list(alert_ids),
    )
    return [r["site"] for r in rows]


async def redeliver(
    conn: asyncpg.Connection, outbox_id: int, retry_for: timedelta
) -> DeliveryRow | None:
    """Send a dead (or delivered) message again, as it was: the same ``message_id`` and
    payload, attempts from 0, retried for ``retry_for`` from now. None if it is pending."""
    row = await conn.fetchrow(
        f"""
        UPDATE webhook_outbox
        SET state = 'pending', attempts = 0, next_attempt_at = now(),
            expires_at = now() + $2::interval, dead_at = NULL, delivered_at = NULL
        WHERE id = $1 AND state <> 'pending'
        RETURNING {_DELIVERY_COLUMNS}, NULL::text AS payload
        """,
        outbox_id,
        retry_for,
    )
    return _delivery(row) if row is not None else None
