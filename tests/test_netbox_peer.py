"""The NetBox peer of tests/netbox_peer.py is real and usable.

Its REST API answers the session's v2 (``Bearer``) and v1 (``Token``) tokens and refuses
others; :func:`seed_lab` builds what it says; the change log records it; an event rule's
webhook is delivered by NetBox's RQ worker, signed; the peer can be paused and stopped;
and a reset between tests is quick. Uses the ``netbox_peer``/``netbox`` fixtures that
tests/conftest.py imports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.netbox_peer import NETBOX_VERSION, NetBoxPeer
from tests.netbox_seed import NetBoxApi, NetBoxApiError, reset_inventory, seed_lab

pytestmark = pytest.mark.slow


def _status(
    peer: NetBoxPeer, authorization: str | None = None, *, timeout: float = 10.0
) -> httpx.Response:
    """GET /api/status/ with ``authorization`` (the v2 token's by default)."""
    headers = {"Accept": "application/json", "Authorization": f"Bearer {peer.token}"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return httpx.get(f"{peer.url}/api/status/", headers=headers, timeout=timeout)


def test_status_answers_the_v2_and_v1_tokens(netbox_peer: NetBoxPeer) -> None:
    response = _status(netbox_peer, f"Bearer {netbox_peer.token}")
    assert response.status_code == 200, response.text
    assert response.json()["netbox-version"] == netbox_peer.version
    if netbox_peer.server is not None:
        assert netbox_peer.version == NETBOX_VERSION
        # 4.7.3 still authenticates v1 tokens; the session's own NetBox has one.
        assert netbox_peer.v1_token is not None
    if netbox_peer.v1_token is not None:
        assert len(netbox_peer.v1_token) == 40
        assert _status(netbox_peer, f"Token {netbox_peer.v1_token}").status_code == 200


def test_a_bad_token_is_refused(netbox_peer: NetBoxPeer) -> None:
    key, _, _secret = netbox_peer.token.removeprefix("nbt_").partition(".")
    for authorization in (
        f"Bearer nbt_{key}.{secrets.token_hex(20)}",  # a real key, a wrong secret
        f"Bearer nbt_{secrets.token_hex(6)}.{secrets.token_hex(20)}",
        f"Token {secrets.token_hex(20)}",
    ):
        response = _status(netbox_peer, authorization)
        assert response.status_code == 403, (authorization, response.text)
        assert "Invalid v" in response.json()["detail"]
    anonymous = httpx.get(f"{netbox_peer.url}/api/dcim/devices/", timeout=10)
    assert anonymous.status_code == 403


def test_the_tokens_may_write(netbox: NetBoxPeer) -> None:
    with NetBoxApi(netbox.url, netbox.v1_token or netbox.token) as v1:
        for api in (netbox.api, v1):
            tag = api.create("extras/tags", {"name": "write-probe", "slug": "write-probe"})
            api.delete("extras/tags", tag["id"])
    with pytest.raises(NetBoxApiError) as refused:
        netbox.api.create("extras/tags", {"name": "no slug"})
    assert refused.value.status == 400
    assert "slug" in refused.value.body


def test_seed_lab_creates_what_it_says(netbox: NetBoxPeer) -> None:
    started = time.monotonic()
    lab = seed_lab(netbox.api, n=8)
    took = time.monotonic() - started
    for path, expected in lab.counts().items():
        assert netbox.api.count(path) == expected, path

    devices = {d["name"]: d for d in netbox.api.list("dcim/devices")}
    assert len(devices) == 8
    first = devices[lab.devices[0]["name"]]
    assert first["primary_ip4"]["address"] == "10.77.0.1/16"
    assert first["primary_ip6"]["address"] == "2001:db8:77::1/64"
    assert first["role"]["slug"] == "router"
    assert first["platform"]["slug"] == "cisco-ios"
    assert first["local_context_data"]["netmon"]["poll_interval"] == 30
    assert first["custom_fields"]["rack_row"] == "R1"
    assert {t["slug"] for t in first["tags"]} == {"monitored"}
    assert all(d["primary_ip4"] is not None for d in devices.values())
    assert {d["site"]["slug"] for d in devices.values()} == {"lab-ams", "lab-fra"}

    in_maintenance = netbox.api.list("dcim/devices", tag="netmon-maintenance")
    assert [d["name"] for d in in_maintenance] == [lab.devices[1]["name"]]
    assert in_maintenance[0]["custom_fields"]["maintenance_start"].startswith("2026-12-01T22:00")

    vc = netbox.api.get(f"dcim/virtual-chassis/{lab.virtual_chassis['id']}")
    assert vc["member_count"] == 2
    assert vc["master"]["id"] == lab.devices[1]["id"]
    vm = netbox.api.get(f"virtualization/virtual-machines/{lab.virtual_machine['id']}")
    assert vm["cluster"]["name"] == "lab-ams-kvm"
    assert vm["primary_ip4"] is not None
    platform = netbox.api.list("dcim/platforms", slug="arista-eos")[0]
    assert platform["custom_fields"]["netmiko_device_type"] == "arista_eos"
    peer_iface = netbox.api.list(
        "dcim/interfaces", device_id=lab.devices[1]["id"], name="Ethernet1"
    )
    assert peer_iface[0]["link_peers"][0]["device"]["id"] == lab.devices[0]["id"]
    assert took < 120, f"seeding 8 devices took {took:.1f} s"


def test_object_changes_show_the_seed(netbox: NetBoxPeer) -> None:
    lab = seed_lab(netbox.api, n=6)
    changes = netbox.api.list("core/object-changes", changed_object_type="dcim.device")
    created = [c for c in changes if c["action"]["value"] == "create"]
    assert sorted(c["changed_object_id"] for c in created) == sorted(d["id"] for d in lab.devices)
    # The bulk PATCH of primary IPs and the virtual chassis: one update per device.
    updated = {c["changed_object_id"] for c in changes if c["action"]["value"] == "update"}
    assert updated >= {d["id"] for d in lab.devices}

    entry = created[0]
    for key in (
        "id",
        "time",
        "user",
        "user_name",
        "request_id",
        "action",
        "changed_object_type",
        "changed_object_id",
        "changed_object",
        "object_repr",
        "prechange_data",
        "postchange_data",
    ):
        assert key in entry, (key, sorted(entry))
    assert entry["changed_object_type"] == "dcim.device"
    assert not entry["prechange_data"]  # {} for a create
    assert entry["postchange_data"]["name"] == entry["object_repr"]
    assert entry["user_name"] == "netmon"
    # The whole seed, every kind of object, is in the log and nothing else is (reset).
    assert netbox.api.count("core/object-changes") >= sum(lab.counts().values())


@dataclass
class _Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _HookReceiver:
    url: str
    deliveries: queue.Queue[_Delivery] = field(default_factory=queue.Queue)

    def take(self, timeout: float = 30.0) -> _Delivery:
        try:
            return self.deliveries.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no webhook delivered in {timeout}s")


@pytest.fixture
def hook_receiver() -> Iterator[_HookReceiver]:
    """A tiny HTTP server on a loopback port that takes every POST and answers 204."""
    received: queue.Queue[_Delivery] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.put(
                _Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _HookReceiver(f"http://127.0.0.1:{server.server_port}", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_event_rule_webhook_is_delivered_signed(
    netbox: NetBoxPeer, hook_receiver: _HookReceiver
) -> None:
    lab = seed_lab(netbox.api, n=4)
    secret = secrets.token_urlsafe(32)
    webhook = netbox.api.create(
        "extras/webhooks",
        {
            "name": "netmon",
            "payload_url": f"{hook_receiver.url}/netbox",
            "http_method": "POST",
            "http_content_type": "application/json",
            "secret": secret,
            "timeout": 5,
        },
    )
    netbox.api.create(
        "extras/event-rules",
        {
            "name": "devices to netmon",
            "object_types": ["dcim.device"],
            "event_types": ["object_created", "object_updated", "object_deleted"],
            "action_type": "webhook",
            "action_object_type": "extras.webhook",
            "action_object_id": webhook["id"],
        },
    )
    template = lab.devices[0]
    device = netbox.api.create(
        "dcim/devices",
        {
            "name": "hooked",
            "device_type": template["device_type"]["id"],
            "role": template["role"]["id"],
            "site": template["site"]["id"],
        },
    )
    netbox.api.update("dcim/devices", device["id"], {"serial": "HOOK1"})
    netbox.api.delete("dcim/devices", device["id"])

    events = []
    for _ in range(3):
        delivery = hook_receiver.take()
        assert delivery.path == "/netbox"
        assert delivery.headers["content-type"] == "application/json"
        expected = hmac.new(secret.encode(), delivery.body, hashlib.sha512).hexdigest()
        assert hmac.compare_digest(delivery.headers["x-hook-signature"], expected)
        payload = json.loads(delivery.body)
        assert payload["object_type"] == "dcim.device"
        assert payload["data"]["id"] == device["id"]
        events.append(payload["event"])
    assert sorted(events) == ["created", "deleted", "updated"]
    assert hook_receiver.deliveries.empty()


def test_pause_and_stop_make_netbox_slow_and_down(netbox: NetBoxPeer) -> None:
    if netbox.server is None:
        pytest.skip("needs the session's own NetBox")
    netbox.pause()
    try:
        with pytest.raises(httpx.ReadTimeout):
            _status(netbox, timeout=1.0)
    finally:
        netbox.resume()
    assert _status(netbox, timeout=10).status_code == 200

    netbox.stop()
    with pytest.raises(httpx.ConnectError):
        _status(netbox, timeout=2.0)
    netbox.start()  # same port, same database and tokens
    assert _status(netbox, timeout=10).status_code == 200


def test_reset_empties_netbox_quickly(netbox: NetBoxPeer) -> None:
    lab = seed_lab(netbox.api, n=8)
    started = time.monotonic()
    netbox.reset()
    took = time.monotonic() - started
    for path in lab.counts():
        assert netbox.api.count(path) == 0, path
    if netbox.server is not None:
        assert netbox.api.count("core/object-changes") == 0
        assert took < 2.0, f"reset took {took:.2f} s"
    # NetBox works on after a reset, and ids go on counting.
    again = seed_lab(netbox.api, n=4)
    assert min(d["id"] for d in again.devices) > max(d["id"] for d in lab.devices)


def test_reset_inventory_over_rest_empties_netbox(netbox: NetBoxPeer) -> None:
    """The REST reset, for a NetBox given by URL (no database to empty directly)."""
    lab = seed_lab(netbox.api, n=4)
    parent = lab.regions[0]["id"]
    child = netbox.api.create(
        "dcim/regions", {"name": "Lab NL", "slug": "lab-nl", "parent": parent}
    )
    netbox.api.create("dcim/regions", {"name": "Lab AMS", "slug": "lab-ams", "parent": child["id"]})
    started = time.monotonic()
    deleted = reset_inventory(netbox.api)
    took = time.monotonic() - started
    assert deleted >= len(lab.devices) + len(lab.regions) + 2
    for path in lab.counts():
        assert netbox.api.count(path) == 0, path
    assert took < 60, f"REST reset took {took:.1f} s"
