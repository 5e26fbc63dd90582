"""The sites of each audit entry, so that a token limited to sites reads only its own.

``audit_log.sites`` holds the sites of what an entry changed: a device's site (before and
after a move), the sites of a token, the site a silence, webhook or rule is confined to
(``site="..."``), the sites of the alerts a redelivered message is about. NULL marks an
entry that is not within sites: something global (an inventory reload, a global rule) or
a device without a site. Entries written before this migration are given the sites their
device or token rows name; the others stay NULL, readable by unscoped admins only.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit log sites"

STATEMENTS = [
    "ALTER TABLE audit_log ADD COLUMN sites text[]",
    # Devices: their site before and after; a device without a site leaves the entry global.
    """
    UPDATE audit_log SET sites = (
        SELECT array_agg(DISTINCT s ORDER BY s)
        FROM unnest(ARRAY[before->>'site', after->>'site']) AS s
        WHERE s IS NOT NULL
    )
    WHERE resource = 'device'
      AND (before IS NULL OR before->>'site' IS NOT NULL)
      AND (after IS NULL OR after->>'site' IS NOT NULL)
    """,
    # Tokens: the sites they were limited to (an unscoped token's entry stays global).
    """
    UPDATE audit_log SET sites = ARRAY(
        SELECT jsonb_array_elements_text(coalesce(after, before)->'sites') ORDER BY 1
    )
    WHERE resource = 'token' AND jsonb_typeof(coalesce(after, before)->'sites') = 'array'
    """,
    "UPDATE audit_log SET sites = NULL WHERE sites = '{}'",
    # "Entries within these sites": sites <@ $1, served by a GIN index.
    "CREATE INDEX audit_log_sites ON audit_log USING gin (sites)",
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
