"""Schema migrations through Piccolo: upgrade (idempotent, safe from several processes at
once) and status. A database migrated by a newer netmon is refused."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from datetime import datetime

from piccolo.apps.migrations.commands.base import BaseMigrationManager
from piccolo.apps.migrations.tables import Migration

from netmon.errors import SchemaOutdatedError, SchemaTooNewError
from netmon.logs import get_logger
from netmon.store.database import Database

__all__ = ["MigrationState", "SchemaStatus", "check_schema", "schema_status", "upgrade"]

log = get_logger(__name__)

APP_NAME = "netmon"
# One key for every netmon process: upgrades run one at a time.
UPGRADE_LOCK_KEY = 0x6E65746D6F6E01


@dataclass(frozen=True)
class MigrationState:
    id: str
    description: str
    applied_at: datetime | None


@dataclass(frozen=True)
class SchemaStatus:
    migrations: list[MigrationState]
    unknown: list[str]

    @property
    def pending(self) -> list[str]:
        return [m.id for m in self.migrations if m.applied_at is None]

    @property
    def current(self) -> bool:
        return not self.pending and not self.unknown


class _Manager(BaseMigrationManager):
    def __init__(self) -> None:
        # Piccolo's Finder locates the app registry through this variable.
        os.environ.setdefault("PICCOLO_CONF", "netmon.piccolo_conf")
        super().__init__()

    def modules(self) -> dict[str, object]:
        app = self.get_app_config(app_name=APP_NAME)
        return dict(self.get_migration_modules(app.resolved_migrations_folder_path))


async def _applied() -> dict[str, datetime]:
    await _Manager().create_migration_table()
    rows = (
        await Migration.select(Migration.name, Migration.ran_on)
        .where(Migration.app_name == APP_NAME)
        .run()
    )
    return {row["name"]: row["ran_on"] for row in rows}


async def schema_status(db: Database) -> SchemaStatus:
    modules = _Manager().modules()
    applied = await _applied()
    states = [
        MigrationState(
            id=mid,
            description=str(getattr(modules[mid], "DESCRIPTION", "")),
            applied_at=applied.get(mid),
        )
        for mid in sorted(modules)
    ]
    return SchemaStatus(migrations=states, unknown=sorted(set(applied) - set(modules)))


def _refuse_newer(status: SchemaStatus) -> None:
    if status.unknown:
        raise SchemaTooNewError(
            "the database was migrated by a newer netmon (unknown migrations: "
            + ", ".join(status.unknown)
            + "); upgrade netmon, or point it at another database"
        )


async def upgrade(db: Database) -> list[str]:
    """Apply pending migrations, each in its own transaction with its bookkeeping row.
    Returns the ids applied (empty when the schema was already current)."""
    conn = await db.connect()
    try:
        # Session-level lock on a connection of its own: a second `netmon` starting at the
        # same moment waits here, then finds nothing left to do.
        await conn.execute("SELECT pg_advisory_lock($1)", UPGRADE_LOCK_KEY)
        status = await schema_status(db)
        _refuse_newer(status)
        modules = _Manager().modules()
        assert db.engine is not None
        for mid in status.pending:
            module = modules[mid]
            async with db.engine.transaction():
                manager = await module.forwards()  # type: ignore[attr-defined]
                with contextlib.redirect_stdout(io.StringIO()):
                    await manager.run()
                await Migration.insert(Migration(name=mid, app_name=APP_NAME)).run()
            log.info("migration applied", id=mid, description=getattr(module, "DESCRIPTION", ""))
        return status.pending
    finally:
        await conn.close()


async def check_schema(db: Database) -> None:
    """Raise unless the schema is exactly what this netmon expects."""
    status = await schema_status(db)
    _refuse_newer(status)
    if status.pending:
        raise SchemaOutdatedError(
            f"{len(status.pending)} migration(s) pending; run `netmon db upgrade`"
        )
