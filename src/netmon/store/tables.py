"""Piccolo Table classes for the tables netmon queries through the ORM.

The schema itself is created by the migrations in ``migrations/`` (raw SQL where Piccolo
has no words: partitioned tables, composite keys). The sample tables are partitioned and
read through hand-written SQL in ``store/queries.py``; they have no Table class here.
A test checks these classes against the migrated database so the two cannot drift.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    BigInt,
    BigSerial,
    Boolean,
    Bytea,
    DoublePrecision,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
)
from piccolo.table import Table

__all__ = ["TABLES", "ApiToken", "AuditEntry", "Device", "DeviceEvent", "PollHealth", "Series"]


class Device(Table, tablename="devices"):
    id = BigSerial(primary_key=True)
    name = Text(unique=True)
    address = Text(null=True)
    site = Text(null=True)
    role = Text(null=True)
    platform = Text(null=True)
    tags = Array(base_column=Text())
    facts = JSONB()
    owner = Text(null=True)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    poller = Text(null=True)
    external_id = Text(null=True)
    lifecycle = Text(default="active")
    retired_at = Timestamptz(null=True)
    retired_reason = Text(null=True)
    labels = JSONB()


class Series(Table, tablename="series"):
    id = BigSerial(primary_key=True)
    device_id = ForeignKey(references=Device, on_delete=OnDelete.cascade)
    metric = Text()
    labels = JSONB()
    unit = Text()
    kind = Text()
    created_at = Timestamptz()


class DeviceEvent(Table, tablename="device_events"):
    id = BigSerial(primary_key=True)
    uid = UUID(unique=True)
    device_id = ForeignKey(references=Device, on_delete=OnDelete.cascade)
    time = Timestamptz()
    kind = Text()
    severity = Text()
    message = Text()
    attributes = JSONB()


class RollupState(Table, tablename="rollup_state"):
    resolution = Text(primary_key=True)
    done_through = Timestamptz(null=True)


class PollHealth(Table, tablename="poll_health"):
    device_id = ForeignKey(references=Device, on_delete=OnDelete.cascade, primary_key=True)
    last_poll = Timestamptz()
    last_success = Timestamptz(null=True)
    last_error_class = Text(null=True)
    last_error = Text(null=True)
    last_error_at = Timestamptz(null=True)
    duration_ms = DoublePrecision()
    consecutive_failures = Integer()
    overruns = BigInt()
    reachable = Boolean()


class ApiToken(Table, tablename="api_tokens"):
    id = BigSerial(primary_key=True)
    key_id = Text(unique=True)
    name = Text()
    role = Text()
    sites = Array(base_column=Text(), null=True)
    salt = Bytea()
    hash = Bytea()
    created_at = Timestamptz()
    created_by = Text()
    expires_at = Timestamptz(null=True)
    revoked_at = Timestamptz(null=True)
    last_used_at = Timestamptz(null=True)


class AuditEntry(Table, tablename="audit_log"):
    id = BigSerial(primary_key=True)
    time = Timestamptz()
    actor = Text()
    token_id = BigInt(null=True)
    role = Text(null=True)
    action = Text()
    resource = Text()
    resource_id = Text(null=True)
    before = JSONB(null=True)
    after = JSONB(null=True)
    request_id = Text(null=True)
    client = Text(null=True)
    sites = Array(base_column=Text(), null=True)


TABLES: tuple[type[Table], ...] = (
    Device,
    Series,
    DeviceEvent,
    RollupState,
    PollHealth,
    ApiToken,
    AuditEntry,
)
