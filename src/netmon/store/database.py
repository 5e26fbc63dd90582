"""The connection to PostgreSQL: embedded or by URL, one asyncpg pool shared with Piccolo.

This module is also the one boundary where asyncpg's connection failures become
``DatabaseUnavailableError``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from piccolo.apps.migrations.tables import Migration
from piccolo.engine.postgres import PostgresEngine

from netmon import piccolo_conf
from netmon.config import DatabaseSettings
from netmon.errors import DatabaseUnavailableError
from netmon.logs import get_logger, redact_url
from netmon.store.embedded import EmbeddedPostgres
from netmon.store.tables import TABLES

__all__ = ["CONNECTION_ERRORS", "Database", "is_connection_error", "unavailable"]

log = get_logger(__name__)

EMBEDDED_DATABASE = "netmon"

# SQLSTATE classes that mean "the server went away or will not talk now", as opposed to
# "this statement is wrong": 08 connection exception, 28 the server refuses the login
# (pg_hba.conf, password; the writer spools until that is fixed), 57P01-57P03 shutdown /
# cannot connect now, 53300 too many connections.
_UNAVAILABLE_SQLSTATES = ("08", "28", "57P01", "57P02", "57P03", "53300")

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

_CLOSE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *CONNECTION_ERRORS)


def is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith(_UNAVAILABLE_SQLSTATES)
    return isinstance(exc, CONNECTION_ERRORS)


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Translate connection-level failures inside the block into DatabaseUnavailableError."""
    try:
        yield
    except Exception as exc:
        if is_connection_error(exc) and not isinstance(exc, DatabaseUnavailableError):
            raise DatabaseUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise


def _ssl_option(settings: DatabaseSettings) -> ssl.SSLContext | str | None:
    mode = settings.sslmode
    if mode is None:
        return None
    if mode in ("verify-ca", "verify-full"):
        context = ssl.create_default_context(
            cafile=str(settings.sslrootcert) if settings.sslrootcert else None
        )
        context.check_hostname = mode == "verify-full"
        if settings.sslcert:
            context.load_cert_chain(
                str(settings.sslcert), str(settings.sslkey) if settings.sslkey else None
            )
        return context
    return mode


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


class Database:
    """Owns the embedded server (if any), the Piccolo engine and its asyncpg pool."""

    def __init__(self, settings: DatabaseSettings, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.embedded: EmbeddedPostgres | None = None
        self.engine: PostgresEngine | None = None
        self.url: str = ""

    @property
    def pool(self) -> asyncpg.Pool:
        if self.engine is None or self.engine.pool is None:
            raise DatabaseUnavailableError("the database is not connected (call start first)")
        return self.engine.pool

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for asyncpg.connect / create_pool, password included."""
        kwargs: dict[str, Any] = {
            "dsn": self.url,
            "timeout": self.settings.connect_timeout.total_seconds(),
            "command_timeout": self.settings.command_timeout.total_seconds(),
            # Partition bounds are parsed from pg_get_expr output; UTC keeps that stable.
            "server_settings": {"application_name": "netmon", "timezone": "UTC"},
        }
        password = self.settings.resolved_password()
        if password is not None:
            kwargs["password"] = password
        ssl_option = _ssl_option(self.settings)
        if ssl_option is not None:
            kwargs["ssl"] = ssl_option
        return kwargs

    async def start(self) -> None:
        if self.settings.url:
            self.url = self.settings.url
        else:
            self.embedded = EmbeddedPostgres(self.data_dir)
            server_url = await asyncio.to_thread(self.embedded.start)
            await self._ensure_database(server_url, EMBEDDED_DATABASE)
            self.url = _with_database(server_url, EMBEDDED_DATABASE)
        kwargs = self.connect_kwargs()
        engine = PostgresEngine(config=kwargs)
        with unavailable(f"cannot connect to {redact_url(self.url)}"):
            await engine.start_connection_pool(
                min_size=min(self.settings.pool_min, self.settings.pool_max),
                max_size=self.settings.pool_max,
            )
        self.engine = engine
        bind(engine)
        log.info("database connected", url=redact_url(self.url), embedded=self.embedded is not None)

    async def _ensure_database(self, server_url: str, name: str) -> None:
        conn = await asyncpg.connect(server_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def connect(self) -> asyncpg.Connection:
        """A dedicated connection outside the pool (for advisory locks and DDL that cannot
        run in a transaction)."""
        with unavailable(f"cannot connect to {redact_url(self.url)}"):
            return await asyncpg.connect(**self.connect_kwargs())

    async def stop(self) -> None:
        if self.engine is not None:
            try:
                async with asyncio.timeout(10):
                    await self.engine.close_connection_pool()
            except _CLOSE_ERRORS:
                log.warning("database pool did not close cleanly")
            self.engine = None
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            self.embedded = None

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def bind(engine: PostgresEngine) -> None:
    """Point Piccolo (our tables, its migration table, its finder) at this engine."""
    piccolo_conf.DB = engine
    Migration._meta.db = engine
    for table in TABLES:
        table._meta.db = engine
