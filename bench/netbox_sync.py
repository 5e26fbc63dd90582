"""NetBox inventory sync: a full reconcile of N NetBox devices against a bare paged fetch
of the same devices, the lag of an incremental change, and pynetbox against netmon's client.

    python bench/netbox_sync.py [--quick] [--runs N] [--devices N] [--page-size N]
                                [--changes N] [--database-url URL]

The NetBox is tests/netbox_peer.py's (NetBox 4.7.3 from its cached venv, a fresh database
restored from the cached dump, runserver on a free loopback port), started here and
stopped at the end; or the one named by ``NETMON_NETBOX_URL`` and ``NETMON_NETBOX_TOKEN``
(a throw-away NetBox: the bench adds its devices there and leaves them).

Set-up (not measured): a region, two sites, two device types, roles and platforms, a tag
``netmon-bench-<hex>`` (the sync's filter), the custom field ``rack_row``, a VRF; then N
devices (default 2,000; --quick 200), each with the tag, ``rack_row``, a
``local_context_data`` ``{"netmon": {"snmp": {"port": 161}}}``, an interface ``mgmt0`` and
a distinct IPv4 address on it as ``primary_ip4``. On the bench's own NetBox the devices,
interfaces and addresses are made by Django's ``bulk_create`` in ``netbox nbshell`` and the
config contexts pre-rendered (``rebuild_config_context_cache``, what NetBox's worker does
after a REST create): REST creates cost 0.3-0.5 s a device on a 2-core machine, so 2,000
would take half an hour. On a NetBox given by URL, REST bulk creates. The planner's folder
holds ``groups.yaml`` and a ``defaults.yaml`` with SNMPv3 credentials by env reference (the
lab's, ``netmon.lab.inventory``). Every read is done once before the runs (NetBox and
PostgreSQL warm).

Measured, each run (``_s_per_1000``: seconds per 1,000 devices):

* figures.full_sync_s_per_1000: ``InventorySync.reconcile()`` with the real source and
  planner (``make_source``) into a freshly migrated, empty netmon database: sites, devices,
  VMs and cables read from NetBox, mapped, planned, applied (every device added).
  figures.resync_unchanged_s_per_1000: the second reconcile right after, nothing changed.
  The first reconcile's time split: ``fetch_s_per_1000`` (the NetBox reads, including the
  sites, VMs and cables), ``map_s_per_1000`` (NetBox JSON to hosts), ``plan_s_per_1000``
  (hosts to Nornir poll plans, credentials checked) and ``apply_s_per_1000`` (the rest: the
  PostgreSQL transaction of ``apply_sync`` and the run record, the hosts' cache file).
* baseline.full_sync_s_per_1000: a bare paged fetch of the same devices (same filter,
  same token, same page size): plain httpx GETs of ``/api/dcim/devices/?limit=&offset=``,
  one after the other, following ``next``, JSON decoded. Ratio = reconcile / bare fetch.
* figures.netmon_fetch_s_per_1000: ``NetBoxSource.fetch_all()`` alone (a new source);
  figures.netmon_client_devices_s_per_1000: ``NetBoxClient.all`` of the devices (whole
  objects, as pynetbox and the bare fetch read them; pages 4 at a time);
  figures.pynetbox_fetch_s_per_1000: ``pynetbox.api(url, token)`` (pynetbox sends a v2
  ``nbt_`` token as ``Bearer``), ``list(nb.dcim.devices.filter(tag=..., limit=page_size))``.
* figures.incremental_lag_s: with ``InventorySync.run()`` running (``changes_interval``
  1 s), a device renamed through the REST API; from NetBox's answer to the PATCH until the
  netmon devices table has the new name (polled every 20 ms); median of ``--changes``
  changes (5), each after a random pause of 0-1 s so that changes fall anywhere in the
  change-log interval. figures.webhook_lag_s: the same with ``sync.nudge([external_id],
  at=time.time())`` right after the PATCH's answer, as the webhook endpoint does. The
  changes alternate between the two. Where that time goes (medians over the lag phase):
  ``change_log_read_s`` (one ``changes_since``), ``refresh_s`` (one ``sync.refresh`` of the
  changed device), of which ``refresh_fetch_s`` (``fetch_ids``) and ``refresh_plan_s``
  (the planner, which plans every host the source holds); ``lag_full_syncs``: full
  reconciles the loop made meanwhile (0 unless the change log asked for one).

Progress goes to stderr; the last line of stdout is the JSON result (bench/_contract.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The repository's root: tests.netbox_peer and tests.netbox_seed run the NetBox test peer.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import httpx
from _contract import environment, fresh_database, main, progress, repeat, stderr

from netmon.config import Settings, load_settings
from netmon.inventory.model import Fetched, InventoryHost
from netmon.inventory.netbox.client import NetBoxClient
from netmon.inventory.netbox.source import DEVICES, NetBoxSource
from netmon.inventory.sync import InventorySource, InventorySync
from netmon.lab import AUTH_KEY_ENV, DEFAULT_AUTH_KEY, DEFAULT_PRIV_KEY, PRIV_KEY_ENV
from netmon.poller.registry import TaskRegistry
from netmon.poller.service import make_source
from netmon.store.database import Database
from netmon.store.schema import upgrade
from tests.netbox_peer import (
    TOKEN_ENV,
    URL_ENV,
    V1_TOKEN_ENV,
    NetBoxServer,
    PeerError,
    PeerMissingError,
    _clean_env,
    ensure_cache,
)
from tests.netbox_seed import NetBoxApi

BENCH_TOKEN_ENV = "NETMON_BENCH_NETBOX_TOKEN"  # the sync reads its token by reference
LAG_TIMEOUT_S = 30.0  # a change not in the devices table by then fails the run
SEED_TIMEOUT_S = 900.0
POLL_S = 0.02


# -- NetBox -------------------------------------------------------------------------------


@dataclass
class Peer:
    url: str
    token: str
    v1_token: str | None
    server: NetBoxServer | None  # None: a NetBox given by URL


@contextlib.asynccontextmanager
async def netbox(scratch: Path) -> AsyncIterator[Peer]:
    """The NetBox named by NETMON_NETBOX_URL/TOKEN, else one started (and stopped) here."""
    url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    if url and token:
        stderr.print(f"NetBox given: {url}")
        yield Peer(url.rstrip("/"), token, os.environ.get(V1_TOKEN_ENV), None)
        return
    try:
        cache = await asyncio.to_thread(ensure_cache)  # builds it if missing (~8 min)
    except (PeerError, PeerMissingError) as exc:
        raise SystemExit(f"netbox_sync: the NetBox test peer cannot run here: {exc}") from None
    server = NetBoxServer(scratch / "netbox", cache)
    stderr.print(f"starting NetBox {cache.version} (restore the schema, runserver, tokens)")
    try:
        await asyncio.to_thread(server.start)
    except (PeerError, PeerMissingError) as exc:
        raise SystemExit(f"netbox_sync: NetBox did not start: {exc}") from None
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in server.timings.items())
    stderr.print(f"NetBox up at {server.url} ({timings})")
    try:
        yield Peer(server.url, server.token, server.v1_token, server)
    finally:
        server.close()  # blocking on purpose: it also runs when the loop is being torn down


@dataclass
class Seeded:
    tag: str
    devices: list[tuple[int, str]]  # (NetBox id, name)
    seconds: float


# Devices, interfaces and addresses in bulk through the ORM (no signals, no change log),
# then the config contexts rendered as NetBox's worker would after REST creates.
_ORM_SEED = """
import json
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import transaction
from dcim.models import Device, DeviceRole, DeviceType, Interface, Platform, Site
from extras.models import Tag, TaggedItem
from ipam.models import VRF, IPAddress
with open({path!r}) as f:
    p = json.load(f)
