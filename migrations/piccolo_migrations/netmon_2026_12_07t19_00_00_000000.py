"""Devices owned per inventory source and poller, with a lifecycle; sync runs; cables.

``devices.owner`` names the source that owns a row (``yaml``, ``netbox``; null: the API's)
and ``poller`` the poller identity, so that pollers sharing a database never release each
other's devices. ``external_id`` is the source's identity for the host (NetBox:
``dcim.device:42``): a rename at the source renames the row and keeps its history.
``lifecycle``: active, muted (polled, alerts silenced), unpolled, retired. Rows the old
single inventory owned (``owner = 'inventory'``) become the YAML source's, with no poller
yet: the first sync of a poller takes them up by name.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T19:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "inventory sources and device lifecycle"

STATEMENTS = [
    """
    ALTER TABLE devices
        ADD COLUMN poller text,
        ADD COLUMN external_id text,
        ADD COLUMN lifecycle text NOT NULL DEFAULT 'active'
            CHECK (lifecycle IN ('active', 'muted', 'unpolled', 'retired')),
        ADD COLUMN retired_at timestamptz,
        ADD COLUMN retired_reason text,
        ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'
    """,
    "UPDATE devices SET owner = 'yaml', external_id = name WHERE owner = 'inventory'",
    """
    CREATE UNIQUE INDEX devices_source_identity ON devices (owner, poller, external_id)
    WHERE owner IS NOT NULL AND poller IS NOT NULL
    """,
    "CREATE INDEX devices_retired ON devices (retired_at) WHERE lifecycle = 'retired'",
    """
    CREATE TABLE inventory_sync_runs (
        id bigserial PRIMARY KEY,
        source text NOT NULL,
        poller text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('full', 'incremental')),
        started_at timestamptz NOT NULL,
        finished_at timestamptz NOT NULL DEFAULT now(),
        ok boolean NOT NULL,
        held boolean NOT NULL DEFAULT false,
        error text,
        fetched integer NOT NULL DEFAULT 0,
        added integer NOT NULL DEFAULT 0,
        changed integer NOT NULL DEFAULT 0,
        retired integer NOT NULL DEFAULT 0,
        unchanged integer NOT NULL DEFAULT 0,
        skipped integer NOT NULL DEFAULT 0,
        detail jsonb NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX inventory_sync_runs_recent ON inventory_sync_runs (source, poller, id DESC)",
    """
    CREATE TABLE inventory_cables (
        owner text NOT NULL,
        poller text NOT NULL,
        external_id text NOT NULL,
        a_device_id bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        a_port text NOT NULL,
        b_device_id bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        b_port text NOT NULL,
        status text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (owner, poller, external_id)
    )
    """,
    "CREATE INDEX inventory_cables_a ON inventory_cables (a_device_id)",
    "CREATE INDEX inventory_cables_b ON inventory_cables (b_device_id)",
    # Silences the inventory keeps (maintenance windows, muted devices): read-only to the API.
    "ALTER TABLE silences DROP CONSTRAINT silences_source_check",
    """
    ALTER TABLE silences ADD CONSTRAINT silences_source_check
        CHECK (source IN ('file', 'api', 'inventory'))
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
