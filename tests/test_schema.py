"""Migrations through Piccolo: idempotent, concurrent-safe, newer schemas refused, and the
Table classes agree with what the migrations built."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from netmon.config import load_settings
from netmon.errors import SchemaOutdatedError, SchemaTooNewError
from netmon.store.database import Database
from netmon.store.schema import check_schema, schema_status, upgrade
from netmon.store.tables import TABLES


@pytest.fixture
async def empty_url(pg_server):
    url = await pg_server.create_database()
    yield url
    await pg_server.drop_database(url)


def _db(url: str) -> Database:
    return Database(load_settings(None, database={"url": url, "pool_min": 1}).database, Path("/x"))


async def test_concurrent_upgrades_apply_each_migration_once(empty_url):
    dbs = [_db(empty_url) for _ in range(3)]
    for db in dbs:
        await db.start()
    try:
        with pytest.raises(SchemaOutdatedError):
            await check_schema(dbs[0])
        results = await asyncio.gather(*(upgrade(db) for db in dbs))
        await check_schema(dbs[0])
        status = await schema_status(dbs[0])
        # One process applied every migration; the two others found nothing left to do.
        assert sorted(len(r) for r in results) == [0, 0, len(status.migrations)]
        assert len(status.migrations) >= 2
        assert status.current
        assert all(m.applied_at is not None for m in status.migrations)
    finally:
        for db in dbs:
            await db.stop()


async def test_newer_schema_is_refused_and_nothing_changes(db, database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO migration (name, app_name, ran_on) VALUES ('2999-01-01', 'netmon', now())"
        )
        tables_before = await conn.fetchval("SELECT count(*) FROM pg_tables")
        with pytest.raises(SchemaTooNewError, match="2999-01-01"):
            await upgrade(db)
        with pytest.raises(SchemaTooNewError):
            await check_schema(db)
        assert await conn.fetchval("SELECT count(*) FROM pg_tables") == tables_before
    finally:
        await conn.close()


async def test_table_classes_match_the_migrated_schema(conn):
    for table in TABLES:
        name = table._meta.tablename
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", name
        )
        in_db = {r["column_name"] for r in rows}
        in_code = {c._meta.db_column_name for c in table._meta.columns}
        assert in_code == in_db, name


async def test_samples_are_partitioned_by_range_on_time_without_default(conn):
    strategy, default = await conn.fetchrow(
        "SELECT partstrat::text, partdefid::int FROM pg_partitioned_table "
        "WHERE partrelid = 'samples'::regclass"
    )
    assert (strategy, default) == ("r", 0)
    key = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'samples'::regclass AND contype = 'p'"
    )
    assert key == 'PRIMARY KEY (series_id, "time") INCLUDE (value)'
    value_type = await conn.fetchval(
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'samples' AND column_name = 'value'"
    )
    assert value_type == "numeric"


async def test_piccolo_tables_are_usable_for_queries(db, conn):
    from netmon.store.tables import Device, Series

    await Device.insert(Device(name="r1", tags=["core"])).run()
    device = await Device.objects().get(Device.name == "r1")
    assert device is not None
    await conn.execute(
        "INSERT INTO series (device_id, metric, labels, kind) VALUES ($1, 'cpu', '{}', 'gauge')",
        device.id,
    )
    rows = await Series.select(Series.metric, Series.device_id.name).run()
    assert rows == [{"metric": "cpu", "device_id.name": "r1"}]
