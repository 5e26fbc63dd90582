"""The chaos suite's own PostgreSQL: started, frozen, thawed, stopped, killed and started
again with its data, then removed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from netmon.chaos.postgres import PrivatePostgres, server_bin
from tests.peer_check import missing_peer


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    try:
        server_bin()
    except FileNotFoundError as exc:
        missing_peer(str(exc))
    server = PrivatePostgres(tmp_path_factory.mktemp("chaos-pg"))
    server.start()
    yield server
    server.destroy()


async def _query(url: str, sql: str, timeout: float = 10) -> object:
    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        return await conn.fetchval(sql, timeout=timeout)
    finally:
        await conn.close(timeout=timeout)


async def test_freeze_thaw(pg: PrivatePostgres) -> None:
    assert pg.port != 5432
    assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/netmon"
    conn = await asyncpg.connect(pg.url, timeout=10)
    try:
        assert await conn.fetchval("SELECT current_database()") == "netmon"
        assert await conn.fetchval("SHOW fsync") == "on"
        pg.freeze()
        try:
            with pytest.raises(TimeoutError):
                await conn.fetchval("SELECT 1", timeout=1)
            # A new connection hangs as well: the postmaster is stopped too.
            with pytest.raises(TimeoutError):
                await asyncpg.connect(pg.url, timeout=1)
        finally:
            pg.thaw()
    finally:
        conn.terminate()
    assert await _query(pg.url, "SELECT 2") == 2


async def test_stop_start_keeps_data(pg: PrivatePostgres) -> None:
    await _query(pg.url, "CREATE TABLE kept AS SELECT 42 AS answer")
    pg.stop()
    assert not pg.is_running()
    with pytest.raises(ConnectionRefusedError):  # nothing listens
        await asyncpg.connect(pg.url, timeout=5)
    pg.start()
    assert pg.is_running()
    assert await _query(pg.url, "SELECT answer FROM kept") == 42


async def test_kill_recovers_committed_data(pg: PrivatePostgres) -> None:
    await _query(pg.url, "CREATE TABLE committed AS SELECT 7 AS n")
    pids = pg.processes()
    assert len(pids) > 1  # the postmaster and its children
    pg.kill()
    assert not pg.is_running()
    # Another object for the same root finds the same cluster and port.
    again = PrivatePostgres(pg.root)
    assert again.port == pg.port
    again.start()
    assert await _query(pg.url, "SELECT n FROM committed") == 7


def test_destroy_removes_only_its_cluster(tmp_path: Path) -> None:
    server = PrivatePostgres(tmp_path / "pg")
    server.start()
    cluster = server.cluster
    assert cluster is not None
    assert (cluster / "data" / "PG_VERSION").exists()
    assert asyncio.run(_query(server.url, "SELECT 1")) == 1
    server.destroy()
    assert not server.is_running()
    assert not cluster.exists() or not (cluster / "data").exists()
    assert (tmp_path / "pg" / "postgres.log").exists()  # the log is kept for the report
