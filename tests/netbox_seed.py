"""A small REST client for the NetBox test peer, and a lab inventory seeded through it.

:class:`NetBoxApi` is deliberately plain (synchronous httpx, no retries): tests use it to
arrange and inspect NetBox, so a failure should surface at once with NetBox's own error
body (:class:`NetBoxApiError`). ``path`` arguments are relative to ``/api/`` and may be
written with or without the slashes (``"dcim/devices"``, ``"/api/dcim/devices/"``).

:func:`seed_lab` builds a small realistic inventory (regions, sites, a tenant, device
types and roles, platforms, tags, custom fields, devices with interfaces and primary
IPs, config context, a virtual chassis, a cluster with a VM, cables), with bulk POSTs and
PATCHes so 200 devices take seconds. :func:`reset_inventory` deletes what tests create,
through REST, on any NetBox (the session's own peer empties its tables faster, see
``NetBoxPeer.reset`` in tests/netbox_peer.py).

Found against NetBox 4.7.3:

- Platform has no NAPALM/netmiko fields since 4.0 (name, slug, parent, manufacturer,
  config_template, description); the seed keeps the netmiko device type in a custom
  field ``netmiko_device_type`` on ``dcim.platform``.
- Custom fields and event rules take ``object_types`` (``"dcim.device"``); event rules
  take ``event_types`` (``"object_created"``, ...), not the old ``type_create`` flags.
- Clusters are placed by ``scope_type``/``scope_id``, not ``site``.
- A bulk DELETE is ``DELETE <list endpoint>`` with a body ``[{"id": 1}, ...]``; httpx's
  ``delete()`` takes no body, hence ``request("DELETE", ..., json=...)``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = [
    "RESET_ORDER",
    "NetBoxApi",
    "NetBoxApiError",
    "SeededLab",
    "reset_inventory",
    "seed_lab",
]

JSON = dict[str, Any]
Objects = list[JSON]  # the class's own list() method shadows the builtin in its body

_BULK_CHUNK = 250  # objects per bulk request: well under DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)
_PAGE = 1000  # NetBox's MAX_PAGE_SIZE default


class NetBoxApiError(RuntimeError):
    """NetBox answered 4xx/5xx; ``body`` is its error payload (JSON when it sent JSON)."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {body}")
        self.method = method
        self.url = url
        self.status = status
        self.body = body


def _auth_header(token: str) -> str:
    # v2 tokens are "nbt_<key>.<secret>" and go as Bearer; a v1 token is 40 bare characters.
    return f"Bearer {token}" if token.startswith("nbt_") else f"Token {token}"


