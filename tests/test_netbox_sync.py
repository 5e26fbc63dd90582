"""NetBox as the source of truth, end to end against a real NetBox (tests/netbox_peer.py)
and the simulated lab: devices from NetBox polled with NetBox's labels; rename, status,
deletion and maintenance followed through the change log; a bad config context skipped;
the mass-retirement guard; NetBox down or slow; the webhook with good and bad signatures,
delivered by NetBox itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from netmon.cli.main import app
from netmon.config import Settings, load_settings
from netmon.inventory.sync import InventorySync
from netmon.lab import Lab
from netmon.poller.registry import TaskRegistry
from netmon.poller.service import make_source
from netmon.records import DeviceEvent
from netmon.store.database import Database
from netmon.store.notify import CONTROL_CHANNEL
from tests.api_helpers import api_database_url, running_api
from tests.netbox_peer import NetBoxPeer
from tests.netbox_seed import NetBoxApi
from tests.poller_helpers import fast_inventory, running_poller

pytestmark = pytest.mark.timeout(300)
__all__ = ["api_database_url"]

TOKEN_ENV = "NETMON_TEST_NETBOX_TOKEN"
HOOK_ENV = "NETMON_TEST_NETBOX_HOOK"
HOOK_SECRET = "hook-secret-for-tests-only"


@pytest.fixture
async def db(api_database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    """One PostgreSQL server is enough here: NetBox is what these tests are about."""
    base = load_settings(None, data_dir=tmp_path / "db", database={"url": api_database_url})
    async with Database(base.database, base.data_dir) as database:
        yield database


@pytest.fixture
def settings(api_database_url: str, tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path / "data", database={"url": api_database_url})


@pytest.fixture
def nb_env(netbox: NetBoxPeer, monkeypatch: pytest.MonkeyPatch) -> NetBoxPeer:
    monkeypatch.setenv(TOKEN_ENV, netbox.token)
    monkeypatch.setenv(HOOK_ENV, HOOK_SECRET)
    return netbox


def nb_settings(
    base: Settings,
    peer: NetBoxPeer,
    data_dir: Path,
    *,
    api: dict[str, Any] | None = None,
    **netbox: Any,
) -> Settings:
    assert base.database.url is not None
    return load_settings(
        None,
        api=api or {},
        data_dir=data_dir,
        database={"url": base.database.url, "pool_min": 2, "pool_max": 10},
        writer={"flush_interval": "50ms"},
        poller={"jitter": "0s", "stop_timeout": "10s"},
        inventory={
            "poller_id": "nb-test",
            "netbox": {
                "url": peer.url,
                "token": {"env": TOKEN_ENV},
                "filters": {"tag": "monitored"},
                "changes_interval": "1s",
                "timeout": "5s",
                "retries": 1,
                "custom_fields": ["rack_row"],
                "webhook_secret": {"env": HOOK_ENV},
                **netbox,
            },
        },
    )


class NetBoxLab:
    """NetBox objects for lab devices: each device's primary address is 127.0.0.1 in a VRF
    of its own (NetBox refuses the same address twice in one VRF), and its config context
    gives the lab's SNMP port and the local folder's group ``lab``."""

    def __init__(self, api: NetBoxApi) -> None:
        self.api = api
        region = api.create("dcim/regions", {"name": "EU West", "slug": "eu-west"})
        self.site = api.create(
            "dcim/sites", {"name": "lab-ams", "slug": "lab-ams", "region": region["id"]}
        )
        maker = api.create("dcim/manufacturers", {"name": "Lab", "slug": "lab"})
        self.device_type = api.create(
            "dcim/device-types", {"manufacturer": maker["id"], "model": "L1", "slug": "l1"}
        )
        self.role = api.create(
            "dcim/device-roles", {"name": "router", "slug": "router", "color": "2196f3"}
        )
        self.platform = api.create("dcim/platforms", {"name": "cisco_ios", "slug": "cisco-ios"})
        self.tag = api.create("extras/tags", {"name": "monitored", "slug": "monitored"})
        api.create(
            "extras/custom-fields",
            {"name": "rack_row", "type": "text", "object_types": ["dcim.device"]},
        )
        self.devices: dict[str, dict[str, Any]] = {}

    def add(self, name: str, port: int, *, context: dict[str, Any] | None = None) -> int:
        api = self.api
        device = api.create(
            "dcim/devices",
            {
                "name": name,
                "device_type": self.device_type["id"],
                "role": self.role["id"],
                "site": self.site["id"],
                "platform": self.platform["id"],
                "status": "active",
                "tags": [self.tag["id"]],
                "custom_fields": {"rack_row": "R1"},
                "local_context_data": {
                    "netmon": context or {"groups": ["lab"], "snmp": {"port": port}}
                },
            },
        )
        vrf = api.create("ipam/vrfs", {"name": f"mgmt-{name}"})
        iface = api.create(
            "dcim/interfaces", {"device": device["id"], "name": "mgmt0", "type": "virtual"}
        )
        ip = api.create(
            "ipam/ip-addresses",
            {
                "address": "127.0.0.1/32",
                "vrf": vrf["id"],
                "assigned_object_type": "dcim.interface",
                "assigned_object_id": iface["id"],
            },
        )
        api.update("dcim/devices", device["id"], {"primary_ip4": ip["id"]})
        self.devices[name] = device
        return int(device["id"])


async def eventually(
    check: Callable[[], Awaitable[bool]], *, what: str, timeout: float = 45.0
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.25)


async def rows(db: Database) -> dict[str, asyncpg.Record]:
    found = await db.pool.fetch(
        "SELECT id, name, owner, poller, external_id, lifecycle, site, role, platform, tags, "
        "labels::text AS labels, address FROM devices"
    )
    return {r["name"]: r for r in found}


async def test_netbox_devices_are_polled_with_labels_and_follow_changes(
    nb_env: NetBoxPeer, db: Database, settings: Settings, tmp_path: Path, lab_keys: None
) -> None:
    async with Lab(devices=3, base_port=0, interfaces=2, ssh=False) as lab:
        folder = fast_inventory(lab, tmp_path / "inventory")
        (folder / "hosts.yaml").write_text("ignored-when-netbox-is-set: {hostname: 192.0.2.9}\n")
        nb = NetBoxLab(nb_env.api)
        ids = {name: nb.add(name, lab.port(name)) for name in lab.devices}
        s = nb_settings(settings, nb_env, tmp_path / "data")
        async with running_poller(s, db, folder) as service:
            assert service.poller is not None
            assert sorted(service.poller.device_names) == sorted(lab.devices)
            found = await rows(db)
            first = found["lab-0001"]
            assert (first["owner"], first["poller"]) == ("netbox", "nb-test")
            assert first["external_id"] == f"dcim.device:{ids['lab-0001']}"
            assert (first["site"], first["role"], first["platform"]) == (
                "lab-ams",
                "router",
                "cisco-ios",
            )
            assert list(first["tags"]) == ["monitored"]
            assert first["address"] == "127.0.0.1"
            labels = json.loads(first["labels"])
            assert labels["region"] == "eu-west"
            assert labels["cf_rack_row"] == "R1"

            async def polled() -> bool:
                n = await db.pool.fetchval(
                    "SELECT count(*) FROM poll_health WHERE last_success IS NOT NULL"
                )
                return int(n) == 3

            await eventually(polled, what="every NetBox device polled")

            # A rename keeps the row (and its history).
            nb_env.api.update("dcim/devices", ids["lab-0001"], {"name": "core-1"})

            async def renamed() -> bool:
                now = await rows(db)
                return "core-1" in now and now["core-1"]["id"] == first["id"]

            await eventually(renamed, what="the rename followed through the change log")
            assert "core-1" in service.poller.device_names

            # offline: polled, alerts silenced; planned: known, not polled.
            nb_env.api.update("dcim/devices", ids["lab-0002"], {"status": "offline"})
            nb_env.api.update("dcim/devices", ids["lab-0003"], {"status": "planned"})

            async def statuses() -> bool:
                now = await rows(db)
                return (now["lab-0002"]["lifecycle"], now["lab-0003"]["lifecycle"]) == (
                    "muted",
                    "unpolled",
                )

            await eventually(statuses, what="offline muted, planned not polled")
            assert "lab-0003" not in service.poller.device_names
            assert "lab-0002" in service.poller.device_names
            silence = await db.pool.fetchrow("SELECT matchers, comment FROM silences")
            assert json.loads(silence["matchers"]) == ['device="lab-0002"']
            assert "offline" in silence["comment"]

            # Deleted in NetBox: retired, not polled, kept.
            nb_env.api.delete("dcim/devices", ids["lab-0002"])

            async def retired() -> bool:
                return (await rows(db))["lab-0002"]["lifecycle"] == "retired"

            await eventually(retired, what="a device deleted in NetBox retired")
            assert sorted(service.poller.device_names) == ["core-1"]
            assert await db.pool.fetchval("SELECT count(*) FROM silences") == 0
            assert service.sync.stats.incremental_lag_s is not None


async def test_one_bad_config_context_is_skipped_and_the_rest_sync(
    nb_env: NetBoxPeer, db: Database, settings: Settings, tmp_path: Path, lab_keys: None
) -> None:
    folder = tmp_path / "inventory"
    async with Lab(devices=2, base_port=0, interfaces=2, ssh=False) as lab:
        fast_inventory(lab, folder)
    nb = NetBoxLab(nb_env.api)
    nb.add("good", 16101)
    nb.add(
        "leaky",
        16102,
        context={"groups": ["lab"], "snmp": {"auth": {"protocol": "sha1", "key": "s3cr3t-value"}}},
    )
    nb.add("typo", 16103, context={"groups": ["lab"], "snmpp": {"port": 1}})
    nb.add("nogroup", 16104, context={"groups": ["no-such-group"]})
    s = nb_settings(settings, nb_env, tmp_path / "data")
    sync = InventorySync(s, db, make_source(s, folder, TaskRegistry.discover([])))
    try:
        report = await sync.reconcile()
    finally:
        await sync.source.close()
    assert report.ok
    assert report.result is not None
    assert report.summary()["added"] == ["good"]
    skipped = {k.name: k for k in report.result.skipped}
    assert skipped["leaky"].reason == "secret_value"
    assert "s3cr3t-value" not in skipped["leaky"].message
    assert "key" in skipped["leaky"].message
    assert skipped["typo"].reason == "bad_context"
    assert "snmpp" in skipped["typo"].message
    assert skipped["nogroup"].reason == "bad_context"
    assert "no-such-group" in skipped["nogroup"].message
    run = await db.pool.fetchrow("SELECT ok, skipped, detail FROM inventory_sync_runs")
    assert run["ok"]
    assert run["skipped"] == 3
    assert sorted(k["name"] for k in json.loads(run["detail"])["skipped"]) == [
        "leaky",
        "nogroup",
        "typo",
    ]


async def test_the_guard_holds_a_mass_deletion_and_raises_an_alert(
    nb_env: NetBoxPeer, db: Database, settings: Settings, tmp_path: Path, lab_keys: None
) -> None:
    folder = tmp_path / "inventory"
    async with Lab(devices=1, base_port=0, interfaces=2, ssh=False) as lab:
        fast_inventory(lab, folder)
    nb = NetBoxLab(nb_env.api)
    ids = [nb.add(f"d{i:02d}", 16100 + i) for i in range(10)]
    s = nb_settings(settings, nb_env, tmp_path / "data")
    alerts: list[DeviceEvent] = []
    sync = InventorySync(
        s, db, make_source(s, folder, TaskRegistry.discover([])), alert=alerts.append
    )
    try:
        assert (await sync.reconcile()).summary()["added"] == [f"d{i:02d}" for i in range(10)]
        nb_env.api.bulk_delete("dcim/devices", ids[:5])
        held = await sync.reconcile()
        assert held.held is not None
        assert "5 of 10" in held.held
        assert [a.kind for a in alerts] == ["inventory.sync_failed"]
        assert alerts[0].device == "inventory/netbox"
        lifecycles = {r["lifecycle"] for r in (await rows(db)).values()}
        assert lifecycles == {"active"}
        run = await db.pool.fetchrow(
            "SELECT held, retired FROM inventory_sync_runs ORDER BY id DESC LIMIT 1"
        )
        assert (run["held"], run["retired"]) == (True, 0)
        forced = await sync.reconcile(force=True)
        assert forced.summary()["retired"] == [f"d{i:02d}" for i in range(5)]
    finally:
        await sync.source.close()


async def test_netbox_down_or_slow_retires_nothing(
    nb_env: NetBoxPeer, db: Database, settings: Settings, tmp_path: Path, lab_keys: None
) -> None:
    folder = tmp_path / "inventory"
    async with Lab(devices=1, base_port=0, interfaces=2, ssh=False) as lab:
        fast_inventory(lab, folder)
    nb = NetBoxLab(nb_env.api)
    for i in range(3):
        nb.add(f"d{i}", 16100 + i)
    registry = TaskRegistry.discover([])
    s = nb_settings(settings, nb_env, tmp_path / "data")
    # The same source and poller, impatient: 1 s per request, no retry.
    impatient = nb_settings(settings, nb_env, tmp_path / "data", timeout="1s", retries=0)
    alerts: list[DeviceEvent] = []
    sync = InventorySync(s, db, make_source(s, folder, registry), alert=alerts.append)
    short = InventorySync(
        impatient, db, make_source(impatient, folder, registry), alert=alerts.append
    )
    try:
        assert (await sync.reconcile()).ok
        nb_env.pause()  # accepts connections, answers nothing: slow past the timeout
        try:
            started = time.monotonic()
            slow = await short.reconcile()
            assert time.monotonic() - started < 20
        finally:
            nb_env.resume()
        assert not slow.ok
        assert slow.error is not None
        assert "did not answer" in slow.error
        assert [a.kind for a in alerts] == ["inventory.sync_failed"]
        assert {r["lifecycle"] for r in (await rows(db)).values()} == {"active"}
        failed = await db.pool.fetchrow(
            "SELECT ok, error FROM inventory_sync_runs ORDER BY id DESC LIMIT 1"
        )
        assert not failed["ok"]
        # Back: the next sync applies as usual.
        assert (await sync.reconcile()).ok
    finally:
        await sync.source.close()
        await short.source.close()


async def test_webhook_signed_by_netbox_reaches_the_poller_and_bad_signatures_do_not(
    nb_env: NetBoxPeer, api_database_url: str, tmp_path: Path
) -> None:
    base = load_settings(None, database={"url": api_database_url})
    s = nb_settings(base, nb_env, tmp_path / "data", api={"port": 0})
    heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    listener = await asyncpg.connect(api_database_url)

    def on_notify(*args: Any) -> None:
        message = json.loads(args[3])
        if message.get("op") == "inventory_changed":
            heard.put_nowait(message)

    await listener.add_listener(CONTROL_CHANNEL, on_notify)
    try:
        async with running_api(s) as api:
            url = api.url + "/api/v1/inventory/netbox/webhook"
            async with httpx.AsyncClient(timeout=10) as client:
                body = json.dumps({"event": "updated", "model": "device", "data": {"id": 7}})
                unsigned = await client.post(url, content=body)
                assert unsigned.status_code == 401
                forged = await client.post(
                    url, content=body, headers={"X-Hook-Signature": "0" * 128}
                )
                assert forged.status_code == 401
                assert heard.empty()
            # NetBox itself: a webhook with the secret, an event rule on devices.
            hook = nb_env.api.create(
                "extras/webhooks",
                {
                    "name": "netmon",
                    "payload_url": url,
                    "http_method": "POST",
                    "http_content_type": "application/json",
                    "secret": HOOK_SECRET,
                },
            )
            nb_env.api.create(
                "extras/event-rules",
                {
                    "name": "netmon devices",
                    "object_types": ["dcim.device"],
                    "event_types": ["object_created", "object_updated", "object_deleted"],
                    "action_type": "webhook",
                    "action_object_type": "extras.webhook",
                    "action_object_id": hook["id"],
                },
            )
            nb = NetBoxLab(nb_env.api)
            device_id = nb.add("hooked", 16101)
            async with asyncio.timeout(60):
                while True:
                    message = await heard.get()
                    if f"dcim.device:{device_id}" in message["args"]["ids"]:
                        break
            assert message["args"]["full"] is False
    finally:
        await listener.close()


async def test_webhook_is_not_there_without_a_secret(api_database_url: str, tmp_path: Path) -> None:
    s = load_settings(
        None,
        data_dir=tmp_path / "data",
        database={"url": api_database_url},
        api={"port": 0},
    )
    async with running_api(s) as api, httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(api.url + "/api/v1/inventory/netbox/webhook", content=b"{}")
        assert answer.status_code == 404
        runs = await client.get(
            api.url + "/api/v1/inventory/sync",
            headers={"Authorization": f"Bearer {api.tokens['viewer']}"},
        )
        assert runs.status_code == 200
        assert runs.json() == {"items": []}
        anonymous = await client.get(api.url + "/api/v1/inventory/sync")
        assert anonymous.status_code == 401


def test_cli_dry_run_shows_netbox_devices_then_applies(
    nb_env: NetBoxPeer, api_database_url: str, tmp_path: Path, lab_keys: None, restore_logging: None
) -> None:
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "groups.yaml").write_text("lab: {data: {tasks: [system]}}\n")
    (folder / "defaults.yaml").write_text(
        "data:\n  snmp:\n    version: 2c\n    community: {env: NETMON_LAB_AUTH_KEY}\n"
    )
    nb = NetBoxLab(nb_env.api)
    nb.add("edge-1", 16101)
    nb.add("edge-2", 16102)
    config = tmp_path / "netmon.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"database: {{url: '{api_database_url}'}}\n"
        f"poller: {{inventory: {folder}}}\n"
        "log: {level: error}\n"
        "inventory:\n"
        "  poller_id: cli\n"
        "  netbox:\n"
        f"    url: {nb_env.url}\n"
        f"    token: {{env: {TOKEN_ENV}}}\n"
        "    filters: {tag: monitored}\n"
    )
    runner = CliRunner()
    dry = runner.invoke(app, ["-c", str(config), "inventory", "sync", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == {
        "added": ["edge-1", "edge-2"],
        "changed": [],
        "retired": [],
        "unchanged": 0,
    }
    table = runner.invoke(app, ["-c", str(config), "inventory", "sync", "--dry-run"])
    assert "edge-1" in table.stdout
    assert "lab-ams" in table.stdout
    done = runner.invoke(app, ["-c", str(config), "inventory", "sync"])
    assert done.exit_code == 0, done.output
    again = runner.invoke(app, ["-c", str(config), "inventory", "sync", "--dry-run", "--json"])
    assert json.loads(again.stdout)["unchanged"] == 2


async def test_a_change_made_just_after_the_full_read_is_not_lost(
    nb_env: NetBoxPeer, db: Database, settings: Settings, tmp_path: Path, lab_keys: None
) -> None:
    """The change log's cursor is placed before the full read: a change between that
    read and the loop's first look at the log is read then (it used to start past it)."""
    folder = tmp_path / "inventory"
    async with Lab(devices=1, base_port=0, interfaces=2, ssh=False) as lab:
        fast_inventory(lab, folder)
    nb = NetBoxLab(nb_env.api)
    device_id = nb.add("before", 16101)
    s = nb_settings(settings, nb_env, tmp_path / "data")
    sync = InventorySync(s, db, make_source(s, folder, TaskRegistry.discover([])))
    try:
        assert (await sync.reconcile()).summary()["added"] == ["before"]
        nb_env.api.update("dcim/devices", device_id, {"name": "after"})
        loop = asyncio.create_task(sync.run())
        try:

            async def renamed() -> bool:
                return "after" in await rows(db)

            await eventually(renamed, what="the rename made before the loop's first read")
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    finally:
        await sync.source.close()


