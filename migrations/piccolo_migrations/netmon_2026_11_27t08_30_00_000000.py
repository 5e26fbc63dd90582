"""Initial schema: devices, series, time-partitioned samples, rollups, device events.

Self-contained on purpose (Piccolo's advice): it copies no Table class, so later edits to
``store/tables.py`` cannot change what this migration did. Raw SQL, because Piccolo has no
words for ``PARTITION BY RANGE``, composite primary keys or covering indexes.

``samples.value`` is ``numeric`` so counters up to 2**64-1 are stored exactly; no
partition is created here (and never a DEFAULT one: DETACH ... CONCURRENTLY refuses to run
while one exists). Partitions are made by ``store/partitions.py``.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-27T08:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "initial schema"

STATEMENTS = [
    """
    CREATE TABLE devices (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        address text,
        site text,
        role text,
        platform text,
        tags text[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE series (
        id bigserial PRIMARY KEY,
        device_id bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        metric text NOT NULL,
        labels jsonb NOT NULL DEFAULT '{}',
        unit text NOT NULL DEFAULT '',
        kind text NOT NULL CHECK (kind IN ('gauge', 'counter')),
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT series_identity UNIQUE (device_id, metric, labels)
    )
    """,
    "CREATE INDEX series_metric ON series (metric)",
    # The key is covering (INCLUDE value): a range read of one series is then an
    # index-only scan, 8 ms -> 1 ms for a day of 1-minute data.
    """
    CREATE TABLE samples (
        series_id bigint NOT NULL,
        time timestamptz NOT NULL,
        value numeric NOT NULL,
        PRIMARY KEY (series_id, time) INCLUDE (value)
    ) PARTITION BY RANGE (time)
    """,
    # Rollups scan one time window across all series; BRIN finds it for a few pages.
    "CREATE INDEX samples_time_brin ON samples USING brin (time)",
    """
    CREATE TABLE samples_5m (
        series_id bigint NOT NULL,
        bucket timestamptz NOT NULL,
        min numeric NOT NULL,
        max numeric NOT NULL,
        avg double precision NOT NULL,
        count integer NOT NULL,
        last numeric NOT NULL,
        PRIMARY KEY (series_id, bucket) INCLUDE (min, max, avg, count, last)
    ) PARTITION BY RANGE (bucket)
    """,
    """
    CREATE TABLE samples_1h (
        series_id bigint NOT NULL,
        bucket timestamptz NOT NULL,
        min numeric NOT NULL,
        max numeric NOT NULL,
        avg double precision NOT NULL,
        count integer NOT NULL,
        last numeric NOT NULL,
        PRIMARY KEY (series_id, bucket) INCLUDE (min, max, avg, count, last)
    ) PARTITION BY RANGE (bucket)
    """,
    """
    CREATE TABLE rollup_state (
        resolution text PRIMARY KEY,
        done_through timestamptz
    )
    """,
    "INSERT INTO rollup_state (resolution, done_through) VALUES ('5m', NULL), ('1h', NULL)",
    """
    CREATE TABLE device_events (
        id bigserial PRIMARY KEY,
        uid uuid NOT NULL UNIQUE,
        device_id bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        time timestamptz NOT NULL,
        kind text NOT NULL,
        severity text NOT NULL DEFAULT 'info'
            CHECK (severity IN ('info', 'warning', 'critical')),
        message text NOT NULL DEFAULT '',
        attributes jsonb NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX device_events_device_time ON device_events (device_id, time DESC)",
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