class NetBoxApi:
    """Synchronous REST calls to one NetBox with one token."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._client = httpx.Client(
            base_url=f"{self.url}/api/",
            headers={
                "Authorization": _auth_header(token),
                "Accept": "application/json",
            },
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> NetBoxApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def endpoint(path: str) -> str:
        """``"dcim/devices"`` or ``"/api/dcim/devices/"`` -> ``"dcim/devices/"``."""
        path = path.strip("/").removeprefix("api/")
        return f"{path}/" if path else ""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._client.request(method, self.endpoint(path), **kwargs)
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text[:2000]
            raise NetBoxApiError(method, str(response.url), response.status_code, body)
        return response

    def get(self, path: str, **params: Any) -> Any:
        """GET one endpoint (an object, a page, ``status/``) and return its JSON."""
        return self.request("GET", path, params=params).json()

    def count(self, path: str, **filters: Any) -> int:
        count: int = self.get(path, limit=1, brief=1, **filters)["count"]
        return count

    def iter(self, path: str, **filters: Any) -> Iterator[JSON]:
        """Every object of a list endpoint, following ``next`` (pages of 1000)."""
        params: dict[str, Any] = {"limit": _PAGE, **filters}
        page = self.get(path, **params)
        yield from page["results"]
        while page.get("next"):
            # ``next`` is an absolute URL carrying the filters and the offset.
            response = self._client.get(page["next"])
            if response.status_code >= 400:
                raise NetBoxApiError("GET", page["next"], response.status_code, response.text)
            page = response.json()
            yield from page["results"]

    def list(self, path: str, **filters: Any) -> Objects:
        return list(self.iter(path, **filters))

    def create(self, path: str, payload: JSON | Sequence[JSON]) -> Any:
        """POST one object (a dict) or a bulk create (a list: NetBox answers a list, in
        order; long lists go in chunks)."""
        if isinstance(payload, dict):
            return self.request("POST", path, json=payload).json()
        created: Objects = []
        for chunk in _chunks(payload):
            created.extend(self.request("POST", path, json=chunk).json())
        return created

    def update(self, path: str, id: int, payload: JSON) -> JSON:  # NetBox's name
        result: JSON = self.request("PATCH", f"{self.endpoint(path)}{id}", json=payload).json()
        return result

    def bulk_update(self, path: str, payload: Sequence[JSON]) -> Objects:
        """PATCH a list endpoint with ``[{"id": ..., field: value}, ...]``; the objects
        come back in the payload's order (NetBox answers in its own ordering, by name)."""
        updated: dict[int, JSON] = {}
        for chunk in _chunks(payload):
            updated.update((o["id"], o) for o in self.request("PATCH", path, json=chunk).json())
        return [updated[item["id"]] for item in payload]

    def delete(self, path: str, id: int) -> None:
        self.request("DELETE", f"{self.endpoint(path)}{id}")

    def bulk_delete(self, path: str, ids: Iterable[int]) -> None:
        for chunk in _chunks([{"id": i} for i in ids]):
            self.request("DELETE", path, json=chunk)


def _chunks(items: Sequence[JSON]) -> Iterator[list[JSON]]:
    items = list(items)
    for start in range(0, len(items), _BULK_CHUNK):
        yield items[start : start + _BULK_CHUNK]


# List endpoints in an order that deletes dependents before what they depend on
# (protected foreign keys: a device type cannot go while a device uses it). Event rules
# go first, so that the deletions that follow fire no webhooks.
RESET_ORDER: tuple[str, ...] = (
    "extras/event-rules",
    "extras/webhooks",
    "extras/journal-entries",
    "extras/config-contexts",
    "extras/saved-filters",
    "extras/export-templates",
    "extras/custom-links",
    "dcim/cables",
    "ipam/services",
    "ipam/ip-addresses",
    "ipam/ip-ranges",
    "ipam/prefixes",
    "ipam/aggregates",
    "ipam/vlans",
    "ipam/vlan-groups",
    "ipam/asns",
    "ipam/rirs",
    "ipam/route-targets",
    "ipam/vrfs",
    "ipam/roles",
    "virtualization/interfaces",
    "virtualization/virtual-machines",
    "virtualization/clusters",
    "virtualization/cluster-groups",
    "virtualization/cluster-types",
    "dcim/virtual-chassis",  # before its members: it protects its master device
    "dcim/devices",
    "dcim/racks",
    "dcim/locations",
    "dcim/sites",
    "dcim/regions",
    "dcim/site-groups",
    "dcim/device-types",
    "dcim/module-types",
    "dcim/platforms",
    "dcim/device-roles",
    "dcim/manufacturers",
    "tenancy/tenants",
    "tenancy/tenant-groups",
    "extras/tags",
    "extras/custom-fields",
)


def reset_inventory(api: NetBoxApi, order: Sequence[str] = RESET_ORDER) -> int:
    """Delete every object of the endpoints in ``order`` through REST; return how many.

    Works on any NetBox the token may write to. Nested models (regions, locations,
    platforms) lose their children first: NetBox refuses to delete a parent that has
    children, so each round deletes the leaves (``children`` count 0 ... or the deepest
    ``_depth``) until nothing is left.
    """
    deleted = 0
    for path in order:
        objects = api.list(path, brief=1)
        if not objects:
            continue
        if "_depth" in objects[0]:
            # Deepest first; one bulk DELETE per depth keeps each request valid.
            for depth in sorted({o["_depth"] for o in objects}, reverse=True):
                api.bulk_delete(path, [o["id"] for o in objects if o["_depth"] == depth])
        else:
            api.bulk_delete(path, [o["id"] for o in objects])
        deleted += len(objects)
    return deleted


