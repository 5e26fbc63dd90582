"""The database reads and writes the API makes for alerts and their history,
acknowledgement, and rules (silences: ``silences.py``; webhooks and deliveries:
``webhooks.py``).

Plain functions on a connection, so that the caller holds the transaction: an API change,
its audit entry and its notifications commit together or not at all. Nothing here checks
who asks (the API's guards and site scope do) nor validates input (``rules.parse_rule``
and the API's schemas do).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from netmon.alerts.model import (
    ALERT_SELECT,
    AlertChange,
    AlertView,
    alert_view,
    encode_alert_change,
    from_jsonb,
    to_jsonb,
)
from netmon.alerts.rules import RuleSpec
from netmon.store.notify import ALERTS_CHANNEL, publish

__all__ = [
    "HISTORY_MAX",
    "OPEN_STATES",
    "HistoryEntry",
    "RuleRow",
    "acknowledge_alert",
    "alert_history",
    "delete_rule",
    "get_alert",
    "get_rule",
    "insert_rule",
    "list_alerts",
    "list_rules",
    "unacknowledge_alert",
    "update_rule",
]

OPEN_STATES = ("pending", "firing", "acknowledged")
# The newest history entries an alert's detail shows (a flapping alert gathers many).
HISTORY_MAX = 1000


# -- alerts ------------------------------------------------------------------------------


class HistoryEntry(msgspec.Struct, frozen=True):
    """One transition of an alert (``alert_history``)."""

    id: int
    time: datetime
    event: str
    actor: str
    value: float | None
    detail: str


_LIST_ALERTS = (
    ALERT_SELECT
    + """
WHERE ($1::timestamptz IS NULL OR (a.updated_at, a.id) < ($1, $2::bigint))
  AND ($3::text[] IS NULL OR a.state = ANY($3))
  AND ($4::text[] IS NULL OR a.severity = ANY($4))
  AND ($5::text IS NULL OR a.rule = $5)
  AND ($6::text IS NULL OR a.device = $6)
  AND ($7::text IS NULL OR d.site = $7)
  AND ($8::boolean IS NULL OR a.flapping = $8)
  AND ($9::text[] IS NULL OR d.site = ANY($9))