sites = [Site.objects.get(pk=i) for i in p["sites"]]
types = [DeviceType.objects.get(pk=i) for i in p["types"]]
roles = [DeviceRole.objects.get(pk=i) for i in p["roles"]]
platforms = [Platform.objects.get(pk=i) for i in p["platforms"]]
tag = Tag.objects.get(pk=p["tag"])
vrf = VRF.objects.get(pk=p["vrf"])
with transaction.atomic():
    devices = Device.objects.bulk_create([
        Device(name=d["name"], device_type=types[d["kind"]], role=roles[d["kind"]],
               platform=platforms[d["kind"]], site=sites[d["site"]], status="active",
               serial=d["serial"], custom_field_data=d["custom_fields"],
               local_context_data=d["local_context_data"])
        for d in p["devices"]
    ], batch_size=500)
    kind = ContentType.objects.get_for_model(Device)
    TaggedItem.objects.bulk_create(
        [TaggedItem(content_type=kind, object_id=d.pk, tag=tag) for d in devices], batch_size=500
    )
    interfaces = Interface.objects.bulk_create([
        Interface(device=d, name="mgmt0", type="1000base-t", _site=d.site) for d in devices
    ], batch_size=500)
    addresses = IPAddress.objects.bulk_create([
        IPAddress(address=a, vrf=vrf, status="active", assigned_object=i)
        for a, i in zip(p["addresses"], interfaces)
    ], batch_size=500)
    for device, address in zip(devices, addresses):
        device.primary_ip4 = address
    Device.objects.bulk_update(devices, ["primary_ip4"], batch_size=500)