@dataclass
class SeededLab:
    """What :func:`seed_lab` created, as NetBox returned it (devices after the PATCH that
    set their primary IPs)."""

    regions: list[JSON]
    sites: list[JSON]
    tenant: JSON
    manufacturer: JSON
    device_types: list[JSON]
    roles: list[JSON]
    platforms: list[JSON]
    tags: list[JSON]
    custom_fields: list[JSON]
    devices: list[JSON]
    interfaces: list[JSON]
    ip_addresses: list[JSON]  # device and VM addresses
    virtual_chassis: JSON
    cluster_type: JSON
    cluster: JSON
    virtual_machine: JSON
    vm_interfaces: list[JSON]
    cables: list[JSON]

    def counts(self) -> dict[str, int]:
        """Objects per list endpoint, as ``api.count(path)`` should see them."""
        return {
            "dcim/regions": len(self.regions),
            "dcim/sites": len(self.sites),
            "tenancy/tenants": 1,
            "dcim/manufacturers": 1,
            "dcim/device-types": len(self.device_types),
            "dcim/device-roles": len(self.roles),
            "dcim/platforms": len(self.platforms),
            "extras/tags": len(self.tags),
            "extras/custom-fields": len(self.custom_fields),
            "dcim/devices": len(self.devices),
            "dcim/interfaces": len(self.interfaces),
            "ipam/ip-addresses": len(self.ip_addresses),
            "dcim/virtual-chassis": 1,
            "virtualization/cluster-types": 1,
            "virtualization/clusters": 1,
            "virtualization/virtual-machines": 1,
            "virtualization/interfaces": len(self.vm_interfaces),
            "dcim/cables": len(self.cables),
        }

    def device(self, name: str) -> JSON:
        return next(d for d in self.devices if d["name"] == name)


SITES = ("lab-ams", "lab-fra")
NETMIKO_TYPES = {"cisco_ios": "cisco_ios", "arista_eos": "arista_eos"}


