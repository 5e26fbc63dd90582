"""Devices through the API, against a real server and database: listing and filters,
paging, detail with interfaces and health, changes with their audit entries, ownership."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from netmon.api.schemas.devices import (
    IF_SPEED_CAP,
    INTERFACE_METRICS,
    interfaces_from_rows,
    make_interface,
)
from netmon.core_control import LocalCore
from netmon.lab import Lab
from netmon.records import Sample, SeriesKey
from netmon.store import devices as store
from netmon.store.devices import DeviceInfo, sync_devices
from netmon.store.writer import SampleWriter
from tests.api_helpers import Api, api, api_database_url, api_settings
from tests.poller_helpers import eventually, fast_inventory, poller_settings, running_poller

__all__ = ["api", "api_database_url", "api_settings"]


async def _inventory(api: Api, n: int = 5) -> None:
    infos = [
        DeviceInfo(
            name=f"r{i}",
            address=f"127.0.0.{i + 1}",
            site="lon1" if i % 2 == 0 else "par1",
            role="core" if i < 2 else "edge",
            platform="ios",
            tags=("lab", "even") if i % 2 == 0 else ("lab",),
        )
        for i in range(n)
    ]
    await sync_devices(api.db, infos)


async def test_list_filters_and_pages(api: Api) -> None:
    await _inventory(api, 5)
    async with api.client("viewer") as c:
        page = (await c.get("/api/v1/devices", params={"limit": 2})).json()
        names = [d["name"] for d in page["items"]]
        while page["next_cursor"]:
            page = (
                await c.get("/api/v1/devices", params={"limit": 2, "cursor": page["next_cursor"]})
            ).json()
            names += [d["name"] for d in page["items"]]
        assert names == ["r0", "r1", "r2", "r3", "r4"]
        lon = (await c.get("/api/v1/devices", params={"site": "lon1"})).json()["items"]
        assert [d["name"] for d in lon] == ["r0", "r2", "r4"]
        both = await c.get("/api/v1/devices", params=[("tag", "lab"), ("tag", "even")])
        assert [d["name"] for d in both.json()["items"]] == ["r0", "r2", "r4"]
        core = await c.get("/api/v1/devices", params={"role": "core", "name": "r*"})
        assert [d["name"] for d in core.json()["items"]] == ["r0", "r1"]
        unknown = await c.get("/api/v1/devices", params={"status": "unknown"})
        assert len(unknown.json()["items"]) == 5
        assert (await c.get("/api/v1/devices", params={"status": "up"})).json()["items"] == []


async def test_bad_input_is_a_problem_document_naming_the_field(api: Api) -> None:
    async with api.client("viewer") as c:
        r = await c.get("/api/v1/devices", params={"limit": 0})
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["status"] == 400
        assert body["errors"][0]["field"] == "limit"
        r = await c.get("/api/v1/devices", params={"cursor": "not a cursor"})
        assert r.status_code == 400
        assert "cursor" in r.json()["detail"]
        r = await c.get("/api/v1/devices/0")
        assert r.status_code == 400
        r = await c.get("/api/v1/nothing-here")
        assert r.status_code == 404
        assert r.json()["title"] == "Not Found"


async def test_detail_shows_interfaces_and_health(api: Api) -> None:
    await _inventory(api, 1)
    now = datetime.now(UTC)
    key = SeriesKey.of
    samples = [
        Sample(key("r0", "ifOperStatus", {"interface": "eth0"}), now, 1),
        Sample(key("r0", "ifAdminStatus", {"interface": "eth0"}), now, 1),
        Sample(key("r0", "ifHighSpeed", {"interface": "eth0"}, unit="Mbit/s"), now, 1000),
        Sample(key("r0", "ifHCInOctets:rate", {"interface": "eth0"}, unit="bytes/s"), now, 125.5),
        Sample(key("r0", "ifOperStatus", {"interface": "eth1"}), now, 2),
    ]
    async with SampleWriter(api.db, api.ctx.settings) as writer:
        assert (await writer.write(samples)).stored == 5
    async with api.db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO poll_health (device_id, last_poll, last_success, duration_ms, reachable) "
            "SELECT id, $1, $1, 12.5, true FROM devices WHERE name = 'r0'",
            now - timedelta(seconds=5),
        )
        device_id = await conn.fetchval("SELECT id FROM devices WHERE name = 'r0'")
    async with api.client("viewer") as c:
        body = (await c.get(f"/api/v1/devices/{device_id}")).json()
    assert body["device"]["status"] == "up"
    assert body["health"]["duration_ms"] == 12.5
    eth0, eth1 = body["interfaces"]
    assert eth0["name"] == "eth0"
    assert eth0["oper_status"] == "up"
    assert eth0["speed_mbps"] == 1000
    assert eth0["in_bps"] == 1004.0
    assert eth1["oper_status"] == "down"
    assert eth1["in_bps"] is None


async def test_changes_only_to_devices_no_sync_owns_and_each_is_audited(api: Api) -> None:
    await _inventory(api, 1)
    async with api.client("operator") as c:
        made = await c.post("/api/v1/devices", json={"name": "ext1", "site": "lon1"})
        assert made.status_code == 201, made.text
        ext = made.json()
        assert ext["owner"] is None
        again = await c.post("/api/v1/devices", json={"name": "ext1"})
        assert again.status_code == 409
        changed = await c.patch(f"/api/v1/devices/{ext['id']}", json={"role": "edge"})
        assert changed.json()["role"] == "edge"
        assert changed.json()["site"] == "lon1"
        cleared = await c.patch(f"/api/v1/devices/{ext['id']}", json={"site": None})
        assert cleared.json()["site"] is None
        owned = (await c.get("/api/v1/devices", params={"name": "r0"})).json()["items"][0]
        assert owned["owner"] == "yaml"
        assert owned["lifecycle"] == "active"
        refused = await c.patch(f"/api/v1/devices/{owned['id']}", json={"role": "x"})
        assert refused.status_code == 409
        assert "yaml inventory" in refused.json()["detail"]
        assert (await c.delete(f"/api/v1/devices/{owned['id']}")).status_code == 409
        assert (await c.delete(f"/api/v1/devices/{ext['id']}")).status_code == 204
        assert (await c.get(f"/api/v1/devices/{ext['id']}")).status_code == 404
    async with api.client("admin") as c:
        entries = (await c.get("/api/v1/audit", params={"resource": "device"})).json()["items"]
    actions = [(e["action"], e["actor"]) for e in entries]
    # The sync's own changes are audited too, under the source and poller.
    assert actions[-1] == ("create", "inventory:yaml@default")
    actions = [a for a in actions if a[1] == "test-operator"]
    entries = [e for e in entries if e["actor"] == "test-operator"]
    assert actions == [
        ("delete", "test-operator"),
        ("update", "test-operator"),
        ("update", "test-operator"),
        ("create", "test-operator"),
    ]
    assert entries[0]["before"]["name"] == "ext1"
    assert entries[0]["after"] is None
    assert entries[2]["before"]["role"] is None
    assert entries[2]["after"]["role"] == "edge"


async def test_a_host_removed_from_the_inventory_is_retired_and_may_then_be_deleted(
    api: Api,
) -> None:
    await _inventory(api, 2)
    await sync_devices(api.db, [DeviceInfo("r0", None, "lon1", None, None, ())])
    async with api.client("operator") as c:
        r1 = (await c.get("/api/v1/devices", params={"name": "r1"})).json()["items"][0]
        assert r1["owner"] == "yaml"
        assert r1["lifecycle"] == "retired"
        assert r1["status"] == "retired"
        assert r1["retired_reason"] == "left the yaml inventory"
        retired = (await c.get("/api/v1/devices", params={"status": "retired"})).json()
        assert [d["name"] for d in retired["items"]] == ["r1"]
        up_or_unknown = (await c.get("/api/v1/devices", params={"status": "unknown"})).json()
        assert [d["name"] for d in up_or_unknown["items"]] == ["r0"]
        # Still the inventory's to change, but no longer polled: it may be deleted.
        assert (await c.patch(f"/api/v1/devices/{r1['id']}", json={"role": "x"})).status_code == 409
        assert (await c.delete(f"/api/v1/devices/{r1['id']}")).status_code == 204


async def test_deleting_a_device_deletes_its_samples_and_a_writer_starts_afresh(api: Api) -> None:
    now = datetime.now(UTC)
    key = SeriesKey.of("gone", "cpu", {})
    async with SampleWriter(api.db, api.ctx.settings) as writer:
        await writer.write([Sample(key, now - timedelta(minutes=1), 5)])
        async with api.db.pool.acquire() as conn:
            device_id = await conn.fetchval("SELECT id FROM devices WHERE name = 'gone'")
        api.ctx.core = LocalCore(writer=writer)  # a writer in the API's process
        async with api.client("operator") as c:
            assert (await c.delete(f"/api/v1/devices/{device_id}")).status_code == 204
        async with api.db.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM samples") == 0
        # The same device polled again: new rows, and its samples are not orphans.
        await writer.write([Sample(key, now, 6)])
        async with api.db.pool.acquire() as conn:
            orphans = await conn.fetchval(
                "SELECT count(*) FROM samples s WHERE NOT EXISTS "
                "(SELECT 1 FROM series WHERE id = s.series_id)"
            )
            assert orphans == 0
            assert await conn.fetchval("SELECT count(*) FROM samples") == 1


async def test_every_cursor_the_schema_admits_is_a_place_to_page_from(api: Api) -> None:
    # The document's pattern is the whole rule: "0", or a cursor never handed out, is a
    # valid request (an empty page, or the page after it), never a 400.
    async with api.client("admin") as c:
        made = await c.post("/api/v1/devices", json={"name": "pager", "site": "lon1"})
        device = made.json()["id"]
        routes = {
            "/api/v1/devices": ("A", "_-_-", "AAAAA", "zz"),
            f"/api/v1/devices/{device}/series": ("0", "999999999999999"),
            f"/api/v1/devices/{device}/configs": ("0", "1"),
            "/api/v1/events": ("0_0", "-9999999999999999_1", "99999999999999999_0"),
            "/api/v1/alerts": ("0_0", "1_999999999999999"),
            "/api/v1/audit": ("0", "42"),
            "/api/v1/silences": ("0",),
        }
        for route, cursors in routes.items():
            for cursor in cursors:
                r = await c.get(route, params={"cursor": cursor})
                assert r.status_code == 200, (route, cursor, r.text)
        # And the cursors handed out are of that form, and lead on.
        for name in ("a1", "a2", "a3"):
            await c.post("/api/v1/devices", json={"name": name})
        first = (await c.get("/api/v1/devices", params={"limit": 2})).json()
        second = await c.get("/api/v1/devices", params={"limit": 2, "cursor": first["next_cursor"]})
        names = [d["name"] for d in first["items"] + second.json()["items"]]
        assert names == ["a1", "a2", "a3", "pager"]


async def test_interface_speed_is_what_a_polled_lab_device_stores(
    api: Api, tmp_path: Path, lab_keys: None
) -> None:
    """The tasks store ifSpeed in bit/s (from ifHighSpeed when the agent has it); the
    detail's speed_mbps reads it: a lab 10G uplink, whose IF-MIB ifSpeed is the Gauge32
    cap, is 10,000 Mbit/s, its 1G and 100M ports 1,000 and 100."""
    async with Lab(devices=1, base_port=0, interfaces=24, ssh=False) as lab:
        device = lab.devices["lab-0001"]
        inventory = fast_inventory(lab, tmp_path / "inv", tasks=["interfaces"])
        settings = poller_settings(api.ctx.settings)
        async with running_poller(settings, api.db, inventory) as poller:

            async def polled() -> bool:
                assert poller.poller is not None
                return poller.poller.stats.polls >= 1

            await eventually(polled, what="a poll of lab-0001")
        expected = {i.name: i.speed / 1_000_000 for i in device.interfaces}
    assert expected["Te1/1/1"] == 10_000
    assert {1000.0, 10_000.0} <= set(expected.values())
    async with api.db.pool.acquire() as conn:
        device_id = await conn.fetchval("SELECT id FROM devices WHERE name = 'lab-0001'")
        now = datetime.now(UTC)
        rows = await store.interface_values(
            conn, device_id, ["ifSpeed", "ifHighSpeed"], now - timedelta(minutes=5), now
        )
    stored = {r[0]: dict(zip(r[2], r[3], strict=True)) for r in rows}
    assert stored["Te1/1/1"] == {"ifSpeed": 10_000_000_000}  # never the Gauge32 cap
    async with api.client("viewer") as c:
        body = (await c.get(f"/api/v1/devices/{device_id}")).json()
    speeds = {i["name"]: i["speed_mbps"] for i in body["interfaces"]}
    assert speeds == expected
    # The database path (when the API's cache cannot answer) reads the same.
    async with api.db.pool.acquire() as conn:
        values = await store.interface_values(
            conn, device_id, list(INTERFACE_METRICS), now - timedelta(minutes=5), now
        )
    assert {i.name: i.speed_mbps for i in interfaces_from_rows(values)} == expected


def test_speed_prefers_if_high_speed_and_refuses_the_gauge32_cap() -> None:
    def speed(**fields: float) -> float | None:
        return make_interface({"name": "x", **fields}).speed_mbps

    assert speed(_high_speed=10_000, _speed=IF_SPEED_CAP) == 10_000
    assert speed(_speed=1_000_000_000) == 1000
    assert speed(_speed=IF_SPEED_CAP) is None  # only "4.29 Gbit/s or more"
    assert speed(_high_speed=0, _speed=512_000) == 0.512  # ifHighSpeed 0: below 1 Mbit/s
    assert speed() is None