ORDER BY a.updated_at DESC, a.id DESC
LIMIT $10
"""
)


async def list_alerts(
    conn: asyncpg.Connection,
    *,
    limit: int,
    before: tuple[datetime, int] | None = None,
    states: Sequence[str] | None = OPEN_STATES,
    severities: Sequence[str] = (),
    rule: str | None = None,
    device: str | None = None,
    site: str | None = None,
    flapping: bool | None = None,
    sites: Collection[str] | None = None,
) -> list[AlertView]:
    """Alerts, the most recently changed first; ``before`` = (updated_at, id) of the last
    one of the previous page. ``states`` None: every state. ``sites`` is the caller's
    scope (None: all; an alert of a device without a site is outside every scope)."""
    rows = await conn.fetch(
        _LIST_ALERTS,
        before[0] if before else None,
        before[1] if before else 0,
        list(states) if states is not None else None,
        list(severities) or None,
        rule,
        device,
        site,
        flapping,
        list(sites) if sites is not None else None,
        limit,
    )
    return [alert_view(r) for r in rows]


async def get_alert(
    conn: asyncpg.Connection, alert_id: int, *, lock: bool = False
) -> AlertView | None:
    """One alert; ``lock`` holds its row until the transaction ends (FOR UPDATE)."""
    sql = ALERT_SELECT + " WHERE a.id = $1" + (" FOR UPDATE OF a" if lock else "")
    row = await conn.fetchrow(sql, alert_id)
    return alert_view(row) if row is not None else None


async def alert_history(
    conn: asyncpg.Connection, alert_id: int, limit: int = HISTORY_MAX
) -> list[HistoryEntry]:
    """The newest ``limit`` entries of an alert's history, oldest first."""
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT id, time, event, actor, value, detail FROM alert_history
            WHERE alert_id = $1 ORDER BY id DESC LIMIT $2
        ) h ORDER BY id
        """,
        alert_id,
        limit,
    )
    return [
        HistoryEntry(r["id"], r["time"], r["event"], r["actor"], r["value"], r["detail"])
        for r in rows
    ]


async def acknowledge_alert(
    conn: asyncpg.Connection, alert_id: int, actor: str, comment: str = ""
) -> AlertChange:
    """Firing -> acknowledged by ``actor``: the row, a history entry, and the change on
    ``netmon_alerts`` (sent at commit). The caller has checked the state under a lock."""
    await conn.execute(
        """
        UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(),
                          acknowledged_by = $2, updated_at = now()
        WHERE id = $1
        """,
        alert_id,
        actor,
    )
    return await _recorded(conn, alert_id, "acknowledged", actor, comment)


async def unacknowledge_alert(
    conn: asyncpg.Connection, alert_id: int, actor: str, comment: str = ""
) -> AlertChange:
    """Acknowledged -> firing again (history event ``firing``, by ``actor``)."""
    await conn.execute(
        """
        UPDATE alerts SET state = 'firing', acknowledged_at = NULL, acknowledged_by = NULL,
                          updated_at = now()
        WHERE id = $1
        """,
        alert_id,
    )
    detail = "unacknowledged" + (f": {comment}" if comment else "")
    return await _recorded(conn, alert_id, "firing", actor, detail)


async def _recorded(
    conn: asyncpg.Connection,
    alert_id: int,
    event: Literal["acknowledged", "firing"],
    actor: str,
    detail: str,
) -> AlertChange:
    await conn.execute(
        """
        INSERT INTO alert_history (alert_id, time, event, actor, value, detail)
        SELECT id, now(), $2, $3, value, $4 FROM alerts WHERE id = $1
        """,
        alert_id,
        event,
        actor,
        detail,
    )
    view = await get_alert(conn, alert_id)
    assert view is not None  # updated in this transaction
    change = AlertChange(event=event, time=view.updated_at, alert=view)
    await publish(conn, ALERTS_CHANNEL, [encode_alert_change(change)])
    return change


# -- rules -------------------------------------------------------------------------------


class RuleRow(msgspec.Struct, frozen=True):
    """A stored rule: ``definition`` is ``RuleSpec.definition()``; ``source`` 'file' rules
    come from the rules file and are read-only here."""

    name: str
    source: str
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_by: str


_RULE_COLUMNS = "name, source, definition::text AS definition, created_at, updated_at, created_by"


def _rule(r: asyncpg.Record) -> RuleRow:
    return RuleRow(
        name=r["name"],
        source=r["source"],
        definition=from_jsonb(r["definition"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        created_by=r["created_by"],
    )


async def list_rules(conn: asyncpg.Connection) -> list[RuleRow]:
    rows = await conn.fetch(f"SELECT {_RULE_COLUMNS} FROM alert_rules ORDER BY name")
    return [_rule(r) for r in rows]


async def get_rule(conn: asyncpg.Connection, name: str, *, lock: bool = False) -> RuleRow | None:
    sql = f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE name = $1" + (
        " FOR UPDATE" if lock else ""
    )
    row = await conn.fetchrow(sql, name)
    return _rule(row) if row is not None else None


async def insert_rule(conn: asyncpg.Connection, spec: RuleSpec, created_by: str) -> RuleRow | None:
    """A new API rule; None if a rule of that name exists (from the file or the API)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO alert_rules (name, source, definition, created_by)
        VALUES ($1, 'api', $2::jsonb, $3)
        ON CONFLICT (name) DO NOTHING
        RETURNING {_RULE_COLUMNS}
        """,
        spec.name,
        to_jsonb(spec.definition()),
        created_by,
    )
    return _rule(row) if row is not None else None


async def update_rule(conn: asyncpg.Connection, spec: RuleSpec) -> RuleRow | None:
    """Replace an API rule's definition; None if there is no API rule of that name."""
    row = await conn.fetchrow(
        f"""
        UPDATE alert_rules SET definition = $2::jsonb, updated_at = now()
        WHERE name = $1 AND source = 'api'
        RETURNING {_RULE_COLUMNS}
        """,
        spec.name,
        to_jsonb(spec.definition()),
    )
    return _rule(row) if row is not None else None


async def delete_rule(conn: asyncpg.Connection, name: str) -> bool:
    """Delete an API rule; False if there is no API rule of that name."""
    done = await conn.execute("DELETE FROM alert_rules WHERE name = $1 AND source = 'api'", name)
    return bool(done == "DELETE 1")
