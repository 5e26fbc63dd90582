"""Series identities: SeriesKey -> series id, resolved in bulk and cached.

Unknown devices and series are created on first sight (upserts, safe from several
writers at once); later samples of the same series cost one dict lookup.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence

import asyncpg
import msgspec

from netmon.records import SeriesKey

__all__ = ["SeriesCache", "SeriesInfo", "select_series"]

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


class SeriesInfo(msgspec.Struct, frozen=True):
    """A series and what it measures, as the API selects it."""

    id: int
    device_id: int
    device: str
    site: str | None
    metric: str
    labels: dict[str, str]
    unit: str
    kind: str


_SELECT = """
SELECT s.id, d.id AS device_id, d.name AS device, d.site, s.metric, s.labels::text AS labels,
       s.unit, s.kind
FROM series s JOIN devices d ON d.id = s.device_id
WHERE ($1::text[] IS NULL OR d.name = ANY($1))
  AND ($2::bigint IS NULL OR d.id = $2)
  AND ($3::text[] IS NULL OR s.metric = ANY($3))
  AND s.labels @> $4::jsonb
  AND ($5::text[] IS NULL OR d.site = ANY($5))
  AND s.id > $6
ORDER BY s.id
LIMIT $7
"""


async def select_series(
    conn: asyncpg.Connection,
    *,
    limit: int,
    devices: Sequence[str] | None = None,
    device_id: int | None = None,
    metrics: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    sites: Collection[str] | None = None,
    after_id: int = 0,
) -> list[SeriesInfo]:
    """Series matching every selector given (labels: equality on each key), by id."""
    rows = await conn.fetch(
        _SELECT,
        list(devices) if devices is not None else None,
        device_id,
        list(metrics) if metrics is not None else None,
        json.dumps(dict(labels or {})),
        list(sites) if sites is not None else None,
        after_id,
        limit,
    )
    cache = _LABELS
    if len(cache) > _LABELS_MAX:
        cache.clear()
    found: list[SeriesInfo] = []
    for id_, dev_id, device, site, metric, text, unit, kind in rows:
        decoded = cache.get(text)
        if decoded is None:
            decoded = cache[text] = _decode_labels(text)
        found.append(SeriesInfo(id_, dev_id, device, site, metric, decoded, unit, kind))
    return found


# Label sets as text -> decoded, shared by every series that has them: a device's 184 series
# hold a few dozen distinct sets, and decoding each row's was most of select_series' time
# (bench/api.py, "last"). The dicts are shared: read them, never change them.
_LABELS: dict[str, dict[str, str]] = {}
_LABELS_MAX = 50_000
_decode_labels = msgspec.json.Decoder().decode  # untyped: as json.loads
