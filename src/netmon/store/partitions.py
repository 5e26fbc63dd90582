"""Time partitions: named, created ahead or on demand, detached and dropped by retention.

Locking is the whole point of this module. Creation makes a plain table and ATTACHes it
(SHARE UPDATE EXCLUSIVE on the parent, which writers' ROW EXCLUSIVE does not conflict
with) rather than CREATE TABLE ... PARTITION OF (ACCESS EXCLUSIVE). Retention uses
DETACH ... CONCURRENTLY and then DROP, each under a short lock_timeout: when a long query
still reads an old partition, the step gives up and is retried on the next run instead of
queueing in front of writers. Rows are never DELETEd.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from netmon.config import StorageSettings
from netmon.logs import get_logger

__all__ = [
    "Partition",
    "PartitionedTable",
    "drop_expired",
    "ensure_partitions",
    "floor_time",
    "list_partitions",
    "partitioned_tables",
]

log = get_logger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class PartitionedTable:
    name: str
    column: str
    interval: timedelta
    retention: timedelta

    @property
    def lock_key(self) -> int:
        return zlib.crc32(f"netmon.partitions.{self.name}".encode())


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime
    end: datetime
    detach_pending: bool = False


def partitioned_tables(storage: StorageSettings) -> tuple[PartitionedTable, ...]:
    return (
        PartitionedTable("samples", "time", storage.partition_interval, storage.raw_retention),
        PartitionedTable("samples_5m", "bucket", timedelta(days=7), storage.rollup_5m_retention),
        PartitionedTable("samples_1h", "bucket", timedelta(days=28), storage.rollup_1h_retention),
    )


def floor_time(moment: datetime, interval: timedelta) -> datetime:
    """The start of the epoch-aligned slot of width ``interval`` that holds ``moment``."""
    return EPOCH + ((moment - EPOCH) // interval) * interval


def partition_name(table: str, start: datetime) -> str:
    stamp = start.astimezone(UTC)
    if stamp.hour or stamp.minute:
        return f"{table}_p{stamp:%Y%m%d_%H%M}"
    return f"{table}_p{stamp:%Y%m%d}"


def _parse_bound(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def list_partitions(conn: asyncpg.Connection, table: str) -> list[Partition]:
    rows = await conn.fetch(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound, i.inhdetachpending
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = $1::regclass
        """,
        table,
    )
    result = []
    for row in rows:
        match = _BOUND.search(row["bound"] or "")
        if match is None:  # a DEFAULT partition or one someone attached by hand
            continue
        result.append(
            Partition(
                name=row["relname"],
                start=_parse_bound(match.group(1)),
                end=_parse_bound(match.group(2)),
                detach_pending=row["inhdetachpending"],
            )
        )
    return sorted(result, key=lambda p: p.start)


def _gaps(
    existing: list[Partition], start: datetime, end: datetime, interval: timedelta
) -> list[tuple[datetime, datetime]]:
    """Aligned slots in [start, end) not covered yet, minus every part that exists (the
    interval may have been changed since older partitions were made, so a slot can hold
    several older partitions with holes between them)."""
    ordered = sorted(existing, key=lambda p: p.start)
    slots = []
    slot = floor_time(start, interval)
    while slot < end:
        lo, hi = slot, slot + interval
        for part in ordered:
            if part.end <= lo or part.start >= hi:
                continue
            if lo < part.start:
                slots.append((lo, part.start))
            lo = max(lo, part.end)
        if lo < hi:
            slots.append((lo, hi))
        slot += interval
    return slots


