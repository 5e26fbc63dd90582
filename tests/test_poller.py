"""The poller against the built-in lab, end to end into PostgreSQL."""

from __future__ import annotations

import pytest

from netmon.poller.scheduler import phase_of
from tests.poller_helpers import (
    eventually,
    fast_inventory,
    poller_settings,
    running_poller,
)

pytestmark = pytest.mark.slow


async def polls_of(conn, device: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM samples v JOIN series s ON s.id = v.series_id "
        "JOIN devices d ON d.id = s.device_id WHERE d.name = $1 AND s.metric = 'sysUpTime'",
        device,
    )


async def test_the_lab_is_polled_into_the_database(lab, db, settings, conn, tmp_path):
    inventory = fast_inventory(lab, tmp_path / "inventory")
    async with running_poller(poller_settings(settings), db, inventory) as service:

        async def two_polls_each() -> bool:
            return all([await polls_of(conn, name) >= 2 for name in lab.devices])

        await eventually(two_polls_each, what="two polls of every device")
        assert service.poller is not None
        assert service.poller.stats.failed == 0
    for name in lab.devices:
        rates = await conn.fetchval(
            "SELECT count(*) FROM samples v JOIN series s ON s.id = v.series_id "
            "JOIN devices d ON d.id = s.device_id "
            "WHERE d.name = $1 AND s.metric = 'ifHCInOctets:rate'",
            name,
        )
        assert rates >= 4  # one per interface from the second poll on
    facts = await conn.fetchval("SELECT facts FROM devices WHERE name = 'lab-0001'")
    assert '"sysName": "lab-0001"' in facts
    assert '"interfaces"' in facts
    health = await conn.fetch(
        "SELECT last_success, consecutive_failures, reachable FROM poll_health"
    )
    assert len(health) == 3
    assert all(h["last_success"] is not None and h["consecutive_failures"] == 0 for h in health)
    kinds = dict(
        await conn.fetch(
            "SELECT DISTINCT metric, kind FROM series WHERE metric IN "
            "('ifHCInOctets', 'ifInErrors', 'ifOperStatus', 'ifHCInOctets:rate')"
        )
    )
    assert kinds == {
        "ifHCInOctets": "counter",
        "ifInErrors": "counter",
        "ifOperStatus": "gauge",
        "ifHCInOctets:rate": "gauge",
    }


async def test_a_reboot_is_an_event_and_never_a_spike(lab, db, settings, conn, tmp_path):
    inventory = fast_inventory(lab, tmp_path / "inventory")
    async with running_poller(poller_settings(settings), db, inventory):
        await eventually(lambda: _at_least(conn, "lab-0002", 2), what="two polls of lab-0002")
        lab.device("lab-0002").reboot()

        async def rebooted() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM device_events e JOIN devices d ON d.id = e.device_id "
                    "WHERE d.name = 'lab-0002' AND e.kind = 'device.rebooted'"
                )
            )

        await eventually(rebooted, what="a device.rebooted event")
        before = await polls_of(conn, "lab-0002")
        await eventually(lambda: _at_least(conn, "lab-0002", before + 1), what="one more poll")
    # Every rate stays under the link's speed: the reset did not become a spike.
    over = await conn.fetchval(
        """
        SELECT count(*) FROM samples r
        JOIN series rs ON rs.id = r.series_id AND rs.metric = 'ifHCInOctets:rate'
        JOIN series ss ON ss.device_id = rs.device_id AND ss.labels = rs.labels
                      AND ss.metric = 'ifSpeed'
        JOIN samples sp ON sp.series_id = ss.id AND sp.time = r.time
        WHERE r.value > sp.value / 8 * 1.05
        """
    )
    assert over == 0


async def _at_least(conn, device: str, polls: int) -> bool:
    return await polls_of(conn, device) >= polls


async def _health(conn, device: str):
    return await conn.fetchrow(
        "SELECT h.* FROM poll_health h JOIN devices d ON d.id = h.device_id WHERE d.name = $1",
        device,
    )


async def _events(conn, device: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT e.kind FROM device_events e JOIN devices d ON d.id = e.device_id "
        "WHERE d.name = $1 ORDER BY e.time",
        device,
    )
    return [r["kind"] for r in rows]


async def test_a_silent_device_is_unreachable_and_the_others_go_on(
    lab, db, settings, conn, tmp_path
):
    inventory = fast_inventory(lab, tmp_path / "inventory")
    async with running_poller(poller_settings(settings), db, inventory):
        await eventually(lambda: _at_least(conn, "lab-0003", 1), what="a first poll")
        lab.device("lab-0003").silence(True)

        async def unreachable() -> bool:
            return "device.unreachable" in await _events(conn, "lab-0003")

        await eventually(unreachable, what="device.unreachable")
        others = await polls_of(conn, "lab-0001")
        await eventually(lambda: _at_least(conn, "lab-0001", others + 2), what="others polled")
        health = await _health(conn, "lab-0003")
        assert health["last_error_class"] == "timeout"
        assert health["consecutive_failures"] >= 1
        assert health["reachable"] is False
        lab.device("lab-0003").silence(False)

        async def back() -> bool:
            return (await _events(conn, "lab-0003"))[-1:] == ["device.reachable"]

        await eventually(back, what="device.reachable")


async def test_garbage_is_a_malformed_reply_for_that_device_only(lab, db, settings, conn, tmp_path):
    inventory = fast_inventory(lab, tmp_path / "inventory")
    lab.device("lab-0001").garbage(True)
    async with running_poller(poller_settings(settings), db, inventory):

        async def recorded() -> bool:
            health = await _health(conn, "lab-0001")
            return health is not None and health["last_error_class"] is not None

        await eventually(recorded, what="lab-0001's poll health")
        await eventually(lambda: _at_least(conn, "lab-0002", 2), what="lab-0002 polled")
        health = await _health(conn, "lab-0001")
        assert health["last_error_class"] == "malformed"
        assert health["reachable"] is True  # it answered, with garbage
        assert await polls_of(conn, "lab-0001") == 0


def test_phases_spread_devices_evenly_and_stay_put():
    interval = 60.0
    phases = [phase_of(f"lab-{i:04d}", interval) for i in range(1, 5001)]
    assert all(0 <= p < interval for p in phases)
    per_decile = [0] * 10
    for p in phases:
        per_decile[int(p / 6)] += 1
    assert min(per_decile) > 400, per_decile
    assert max(per_decile) < 600, per_decile
    assert phase_of("lab-0001", interval) == phases[0]  # same in every process