call_command("rebuild_config_context_cache")
print("NETMON_SEEDED " + json.dumps([[d.pk, d.name] for d in devices]))
"""


def _device_payloads(n: int) -> list[dict[str, Any]]:
    """What every device gets: a name, a serial, ``rack_row``, the netmon config context;
    every fourth a router (kind 0), the others switches (kind 1); half at each site."""
    return [
        {
            "name": f"nb-{i:05d}",
            "kind": 0 if i % 4 == 0 else 1,
            "site": i % 2,
            "serial": f"NB{i:06d}",
            "custom_fields": {"rack_row": f"R{i // 40 + 1}"},
            "local_context_data": {"netmon": {"snmp": {"port": 161}}},
        }
        for i in range(n)
    ]


def _addresses(n: int) -> list[str]:
    """n distinct host addresses of 10.64.0.0/10 (n up to 4 million)."""
    return [
        f"10.{64 + (i + 1) // 65536}.{(i + 1) // 256 % 256}.{(i + 1) % 256}/10" for i in range(n)
    ]


def seed(peer: Peer, n: int) -> Seeded:
    started = time.perf_counter()
    suffix = secrets.token_hex(3)
    tag_slug = f"netmon-bench-{suffix}"
    with NetBoxApi(peer.url, peer.token, timeout=300) as api:
        region = api.create("dcim/regions", {"name": f"Bench {suffix}", "slug": f"bench-{suffix}"})
        sites = api.create(
            "dcim/sites",
            [
                {
                    "name": f"bench-{suffix}-{c}",
                    "slug": f"bench-{suffix}-{c}",
                    "region": region["id"],
                }
                for c in ("ams", "fra")
            ],
        )
        maker = api.create(
            "dcim/manufacturers", {"name": f"Bench {suffix}", "slug": f"bench-{suffix}"}
        )
        types = api.create(
            "dcim/device-types",
            [
                {"manufacturer": maker["id"], "model": f"{m}-{suffix}", "slug": f"{m}-{suffix}"}
                for m in ("br-1", "bs-48")
            ],
        )
        roles = api.create(
            "dcim/device-roles",
            [
                {"name": f"{r}-{suffix}", "slug": f"{r}-{suffix}", "color": "2196f3"}
                for r in ("router", "switch")
            ],
        )
        platforms = api.create(
            "dcim/platforms",
            [
                {"name": f"{p}-{suffix}", "slug": f"{p.replace('_', '-')}-{suffix}"}
                for p in ("cisco_ios", "arista_eos")
            ],
        )
        tag = api.create("extras/tags", {"name": tag_slug, "slug": tag_slug, "color": "009688"})
        if not api.list("extras/custom-fields", name="rack_row"):
            api.create(
                "extras/custom-fields",
                {"name": "rack_row", "type": "text", "object_types": ["dcim.device"]},
            )
        vrf = api.create("ipam/vrfs", {"name": f"bench-{suffix}", "enforce_unique": True})
        payloads = _device_payloads(n)
        addresses = _addresses(n)
        if peer.server is not None:
            devices = _seed_orm(
                peer.server,
                {
                    "sites": [s["id"] for s in sites],
                    "types": [t["id"] for t in types],
                    "roles": [r["id"] for r in roles],
                    "platforms": [p["id"] for p in platforms],
                    "tag": tag["id"],
                    "vrf": vrf["id"],
                    "devices": payloads,
                    "addresses": addresses,
                },
            )
        else:
            devices = _seed_rest(api, payloads, addresses, sites, types, roles, platforms, tag, vrf)
    return Seeded(tag_slug, devices, time.perf_counter() - started)


def _seed_orm(server: NetBoxServer, params: dict[str, Any]) -> list[tuple[int, str]]:
    path = server.workdir / "bench-seed.json"  # argv would be too long for 2,000 devices
    path.write_text(json.dumps(params))
    script = _ORM_SEED.format(path=str(path))
    try:
        done = subprocess.run(
            server.cache.netbox("nbshell", "--command", script),
            capture_output=True,
            text=True,
            env=_clean_env(NETBOX_ROOT=str(server.workdir)),
            cwd=server.workdir,
            timeout=SEED_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"seeding NetBox took over {SEED_TIMEOUT_S:g} s") from None
    match = re.search(r"^NETMON_SEEDED (\[.*\])$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(
            f"seeding NetBox failed (nbshell exited {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return [(int(i), str(name)) for i, name in json.loads(match.group(1))]


def _seed_rest(
    api: NetBoxApi,
    payloads: list[dict[str, Any]],
    addresses: list[str],
    sites: list[dict[str, Any]],
    types: list[dict[str, Any]],
    roles: list[dict[str, Any]],
    platforms: list[dict[str, Any]],
    tag: dict[str, Any],
    vrf: dict[str, Any],
) -> list[tuple[int, str]]:
    devices = api.create(
        "dcim/devices",
        [
            {
                "name": d["name"],
                "device_type": types[d["kind"]]["id"],
                "role": roles[d["kind"]]["id"],
                "platform": platforms[d["kind"]]["id"],
                "site": sites[d["site"]]["id"],
                "status": "active",
                "serial": d["serial"],
                "tags": [tag["id"]],
                "custom_fields": d["custom_fields"],
                "local_context_data": d["local_context_data"],
            }
            for d in payloads
        ],
    )
    interfaces = api.create(
        "dcim/interfaces",
        [{"device": d["id"], "name": "mgmt0", "type": "1000base-t"} for d in devices],
    )
    made = api.create(
        "ipam/ip-addresses",
        [
            {
                "address": address,
                "vrf": vrf["id"],
                "status": "active",
                "assigned_object_type": "dcim.interface",
                "assigned_object_id": iface["id"],
            }
            for address, iface in zip(addresses, interfaces, strict=True)
        ],
    )
    api.bulk_update(
        "dcim/devices",
        [{"id": d["id"], "primary_ip4": a["id"]} for d, a in zip(devices, made, strict=True)],
    )
    return [(int(d["id"]), str(d["name"])) for d in devices]


# -- the reads compared ---------------------------------------------------------------------


def bare_fetch(url: str, token: str, tag: str, page_size: int) -> int:
    """What a minimal script does: GET a page, follow ``next`` until there is none."""
    scheme = "Bearer" if token.startswith("nbt_") else "Token"
    headers = {"Authorization": f"{scheme} {token}", "Accept": "application/json"}
    devices: list[dict[str, Any]] = []
    with httpx.Client(headers=headers, timeout=120) as client:
        params: dict[str, Any] = {"tag": tag, "limit": page_size, "offset": 0}
        response = client.get(f"{url}/api/dcim/devices/", params=params)
        while True:
            response.raise_for_status()
            page = response.json()
            devices.extend(page["results"])
            if not page.get("next"):
                break
            response = client.get(page["next"])
    return len(devices)


def pynetbox_fetch(url: str, token: str, tag: str, page_size: int) -> int:
    import pynetbox  # type: ignore[import-untyped]

    nb = pynetbox.api(url, token=token)
    try:
        return len(list(nb.dcim.devices.filter(tag=tag, limit=page_size)))
    finally:
        nb.http_session.close()


async def netmon_client_fetch(settings: Settings, tag: str) -> int:
    assert settings.inventory.netbox is not None
    async with NetBoxClient(settings.inventory.netbox) as client:
        return len(await client.all(DEVICES, {"tag": tag}))


async def netmon_fetch(settings: Settings) -> int:
    assert settings.inventory.netbox is not None
    async with NetBoxSource(settings.inventory.netbox) as source:
        fetched = await source.fetch_all()
    return len(fetched.hosts)


# -- the sync, timed ------------------------------------------------------------------------


class Timed:
    """The sync's source as make_source builds it, with the time its reads, its mapping
    and its plans take, and a count of the change-log reads."""

    def __init__(self, inner: InventorySource) -> None:
        self.inner = inner
        self.owner = inner.owner
        self.incremental = inner.incremental
        self.fetch_s = self.map_s = self.plan_s = 0.0
        self.change_reads = 0
        self.reading = asyncio.Event()  # set after a change-log read
        self.change_read_s: list[float] = []
        self.fetch_ids_s: list[float] = []
        self.plan_calls_s: list[float] = []
        self.full_reads = 0
        netbox: NetBoxSource = inner.feed  # type: ignore[attr-defined]
        mapper = netbox._map

        def timed_map(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return mapper(*args, **kwargs)
            finally:
                self.map_s += time.perf_counter() - t0

        netbox._map = timed_map  # type: ignore[method-assign]
        self._netbox = netbox

    def reset(self) -> None:
        self.fetch_s = self.map_s = self.plan_s = 0.0

    @property
    def feed(self) -> Timed:
        return self

    async def changes_since(self, cursor: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self._netbox.changes_since(cursor)
        finally:
            self.change_read_s.append(time.perf_counter() - t0)
            self.change_reads += 1
            self.reading.set()

    async def fetch_all(self) -> Fetched:
        t0 = time.perf_counter()
        try:
            return await self.inner.fetch_all()
        finally:
            self.fetch_s += time.perf_counter() - t0
            self.full_reads += 1

    async def fetch_ids(self, ids: Collection[str]) -> Fetched:
        t0 = time.perf_counter()
        try:
            return await self.inner.fetch_ids(ids)
        finally:
            self.fetch_ids_s.append(time.perf_counter() - t0)

    def plan(self, hosts: list[InventoryHost]) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.plan(hosts)
        finally:
            self.plan_s += time.perf_counter() - t0
            self.plan_calls_s.append(time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:  # applied (the write-back hook)
        return getattr(self.inner, name)

    async def close(self) -> None:
        await self.inner.close()


def write_folder(folder: Path) -> None:
    """groups.yaml and defaults.yaml as the lab's inventory has them: SNMPv3 authPriv by
    env reference (hosts come from NetBox)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "groups.yaml").write_text(
        "lab:\n  data:\n    site: lab\n    poll_interval: 60s\n    tasks: [system, interfaces]\n"
    )
    (folder / "defaults.yaml").write_text(
        "data:\n"
        "  snmp:\n"
        "    user: netmon\n"
        f"    auth: {{protocol: sha1, key: {{env: {AUTH_KEY_ENV}}}}}\n"
        f"    priv: {{protocol: aes128, key: {{env: {PRIV_KEY_ENV}}}}}\n"
        "    timeout: 2s\n"
        "    retries: 1\n"
    )


