"""The NetBox source, client, Nornir plugin, webhooks and write-back against a real
NetBox 4.7.3: the session's peer (tests/netbox_peer.py).

Writing to NetBox is slow (a device takes a tenth of a second or more on runserver), so
the tests that only read share one seeded lab (:class:`TestSeededLab`); the others
empty NetBox (the ``netbox`` fixture) and make what they need, as little as they can.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nornir import InitNornir

from netmon.config import NetBoxSettings
from netmon.inventory.model import InventoryHost
from netmon.inventory.netbox import (
    NetBoxAuthError,
    NetBoxClient,
    NetBoxRequestError,
    NetBoxSource,
    NetBoxTimeoutError,
    NetBoxUnavailableError,
    journal,
    parse_event,
    verify_signature,
)
from tests.netbox_peer import NetBoxPeer
from tests.netbox_seed import NetBoxApi, SeededLab, seed_lab

pytestmark = pytest.mark.slow

JSON = dict[str, Any]
TOKEN_ENV = "NETMON_TEST_NETBOX_TOKEN"
DEVICES = "/api/dcim/devices/"


def make_settings(url: str, **overrides: Any) -> NetBoxSettings:
    values: dict[str, Any] = {
        "url": url,
        "token": {"env": TOKEN_ENV},
        "custom_fields": ["rack_row"],
        "maintenance_tag": "netmon-maintenance",
        "platform_map": {"cisco-ios": "cisco_ios"},
        "timeout": "30s",  # a busy two-core machine runs several NetBoxes
        "retries": 1,
    }
    values.update(overrides)
    return NetBoxSettings(**values)


@pytest.fixture
def token_env(netbox_peer: NetBoxPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, netbox_peer.token)


@pytest.fixture
def nb_settings(netbox: NetBoxPeer, token_env: None) -> Any:
    """Settings for the peer (emptied for the test), the token by reference."""
    return lambda **overrides: make_settings(netbox.url, **overrides)


def by_id(hosts: list[InventoryHost]) -> dict[str, InventoryHost]:
    return {h.external_id: h for h in hosts}


async def fetch(settings: NetBoxSettings) -> Any:
    client = NetBoxClient(settings, backoff=0.05)
    try:
        return await NetBoxSource(settings, client).fetch_all()
    finally:
        await client.close()


def bare_devices(api: NetBoxApi, n: int) -> tuple[JSON, list[JSON]]:
    """``n`` planned devices at a site of their own, nothing else: far cheaper than
    seed_lab (no interfaces, addresses, cables)."""
    site = api.create("dcim/sites", {"name": "bulk", "slug": "bulk"})
    maker = api.create("dcim/manufacturers", {"name": "Bulk", "slug": "bulk"})
    kind = api.create("dcim/device-types", {"manufacturer": maker["id"], "model": "B", "slug": "b"})
    role = api.create("dcim/device-roles", {"name": "bulk", "slug": "bulk"})
    devices = api.create(
        "dcim/devices",
        [
            {"name": f"bulk-{i:03d}", "site": site["id"], "device_type": kind["id"],
             "role": role["id"], "status": "planned"}
            for i in range(n)
        ],
    )  # fmt: skip
    return site, devices


# --- one seeded lab, read by many tests -------------------------------------------------

FUTURE = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
ROUTER_CONTEXT = {
    "netmon": {
        "groups": ["core", "absent"],
        "cli": {"username": "netmon", "password": {"env": "CLI_PW"}},
    }
}


@dataclass
class Lab:
    peer: NetBoxPeer
    seeded: SeededLab
    extra: list[JSON]  # an unnamed device, one without an address, a planned one

    def settings(self, **overrides: Any) -> NetBoxSettings:
        return make_settings(self.peer.url, **overrides)

    @property
    def device_ids(self) -> list[int]:
        return [d["id"] for d in [*self.seeded.devices, *self.extra]]


@pytest.fixture(scope="class")
def lab(netbox_peer: NetBoxPeer) -> Iterator[Lab]:
    """seed_lab(api, 8); device 1 (the chassis' master) in maintenance until FUTURE; a
    config context for routers; three devices netmon cannot or need not poll."""
    netbox_peer.reset()
    api = netbox_peer.api
    seeded = seed_lab(api, 8)
    dev = seeded.devices
    api.update(
        "dcim/devices",
        dev[1]["id"],
        {"custom_fields": {"maintenance_start": "2026-01-01T00:00:00Z",
                           "maintenance_end": FUTURE.isoformat()}},
    )  # fmt: skip
    api.create(
        "extras/config-contexts",
        {"name": "netmon-routers", "weight": 1000, "roles": [seeded.roles[0]["id"]],
         "data": ROUTER_CONTEXT},
    )  # fmt: skip
    extra = api.create(
        "dcim/devices",
        [
            {"name": name, "device_type": dev[3]["device_type"]["id"],
             "role": dev[3]["role"]["id"], "site": dev[3]["site"]["id"], "status": status}
            for name, status in ((None, "active"), ("no-ip", "active"), ("planned", "planned"))
        ],
    )  # fmt: skip
    yield Lab(netbox_peer, seeded, extra)
    netbox_peer.reset()


@pytest.mark.usefixtures("token_env")
class TestSeededLab:
    """Tests that read the lab and change nothing another test of the class reads."""

    async def test_fetch_all(self, lab: Lab) -> None:
        dev = lab.seeded.devices
        fetched = await fetch(lab.settings())
        hosts = by_id(fetched.hosts)
        # 8 devices (two of them one chassis), the VM, and the planned device.
        assert len(fetched.hosts) == 9, [h.name for h in fetched.hosts]
        assert fetched.complete
        reasons = {s.external_id: s.reason for s in fetched.skipped}
        assert reasons == {
            f"dcim.device:{lab.extra[0]['id']}": "no_name",
            f"dcim.device:{lab.extra[1]['id']}": "no_address",
        }
        assert fetched.total == 11
        planned = hosts[f"dcim.device:{lab.extra[2]['id']}"]
        assert planned.lifecycle == "unpolled"
        assert planned.address is None

        first = hosts[f"dcim.device:{dev[0]['id']}"]
        assert first.name == "lab-ams-rtr-000"
        assert first.address == "10.77.0.1"  # IPv4 before IPv6, the prefix length gone
        assert first.platform == "cisco_ios"  # platform_map
        assert (first.site, first.role, first.tags) == ("lab-ams", "router", ("monitored",))
        assert first.labels == {
            "site": "lab-ams",
            "region": "lab-eu-west",
            "role": "router",
            "tenant": "lab-network",
            "platform": "cisco-ios",
            "cf_rack_row": "R1",
        }
        assert first.lifecycle == "active"
        assert first.note == "status active"
        # The rendered config context: the device's local context and the routers' one.
        assert first.data == {
            "poll_interval": 30,
            "snmp": {"port": 161},
            "cli": {"username": "netmon", "password": {"env": "CLI_PW"}},
        }
        assert first.groups == ("core", "absent")

        chassis = hosts[f"dcim.virtualchassis:{lab.seeded.virtual_chassis['id']}"]
        assert chassis.name == "lab-ams-stack"
        assert chassis.address == "10.77.0.2"  # the master's (device 1)
        assert chassis.labels["virtual_chassis"] == "lab-ams-stack"
        assert f"dcim.device:{dev[1]['id']}" not in hosts
        assert f"dcim.device:{dev[2]['id']}" not in hosts
        (window,) = chassis.maintenance
        assert window.starts_at == datetime(2026, 1, 1, tzinfo=UTC)
        assert window.ends_at == FUTURE

        fra = [h for h in fetched.hosts if h.site == "lab-fra"]
        assert len(fra) == 4
        assert {h.labels["region"] for h in fra} == {"lab-eu-central"}

        vm = hosts[f"virtualization.virtualmachine:{lab.seeded.virtual_machine['id']}"]
        assert vm.name == "lab-vm-01"
        assert vm.labels["cluster"] == "lab-ams-kvm"
        assert vm.address == "10.77.0.9"

        # Both cables end on the chassis (members 1 and 2) at one side.
        assert fetched.cables is not None
        ends = {(c.a_host, c.a_port, c.b_host, c.b_port) for c in fetched.cables}
        assert ends == {
            (first.external_id, "Ethernet1", chassis.external_id, "Ethernet1"),
            (first.external_id, "Ethernet2", chassis.external_id, "Ethernet1"),
        }
        assert {c.external_id for c in fetched.cables} == {
            f"dcim.cable:{c['id']}" for c in lab.seeded.cables
        }

    async def test_without_vms_and_cables(self, lab: Lab) -> None:
        fetched = await fetch(lab.settings(virtual_machines=False, cables=False))
        assert fetched.cables is None
        assert not any(h.external_id.startswith("virtualization.") for h in fetched.hosts)
        assert len(fetched.hosts) == 8

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"site": "lab-fra"},
             {"lab-fra-rtr-004", "lab-fra-sw-005", "lab-fra-sw-006", "lab-fra-sw-007"}),
            ({"site": ["lab-fra"], "role": "router"}, {"lab-fra-rtr-004"}),
            ({"cf_rack_row": "R1", "role": "router"}, {"lab-ams-rtr-000", "lab-fra-rtr-004"}),
            ({"tag": "netmon-maintenance"}, {"lab-ams-stack"}),
            ({"status": ["offline", "failed"]}, set()),
            ({"name__n": "planned", "tag__n": "monitored"}, set()),  # the two skipped
        ],
    )  # fmt: skip
    async def test_filters(self, lab: Lab, filters: dict[str, Any], expected: set[str]) -> None:
        fetched = await fetch(lab.settings(filters=filters, virtual_machines=False))
        assert {h.name for h in fetched.hosts} == expected

    async def test_filters_apply_to_vms_unless_vm_filters(self, lab: Lab) -> None:
        at_fra = await fetch(lab.settings(filters={"site": "lab-fra"}))
        assert not any(h.name == "lab-vm-01" for h in at_fra.hosts)
        own = await fetch(
            lab.settings(filters={"site": "lab-fra"}, vm_filters={"tag": "monitored"})
        )
        assert any(h.name == "lab-vm-01" for h in own.hosts)

    async def test_a_bad_filter_value_names_the_filter(self, lab: Lab) -> None:
        with pytest.raises(NetBoxRequestError) as caught:
            await fetch(lab.settings(filters={"site": "nowhere"}))
        message = str(caught.value)
        assert caught.value.status == 400
        assert "(parameter site)" in message
        assert "nowhere is not one of" in message
        assert "check inventory.netbox.filters" in message

    @pytest.mark.parametrize(
        ("settings", "words"),
        [
            ({"filters": {"sitee": "lab-fra"}}, "filter sitee on /api/dcim/devices/ and sitee on"),
            (
                {"filters": {"cf_rack_rows": "R1"}, "virtual_machines": False},
                "filter cf_rack_rows on /api/dcim/devices/: ",
            ),
            (
                {"filters": {"device_type": "lr-4000"}},
                "filter device_type on /api/virtualization/virtual-machines/: ",
            ),
        ],
    )
    async def test_an_unknown_filter_is_refused(
        self, lab: Lab, settings: dict[str, Any], words: str
    ) -> None:
        """NetBox ignores a filter it does not know: it would select every device."""
        with pytest.raises(NetBoxRequestError) as caught:
            await fetch(lab.settings(**settings))
        assert words in str(caught.value)
        assert "inventory.netbox.filters" in str(caught.value)

    async def test_a_wrong_token_is_refused(self, lab: Lab) -> None:
        wrong = "nbt_" + "a" * 12 + "." + "b" * 40
        for token in (wrong, "0" * 40):
            client = NetBoxClient(lab.settings(), token=token)
            try:
                with pytest.raises(NetBoxAuthError) as caught:
                    await client.status()
            finally:
                await client.close()
            message = str(caught.value)
            assert message.startswith("NetBox refused the token (403 Invalid v")
            assert "check inventory.netbox.token and its permissions" in message
            assert token not in message

    async def test_v1_and_v2_tokens(self, lab: Lab) -> None:
        if lab.peer.v1_token is None:
            pytest.skip("the peer has no v1 token")
        for token in (lab.peer.token, lab.peer.v1_token):
            client = NetBoxClient(lab.settings(), token=token)
            try:
                assert (await client.version())[:2] == (4, 7)
                assert len(await client.all(DEVICES, {"fields": "id"})) == 11
            finally:
                await client.close()

    @pytest.mark.parametrize("page_size", [1, 2, 3, 10, 500])
    async def test_pages(self, lab: Lab, page_size: int) -> None:
        client = NetBoxClient(lab.settings(), page_size=page_size)
        try:
            pages = [p async for p in client.pages(DEVICES, {"fields": "id", "ordering": "id"})]
        finally:
            await client.close()
        ids = [d["id"] for page in pages for d in page]
        assert ids == sorted(lab.device_ids)  # each once, in NetBox's order
        assert len(pages) == -(-11 // page_size)

    def test_nornir_plugin(self, lab: Lab, tmp_path: Path) -> None:
        (tmp_path / "groups.yaml").write_text("core:\n  data:\n    poll_interval: 15\n")
        (tmp_path / "defaults.yaml").write_text("data:\n  tasks: [system]\n")
        nr = InitNornir(
            inventory={
                "plugin": "NetmonNetBoxInventory",
                "options": {
                    "nb_url": lab.peer.url,
                    "nb_token": lab.peer.token,
                    "filter_parameters": {"site": "lab-ams"},
                    "group_file": str(tmp_path / "groups.yaml"),
                    "defaults_file": str(tmp_path / "defaults.yaml"),
                    "netbox": {"platform_map": {"cisco-ios": "cisco_ios"}},
                },
            },
            logging={"enabled": False},
        )
        hosts = nr.inventory.hosts
        # lab-ams: devices 0-3 (1 and 2 are the chassis), the VM; not the unpolled ones.
        assert set(hosts) == {"lab-ams-rtr-000", "lab-ams-stack", "lab-ams-sw-003", "lab-vm-01"}
        router = hosts["lab-ams-rtr-000"]
        assert router.hostname == "10.77.0.1"
        assert router.platform == "cisco_ios"
        assert [g.name for g in router.groups] == ["core"]  # "absent" is not in the file
        assert router.get("poll_interval") == 30  # the device's own context beats the group
        assert router["tasks"] == ["system"]  # from the defaults
        assert router["cli"] == {"username": "netmon", "password": {"env": "CLI_PW"}}
        assert router["site"] == "lab-ams"
        assert router["tags"] == ["monitored"]
        assert router["serial"] == "LAB000000"  # NetBox's object, as NetBoxInventory2 has it
        assert router["device_type"]["model"] == "LR-4000"
        assert router["external_id"] == f"dcim.device:{lab.seeded.devices[0]['id']}"
        stack = hosts["lab-ams-stack"]
        assert stack.hostname == "10.77.0.2"
        assert stack["maintenance"][0]["ends_at"] == FUTURE.isoformat()

    async def test_journal_entries(self, lab: Lab) -> None:
        client = NetBoxClient(lab.settings())
        dev = lab.seeded.devices[0]
        chassis, vm = lab.seeded.virtual_chassis, lab.seeded.virtual_machine
        try:
            results = [
                await journal(client, f"dcim.device:{dev['id']}", "info", "polled"),
                await journal(client, f"dcim.virtualchassis:{chassis['id']}", "warning", "gone"),
                await journal(client, f"virtualization.virtualmachine:{vm['id']}", "info", "vm"),
            ]
            missing = await journal(client, "dcim.device:999999", "info", "nobody")
            bad = await journal(client, "lab-1", "info", "not netbox")
        finally:
            await client.close()
        assert all(r.ok and r.entry_id for r in results), results
        entries = lab.peer.api.list("extras/journal-entries")
        assert {
            (e["assigned_object_type"], e["kind"]["value"], e["comments"]) for e in entries
        } == {
            ("dcim.device", "info", "polled"),
            ("dcim.virtualchassis", "warning", "gone"),
            ("virtualization.virtualmachine", "info", "vm"),
        }
        assert not missing.ok
        assert missing.error is not None
        assert "(400)" in missing.error
        assert not bad.ok

    async def test_fetch_ids_of_a_chassis(self, lab: Lab) -> None:
        """Last in the class: it takes the chassis' master away (and gives it back)."""
        vc = lab.seeded.virtual_chassis
        chassis_id = f"dcim.virtualchassis:{vc['id']}"
        api = lab.peer.api
        async with NetBoxSource(lab.settings()) as source:
            member = await source.fetch_ids([f"dcim.device:{lab.seeded.devices[2]['id']}"])
            whole = await source.fetch_ids([chassis_id])
            api.update("dcim/virtual-chassis", vc["id"], {"master": None})
            try:
                masterless = await source.fetch_ids([chassis_id])
            finally:
                master = lab.seeded.devices[1]["id"]
                api.update("dcim/virtual-chassis", vc["id"], {"master": master})
            gone = await source.fetch_ids(["dcim.virtualchassis:999999"])
        assert [h.external_id for h in member.hosts] == [chassis_id]
        assert [h.external_id for h in whole.hosts] == [chassis_id]
        assert not whole.complete
        assert whole.total == 1
        # No master: the member at the lowest position (device 1) stands for the chassis.
        assert [(h.external_id, h.address) for h in masterless.hosts] == [(chassis_id, "10.77.0.2")]
        assert gone.hosts == []
        assert gone.total == 0


# --- paging over more devices than a page ---------------------------------------------------


async def test_paging_reads_every_device_once(netbox: NetBoxPeer, nb_settings: Any) -> None:
    _, devices = bare_devices(netbox.api, 120)
    expected = sorted(d["id"] for d in devices)
    for page_size in (50, 7, 120, 500):
        client = NetBoxClient(nb_settings(), page_size=page_size)
        try:
            pages = [p async for p in client.pages(DEVICES, {"fields": "id", "ordering": "id"})]
        finally:
            await client.close()
        assert [d["id"] for page in pages for d in page] == expected, page_size
        assert len(pages) == -(-120 // page_size)

    # Devices deleted between two pages shift the offsets after them: NetBox's count
    # moves, the list is read again by id, and no device that stayed is missed.
    client = NetBoxClient(nb_settings(), page_size=30, concurrency=1)
    seen: list[int] = []
    try:
        async for page in client.pages(DEVICES, {"fields": "id", "ordering": "id"}):
            seen.extend(d["id"] for d in page)
            if len(seen) == 30:
                netbox.api.bulk_delete("dcim/devices", expected[:10])
    finally:
        await client.close()
    assert set(expected[10:]) <= set(seen)
    assert seen[-90:] == expected[30:]  # the cursor's pass, after the shifted offsets


# --- the change log and reading some hosts again --------------------------------------------


async def test_changes_since_then_fetch_ids(netbox: NetBoxPeer, nb_settings: Any) -> None:
    lab = seed_lab(netbox.api, 7)
    dev = lab.devices
    api = netbox.api
    async with NetBoxSource(nb_settings(filters={"tag": "monitored"})) as source:
        start = await source.changes_since(None)
        assert start.ids == frozenset()
        assert not start.full
        assert start.cursor.time is not None
        again = await source.changes_since(start.cursor)
        assert again.ids == frozenset()
        assert not again.full
        assert again.changes == 0

        api.update("dcim/devices", dev[3]["id"], {"name": "renamed-003"})
        api.update("dcim/devices", dev[4]["id"], {"status": "offline"})
        api.delete("dcim/devices", dev[5]["id"])
        api.update("dcim/devices", dev[6]["id"], {"tags": []})  # leaves the selection
        made = api.create(
            "dcim/devices",
            {"name": "new-one", "device_type": dev[0]["device_type"]["id"],
             "role": dev[0]["role"]["id"], "site": dev[0]["site"]["id"]},
        )  # fmt: skip
        # Device 0's primary address is edited: NetBox logs the address, not the device.
        ip = dev[0]["primary_ip4"]["id"]
        api.update("ipam/ip-addresses", ip, {"address": "10.77.9.1/16"})
        # A chassis member changed: its chassis may have too.
        api.update("dcim/devices", dev[2]["id"], {"serial": "X"})
        batch = await source.changes_since(again.cursor)
        assert batch.ids == {
            *(f"dcim.device:{dev[i]['id']}" for i in (0, 2, 3, 4, 5, 6)),
            f"dcim.device:{made['id']}",
            f"dcim.virtualchassis:{lab.virtual_chassis['id']}",
        }
        assert not batch.full, batch.reasons
        assert batch.newest is not None
        assert abs(batch.newest - time.time()) < 300

        # The overlap reads the same changes again; they are not reported twice.
        quiet = await source.changes_since(batch.cursor)
        assert quiet.ids == frozenset()
        assert not quiet.full
        assert quiet.changes == 0

        api.update("dcim/sites", lab.sites[0]["id"], {"description": "moved"})
        site = await source.changes_since(quiet.cursor)
        assert site.full
        assert site.reasons == (f"dcim.site {lab.sites[0]['id']} update",)

        fetched = await source.fetch_ids([*batch.ids, "lab-1", "dcim.device:999999"])
    assert not fetched.complete
    assert fetched.cables is None
    hosts = by_id(fetched.hosts)
    # Deleted (5), untagged (6) and the new untagged device are absent: gone from the
    # selection. The member (2) is there as its chassis.
    assert set(hosts) == {
        f"dcim.device:{dev[0]['id']}",
        f"dcim.virtualchassis:{lab.virtual_chassis['id']}",
        f"dcim.device:{dev[3]['id']}",
        f"dcim.device:{dev[4]['id']}",
    }
    assert hosts[f"dcim.device:{dev[0]['id']}"].address == "10.77.9.1"
    assert hosts[f"dcim.device:{dev[3]['id']}"].name == "renamed-003"
    assert hosts[f"dcim.device:{dev[4]['id']}"].lifecycle == "muted"
    assert fetched.total == 4


# --- NetBox down, slow -----------------------------------------------------------------


async def test_netbox_down_fails_after_the_retries(netbox: NetBoxPeer, nb_settings: Any) -> None:
    netbox.stop()
    settings = nb_settings(retries=3)
    client = NetBoxClient(settings, backoff=0.05)
    started = time.monotonic()
    try:
        with pytest.raises(NetBoxUnavailableError) as caught:
            await NetBoxSource(settings, client).fetch_all()
    finally:
        await client.close()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "(4 tries): cannot connect" in message
    assert "check inventory.netbox.url" in message


async def test_a_paused_netbox_times_out(netbox: NetBoxPeer, nb_settings: Any) -> None:
    netbox.pause()
    client = NetBoxClient(nb_settings(timeout="1s", retries=1), backoff=0.05)
    started = time.monotonic()
    try:
        with pytest.raises(NetBoxTimeoutError) as caught:
            await client.status()
    finally:
        await client.close()
        netbox.resume()
    assert 2 <= time.monotonic() - started < 5
    assert "did not answer GET /api/status/ within 1 s (2 tries)" in str(caught.value)


# --- webhooks ----------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # the stdlib's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((body, dict(self.headers)))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_real_webhook_verifies_and_parses(netbox: NetBoxPeer) -> None:
    api = netbox.api
    site, devices = bare_devices(api, 2)
    chassis = api.create("dcim/virtual-chassis", {"name": "hooked"})
    api.update("dcim/devices", devices[0]["id"], {"virtual_chassis": chassis["id"],
                                                  "vc_position": 1})  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    received: list[tuple[bytes, dict[str, str]]] = []
    server.received = received  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "s3cret-for-the-test"
    try:
        hook = api.create(
            "extras/webhooks",
            {"name": "netmon", "payload_url": f"http://127.0.0.1:{server.server_port}/hook",
             "http_method": "POST", "http_content_type": "application/json", "secret": secret},
        )  # fmt: skip
        api.create(
            "extras/event-rules",
            {"name": "netmon", "object_types": ["dcim.device", "dcim.site"],
             "event_types": ["object_created", "object_updated", "object_deleted"],
             "action_type": "webhook", "action_object_type": "extras.webhook",
             "action_object_id": hook["id"]},
        )  # fmt: skip
        api.update("dcim/devices", devices[0]["id"], {"serial": "NEW"})
        api.update("dcim/sites", site["id"], {"description": "x"})
        api.delete("dcim/devices", devices[1]["id"])
        deadline = time.monotonic() + 60
        while len(received) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 3, netbox.server.log_tail() if netbox.server else received
    events = {}
    for body, headers in received:
        signature = headers.get("X-Hook-Signature")
        assert verify_signature(body, secret, signature)
        assert not verify_signature(body, "wrong", signature)
        assert not verify_signature(body + b" ", secret, signature)
        assert not verify_signature(body, secret, None)
        event = parse_event(body)
        events[event.object_type, event.event] = event
    update = events["dcim.device", "updated"]
    assert update.changed == {
        f"dcim.device:{devices[0]['id']}",
        f"dcim.virtualchassis:{chassis['id']}",  # from the snapshots
    }
    assert not update.full
    deleted = events["dcim.device", "deleted"]
    assert deleted.changed == {f"dcim.device:{devices[1]['id']}"}
    assert not deleted.full
    moved = events["dcim.site", "updated"]
    assert moved.full
    assert moved.changed == frozenset()
    assert moved.reason == f"dcim.site {site['id']} update"
    body = json.loads(received[0][0])
    assert {"event", "timestamp", "object_type", "data", "snapshots", "request"} <= set(body)
