"""A real API server for tests: uvicorn on a free loopback port in the test's event loop,
a fresh migrated database, and a token per role (plus one limited to site lon1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from netmon.api.context import ApiContext
from netmon.api.server import ApiServer
from netmon.config import Settings, load_settings
from netmon.core_control import LocalCore
from netmon.store.database import Database
from netmon.store.tokens import create_token
from tests.conftest import PgServer

__all__ = ["Api", "api", "api_database_url", "api_settings", "make_api_settings", "running_api"]

ROLES = ("viewer", "operator", "admin")


@dataclass
class Api:
    url: str
    ctx: ApiContext
    server: ApiServer
    tokens: dict[str, str] = field(default_factory=dict)  # viewer, operator, admin, lon1

    @property
    def db(self) -> Database:
        return self.ctx.db

    def client(self, who: str | None = "admin", **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10, **kwargs)


def make_api_settings(database_url: str, data_dir: Path, **api: Any) -> Settings:
    return load_settings(
        None,
        data_dir=data_dir,
        database={"url": database_url, "pool_min": 2, "pool_max": 10},
        api={"port": 0, **api},
    )


@pytest.fixture
async def api_database_url(one_pg_server: PgServer) -> AsyncIterator[str]:
    url = await one_pg_server.create_database(template=one_pg_server.template)
    try:
        yield url
    finally:
        await one_pg_server.drop_database(url)


@pytest.fixture
def api_settings(api_database_url: str, tmp_path: Path) -> Settings:
    return make_api_settings(api_database_url, tmp_path / "data")


async def make_tokens(db: Database, pepper: bytes) -> dict[str, str]:
    tokens: dict[str, str] = {}
    async with db.pool.acquire() as conn:
        for role in ROLES:
            _, tokens[role] = await create_token(
                conn, name=f"test-{role}", role=role, created_by="test", pepper=pepper
            )
        _, tokens["lon1"] = await create_token(
            conn,
            name="test-lon1",
            role="operator",
            created_by="test",
            pepper=pepper,
            sites=["lon1"],
        )
    return tokens


class running_api:
    def __init__(self, settings: Settings, core: LocalCore | None = None) -> None:
        self.settings = settings
        self.core = core
        self.api: Api | None = None

    async def __aenter__(self) -> Api:
        db = Database(self.settings.database, self.settings.data_dir)
        await db.start()
        ctx = ApiContext(self.settings, db, self.core)
        server = ApiServer(ctx)
        await server.start()
        tokens = await make_tokens(db, self.settings.api.resolved_pepper())
        self.api = Api(f"http://127.0.0.1:{server.port}", ctx, server, tokens)
        return self.api

    async def __aexit__(self, *exc: object) -> None:
        assert self.api is not None
        await self.api.server.stop()
        await self.api.db.stop()


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Api]:
    async with running_api(api_settings) as running:
        yield running