async def device_name(conn: asyncpg.Connection, external_id: str) -> str | None:
    name: str | None = await conn.fetchval(
        "SELECT name FROM devices WHERE owner = 'netbox' AND external_id = $1", external_id
    )
    return name


@dataclass
class Harness:
    args: argparse.Namespace
    server_url: str
    scratch: Path
    peer: Peer
    seeded: Seeded
    page_size: int
    changes: int

    def __post_init__(self) -> None:
        self.names = dict(self.seeded.devices)  # NetBox id -> name (the lag runs rename)

    @property
    def n(self) -> int:
        return len(self.names)

    def per_1000(self, seconds: float) -> float:
        return seconds / self.n * 1000

    def settings(self, url: str, data_dir: Path) -> Settings:
        return load_settings(
            None,
            data_dir=data_dir,
            database={"url": url, "pool_min": 2, "pool_max": 4},
            inventory={
                "poller_id": "bench",
                "netbox": {
                    "url": self.peer.url,
                    "token": {"env": BENCH_TOKEN_ENV},
                    "filters": {"tag": self.seeded.tag},
                    "page_size": self.page_size,
                    "custom_fields": ["rack_row"],
                    "changes_interval": "1s",
                    "full_sync_interval": "1h",
                    "timeout": "120s",
                },
            },
        )

    def bare(self) -> int:
        return bare_fetch(self.peer.url, self.peer.token, self.seeded.tag, self.page_size)

    def pynetbox(self) -> int:
        return pynetbox_fetch(self.peer.url, self.peer.token, self.seeded.tag, self.page_size)

    async def warm(self) -> None:
        """Every read once, unmeasured: NetBox's and PostgreSQL's caches warm, pynetbox's
        and httpx's imports done."""
        settings = self.settings("postgresql://unused@127.0.0.1/unused", self.scratch / "warm")
        checks = {
            "bare fetch": await asyncio.to_thread(self.bare),
            "NetBoxSource.fetch_all": await netmon_fetch(settings),
            "NetBoxClient.all": await netmon_client_fetch(settings, self.seeded.tag),
            "pynetbox": await asyncio.to_thread(self.pynetbox),
        }
        wrong = {k: v for k, v in checks.items() if v != self.n}
        if wrong:
            raise RuntimeError(f"reads did not bring the {self.n} devices seeded: {wrong}")

    async def timed(self, what: Any) -> float:
        t0 = time.perf_counter()
        got = await what
        seconds = time.perf_counter() - t0
        if got != self.n:
            raise RuntimeError(f"a read brought {got} devices, not {self.n}")
        return seconds

    async def once(self, index: int) -> tuple[dict[str, float], dict[str, float]]:
        figures: dict[str, float] = {}
        baseline: dict[str, float] = {}
        run_dir = self.scratch / f"run-{index}"
        folder = run_dir / "inventory"
        write_folder(folder)
        async with fresh_database(self.server_url) as url:
            settings = self.settings(url, run_dir / "data")
            db = Database(settings.database, settings.data_dir)
            await db.start()
            try:
                await upgrade(db)
                registry = TaskRegistry.discover(settings.poller.task_modules)
                source = Timed(make_source(settings, folder, registry))
                sync = InventorySync(settings, db, source)
                try:
                    # Alternate which goes first, so neither always finds NetBox the warmer.
                    if index % 2 == 1:
                        baseline["full_sync_s_per_1000"] = self.per_1000(
                            await self.timed(asyncio.to_thread(self.bare))
                        )
                    figures.update(await self.reconciles(sync, source))
                    if index % 2 == 0:
                        baseline["full_sync_s_per_1000"] = self.per_1000(
                            await self.timed(asyncio.to_thread(self.bare))
                        )
                    figures["netmon_fetch_s_per_1000"] = self.per_1000(
                        await self.timed(netmon_fetch(settings))
                    )
                    figures["netmon_client_devices_s_per_1000"] = self.per_1000(
                        await self.timed(netmon_client_fetch(settings, self.seeded.tag))
                    )
                    figures["pynetbox_fetch_s_per_1000"] = self.per_1000(
                        await self.timed(asyncio.to_thread(self.pynetbox))
                    )
                    figures.update(await self.lags(index, db, sync, source))
                finally:
                    await source.close()
            finally:
                await db.stop()
        return figures, baseline

    async def reconciles(self, sync: InventorySync, source: Timed) -> dict[str, float]:
        source.reset()
        first = await sync.reconcile()
        if not first.ok or first.result is None or len(first.result.diff.added) != self.n:
            added = len(first.result.diff.added) if first.result else 0
            skipped = first.result.skipped[:1] if first.result else []
            raise RuntimeError(
                f"the first reconcile added {added} of {self.n} devices: "
                f"{first.error or (skipped[0].message if skipped else '')}"
            )
        split = {
            "fetch_s_per_1000": self.per_1000(source.fetch_s - source.map_s),
            "map_s_per_1000": self.per_1000(source.map_s),
            "plan_s_per_1000": self.per_1000(source.plan_s),
            "apply_s_per_1000": self.per_1000(first.seconds - source.fetch_s - source.plan_s),
        }
        again = await sync.reconcile()
        if not again.ok or again.result is None or len(again.result.diff.unchanged) != self.n:
            raise RuntimeError(f"the second reconcile changed something: {again.summary()}")
        return {
            "full_sync_s_per_1000": self.per_1000(first.seconds),
            "resync_unchanged_s_per_1000": self.per_1000(again.seconds),
            **split,
        }

    async def lags(
        self, index: int, db: Database, sync: InventorySync, source: Timed
    ) -> dict[str, float]:
        rng = random.Random(index)
        picks = [(i, self.names[i]) for i in rng.sample(sorted(self.names), 2 * self.changes)]
        refresh_s: list[float] = []
        refresh = sync.refresh

        async def timed_refresh(ids: Collection[str], *, changed_at: float | None = None) -> Any:
            t0 = time.perf_counter()
            try:
                return await refresh(ids, changed_at=changed_at)
            finally:
                refresh_s.append(time.perf_counter() - t0)

        sync.refresh = timed_refresh  # type: ignore[method-assign]
        full_reads, plans = source.full_reads, len(source.plan_calls_s)
        reads = len(source.change_read_s)
        source.reading.clear()
        loop = asyncio.create_task(sync.run(), name="netmon-inventory-sync")
        lags: dict[str, list[float]] = {"incremental_lag_s": [], "webhook_lag_s": []}
        try:
            async with asyncio.timeout(LAG_TIMEOUT_S):
                await source.reading.wait()  # the loop's first look at the change log
            conn = await db.connect()
            try:
                with (
                    NetBoxApi(self.peer.url, self.peer.token) as api,
                    progress() as bar,
                ):
                    task = bar.add_task(f"run {index + 1}: changes", total=len(picks))
                    for k, (device_id, name) in enumerate(picks):
                        key = "webhook_lag_s" if k % 2 else "incremental_lag_s"
                        new_name = f"{name}-r{index}c{k}"
                        await asyncio.sleep(rng.uniform(0.0, 1.0))
                        await asyncio.to_thread(
                            api.update, "dcim/devices", device_id, {"name": new_name}
                        )
                        changed = time.perf_counter()
                        external = f"dcim.device:{device_id}"
                        if key == "webhook_lag_s":
                            sync.nudge([external], at=time.time())
                        lags[key].append(await self.seen(conn, external, new_name) - changed)
                        self.names[device_id] = new_name
                        bar.advance(task)
            finally:
                await conn.close()
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        figures = {k: statistics.median(v) for k, v in lags.items()}
        figures["change_log_read_s"] = statistics.median(source.change_read_s[reads:])
        figures["refresh_s"] = statistics.median(refresh_s)
        figures["refresh_fetch_s"] = statistics.median(source.fetch_ids_s)
        figures["refresh_plan_s"] = statistics.median(source.plan_calls_s[plans:])
        # Full reconciles the loop made meanwhile (a change log it took for a bulk change).
        figures["lag_full_syncs"] = float(source.full_reads - full_reads)
        return figures

    async def seen(self, conn: asyncpg.Connection, external: str, name: str) -> float:
        try:
            async with asyncio.timeout(LAG_TIMEOUT_S):
                while True:
                    if await device_name(conn, external) == name:
                        break
                    await asyncio.sleep(POLL_S)
        except TimeoutError:
            raise RuntimeError(
                f"{external} renamed {name} in NetBox: not in netmon after {LAG_TIMEOUT_S:g} s"
            ) from None
        return time.perf_counter()


