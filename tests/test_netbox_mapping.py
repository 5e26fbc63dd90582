"""NetBox objects to netmon hosts, and NetBox webhook bodies to changes; pure. The
fixtures are what NetBox 4.7.3 sent (tests/data/netbox/, captured from the test peer
with ``seed_lab``, URLs renamed), each test changing only what it is about."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from netmon.config import NetBoxSettings
from netmon.inventory.model import InventoryHost, MaintenanceWindow, Skipped
from netmon.inventory.netbox.mapping import (
    VcMember,
    external_id,
    map_device,
    parse_external_id,
    strip_prefix,
)
from netmon.inventory.netbox.webhook import parse_event, verify_signature

DATA = Path(__file__).parent / "data" / "netbox"
NOW = datetime(2026, 12, 7, 18, 30, 12, tzinfo=UTC)
# The seed's sites: lab-ams (id 1) in region lab-eu-west, lab-fra (id 2) in lab-eu-central.
REGIONS: dict[int, Any] = {
    1: {"id": 1, "name": "Lab EU West", "slug": "lab-eu-west", "_depth": 0},
    2: {"id": 2, "name": "Lab EU Central", "slug": "lab-eu-central", "_depth": 0},
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def settings(**overrides: Any) -> NetBoxSettings:
    values: dict[str, Any] = {
        "url": "https://netbox.example.net",
        "token": {"env": "NETBOX_TOKEN"},
        "custom_fields": ["rack_row"],
        "maintenance_tag": "netmon-maintenance",
    }
    values.update(overrides)
    return NetBoxSettings(**values)


def host(obj: dict[str, Any], kind: str = "device", **overrides: Any) -> InventoryHost:
    result = map_device(obj, kind, settings(**overrides), REGIONS, now=NOW)  # type: ignore[arg-type]
    assert isinstance(result, InventoryHost), result
    return result


def skipped(obj: dict[str, Any], **overrides: Any) -> Skipped:
    result = map_device(obj, "device", settings(**overrides), REGIONS, now=NOW)
    assert isinstance(result, Skipped), result
    return result


def with_context(netmon: Any) -> dict[str, Any]:
    device = load("device")
    device["config_context"] = {"ntp": ["10.0.0.1"], "netmon": netmon}
    return device


# --- identity, address ------------------------------------------------------------------


def test_a_device() -> None:
    h = host(load("device"))
    assert h.name == "lab-ams-rtr-000"
    assert h.external_id == "dcim.device:1"
    assert h.address == "10.77.0.1"  # primary_ip4 10.77.0.1/16, IPv4 first
    assert h.platform == "cisco-ios"
    assert (h.site, h.role, h.tags) == ("lab-ams", "router", ("monitored",))
    assert h.labels == {
        "site": "lab-ams",
        "region": "lab-eu-west",
        "role": "router",
        "tenant": "lab-network",
        "platform": "cisco-ios",
        "cf_rack_row": "R1",
    }
    assert h.lifecycle == "active"
    assert h.note == "status active"
    assert h.data == {"snmp": {"port": 161}, "poll_interval": 30}
    assert h.groups == ()
    assert h.port is None
    assert h.maintenance == ()


def test_ipv6_when_there_is_no_ipv4() -> None:
    device = load("device")
    device["primary_ip4"] = None
    assert device["primary_ip6"]["address"] == "2001:db8:77::1/64"
    assert host(device).address == "2001:db8:77::1"  # bare: no prefix, no brackets


def test_no_address_is_skipped_unless_not_polled() -> None:
    device = load("device")
    device["primary_ip4"] = device["primary_ip6"] = None
    result = skipped(device)
    assert result.reason == "no_address"
    assert result.external_id == "dcim.device:1"
    assert "lab-ams-rtr-000" in result.message
    device["status"] = {"value": "planned", "label": "Planned"}
    planned = host(device)
    assert planned.lifecycle == "unpolled"
    assert planned.address is None


def test_oob_ip_is_not_the_management_address() -> None:
    device = load("device")
    device["primary_ip4"] = device["primary_ip6"] = None
    device["oob_ip"] = {"id": 9, "address": "192.0.2.9/24", "family": {"value": 4}}
    assert skipped(device).reason == "no_address"


def test_an_unnamed_device_is_skipped() -> None:
    device = load("device")
    device["name"] = None
    result = skipped(device)
    assert (result.reason, result.name, result.external_id) == ("no_name", "#1", "dcim.device:1")


@pytest.mark.parametrize(
    ("address", "bare"),
    [("10.0.0.1/24", "10.0.0.1"), ("2001:DB8::0001/64", "2001:db8::1"), ("10.0.0.1", "10.0.0.1")],
)
def test_strip_prefix(address: str, bare: str) -> None:
    assert strip_prefix(address) == bare


def test_external_ids() -> None:
    assert external_id("vm", 3) == "virtualization.virtualmachine:3"
    assert parse_external_id("dcim.virtualchassis:7") == ("virtualchassis", 7)
    for bad in ("dcim.device", "dcim.device:x", "lab-1", "ipam.ipaddress:1"):
        with pytest.raises(ValueError, match="not a NetBox external id"):
            parse_external_id(bad)


# --- labels, platform, status -------------------------------------------------------------


def test_custom_fields_as_labels() -> None:
    device = load("device")
    device["custom_fields"].update(
        rack_row=None, floor=3, monitored=True, owner_team={"id": 4, "name": "NOC", "slug": "noc"},
        circuits=["c1", "c2"],
    )  # fmt: skip
    labels = host(device, custom_fields=["rack_row", "floor", "monitored", "owner_team",
                                         "circuits", "absent"]).labels  # fmt: skip
    assert "cf_rack_row" not in labels
    assert "cf_absent" not in labels
    assert labels["cf_floor"] == "3"
    assert labels["cf_monitored"] == "true"
    assert labels["cf_owner_team"] == "noc"
    assert labels["cf_circuits"] == "c1,c2"


def test_no_region_when_the_site_has_none_or_is_unknown() -> None:
    device = load("device")
    assert "region" not in map_device(device, "device", settings(), None, now=NOW).labels  # type: ignore[union-attr]
    assert "region" not in map_device(device, "device", settings(), {1: None}, now=NOW).labels  # type: ignore[union-attr]


def test_platform_map() -> None:
    assert host(load("device"), platform_map={"cisco-ios": "cisco_xe"}).platform == "cisco_xe"
    device = load("device")
    device["platform"] = None
    h = host(device)
    assert h.platform is None
    assert "platform" not in h.labels


@pytest.mark.parametrize(
    ("status", "lifecycle"),
    [
        ("active", "active"),
        ("offline", "muted"),
        ("failed", "muted"),
        ("planned", "unpolled"),
        ("staged", "unpolled"),
        ("decommissioning", "retired"),
        ("inventory", "retired"),
    ],
)
def test_status_map(status: str, lifecycle: str) -> None:
    device = load("device")
    device["status"] = {"value": status, "label": status.title()}
    h = host(device)
    assert h.lifecycle == lifecycle
    assert h.note == f"status {status}"


def test_an_unknown_status_is_unpolled_and_said() -> None:
    vm = load("vm")
    vm["status"] = {"value": "paused", "label": "Paused"}  # a VM status not in the map
    h = host(vm, "vm")
    assert h.lifecycle == "unpolled"
    assert "paused is not in inventory.netbox.status_map" in h.note
    assert host(load("device"), status_map={"active": "muted"}).lifecycle == "muted"


def test_a_vm() -> None:
    h = host(load("vm"), "vm")
    assert h.external_id == "virtualization.virtualmachine:1"
    assert h.name == "lab-vm-01"
    assert h.address == "10.77.0.9"
    assert h.role is None  # the seed's VM has none; 4.x VMs may have one
    assert h.labels == {
        "site": "lab-ams",
        "region": "lab-eu-west",
        "platform": "cisco-ios",
        "cluster": "lab-ams-kvm",
    }
    vm = load("vm")
    vm["role"] = {"id": 1, "name": "router", "slug": "router"}
    assert host(vm, "vm").role == "router"


# --- config context ----------------------------------------------------------------------


def test_context_settings_become_host_data() -> None:
    device = with_context(
        {
            "snmp": {"version": "3", "user": "netmon",
                     "auth": {"protocol": "sha256", "key": {"env": "SNMP_AUTH"}},
                     "priv": {"protocol": "aes128", "key": {"file": "/run/secrets/priv"}}},
            "cli": {"username": "netmon", "password": {"env": "CLI_PW"},
                    "key_file": "~/.ssh/id_ed25519", "host_key": {"pinned": "AAAAC3Nz"}},
            "netconf": {"port": 830, "password": None},
            "tasks": ["system", "interfaces"],
            "poll_interval": "30s",
            "groups": ["core", "ams"],
            "port": 2222,
        }
    )  # fmt: skip
    h = host(device)
    assert h.groups == ("core", "ams")
    assert h.port == 2222
    assert set(h.data) == {"snmp", "cli", "netconf", "tasks", "poll_interval"}
    assert h.data["snmp"]["auth"]["key"] == {"env": "SNMP_AUTH"}
    assert h.data["tasks"] == ["system", "interfaces"]


def test_no_context_no_data() -> None:
    device = load("device")
    device["config_context"] = {}
    assert host(device).data == {}
    del device["config_context"]  # asked with fields= that leave it out
    assert host(device).data == {}


@pytest.mark.parametrize(
    ("netmon", "path"),
    [
        ({"snmp": {"version": "2c", "community": "public-s3cret"}}, "netmon.snmp.community"),
        (
            {"snmp": {"auth": {"protocol": "sha1", "key": "authpass-s3cret"}}},
            "netmon.snmp.auth.key",
        ),
        ({"snmp": {"priv": {"protocol": "aes128", "key": 12345678}}}, "netmon.snmp.priv.key"),
        ({"cli": {"username": "u", "password": "pw-s3cret"}}, "netmon.cli.password"),
        ({"netconf": {"ssh": {"passphrase": "pp-s3cret"}}}, "netmon.netconf.ssh.passphrase"),
        ({"cli": {"enable_secret": "en-s3cret"}}, "netmon.cli.enable_secret"),
        ({"cli": {"jumps": [{"api_token": "tok-s3cret"}]}}, "netmon.cli.jumps[0].api_token"),
    ],
)
def test_a_secret_value_is_refused_without_showing_it(netmon: Any, path: str) -> None:
    result = skipped(with_context(netmon))
    assert result.reason == "secret_value"
    assert path in result.message
    assert "lab-ams-rtr-000" in result.message
    assert "{env: NAME}" in result.message
    assert "s3cret" not in result.message
    assert "12345678" not in result.message


def test_a_secret_reference_of_the_wrong_shape() -> None:
    result = skipped(with_context({"cli": {"password": {"env": "A", "file": "/b"}}}))
    assert result.reason == "bad_context"
    assert "netmon.cli.password" in result.message


@pytest.mark.parametrize(
    ("netmon", "words"),
    [
        ({"snmp": {}, "community": {"env": "X"}}, "netmon.community is not a netmon setting"),
        ({"platform": "ios"}, "netmon.platform is not a netmon setting"),
        ("snmp-v3", "netmon must be a mapping"),
        ({"snmp": ["a"]}, "netmon.snmp must be a mapping"),
        ({"groups": "core"}, "netmon.groups must be a list"),
        ({"tasks": "system"}, "netmon.tasks must be a list"),
        ({"port": 70000}, "netmon.port must be a port"),
        ({"port": True}, "netmon.port must be a port"),
    ],
)
def test_a_bad_context_is_skipped(netmon: Any, words: str) -> None:
    result = skipped(with_context(netmon))
    assert result.reason == "bad_context"
    assert words in result.message
    assert "lab-ams-rtr-000 (dcim.device:1)" in result.message


# --- maintenance -------------------------------------------------------------------------


def maintained(
    tags: bool, start: Any = None, end: Any = None, *, now: datetime = NOW
) -> InventoryHost:
    device = load("vc_master")
    device["virtual_chassis"] = None  # here: a device of its own
    if not tags:
        device["tags"] = [t for t in device["tags"] if t["slug"] != "netmon-maintenance"]
    device["custom_fields"].update(maintenance_start=start, maintenance_end=end)
    result = map_device(device, "device", settings(), REGIONS, now=now)
    assert isinstance(result, InventoryHost)
    return result


def test_maintenance_tag_with_a_window() -> None:
    h = maintained(True, "2026-12-07T22:00:00Z", "2026-12-08T02:00:00Z")
    assert h.maintenance == (
        MaintenanceWindow(
            datetime(2026, 12, 7, 22, tzinfo=UTC),
            datetime(2026, 12, 8, 2, tzinfo=UTC),
            "NetBox: tag netmon-maintenance",
        ),
    )
    assert h.note == "status active"


def test_maintenance_tag_alone_lasts_to_the_next_hour_and_a_day() -> None:
    h = maintained(True)
    (window,) = h.maintenance
    assert window.starts_at == datetime(2026, 12, 7, 18, tzinfo=UTC)
    assert window.ends_at == datetime(2026, 12, 8, 19, tzinfo=UTC)
    # The same all hour long: a sync each minute changes nothing; the next hour extends it.
    assert maintained(True, now=NOW + timedelta(minutes=29)).maintenance == h.maintenance
    (extended,) = maintained(True, now=NOW + timedelta(hours=1)).maintenance
    assert extended.ends_at == datetime(2026, 12, 8, 20, tzinfo=UTC)


def test_maintenance_fields_without_the_tag() -> None:
    assert maintained(False, None, "2026-12-08T00:00:00+01:00").maintenance == (
        MaintenanceWindow(
            datetime(2026, 12, 7, 18, tzinfo=UTC),
            datetime(2026, 12, 7, 23, tzinfo=UTC),
            "NetBox: maintenance fields",
        ),
    )
    assert maintained(False, "2026-12-01T22:00:00Z", "2026-12-02T02:00:00Z").maintenance == ()
    assert maintained(False, "2026-12-09T00:00:00Z", None).maintenance == ()  # no end


def test_a_window_that_has_passed_with_the_tag_still_set() -> None:
    h = load("vc_master")  # as seeded: tag, window 2026-12-01 22:00 to 12-02 02:00
    h["virtual_chassis"] = None
    result = host(h)
    assert result.maintenance == ()
    assert "tag netmon-maintenance set but maintenance_end" in result.note


@pytest.mark.parametrize(
    ("start", "end", "warning"),
    [
        ("soon", "2026-12-08T02:00:00Z", "maintenance_start 'soon' is not an ISO date/time"),
        (None, "31/12/2026", "maintenance_end '31/12/2026' is not an ISO date/time"),
        ("2026-12-08T02:00:00Z", "2026-12-08T01:00:00Z", "maintenance_end is not after"),
    ],
)
def test_a_bad_window_is_reported_and_the_device_taken(
    start: str | None, end: str, warning: str
) -> None:
    h = maintained(False, start, end)
    assert warning in h.note
    assert h.lifecycle == "active"
    if start == "soon":  # the end alone still makes a window
        assert h.maintenance[0].ends_at == datetime(2026, 12, 8, 2, tzinfo=UTC)
    else:
        assert h.maintenance == ()
    tagged = maintained(True, start, end)
    assert warning in tagged.note
    assert tagged.maintenance


# --- virtual chassis ---------------------------------------------------------------------


def test_the_master_stands_for_its_chassis() -> None:
    master = load("vc_master")
    h = host(master)
    assert h.name == "lab-ams-stack"
    assert h.external_id == "dcim.virtualchassis:1"
    assert h.address == "10.77.0.2"  # the master's primary address
    assert h.labels["virtual_chassis"] == "lab-ams-stack"
    assert h.site == "lab-ams"
    assert h.role == "switch"


def test_a_member_is_not_a_host() -> None:
    member = load("vc_member")
    assert member["virtual_chassis"]["master"]["id"] != member["id"]
    result = map_device(member, "device", settings(), REGIONS, now=NOW)
    assert result == VcMember("lab-ams-sw-002", "dcim.device:3", "dcim.virtualchassis:1")


def test_a_chassis_without_master_takes_the_chosen_member() -> None:
    member = copy.deepcopy(load("vc_member"))
    member["virtual_chassis"]["master"] = None
    assert isinstance(map_device(member, "device", settings(), REGIONS, now=NOW), VcMember)
    chosen = map_device(member, "device", settings(), REGIONS, now=NOW, vc_master=True)
    assert isinstance(chosen, InventoryHost)
    assert chosen.external_id == "dcim.virtualchassis:1"
    assert chosen.address == "10.77.0.3"


# --- webhook bodies (captured from the peer with secret "capture-secret") -----------------

SECRET = "capture-secret"
SIGNATURES = {
    "webhook_device_updated": "e30e4c493923f25810656e42c017259e5c11e578babd7effd9c8806741f21827"
    "2134707c7f8275113fea74e78fda7a94a99cd8be3326bf213a88bbbb01c694c4",
    "webhook_ip_updated": "caced4010d8d8d54c6983e8bf6b451259afd4752282171ae98c884c07a5c6501"
    "6b177da9c74ce3bc5ece059a1380498785bd2ad8a591faa3e7db67997e7aae22",
}


def body(name: str) -> bytes:
    return (DATA / f"{name}.body").read_bytes()


def test_signatures() -> None:
    for name, signature in SIGNATURES.items():
        raw = body(name)
        assert verify_signature(raw, SECRET, signature)
        assert verify_signature(raw, SECRET, signature.upper())  # hex is hex
        assert not verify_signature(raw, SECRET, signature[:-2] + "00")
        assert not verify_signature(raw + b"\n", SECRET, signature)  # the raw body, exactly
        assert not verify_signature(raw, "other", signature)
        assert not verify_signature(raw, SECRET, None)
        assert not verify_signature(raw, SECRET, "")
        assert not verify_signature(raw, "", signature)


def test_a_chassis_member_updated() -> None:
    event = parse_event(body("webhook_device_updated"))
    assert (event.event, event.object_type, event.object_id) == ("updated", "dcim.device", 3)
    # The member's snapshots name its chassis (a bare id): the chassis is read again too.
    assert event.changed == {"dcim.device:3", "dcim.virtualchassis:1"}
    assert not event.full


def test_an_address_updated_goes_to_its_device() -> None:
    event = parse_event(body("webhook_ip_updated"))
    assert event.object_type == "ipam.ipaddress"
    assert event.changed == {"dcim.device:1"}
    assert not event.full


def test_older_netbox_bodies_and_other_events() -> None:
    old = {"event": "deleted", "model": "virtualmachine", "data": {"id": 5},
           "snapshots": {"prechange": {}, "postchange": None}, "username": "admin"}  # fmt: skip
    event = parse_event(json.dumps(old).encode())
    assert event.object_type == "virtualization.virtualmachine"
    assert event.changed == {"virtualization.virtualmachine:5"}
    tag = parse_event(b'{"event": "created", "object_type": "extras.tag", "data": {"id": 2}}')
    assert tag.full
    assert tag.reason == "extras.tag 2 create"
    job = parse_event(b'{"event": "job_ended", "object_type": "core.job", "data": null}')
    assert job.changed == frozenset()
    assert not job.full
    other = parse_event(b'{"event": "updated", "object_type": "dcim.rack", "data": {"id": 1}}')
    assert other.changed == frozenset()
    assert not other.full


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"object_type": "dcim.device", "data": {"id": 1}}', "no 'event'"),
        (b'{"event": "moved", "object_type": "dcim.device", "data": {"id": 1}}', "unknown event"),
        (b'{"event": "updated", "data": {"id": 1}}', "no 'object_type'"),
        (b'{"event": "updated", "object_type": "dcim.device"}', "no 'data' object"),
        (b'{"event": "updated", "object_type": "dcim.device", "data": {"id": "1"}}', "data.id"),
        (b'{"event": "updated", "object_type": "dcim.device", "data": {"id": 1}, '
         b'"snapshots": []}', "'snapshots' is not an object"),
    ],
)  # fmt: skip
def test_a_malformed_body(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_event(raw)
