"""Configuration backups: one row per distinct configuration a device returned.

``config_versions`` keeps a version per (device, source) each time the configuration
differs from the newest stored one of that device and source; a configuration equal to the
newest only moves its ``last_seen_at``. A configuration that goes back to an earlier text
is a new version (no uniqueness on the hash): the history is the order the device went
through. ``content`` is the text as the device returned it (after netmon's redaction of
secrets, ``netmon.store.configs.redact``), plain text, not compressed; ``sha256`` is of
that text. ``previous_id`` links each version to the one before it of the same device and
source, with the lines added and removed since (a unified diff's counts; 0 for the first).
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-27T18:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "configuration backups"

STATEMENTS = [
    """
    CREATE TABLE config_versions (
        id bigserial PRIMARY KEY,
        device_id bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        source text NOT NULL CHECK (source IN ('running', 'candidate', 'startup')),
        protocol text NOT NULL CHECK (protocol IN ('netconf', 'cli')),
        format text NOT NULL CHECK (format IN ('xml', 'text')),
        sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
        size integer NOT NULL CHECK (size >= 0),
        content text NOT NULL,
        collected_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL,
        previous_id bigint REFERENCES config_versions (id) ON DELETE SET NULL,
        lines_added integer NOT NULL DEFAULT 0,
        lines_removed integer NOT NULL DEFAULT 0
    )
    """,
    # Listing a device's versions newest first, and finding the newest of a source.
    "CREATE INDEX config_versions_device ON config_versions (device_id, id DESC)",
    "CREATE INDEX config_versions_latest ON config_versions (device_id, source, id DESC)",
    "CREATE INDEX config_versions_previous ON config_versions (previous_id)",
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
