"""Devices as the inventory describes them, and the facts they report about themselves."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from netmon.inventory.model import Fetched, InventoryHost
from netmon.records import DeviceFacts
from netmon.store.database import Database
from netmon.store.inventory import SourceKey, apply_sync

__all__ = [
    "INVENTORY_OWNER",
    "DeviceInfo",
    "create_device",
    "delete_device",
    "device_detail",
    "device_site",
    "interface_values",
    "list_devices",
    "sync_devices",
    "update_device",
    "update_facts",
]


@dataclass(frozen=True)
class DeviceInfo:
    """What the devices table holds about a host, from the inventory."""

    name: str
    address: str | None
    site: str | None
    role: str | None
    platform: str | None
    tags: tuple[str, ...]


INVENTORY_OWNER = "yaml"

_FACTS = """
UPDATE devices d SET facts = d.facts || f.facts, updated_at = now()
FROM unnest($1::text[], $2::jsonb[]) AS f(name, facts)
WHERE d.name = f.name AND NOT d.facts @> f.facts
"""


async def sync_devices(
    db: Database,
    devices: Sequence[DeviceInfo],
    owner: str = INVENTORY_OWNER,
    poller: str = "default",
) -> None:
    """Make the devices ``owner`` holds for ``poller`` these hosts (identity: the name).
    Hosts gone from the list are retired, with their history (``netmon.store.inventory``)."""
    hosts = [
        InventoryHost(
            name=d.name,
            external_id=d.name,
            address=d.address,
            site=d.site,
            role=d.role,
            platform=d.platform,
            tags=tuple(d.tags),
        )
        for d in devices
    ]
    async with db.pool.acquire() as conn, conn.transaction():
        await apply_sync(conn, SourceKey(owner, poller), Fetched(hosts))


async def update_facts(db: Database, facts: Sequence[DeviceFacts]) -> None:
    """Merge each device's latest facts (top-level keys replace the stored ones)."""
    merged: dict[str, dict[str, object]] = {}
    for f in facts:
        merged.setdefault(f.device, {}).update(f.facts)
    if merged:
        await db.pool.execute(
            _FACTS, list(merged), [json.dumps(v, sort_keys=True) for v in merged.values()]
        )


# -- the API's reads and writes ---------------------------------------------------------

DEVICE_COLUMNS = """
d.id, d.name, d.address, d.site, d.role, d.platform, d.tags, d.owner, d.facts::text AS facts,
d.created_at, d.updated_at, h.reachable, h.last_poll, d.poller, d.external_id, d.lifecycle,
d.retired_at, d.retired_reason, d.labels::text AS labels
"""

_POLLED = "d.lifecycle IN ('active', 'muted')"
_STATUS = {
    "up": f"{_POLLED} AND h.reachable IS TRUE",
    "down": f"{_POLLED} AND h.reachable IS FALSE",
    "unknown": f"{_POLLED} AND h.reachable IS NULL",
    "unpolled": "d.lifecycle = 'unpolled'",
    "retired": "d.lifecycle = 'retired'",
}


async def list_devices(
    conn: asyncpg.Connection,
    *,
    limit: int,
    after: str | None = None,
    site: str | None = None,
    role: str | None = None,
    platform: str | None = None,
    tags: Sequence[str] = (),
    status: str | None = None,
    name: str | None = None,
    sites: Collection[str] | None = None,
) -> list[asyncpg.Record]:
    """Devices by name, ``limit`` after the name ``after`` (keyset paging). ``name`` may
    hold ``*`` wildcards; ``sites`` is the caller's scope (None: all)."""
    where = ["($1::text IS NULL OR d.name > $1)"]
    args: list[object] = [after]

    def add(sql: str, value: object) -> None:
        args.append(value)
        where.append(sql.replace("?", f"${len(args)}"))

    if site is not None:
        add("d.site = ?", site)
    if role is not None:
        add("d.role = ?", role)
    if platform is not None:
        add("d.platform = ?", platform)
    if tags:
        add("d.tags @> ?::text[]", list(tags))
    if name is not None:
        if "*" in name:
            pattern = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            add("d.name LIKE ?", pattern.replace("*", "%"))
        else:
            add("d.name = ?", name)
    if sites is not None:
        add("d.site = ANY(?::text[])", list(sites))
    if status is not None:
        where.append(_STATUS[status])
    args.append(limit)
    sql = f"""
        SELECT {DEVICE_COLUMNS}
        FROM devices d LEFT JOIN poll_health h ON h.device_id = d.id
        WHERE {" AND ".join(where)}
        ORDER BY d.name LIMIT ${len(args)}
    """
    return list(await conn.fetch(sql, *args))