async def ensure_partitions(
    conn: asyncpg.Connection,
    table: PartitionedTable,
    start: datetime,
    end: datetime,
    lock_timeout: timedelta,
) -> list[str]:
    """Make sure partitions cover [start, end); return the names created."""
    existing = await list_partitions(conn, table.name)
    if not _gaps(existing, start, end, table.interval):
        return []
    created: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", table.lock_key)
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout.total_seconds() * 1000)}")
        existing = await list_partitions(conn, table.name)
        for lo, hi in _gaps(existing, start, end, table.interval):
            name = partition_name(table.name, lo)
            await conn.execute(
                f"CREATE TABLE {name} (LIKE {table.name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            # The CHECK lets ATTACH skip its validation scan; the table is empty anyway.
            col = table.column
            await conn.execute(
                f"ALTER TABLE {name} ADD CONSTRAINT {name}_bound "
                f"CHECK ({col} >= '{lo.isoformat()}' AND {col} < '{hi.isoformat()}')"
            )
            await conn.execute(
                f"ALTER TABLE {table.name} ATTACH PARTITION {name} "
                f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
            )
            await conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bound")
            created.append(name)
    if created:
        log.info("partitions created", table=table.name, partitions=created)
    return created


@dataclass
class RetentionResult:
    detached: list[str]
    dropped: list[str]
    deferred: list[str]


async def drop_expired(
    conn: asyncpg.Connection,
    table: PartitionedTable,
    now: datetime,
    lock_timeout: timedelta,
) -> RetentionResult:
    """Detach (concurrently) and drop every partition that ends before now - retention.

    ``conn`` must not be inside a transaction: DETACH ... CONCURRENTLY refuses to run in one.
    """
    cutoff = now - table.retention
    result = RetentionResult([], [], [])
    await conn.execute(f"SET lock_timeout = {int(lock_timeout.total_seconds() * 1000)}")
    try:
        expired = [p for p in await list_partitions(conn, table.name) if p.end <= cutoff]
        # PostgreSQL allows one pending detach per table: finish that one first, and once
        # a detach has to wait, leave the rest of this table for the next run (another
        # DETACH ... CONCURRENTLY would fail with "already pending detach").
        expired.sort(key=lambda p: (not p.detach_pending, p.start))
        blocked = False
        for part in expired:
            if blocked:
                result.deferred.append(part.name)
                continue
            mode = "FINALIZE" if part.detach_pending else "CONCURRENTLY"
            try:
                await conn.execute(f"ALTER TABLE {table.name} DETACH PARTITION {part.name} {mode}")
            except (
                asyncpg.exceptions.LockNotAvailableError,
                asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
            ):
                blocked = True
                result.deferred.append(part.name)
                log.info("retention deferred: partition in use", partition=part.name)
                continue
            result.detached.append(part.name)
            try:
                await conn.execute(f"DROP TABLE {part.name}")
                result.dropped.append(part.name)
            except asyncpg.exceptions.LockNotAvailableError:
                result.deferred.append(part.name)
                log.info("retention deferred: partition in use", partition=part.name)
        # A partition detached on an earlier run whose DROP was deferred is no longer
        # listed by pg_inherits; find it by name.
        for name in await _orphans(conn, table):
            if name in result.dropped or name in result.deferred:
                continue
            if _start_from_name(name) + table.interval > cutoff:
                continue
            try:
                await conn.execute(f"DROP TABLE {name}")
                result.dropped.append(name)
            except asyncpg.exceptions.LockNotAvailableError:
                result.deferred.append(name)
    finally:
        await conn.execute("RESET lock_timeout")
    if result.dropped or result.deferred:
        log.info(
            "retention",
            table=table.name,
            dropped=result.dropped,
            deferred=result.deferred,
        )
    return result


def _start_from_name(name: str) -> datetime:
    stamp = name.rsplit("_p", 1)[1]
    fmt = "%Y%m%d_%H%M" if "_" in stamp else "%Y%m%d"
    return datetime.strptime(stamp, fmt).replace(tzinfo=UTC)


async def _orphans(conn: asyncpg.Connection, table: PartitionedTable) -> list[str]:
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_class c
        WHERE c.relkind = 'r' AND c.relname ~ ('^' || $1 || '_p[0-9]{8}(_[0-9]{4})?$')
          AND NOT c.relispartition
          AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = $1::regclass)
        """,
        table.name,
    )
    return [row["relname"] for row in rows]