# -- the benchmark --------------------------------------------------------------------------


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=None, help="NetBox devices (2000)")
    parser.add_argument(
        "--page-size", type=int, default=None, help="inventory.netbox.page_size (its default)"
    )
    parser.add_argument("--changes", type=int, default=5, help="changes per lag figure per run (5)")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the finally blocks stop NetBox and drop the databases


async def bench(args: argparse.Namespace, url: str, scratch: Path) -> dict[str, Any]:
    """``url``, the contract's throw-away database, stays empty: each run makes its own,
    so that every first reconcile goes into an empty database."""
    n = args.devices or (200 if args.quick else 2_000)
    runs = args.runs or (1 if args.quick else 3)
    os.environ.setdefault(AUTH_KEY_ENV, DEFAULT_AUTH_KEY)
    os.environ.setdefault(PRIV_KEY_ENV, DEFAULT_PRIV_KEY)
    async with netbox(scratch) as peer:
        os.environ[BENCH_TOKEN_ENV] = peer.token
        stderr.print(f"seeding {n:,} devices")
        seeded = await asyncio.to_thread(seed, peer, n)
        stderr.print(f"seeded in {seeded.seconds:.1f} s (tag {seeded.tag})")
        probe = load_settings(
            None,
            data_dir=scratch / "probe",
            inventory={"netbox": {"url": peer.url, "token": {"env": BENCH_TOKEN_ENV}}},
        )
        assert probe.inventory.netbox is not None
        page_size = args.page_size or probe.inventory.netbox.page_size
        harness = Harness(args, args.database_url, scratch, peer, seeded, page_size, args.changes)
        stderr.print("one read of each kind, unmeasured")
        await harness.warm()
        async with NetBoxClient(probe.inventory.netbox) as client:
            version = str((await client.status())["netbox-version"])
        import pynetbox

        return await repeat(
            "netbox_sync",
            runs,
            harness.once,
            notes={
                "devices": n,
                "page_size": page_size,
                "changes_per_lag": args.changes,
                "netbox": version,
                "netbox_given": peer.server is None,
                "seeding": "REST bulk creates"
                if peer.server is None
                else "Django bulk_create in nbshell, config contexts pre-rendered",
                "seed_s": round(seeded.seconds, 1),
                "pynetbox": pynetbox.__version__,
                "pynetbox_token": "v2 (Bearer)",
                **environment(),
            },
        )


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main(__doc__, options, bench))
