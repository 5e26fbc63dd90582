"""The metadata of the live feeds: what a sample's series id and an event's device stand
for (device, site, metric, labels), cached per process and loaded in bulk on a miss. The
hub (``feeds.py``) drops it on ``netmon_control`` and reads it again every ``META_TTL``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import msgspec

from netmon.logs import get_logger
from netmon.store.database import Database

__all__ = ["META_TTL", "SeriesMeta", "SeriesMetaCache"]

log = get_logger(__name__)

# Metadata is read again this often, besides dropped on netmon_control: a device renamed or
# moved to another site is then seen within this time even if no process told us.
META_TTL = 60.0

_encode = msgspec.json.encode

_SERIES_META = """
SELECT s.id, d.name, d.site, s.metric, s.labels::text AS labels
FROM series s JOIN devices d ON d.id = s.device_id
WHERE s.id = ANY($1::bigint[])
"""
_DEVICE_SITES = "SELECT name, site FROM devices WHERE name = ANY($1::text[])"


@dataclass(frozen=True, slots=True)
class SeriesMeta:
    device: str
    site: str | None
    metric: str
    labels: dict[str, str]
    # The start of this series' sample object, encoded once: '{"device":..,"labels":{..},'
    prefix: bytes


class SeriesMetaCache:
    """Series by id and devices' sites by name, as last read. Queries fail as the driver
    raises; the hub decides what a failure costs its clients."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.series: dict[int, SeriesMeta | None] = {}
        self.sites: dict[str, str | None] = {}
        self.loaded = time.monotonic()
        self.generation = 0  # bumped whenever metadata is dropped or changes

    def forget(self) -> None:
        """Drop series and device metadata (a device was deleted, renamed or moved)."""
        self.series.clear()
        self.sites.clear()
        self.loaded = time.monotonic()
        self.generation += 1

    def stale(self) -> bool:
        return time.monotonic() - self.loaded > META_TTL

    async def load_series(self, ids: set[int]) -> None:
        found = await self._query_series(ids)
        for sid in ids:
            # None: deleted meanwhile (not asked again until metadata is dropped).
            self.series[sid] = found.get(sid)

    async def load_sites(self, names: set[str]) -> None:
        found = await self._query_sites(names)
        for name in names:
            self.sites[name] = found.get(name)

    async def refresh(self) -> None:
        """Read all cached metadata again; clients re-evaluate their filters only if any
        of it changed (a device renamed or moved to another site unannounced)."""
        self.loaded = time.monotonic()
        try:
            series = await self._query_series(set(self.series))
            sites = await self._query_sites(set(self.sites))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("feed metadata refresh failed", error=f"{type(exc).__name__}: {exc}")
            return
        meta = {sid: series.get(sid) for sid in self.series}
        device_sites = {name: sites.get(name) for name in self.sites}
        if meta != self.series or device_sites != self.sites:
            self.series, self.sites = meta, device_sites
            self.generation += 1

    async def _query_series(self, ids: set[int]) -> dict[int, SeriesMeta]:
        if not ids:
            return {}
        async with self.db.pool.acquire() as conn:
            rows = await conn.fetch(_SERIES_META, list(ids))
        found: dict[int, SeriesMeta] = {}
        for row in rows:
            labels = json.loads(row["labels"])
            head = _encode({"device": row["name"], "metric": row["metric"], "labels": labels})
            found[row["id"]] = SeriesMeta(
                device=row["name"],
                site=row["site"],
                metric=row["metric"],
                labels=labels,
                prefix=head[:-1] + b",",
            )
        return found

    async def _query_sites(self, names: set[str]) -> dict[str, str | None]:
        if not names:
            return {}
        async with self.db.pool.acquire() as conn:
            rows = await conn.fetch(_DEVICE_SITES, list(names))
        return {row["name"]: row["site"] for row in rows}
