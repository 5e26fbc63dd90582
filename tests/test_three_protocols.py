"""The lab's inventory as `netmon run --lab` polls it: SNMP, NETCONF and CLI devices side by
side, the same interface series whatever the protocol, configuration versions for the
NETCONF and CLI devices, a change on the device seen as a new version and an event, and
an on-demand backup."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from netmon.config import Settings
from netmon.lab import Lab, write_inventory
from netmon.store.configs import CONFIG_CHANGED
from netmon.store.database import Database
from tests.poller_helpers import eventually, poller_settings, running_poller

INTERFACE_METRICS = {"ifHCInOctets", "ifOperStatus", "ifAdminStatus"}


def three_protocol_inventory(lab: Lab, folder: Path) -> Path:
    write_inventory(lab, folder, interval=timedelta(seconds=2))
    return folder


async def series_of(conn: asyncpg.Connection, device: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT s.metric FROM series s JOIN devices d ON d.id = s.device_id WHERE d.name = $1",
        device,
    )
    return {r["metric"] for r in rows}


async def versions(conn: asyncpg.Connection, device: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT v.id, v.source, v.protocol, v.content FROM config_versions v "
        "JOIN devices d ON d.id = v.device_id WHERE d.name = $1 ORDER BY v.id",
        device,
    )


async def changed_events(conn: asyncpg.Connection, device: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM device_events e JOIN devices d ON d.id = e.device_id "
        "WHERE d.name = $1 AND e.kind = $2",
        device,
        CONFIG_CHANGED,
    )
    return count


@pytest.mark.slow
@pytest.mark.lab(interfaces=2, ssh=True)
async def test_snmp_netconf_and_cli_devices_are_polled_alike(
    lab: Lab,
    settings: Settings,
    db: Database,
    conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    assert [lab.protocols(n) for n in ("lab-0001", "lab-0002", "lab-0003")] == [
        ("snmp",),
        ("snmp", "netconf"),
        ("snmp", "cli"),
    ]
    inventory = three_protocol_inventory(lab, tmp_path / "inventory")
    async with running_poller(poller_settings(settings), db, inventory) as service:

        async def all_polled() -> bool:
            for device in ("lab-0001", "lab-0002", "lab-0003"):
                if not await series_of(conn, device) >= INTERFACE_METRICS:
                    return False
            return all([await versions(conn, "lab-0002"), await versions(conn, "lab-0003")])

        await eventually(all_polled, timeout=60, what="every device's interfaces and configs")
        assert service.poller is not None
        assert service.poller.stats.failed == 0, list(service.poller.stats.last_errors)
        netconf, cli = await versions(conn, "lab-0002"), await versions(conn, "lab-0003")
        assert {(v["source"], v["protocol"]) for v in netconf} == {
            ("running", "netconf"),
            ("candidate", "netconf"),
        }
        assert {(v["source"], v["protocol"]) for v in cli} == {("running", "cli")}
        assert await versions(conn, "lab-0001") == []  # SNMP only: no configuration task
        # The stored text holds no secret the lab's configurations carry.
        for v in [*netconf, *cli]:
            assert "netmon-lab-ssh" not in v["content"]

        # A change on the device: the next poll stores a version and raises the event.
        lab.device("lab-0002").change_config("uplink to core-9")

        async def netconf_changed() -> bool:
            return await changed_events(conn, "lab-0002") >= 1

        await eventually(netconf_changed, timeout=30, what="lab-0002's config_changed event")
        newest = (await versions(conn, "lab-0002"))[-1]
        assert "uplink to core-9" in newest["content"]

        # On demand: read now, whatever the schedule.
        lab.device("lab-0003").change_config("backup on demand")
        result = await service.backup_configs("lab-0003")
        assert result.error is None
        # Stored by the time it returns (a scheduled poll may have been first).
        assert "backup on demand" in (await versions(conn, "lab-0003"))[-1]["content"]
        with pytest.raises(LookupError):
            await service.backup_configs("lab-0001")
