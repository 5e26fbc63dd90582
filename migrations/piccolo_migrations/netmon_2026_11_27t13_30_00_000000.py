"""API: tokens, the audit log, and which sync owns a device.

``api_tokens`` keeps no token, only a random salt and sha256(salt || secret || pepper):
a token is shown once, when it is made. ``audit_log`` is append-only history of every
write made through the API, with the row before and after. ``devices.owner`` names the
sync that owns a row ('inventory' for the poller's inventory); rows no sync owns (null)
are the API's to change. Rows that exist now came from the inventory.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-27T13:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "api tokens, audit log, device owner"

STATEMENTS = [
    "ALTER TABLE devices ADD COLUMN owner text",
    "UPDATE devices SET owner = 'inventory'",
    """
    CREATE TABLE api_tokens (
        id bigserial PRIMARY KEY,
        key_id text NOT NULL UNIQUE,
        name text NOT NULL,
        role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        sites text[],
        salt bytea NOT NULL,
        hash bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        created_by text NOT NULL,
        expires_at timestamptz,
        revoked_at timestamptz,
        last_used_at timestamptz
    )
    """,
    """
    CREATE TABLE audit_log (
        id bigserial PRIMARY KEY,
        time timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        token_id bigint,
        role text,
        action text NOT NULL,
        resource text NOT NULL,
        resource_id text,
        before jsonb,
        after jsonb,
        request_id text,
        client text
    )
    """,
    "CREATE INDEX audit_log_time ON audit_log (time)",
    "CREATE INDEX audit_log_resource ON audit_log (resource, resource_id)",
    # The API lists events newest first across devices, a page at a time.
    "CREATE INDEX device_events_time ON device_events (time DESC, id DESC)",
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
