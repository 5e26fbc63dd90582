"""Devices as the inventory describes them, and the facts they report about themselves."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from netmon.records import DeviceFacts
from netmon.store.database import Database

__all__ = ["DeviceInfo", "sync_devices", "update_facts"]


@dataclass(frozen=True)
class DeviceInfo:
    """What the devices table holds about a host, from the inventory."""

    name: str
    address: str | None
    site: str | None
    role: str | None
    platform: str | None
    tags: tuple[str, ...]


_SYNC = """
INSERT INTO devices (name, address, site, role, platform, tags)
SELECT i.name, i.address, i.site, i.role, i.platform,
       ARRAY(SELECT jsonb_array_elements_text(i.tags))
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
     AS i(name, address, site, role, platform, tags)
ORDER BY i.name
ON CONFLICT (name) DO UPDATE SET
    address = excluded.address, site = excluded.site, role = excluded.role,
    platform = excluded.platform, tags = excluded.tags, updated_at = now()
WHERE (devices.address, devices.site, devices.role, devices.platform, devices.tags)
   IS DISTINCT FROM (excluded.address, excluded.site, excluded.role, excluded.platform,
                     excluded.tags)
"""

_FACTS = """
UPDATE devices d SET facts = d.facts || f.facts, updated_at = now()
FROM unnest($1::text[], $2::jsonb[]) AS f(name, facts)
WHERE d.name = f.name AND NOT d.facts @> f.facts
"""


async def sync_devices(db: Database, devices: Sequence[DeviceInfo]) -> None:
    """Create or update a row per inventory host (rows of removed hosts stay, with their
    history, until deleted through the API)."""
    await db.pool.execute(
        _SYNC,
        [d.name for d in devices],
        [d.address for d in devices],
        [d.site for d in devices],
        [d.role for d in devices],
        [d.platform for d in devices],
        [json.dumps(list(d.tags)) for d in devices],
    )


async def update_facts(db: Database, facts: Sequence[DeviceFacts]) -> None:
    """Merge each device's latest facts (top-level keys replace the stored ones)."""
    merged: dict[str, dict[str, object]] = {}
    for f in facts:
        merged.setdefault(f.device, {}).update(f.facts)
    if merged:
        await db.pool.execute(
            _FACTS, list(merged), [json.dumps(v, sort_keys=True) for v in merged.values()]
        )
