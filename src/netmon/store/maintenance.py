"""``netmon db maintain``: partitions ahead, rollups of closed intervals, retention.

Idempotent and safe from several processes: one holds an advisory lock, the others skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from netmon.config import StorageSettings
from netmon.logs import get_logger
from netmon.store.database import Database
from netmon.store.partitions import (
    RetentionResult,
    drop_expired,
    ensure_partitions,
    partitioned_tables,
)
from netmon.store.rollups import Progress, RollupResult, compute_rollups

__all__ = ["MAINTENANCE_LOCK_KEY", "MaintenanceReport", "maintain"]

log = get_logger(__name__)

MAINTENANCE_LOCK_KEY = 0x6E65746D6F6E02


@dataclass
class MaintenanceReport:
    skipped: bool = False
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    rollups: RollupResult = field(default_factory=RollupResult)


async def maintain(
    db: Database,
    storage: StorageSettings,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> MaintenanceReport:
    now = now or datetime.now(UTC)
    report = MaintenanceReport()
    tables = {t.name: t for t in partitioned_tables(storage)}
    conn = await db.connect()
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY):
            log.info("maintenance skipped: another process is maintaining")
            report.skipped = True
            return report
        for table in tables.values():
            try:
                report.created += await ensure_partitions(
                    conn, table, now - table.interval, now + storage.premake, storage.lock_timeout
                )
            except asyncpg.exceptions.LockNotAvailableError:
                # Someone holds a conflicting lock on the parent (a manual ANALYZE, a
                # long DDL); premake leaves days of slack, so try again next run.
                report.deferred.append(table.name)
                log.warning("partition creation deferred: parent table busy", table=table.name)
        report.rollups = await compute_rollups(
            conn, tables, now, storage.rollup_lateness, storage.lock_timeout, progress
        )
        for table in tables.values():
            retention: RetentionResult = await drop_expired(conn, table, now, storage.lock_timeout)
            report.dropped += retention.dropped
            report.deferred += retention.deferred
        log.info(
            "maintenance done",
            created=len(report.created),
            dropped=len(report.dropped),
            deferred=len(report.deferred),
            rollup_rows_5m=report.rollups.rows_5m,
            rollup_rows_1h=report.rollups.rows_1h,
        )
        return report
    finally:
        await conn.close()
