"""Alerting: rules, alerts and their history, silences, webhooks, notification groups and
the webhook outbox.

``alerts`` holds one row per incident: at most one open row (pending, firing or
acknowledged) per fingerprint, so however often a condition fires while open it stays one
alert; ``alert_history`` keeps every transition. ``alert_groups`` carries Alertmanager's
group wait / interval / repeat timers per webhook across restarts. ``webhook_outbox`` is
written in the transaction that changes the alerts it reports, and delivered from there
(per webhook in id order); ``payload`` is text so the bytes signed on every retry are the
bytes written. Rules and silences from the rules file are synced in with source 'file'.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-27T16:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "alerting"

STATEMENTS = [
    """
    CREATE TABLE alert_rules (
        name text PRIMARY KEY,
        source text NOT NULL CHECK (source IN ('file', 'api')),
        definition jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        created_by text NOT NULL
    )
    """,
    """
    CREATE TABLE alerts (
        id bigserial PRIMARY KEY,
        fingerprint text NOT NULL,
        rule text NOT NULL,
        kind text NOT NULL DEFAULT 'threshold'
            CHECK (kind IN ('threshold', 'state', 'absent', 'event')),
        metric text NOT NULL DEFAULT '',
        device text NOT NULL,
        labels jsonb NOT NULL DEFAULT '{}',
        severity text NOT NULL
            CHECK (severity IN ('critical', 'major', 'minor', 'warning', 'info')),
        state text NOT NULL CHECK (state IN ('pending', 'firing', 'acknowledged', 'resolved')),
        flapping boolean NOT NULL DEFAULT false,
        value double precision,
        summary text NOT NULL DEFAULT '',
        description text NOT NULL DEFAULT '',
        pending_at timestamptz NOT NULL,
        started_at timestamptz,
        acknowledged_at timestamptz,
        acknowledged_by text,
        resolved_at timestamptz,
        updated_at timestamptz NOT NULL,
        changes integer NOT NULL DEFAULT 0,
        silenced_by bigint[] NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE UNIQUE INDEX alerts_open ON alerts (fingerprint) WHERE state <> 'resolved'",
    "CREATE INDEX alerts_updated ON alerts (updated_at DESC, id DESC)",
    "CREATE INDEX alerts_device ON alerts (device, id DESC)",
    """
    CREATE TABLE alert_history (
        id bigserial PRIMARY KEY,
        alert_id bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        time timestamptz NOT NULL,
        event text NOT NULL,
        actor text NOT NULL DEFAULT 'engine',
        value double precision,
        detail text NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX alert_history_alert ON alert_history (alert_id, id)",
    """
    CREATE TABLE silences (
        id bigserial PRIMARY KEY,
        name text UNIQUE,
        source text NOT NULL DEFAULT 'api' CHECK (source IN ('file', 'api')),
        matchers jsonb NOT NULL,
        starts_at timestamptz NOT NULL,
        ends_at timestamptz NOT NULL,
        comment text NOT NULL DEFAULT '',
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        CHECK (ends_at > starts_at)
    )
    """,
    "CREATE INDEX silences_ends ON silences (ends_at)",
    """
    CREATE TABLE webhooks (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        url text NOT NULL,
        secret text NOT NULL,
        format text NOT NULL CHECK (format IN ('netmon', 'alertmanager', 'nsp')),
        matchers jsonb NOT NULL DEFAULT '[]',
        group_by text[] NOT NULL DEFAULT '{rule,device}',
        group_wait interval NOT NULL,
        group_interval interval NOT NULL,
        repeat_interval interval NOT NULL,
        send_resolved boolean NOT NULL DEFAULT true,
        enabled boolean NOT NULL DEFAULT true,
        disabled_reason text,
        created_at timestamptz NOT NULL DEFAULT now(),
        created_by text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE alert_groups (
        webhook_id bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        group_key text NOT NULL,
        labels jsonb NOT NULL,
        next_at timestamptz,
        last_sent_at timestamptz,
        sent_digest text,
        PRIMARY KEY (webhook_id, group_key)
    )
    """,
    "CREATE INDEX alert_groups_due ON alert_groups (next_at) WHERE next_at IS NOT NULL",
    """
    CREATE TABLE webhook_outbox (
        id bigserial PRIMARY KEY,
        webhook_id bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        message_id text NOT NULL UNIQUE,
        group_key text NOT NULL,
        alert_ids bigint[] NOT NULL,
        payload text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        last_attempt_at timestamptz,
        last_status integer,
        last_error text,
        delivered_at timestamptz,
        dead_at timestamptz
    )
    """,
    "CREATE INDEX webhook_outbox_pending ON webhook_outbox (webhook_id, id)"
    " WHERE state = 'pending'",
    "CREATE INDEX webhook_outbox_state ON webhook_outbox (state, id DESC)",
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