def seed_lab(
    api: NetBoxApi,
    n: int = 10,
    *,
    interfaces: int = 4,
    network: str = "10.77.0.0/16",
    network6: str = "2001:db8:77::/64",
) -> SeededLab:
    """Build a lab inventory of ``n`` devices (``n >= 4``, ``interfaces >= 3``) in NetBox.

    Devices ``lab-ams-rtr-000``, ``lab-ams-sw-001``, ... : the first half at ``lab-ams``,
    the rest at ``lab-fra``; every fourth a ``router`` on ``cisco_ios``, the others
    ``switch`` on ``arista_eos``. Each has ``mgmt0`` and ``Ethernet1``..``Ethernet<k>``,
    an address of ``network`` on ``mgmt0`` as ``primary_ip4``, the tag ``monitored``,
    ``rack_row`` and ``local_context_data`` ``{"netmon": {...}}``. Device 0 also has an
    address of ``network6`` as ``primary_ip6``; device 1 is tagged ``netmon-maintenance``
    with a ``maintenance_start``/``maintenance_end`` window. Devices 1 and 2 (both at
    ``lab-ams``) form a virtual chassis, master device 1. Cables: device 0's Ethernet1 to
    device 1's Ethernet1, device 0's Ethernet2 to device 2's Ethernet1. One cluster at
    ``lab-ams`` has a VM ``lab-vm-01`` with one interface and a primary IPv4 address.
    """
    if n < 4 or interfaces < 3:
        raise ValueError("seed_lab needs n >= 4 devices and interfaces >= 3")
    net4 = ipaddress.ip_network(network)
    net6 = ipaddress.ip_network(network6)
    if net4.num_addresses - 3 < n + 1:
        raise ValueError(f"{network} is too small for {n} devices and a VM")

    regions = api.create(
        "dcim/regions",
        [
            {"name": "Lab EU West", "slug": "lab-eu-west"},
            {"name": "Lab EU Central", "slug": "lab-eu-central"},
        ],
    )
    tenant = api.create("tenancy/tenants", {"name": "Lab Network", "slug": "lab-network"})
    sites = api.create(
        "dcim/sites",
        [
            {
                "name": slug,
                "slug": slug,
                "status": "active",
                "region": region["id"],
                "tenant": tenant["id"],
                "time_zone": tz,
            }
            for slug, region, tz in zip(
                SITES, regions, ("Europe/Amsterdam", "Europe/Berlin"), strict=True
            )
        ],
    )
    manufacturer = api.create(
        "dcim/manufacturers", {"name": "Lab Networks", "slug": "lab-networks"}
    )
    device_types = api.create(
        "dcim/device-types",
        [
            {
                "manufacturer": manufacturer["id"],
                "model": "LR-4000",
                "slug": "lr-4000",
                "u_height": 1,
            },
            {"manufacturer": manufacturer["id"], "model": "LS-48", "slug": "ls-48", "u_height": 1},
        ],
    )
    roles = api.create(
        "dcim/device-roles",
        [
            {"name": "router", "slug": "router", "color": "2196f3"},
            {"name": "switch", "slug": "switch", "color": "4caf50"},
        ],
    )
    custom_fields = api.create(
        "extras/custom-fields",
        [
            {
                "name": "rack_row",
                "label": "Rack row",
                "type": "text",
                "object_types": ["dcim.device"],
            },
            {
                "name": "maintenance_start",
                "label": "Maintenance start",
                "type": "datetime",
                "object_types": ["dcim.device"],
            },
            {
                "name": "maintenance_end",
                "label": "Maintenance end",
                "type": "datetime",
                "object_types": ["dcim.device"],
            },
            {
                "name": "netmiko_device_type",
                "label": "netmiko device_type",
                "type": "text",
                "object_types": ["dcim.platform"],
            },
        ],
    )
    platforms = api.create(
        "dcim/platforms",
        [
            {
                "name": name,
                "slug": name.replace("_", "-"),
                "manufacturer": manufacturer["id"],
                "custom_fields": {"netmiko_device_type": netmiko},
            }
            for name, netmiko in NETMIKO_TYPES.items()
        ],
    )
    tags = api.create(
        "extras/tags",
        [
            {"name": "monitored", "slug": "monitored", "color": "009688"},
            {"name": "netmon-maintenance", "slug": "netmon-maintenance", "color": "ff9800"},
        ],
    )
    tag_ids = {t["slug"]: t["id"] for t in tags}

    # Devices: first half at lab-ams; routers every fourth.
    half = (n + 1) // 2
    device_payload: list[JSON] = []
    for i in range(n):
        site = sites[0] if i < half else sites[1]
        router = i % 4 == 0
        device: JSON = {
            "name": f"{site['slug']}-{'rtr' if router else 'sw'}-{i:03d}",
            "device_type": device_types[0 if router else 1]["id"],
            "role": roles[0 if router else 1]["id"],
            "platform": platforms[0 if router else 1]["id"],
            "site": site["id"],
            "tenant": tenant["id"],
            "status": "active",
            "serial": f"LAB{i:06d}",
            "tags": [tag_ids["monitored"]],
            "custom_fields": {"rack_row": f"R{i // 10 + 1}"},
            "local_context_data": {
                "netmon": {"poll_interval": 30 if router else 60, "snmp": {"port": 161}}
            },
        }
        if i == 1:
            device["tags"].append(tag_ids["netmon-maintenance"])
            device["custom_fields"].update(
                maintenance_start="2026-12-01T22:00:00Z", maintenance_end="2026-12-02T02:00:00Z"
            )
        device_payload.append(device)
    devices = api.create("dcim/devices", device_payload)

    interface_payload = [
        {
            "device": d["id"],
            "name": name,
            "type": "1000base-t" if name == "mgmt0" else "10gbase-x-sfpp",
        }
        for d in devices
        for name in ("mgmt0", *(f"Ethernet{k}" for k in range(1, interfaces)))
    ]
    created_interfaces = api.create("dcim/interfaces", interface_payload)
    by_device: dict[int, dict[str, JSON]] = {}
    for iface in created_interfaces:
        by_device.setdefault(iface["device"]["id"], {})[iface["name"]] = iface

    hosts4 = net4.hosts()
    ip_payload = [
        {
            "address": f"{next(hosts4)}/{net4.prefixlen}",
            "status": "active",
            "assigned_object_type": "dcim.interface",
            "assigned_object_id": by_device[d["id"]]["mgmt0"]["id"],
            "dns_name": f"{d['name']}.lab.example",
        }
        for d in devices
    ]
    ip_payload.append(
        {
            "address": f"{net6.network_address + 1}/{net6.prefixlen}",
            "status": "active",
            "assigned_object_type": "dcim.interface",
            "assigned_object_id": by_device[devices[0]["id"]]["mgmt0"]["id"],
        }
    )
    addresses = api.create("ipam/ip-addresses", ip_payload)

    # Primary IPs and the virtual chassis in one bulk PATCH: a device may only take an
    # address already assigned to one of its interfaces.
    vc = api.create("dcim/virtual-chassis", {"name": "lab-ams-stack", "domain": "lab"})
    patch: list[JSON] = [
        {"id": d["id"], "primary_ip4": address["id"]}
        for d, address in zip(devices, addresses[:n], strict=True)
    ]
    patch[0]["primary_ip6"] = addresses[n]["id"]
    patch[1].update(virtual_chassis=vc["id"], vc_position=1, vc_priority=200)
    patch[2].update(virtual_chassis=vc["id"], vc_position=2, vc_priority=100)
    devices = api.bulk_update("dcim/devices", patch)
    vc = api.update("dcim/virtual-chassis", vc["id"], {"master": devices[1]["id"]})

    def termination(device_index: int, name: str) -> JSON:
        return {
            "object_type": "dcim.interface",
            "object_id": by_device[devices[device_index]["id"]][name]["id"],
        }

    cables = api.create(
        "dcim/cables",
        [
            {
                "a_terminations": [termination(0, "Ethernet1")],
                "b_terminations": [termination(1, "Ethernet1")],
                "status": "connected",
            },
            {
                "a_terminations": [termination(0, "Ethernet2")],
                "b_terminations": [termination(2, "Ethernet1")],
                "status": "connected",
            },
        ],
    )

    cluster_type = api.create(
        "virtualization/cluster-types", {"name": "Lab KVM", "slug": "lab-kvm"}
    )
    cluster = api.create(
        "virtualization/clusters",
        {
            "name": "lab-ams-kvm",
            "type": cluster_type["id"],
            "status": "active",
            "scope_type": "dcim.site",
            "scope_id": sites[0]["id"],
        },
    )
    vm = api.create(
        "virtualization/virtual-machines",
        {
            "name": "lab-vm-01",
            "cluster": cluster["id"],
            "site": sites[0]["id"],
            "status": "active",
            "platform": platforms[0]["id"],
            "tags": [tag_ids["monitored"]],
        },
    )
    vm_interfaces = api.create(
        "virtualization/interfaces", [{"virtual_machine": vm["id"], "name": "eth0"}]
    )
    vm_address = api.create(
        "ipam/ip-addresses",
        {
            "address": f"{next(hosts4)}/{net4.prefixlen}",
            "status": "active",
            "assigned_object_type": "virtualization.vminterface",
            "assigned_object_id": vm_interfaces[0]["id"],
        },
    )
    vm = api.update("virtualization/virtual-machines", vm["id"], {"primary_ip4": vm_address["id"]})

    return SeededLab(
        regions=regions,
        sites=sites,
        tenant=tenant,
        manufacturer=manufacturer,
        device_types=device_types,
        roles=roles,
        platforms=platforms,
        tags=tags,
        custom_fields=custom_fields,
        devices=devices,
        interfaces=created_interfaces,
        ip_addresses=[*addresses, vm_address],
        virtual_chassis=vc,
        cluster_type=cluster_type,
        cluster=cluster,
        virtual_machine=vm,
        vm_interfaces=vm_interfaces,
        cables=cables,
    )
