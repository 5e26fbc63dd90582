"""Device events as the API lists them: newest first, a page at a time."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

__all__ = ["EventRow", "list_events"]


class EventRow(msgspec.Struct, frozen=True):
    id: int
    uid: str
    device: str
    time: datetime
    kind: str
    severity: str
    message: str
    attributes: dict[str, Any]


_LIST = """
SELECT e.id, e.uid::text AS uid, d.name AS device, e.time, e.kind, e.severity, e.message,
       e.attributes::text AS attributes
FROM device_events e JOIN devices d ON d.id = e.device_id
WHERE ($1::timestamptz IS NULL OR (e.time, e.id) < ($1, $2::bigint))
  AND ($3::text IS NULL OR d.name = $3)
  AND ($4::text IS NULL OR e.kind = $4)
  AND ($5::text IS NULL OR e.severity = $5)
  AND ($6::timestamptz IS NULL OR e.time >= $6)
  AND ($7::timestamptz IS NULL OR e.time < $7)
  AND ($8::text[] IS NULL OR d.site = ANY($8))
ORDER BY e.time DESC, e.id DESC
LIMIT $9
"""


async def list_events(
    conn: asyncpg.Connection,
    *,
    limit: int,
    before: tuple[datetime, int] | None = None,
    device: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sites: Collection[str] | None = None,
) -> list[EventRow]:
    """Newest first; ``before`` = (time, id) of the last row of the previous page."""
    rows = await conn.fetch(
        _LIST,
        before[0] if before else None,
        before[1] if before else 0,
        device,
        kind,
        severity,
        since,
        until,
        list(sites) if sites is not None else None,
        limit,
    )
    return [
        EventRow(
            id=r["id"],
            uid=r["uid"],
            device=r["device"],
            time=r["time"],
            kind=r["kind"],
            severity=r["severity"],
            message=r["message"],
            attributes=json.loads(r["attributes"]),
        )
        for r in rows
    ]