async def test_maintenance_in_netbox_is_a_silence_on_the_device(
    nb_env: NetBoxPeer, db: Database, settings: Settings, tmp_path: Path, lab_keys: None
) -> None:
    folder = tmp_path / "inventory"
    async with Lab(devices=1, base_port=0, interfaces=2, ssh=False) as lab:
        fast_inventory(lab, folder)
    nb = NetBoxLab(nb_env.api)
    for field in ("maintenance_start", "maintenance_end"):
        nb_env.api.create(
            "extras/custom-fields",
            {"name": field, "type": "datetime", "object_types": ["dcim.device"]},
        )
    window = nb_env.api.create("extras/tags", {"name": "maintenance", "slug": "maintenance"})
    device_id = nb.add("in-maintenance", 16101)
    nb.add("working", 16102)
    nb_env.api.update(
        "dcim/devices",
        device_id,
        {
            "tags": [nb.tag["id"], window["id"]],
            "custom_fields": {
                "rack_row": "R1",
                "maintenance_start": "2026-01-01T22:00:00Z",
                "maintenance_end": "2099-01-01T02:00:00Z",
            },
        },
    )
    s = nb_settings(settings, nb_env, tmp_path / "data")
    sync = InventorySync(s, db, make_source(s, folder, TaskRegistry.discover([])))
    try:
        assert (await sync.reconcile()).ok
        silences = await db.pool.fetch(
            "SELECT source, matchers, starts_at, ends_at, comment FROM silences"
        )
        assert len(silences) == 1
        assert silences[0]["source"] == "inventory"
        assert json.loads(silences[0]["matchers"]) == ['device="in-maintenance"']
        assert silences[0]["starts_at"].isoformat() == "2026-01-01T22:00:00+00:00"
        assert silences[0]["ends_at"].isoformat() == "2099-01-01T02:00:00+00:00"
        # The tag and fields removed in NetBox: the silence goes with the next sync.
        nb_env.api.update(
            "dcim/devices",
            device_id,
            {
                "tags": [nb.tag["id"]],
                "custom_fields": {"maintenance_start": None, "maintenance_end": None},
            },
        )
        assert (await sync.reconcile()).ok
        assert await db.pool.fetchval("SELECT count(*) FROM silences") == 0
    finally:
        await sync.source.close()
