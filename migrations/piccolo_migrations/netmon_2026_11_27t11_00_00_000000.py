"""Poll health per device, and what a device says about itself (sysDescr, ...).

``poll_health`` is state, not history: one row per device, overwritten after each poll
(history lives in ``device_events``: reachability changes). ``devices.facts`` holds the
latest facts the system task read, so the API can show them without a query per fact.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-27T11:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "poll health, device facts"

STATEMENTS = [
    "ALTER TABLE devices ADD COLUMN facts jsonb NOT NULL DEFAULT '{}'",
    """
    CREATE TABLE poll_health (
        device_id bigint PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
        last_poll timestamptz NOT NULL,
        last_success timestamptz,
        last_error_class text,
        last_error text,
        last_error_at timestamptz,
        duration_ms double precision NOT NULL,
        consecutive_failures integer NOT NULL DEFAULT 0,
        overruns bigint NOT NULL DEFAULT 0,
        reachable boolean NOT NULL
    )
    """,
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="netmon", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        for statement in STATEMENTS:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
