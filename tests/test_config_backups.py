"""The poller's configuration backups on their way to PostgreSQL (netmon.poller.configs):
stored once per change, the change event handed to alerting, the newest snapshot kept and
saved when the database comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from netmon.config import Settings, load_settings
from netmon.poller.configs import ConfigBackups
from netmon.records import ConfigSnapshot, DeviceEvent, Sample
from netmon.store.configs import CONFIG_CHANGED
from netmon.store.database import Database
from tests.tcp_proxy import proxy_for, through

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
V1 = "hostname r1\nenable secret 9 $9$abc\ninterface eth0\n description uplink\n!\nend\n"
V2 = "hostname r1\nenable secret 9 $9$abc\ninterface eth0\n description core\n!\nend\n"
V3 = "hostname r1\nenable secret 9 $9$abc\ninterface eth0\n description edge\n!\nend\n"


def snap(content: str, minutes: int = 0, device: str = "r1") -> ConfigSnapshot:
    when = T0 + timedelta(minutes=minutes)
    return ConfigSnapshot(device, when, "running", "cli", "text", content)


class Seen:
    def __init__(self) -> None:
        self.events: list[DeviceEvent] = []

    def __call__(self, samples: Sequence[Sample], events: Sequence[DeviceEvent]) -> None:
        assert not samples
        self.events.extend(events)


async def versions(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT d.name, v.content FROM config_versions v JOIN devices d ON d.id = v.device_id "
        "ORDER BY v.id"
    )
    return [(r["name"], r["content"]) for r in rows]


async def test_each_change_is_stored_once_and_its_event_reaches_alerting(
    db: Database, conn: asyncpg.Connection
) -> None:
    seen = Seen()
    backups = ConfigBackups(db, observe=lambda: seen)
    backups.start()
    try:
        for i, text in enumerate([V1, V1, V2, V2, V3]):
            backups.submit([snap(text, i)])
            assert await backups.drain(10)
    finally:
        await backups.stop()
    stored = await versions(conn)
    assert len(stored) == 3
    assert all("$9$abc" not in content for _, content in stored)  # redacted before storing
    assert [e.kind for e in seen.events] == [CONFIG_CHANGED, CONFIG_CHANGED]
    assert all(e.device == "r1" for e in seen.events)
    assert backups.stats.stored == 3
    assert backups.stats.changed == 2
    assert backups.stats.unchanged == 2
    assert backups.pending == 0


async def test_a_failing_alert_hook_does_not_stop_the_backups(
    db: Database, conn: asyncpg.Connection
) -> None:
    def broken(_samples: Sequence[Sample], _events: Sequence[DeviceEvent]) -> None:
        raise RuntimeError("alerting is broken")

    backups = ConfigBackups(db, observe=lambda: broken)
    backups.start()
    try:
        for i, text in enumerate([V1, V2, V3]):
            backups.submit([snap(text, i)])
            assert await backups.drain(10)
    finally:
        await backups.stop()
    assert len(await versions(conn)) == 3


async def test_while_the_database_is_away_the_newest_snapshot_waits_and_is_saved(
    database_url: str, tmp_path: Path, conn: asyncpg.Connection
) -> None:
    proxy = await proxy_for(database_url).start()
    settings: Settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        database={"url": through(proxy, database_url), "pool_min": 1, "pool_max": 2},
    )
    db = Database(settings.database, settings.data_dir)
    await db.start()
    backups = ConfigBackups(db, observe=lambda: None)
    backups.start()
    try:
        backups.submit([snap(V1, 0), snap(V1, 0, device="r2")])
        assert await backups.drain(10)
        await proxy.cut()
        backups.submit([snap(V2, 1)])
        await asyncio.sleep(1.5)  # at least one failed attempt
        backups.submit([snap(V3, 2)])  # replaces V2, never saved
        assert not await backups.drain(0.5)
        assert backups.pending == 1
        assert backups.stats.failed >= 1
        await proxy.restore()
        assert await backups.drain(60)
    finally:
        await backups.stop()
        await db.stop()
        await proxy.close()
    stored = [c for name, c in await versions(conn) if name == "r1"]
    assert len(stored) == 2
    assert "edge" in stored[1]
    assert backups.stats.superseded == 1
