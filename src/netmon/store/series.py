"""Series identities: SeriesKey -> series id, resolved in bulk and cached.

Unknown devices and series are created on first sight (upserts, safe from several
writers at once); later samples of the same series cost one dict lookup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import asyncpg

from netmon.records import SeriesKey

__all__ = ["SeriesCache"]

_UPSERT_DEVICES = """
INSERT INTO devices (name)
SELECT DISTINCT name FROM unnest($1::text[]) AS t(name) ORDER BY name
ON CONFLICT (name) DO NOTHING
"""

_UPSERT_SERIES = """
INSERT INTO series (device_id, metric, labels, kind, unit)
SELECT d.id, i.metric, i.labels, i.kind, i.unit
FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::text[])
     AS i(device, metric, labels, kind, unit)
JOIN devices d ON d.name = i.device
ORDER BY d.id, i.metric, i.labels
ON CONFLICT ON CONSTRAINT series_identity DO NOTHING
"""

_SELECT_SERIES = """
SELECT i.ord, s.id
FROM unnest($1::text[], $2::text[], $3::jsonb[]) WITH ORDINALITY AS i(device, metric, labels, ord)
JOIN devices d ON d.name = i.device
JOIN series s ON s.device_id = d.id AND s.metric = i.metric AND s.labels = i.labels
"""


class SeriesCache:
    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> dict[SeriesKey, int]:
        """The mapping itself, for the writer's hot loop (read-only by convention)."""
        return self._ids

    def get(self, key: SeriesKey) -> int | None:
        return self._ids.get(key)

    def clear(self) -> None:
        self._ids.clear()

    async def resolve(self, conn: asyncpg.Connection, keys: Iterable[SeriesKey]) -> None:
        """Make sure every key is in the cache (creating devices and series as needed)."""
        missing = sorted(
            {k for k in keys if k not in self._ids},
            key=lambda k: (k.device, k.metric, k.labels),
        )
        if not missing:
            return
        devices = [k.device for k in missing]
        metrics = [k.metric for k in missing]
        labels = [json.dumps(dict(k.labels), sort_keys=True) for k in missing]
        kinds = [k.kind for k in missing]
        units = [k.unit for k in missing]
        async with conn.transaction():
            await conn.execute(_UPSERT_DEVICES, devices)
            await conn.execute(_UPSERT_SERIES, devices, metrics, labels, kinds, units)
        for row in await conn.fetch(_SELECT_SERIES, devices, metrics, labels):
            self._ids[missing[row["ord"] - 1]] = row["id"]
