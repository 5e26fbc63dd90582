"""The audit log: who changed what through the API, when, and the row before and after.

Entries are written on the connection (and so in the transaction) of the change they
describe: a change without its entry, or an entry without its change, cannot be committed.
Each names the sites of what it changed (None: something global, or a device without a
site), so that a token limited to sites reads only the entries within them.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

__all__ = ["Actor", "AuditRow", "audit_sites", "list_audit", "record_audit"]


class Actor(msgspec.Struct, frozen=True):
    """Who acts, and from where: a token (``token_id``), or a local command (None)."""

    name: str
    token_id: int | None = None
    role: str | None = None
    request_id: str | None = None
    client: str | None = None


class AuditRow(msgspec.Struct, frozen=True):
    id: int
    time: datetime
    actor: str
    token_id: int | None
    role: str | None
    action: str
    resource: str
    resource_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    client: str | None
    sites: list[str] | None = None


def audit_sites(*sites: Iterable[str | None] | str | None) -> list[str] | None:
    """The ``sites`` of an entry for a change touching these sites (single ones, or
    groups of them): their union, or None (global) when one of them is None (a device
    without a site, something global) or an empty group."""
    out: set[str] = set()
    for item in sites:
        group = [item] if item is None or isinstance(item, str) else list(item)
        if not group or None in group:
            return None
        out.update(s for s in group if s is not None)
    return sorted(out) if out else None


def _json(value: object) -> str | None:
    if value is None:
        return None
    return msgspec.json.encode(value).decode()


async def record_audit(
    conn: asyncpg.Connection,
    actor: Actor,
    action: str,
    resource: str,
    resource_id: str | None,
    before: object = None,
    after: object = None,
    *,
    sites: Collection[str] | None,
) -> None:
    """``sites``: those of what changed (:func:`audit_sites`), None if global."""
    await conn.execute(
        """
        INSERT INTO audit_log (actor, token_id, role, action, resource, resource_id,
                               before, after, request_id, client, sites)
        VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11)
        """,
        actor.name,
        actor.token_id,
        actor.role,
        action,
        resource,
        resource_id,
        _json(before),
        _json(after),
        actor.request_id,
        actor.client,
        sorted(sites) if sites else None,
    )


async def list_audit(
    conn: asyncpg.Connection,
    *,
    limit: int,
    before_id: int | None = None,
    resource: str | None = None,
    resource_id: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    within: Collection[str] | None = None,
) -> list[AuditRow]:
    """Newest first; ``before_id`` pages (keyset, stable under concurrent writes).
    ``within``: only entries all of whose sites are among these (none that are global)."""
    rows = await conn.fetch(
        """
        SELECT * FROM audit_log
        WHERE ($1::bigint IS NULL OR id < $1)
          AND ($2::text IS NULL OR resource = $2)
          AND ($3::text IS NULL OR resource_id = $3)
          AND ($4::text IS NULL OR actor = $4)
          AND ($5::timestamptz IS NULL OR time >= $5)
          AND ($6::timestamptz IS NULL OR time < $6)
          AND ($8::text[] IS NULL OR (sites IS NOT NULL AND sites <@ $8::text[]))
        ORDER BY id DESC LIMIT $7
        """,
        before_id,
        resource,
        resource_id,
        actor,
        since,
        until,
        limit,
        sorted(within) if within is not None else None,
    )
    return [
        AuditRow(
            id=r["id"],
            time=r["time"],
            actor=r["actor"],
            token_id=r["token_id"],
            role=r["role"],
            action=r["action"],
            resource=r["resource"],
            resource_id=r["resource_id"],
            before=json.loads(r["before"]) if r["before"] is not None else None,
            after=json.loads(r["after"]) if r["after"] is not None else None,
            request_id=r["request_id"],
            client=r["client"],
            sites=list(r["sites"]) if r["sites"] is not None else None,
        )
        for r in rows
    ]
