"""`netmon configs` as a user runs it: a subprocess on a real, migrated database."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from netmon.store.configs import REDACTED, save_config
from tests.api_helpers import api_database_url
from tests.test_cli import netmon

__all__ = ["api_database_url"]

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
V1 = "hostname r1\nusername admin secret 9 $9$hash\ninterface eth0\n description uplink\n"
V2 = "hostname r1\nusername admin secret 9 $9$hash\ninterface eth0\n description core\n"


@pytest.fixture
def env(api_database_url: str, tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "NETMON_DATABASE__URL": api_database_url,
        "NETMON_DATA_DIR": str(tmp_path / "data"),
        "NETMON_LOG__FORMAT": "json",
    }


async def _seed(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [
            (
                await save_config(conn, "r1", "running", "cli", "text", text, T0 + timedelta(i))
            ).version_id
            for i, text in enumerate([V1, V2])
        ]
    finally:
        await conn.close()


def test_list_show_diff(env, api_database_url: str) -> None:
    first, second = asyncio.run(_seed(api_database_url))
    listed = netmon("configs", "list", "r1", env=env)
    assert listed.returncode == 0, listed.stderr
    assert str(first) in listed.stdout
    assert str(second) in listed.stdout
    shown = netmon("configs", "show", str(first), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "description uplink" in shown.stdout
    assert "$9$hash" not in shown.stdout
    assert REDACTED in shown.stdout
    diffed = netmon("configs", "diff", str(second), env=env)
    assert diffed.returncode == 0, diffed.stderr
    assert "- description uplink" in diffed.stdout
    assert "+ description core" in diffed.stdout
    assert netmon("configs", "diff", str(first), "--against", str(second), env=env).returncode == 0


def test_errors_name_what_is_missing(env, api_database_url: str) -> None:
    asyncio.run(_seed(api_database_url))
    missing = netmon("configs", "show", "999", env=env)
    assert missing.returncode == 1
    assert "configuration version 999 not found" in missing.stderr
    nobody = netmon("configs", "list", "nope", env=env)
    assert nobody.returncode == 1
    assert "no device named 'nope'" in nobody.stderr
    assert netmon("configs", "backup", "nope", env=env).returncode == 1


async def _backup_is_broadcast(url: str, env: dict[str, str]) -> list[str]:
    heard: list[str] = []
    conn = await asyncpg.connect(url)
    await conn.add_listener("netmon_control", lambda *a: heard.append(a[-1]))
    try:
        done = await asyncio.to_thread(netmon, "configs", "backup", "r1", env=env)
        assert done.returncode == 0, done.stderr
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return heard


def test_backup_asks_the_pollers(env, api_database_url: str) -> None:
    asyncio.run(_seed(api_database_url))
    heard = asyncio.run(_backup_is_broadcast(api_database_url, env))
    assert any('"config_backup"' in p and '"r1"' in p for p in heard), heard