_DETAIL = f"""
SELECT {DEVICE_COLUMNS}, h.last_success, h.last_error_class, h.last_error, h.last_error_at,
       h.duration_ms, h.consecutive_failures, h.overruns
FROM devices d LEFT JOIN poll_health h ON h.device_id = d.id
WHERE d.id = $1
"""

# The interface table of a device: the newest value of each interface metric, read from
# the index (one probe per series) within a bounded lookback. One row per interface: its
# newest time, and its metrics with their values (numeric -> float8 goes through the
# numeric's text, as float() of it would), in matching order. One row per interface, not
# per series, is a ninth of the rows to decode (bench/api.py, "device").
_INTERFACES = """
SELECT s.labels->>'interface' AS interface, max(l.time) AS time,
       array_agg(s.metric) AS metrics, array_agg(l.value::float8) AS "values"
FROM series s
CROSS JOIN LATERAL (
    SELECT time, value FROM samples
    WHERE series_id = s.id AND time >= $3 AND time <= $4
    ORDER BY time DESC LIMIT 1
) l
WHERE s.device_id = $1 AND s.labels ? 'interface' AND s.metric = ANY($2::text[])
GROUP BY 1
"""


async def device_detail(
    conn: asyncpg.Connection, device_id: int, *, lock: bool = False
) -> asyncpg.Record | None:
    """The device with its poll health; ``lock`` holds its row until the transaction
    ends, so that a concurrent change or deletion waits and then finds it changed or
    gone (read-modify-write without a lost update, or an update of a deleted row)."""
    sql = _DETAIL + " FOR UPDATE OF d" if lock else _DETAIL
    row: asyncpg.Record | None = await conn.fetchrow(sql, device_id)
    return row


async def device_site(conn: asyncpg.Connection, name: str) -> tuple[bool, str | None]:
    """Whether a device of that name exists, and its site."""
    row = await conn.fetchrow("SELECT site FROM devices WHERE name = $1", name)
    return (row is not None, row["site"] if row is not None else None)


async def interface_values(
    conn: asyncpg.Connection,
    device_id: int,
    metrics: Sequence[str],
    since: datetime,
    until: datetime,
) -> list[asyncpg.Record]:
    """Per interface with a value in [since, until]: (interface, time, metrics, values)."""
    return list(await conn.fetch(_INTERFACES, device_id, list(metrics), since, until))


_WRITABLE = ("address", "site", "role", "platform", "tags")


async def create_device(conn: asyncpg.Connection, fields: dict[str, object]) -> int | None:
    """Insert a device no sync owns; None if the name is taken."""
    row = await conn.fetchrow(
        """
        INSERT INTO devices (name, address, site, role, platform, tags, owner)
        VALUES ($1, $2, $3, $4, $5, $6, NULL)
        ON CONFLICT (name) DO NOTHING RETURNING id
        """,
        fields["name"],
        fields.get("address"),
        fields.get("site"),
        fields.get("role"),
        fields.get("platform"),
        list(fields.get("tags") or []),  # type: ignore[call-overload]
    )
    return None if row is None else int(row["id"])


async def update_device(
    conn: asyncpg.Connection, device_id: int, fields: dict[str, object]
) -> None:
    sets = []
    args: list[object] = [device_id]
    for key in _WRITABLE:
        if key in fields:
            args.append(fields[key])
            sets.append(f"{key} = ${len(args)}")
    if sets:
        await conn.execute(
            f"UPDATE devices SET {', '.join(sets)}, updated_at = now() WHERE id = $1", *args
        )


async def delete_device(conn: asyncpg.Connection, device_id: int) -> None:
    """Delete a device with all it measured: samples and rollups by series (they have no
    foreign key, being partitioned), then the row (series, events, health cascade). The
    caller holds the row's lock (``device_detail(lock=True)``), so that two deletions do
    not both do this."""
    ids = [
        r["id"] for r in await conn.fetch("SELECT id FROM series WHERE device_id = $1", device_id)
    ]
    if ids:
        for table in ("samples", "samples_5m", "samples_1h"):
            await conn.execute(f"DELETE FROM {table} WHERE series_id = ANY($1::bigint[])", ids)
    await conn.execute("DELETE FROM devices WHERE id = $1", device_id)
