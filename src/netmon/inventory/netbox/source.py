"""NetBox as an inventory source: the full read, the re-read of some objects, and the
change log that says which ones to re-read.

* :meth:`NetBoxSource.fetch_all`: every device (``filters``) and virtual machine
  (``vm_filters``, else ``filters``), the sites once (for the regions), and the cables
  between the synced devices. ``total`` counts what NetBox returned (hosts + skipped).
  A failed read raises :class:`NetBoxError`: the caller retires nothing.
* :meth:`NetBoxSource.fetch_ids`: only the given external ids, with the configured
  filters, so an object that no longer matches is absent (gone from the selection).
* :meth:`NetBoxSource.changes_since`: the external ids changed since a cursor, from the
  object-change log, and whether something changed that can move many hosts (``full``).

Found the hard way, against NetBox 4.7.3:

* ``/api/core/object-changes/`` filters time with ``time_after`` / ``time_before`` (a
  django-filter range); ``time__gte`` is not a filter there, and an unknown parameter is
  silently ignored, which would return the whole log. NetBox before 4.1 has the log at
  ``/api/extras/object-changes/`` (same filters).
* Change ids and times are assigned before commit: under concurrent writes they become
  visible out of order. The log is read from the last seen time less an overlap, and the
  ids already seen in the overlap are dropped.
* Deleting an IP address that is a primary IP saves the device (``clear_primary_ip``),
  so that shows up as a device change; editing a primary address does not: address
  updates are mapped to their device with ``primary_ip4_id`` / ``primary_ip6_id``.
* ``primary_ip4_id``, ``virtual_chassis_id`` and the like validate their values: an id
  that no longer exists is a 400, not an empty answer. ``id`` is a plain number filter.
* ``fields=`` selects what a list returns (and spares NetBox the counters it would
  compute); asking for it also keeps ``config_context``, which is rendered only when
  the response includes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, overload

from netmon.config import NetBoxSettings
from netmon.inventory.model import Cable, Fetched, InventoryHost, Skipped
from netmon.inventory.netbox.client import NetBoxClient, NetBoxRequestError
from netmon.inventory.netbox.mapping import (
    Kind,
    VcMember,
    external_id,
    map_device,
    parse_external_id,
)
from netmon.inventory.netbox.webhook import WATCHED_TYPES, Classified, classify
from netmon.logs import get_logger

__all__ = [
    "DEVICE_FIELDS",
    "VM_FIELDS",
    "ChangeBatch",
    "ChangeCursor",
    "NetBoxSource",
]

log = get_logger(__name__)

DEVICES = "/api/dcim/devices/"
VMS = "/api/virtualization/virtual-machines/"
SITES = "/api/dcim/sites/"
CABLES = "/api/dcim/cables/"
CHASSIS = "/api/dcim/virtual-chassis/"
CHANGES = ("/api/core/object-changes/", "/api/extras/object-changes/")

_COMMON = (
    "id", "name", "status", "site", "role", "tenant", "platform", "primary_ip4",
    "primary_ip6", "tags", "custom_fields", "config_context", "last_updated",
)  # fmt: skip
DEVICE_FIELDS = ",".join((*_COMMON, "virtual_chassis", "vc_position"))
VM_FIELDS = ",".join((*_COMMON, "cluster"))
CABLE_FIELDS = "id,status,a_terminations,b_terminations"
CHANGE_FIELDS = (
    "id,time,action,changed_object_type,changed_object_id,prechange_data,postchange_data"
)

# A filter value nothing has, to tell a known filter from one NetBox ignores.
PROBE = "netmon-probe-no-such-value"
# Filters a probe cannot judge: negations (``name__n``) and emptiness select everything
# for a value nothing has; paging and output parameters are not filters.
_NOT_PROBED = frozenset({"limit", "offset", "ordering", "fields", "omit", "brief", "q"})
_NEGATIONS = ("__n", "__empty", "__isnull")

# Ids per request for id / device_id lists: ~7 characters each, well inside any URL limit.
ID_CHUNK = 200
# A change log read that would bring more than this many changes is a full reconcile.
MAX_CHANGES = 2000
OVERLAP = timedelta(seconds=60)


@dataclass(frozen=True)
class ChangeCursor:
    """Where the change log was read up to: the newest change time seen (NetBox's ISO
    text; None when the log was empty), and the ids seen since ``time`` less the
    overlap, not to report them twice."""

    time: str | None
    seen: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ChangeBatch:
    """What changed: external ``ids`` to re-read; ``full`` when a full reconcile is due
    (``reasons`` say why); the ``cursor`` to read from next time; ``newest``, the unix
    time of the newest change brought (for the lag); ``changes``, how many were read.
    The same attribute names as the sync's own batch, which it reads by name."""

    ids: frozenset[str]
    full: bool
    cursor: ChangeCursor
    newest: float | None = None
    reasons: tuple[str, ...] = ()
    changes: int = 0


@dataclass
class _Mapped:
    hosts: dict[str, InventoryHost] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    # NetBox device id -> the external id of the host it belongs to (itself, or its
    # chassis for every member of a synced chassis): cable ends.
    device_hosts: dict[int, str] = field(default_factory=dict)
    # external id -> the NetBox object behind the host (the master's, for a chassis).
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)


class NetBoxSource:
    """One NetBox, read as netmon's inventory.

    ``full_objects`` asks NetBox for whole objects (every field, as the Nornir plugin
    hands them to scripts) instead of the fields the mapping reads. ``objects`` holds,
    after :meth:`fetch_all`, the NetBox object behind each host by external id.
    """

    owner = "netbox"
    incremental = True

    def __init__(
        self,
        settings: NetBoxSettings,
        client: NetBoxClient | None = None,
        *,
        full_objects: bool = False,
    ) -> None:
        self.settings = settings
        self.client = client or NetBoxClient(settings)
        self._own_client = client is None
        self.full_objects = full_objects
        self.objects: dict[str, dict[str, Any]] = {}
        self._checked: set[tuple[str, str]] = set()
        self._regions: dict[int, Mapping[str, Any] | None] | None = None
        self._changes_path: str | None = None

    @property
    def feed(self) -> NetBoxSource:
        """The change feed (:meth:`changes_since`): this source itself."""
        return self

    async def close(self) -> None:
        if self._own_client:
            await self.client.close()

    async def __aenter__(self) -> NetBoxSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- reads -------------------------------------------------------------------------

    async def fetch_all(self) -> Fetched:
        """Every selected device and VM; the cables between synced devices."""
        now = datetime.now(UTC)
        await self._check_filters()
        self._regions, devices, vms = await _together(
            self._sites(),
            self._devices(self.settings.filters),
            self._vms(self._vm_filters()) if self.settings.virtual_machines else _nothing(),
        )
        mapped = self._map(devices, vms, now)
        self.objects = mapped.objects
        cables = await self._cables(mapped.device_hosts) if self.settings.cables else None
        hosts = list(mapped.hosts.values())
        return Fetched(
            hosts=hosts,
            skipped=mapped.skipped,
            complete=True,
            total=len(hosts) + len(mapped.skipped),
            cables=cables,
        )

    async def fetch_ids(self, refs: Collection[str]) -> Fetched:
        """Re-read the given external ids (with the filters). Absent from the answer: gone
        from the selection (deleted, or no longer matching). Unknown refs are ignored."""
        now = datetime.now(UTC)
        ids: dict[str, set[int]] = {"device": set(), "vm": set(), "virtualchassis": set()}
        for ref in refs:
            try:
                kind, number = parse_external_id(ref)
            except ValueError:
                continue
            ids[kind].add(number)
        await self._check_filters()
        if self._regions is None:
            self._regions = await self._sites()
        no_vms = not (ids["vm"] and self.settings.virtual_machines)
        by_id, in_chassis, vm_list = await _together(
            self._chunked(self._devices, self.settings.filters, "id", ids["device"]),
            self._chassis_devices(ids["virtualchassis"]),
            _nothing() if no_vms else self._chunked(self._vms, self._vm_filters(), "id", ids["vm"]),
        )
        devices = {obj["id"]: obj for obj in [*by_id, *in_chassis]}
        vms: list[dict[str, Any]] = vm_list
        # A chassis is one host: when a member was asked for, read its chassis whole, so
        # the master is there to stand for it (or to pick one when it has none).
        chassis = {
            vc["id"]
            for d in devices.values()
            if isinstance(vc := d.get("virtual_chassis"), Mapping) and isinstance(vc.get("id"), int)
        }
        if chassis - ids["virtualchassis"]:
            for obj in await self._chassis_devices(chassis - ids["virtualchassis"]):
                devices[obj["id"]] = obj
        mapped = self._map(list(devices.values()), vms, now)
        self.objects.update(mapped.objects)
        hosts = list(mapped.hosts.values())
        return Fetched(
            hosts=hosts,
            skipped=mapped.skipped,
            complete=False,
            total=len(hosts) + len(mapped.skipped),
            cables=None,
        )

    def _vm_filters(self) -> dict[str, Any]:
        if self.settings.vm_filters is not None:
            return dict(self.settings.vm_filters)
        return dict(self.settings.filters)

    async def _devices(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        hint = "inventory.netbox.filters"
        return await self.client.all(DEVICES, self._fields(filters, DEVICE_FIELDS), hint=hint)

    async def _vms(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        hint = (
            "inventory.netbox.vm_filters"
            if self.settings.vm_filters is not None
            else "inventory.netbox.filters (also applied to virtual machines; set vm_filters)"
        )
        return await self.client.all(VMS, self._fields(filters, VM_FIELDS), hint=hint)

    def _fields(self, filters: Mapping[str, Any], fields: str) -> dict[str, Any]:
        return dict(filters) if self.full_objects else {**filters, "fields": fields}

    async def _check_filters(self) -> None:
        """NetBox ignores a filter it does not know (``sitee: lab``, ``cf_typo: x``) and
        answers as if it were not there: every object. Each configured filter is tried
        once with a value nothing has: a known filter refuses it (400) or selects
        nothing; one that selects everything was ignored, and is refused here."""
        reads = [(DEVICES, self.settings.filters)]
        if self.settings.virtual_machines:
            reads.append((VMS, self._vm_filters()))
        found = await _together(*(self._unknown(path, filters) for path, filters in reads))
        named = zip(reads, found, strict=True)
        parts = [f"{', '.join(keys)} on {path}" for (path, _), keys in named if keys]
        if not parts:
            return
        hint = "inventory.netbox.filters"
        if found[-1] and len(found) > 1:
            hint = (
                "inventory.netbox.vm_filters"
                if self.settings.vm_filters is not None
                else "inventory.netbox.filters (also applied to virtual machines; set vm_filters)"
            )
        raise NetBoxRequestError(
            f"NetBox does not know the filter {' and '.join(parts)}: it ignores unknown "
            f"filters, which would select every object; check {hint}",
            status=400,
        )

    async def _unknown(self, path: str, filters: Mapping[str, Any]) -> list[str]:
        keys = [
            key
            for key, value in filters.items()
            if _probe_worthy(key, value) and (path, key) not in self._checked
        ]
        if not keys:
            return []
        total = (await self.client.get(path, {"limit": 1, "fields": "id"})).get("count")

        proven: set[str] = set()

        async def ignored(key: str) -> bool:
            try:
                answer = await self.client.get(path, {key: PROBE, "limit": 1, "fields": "id"})
            except NetBoxRequestError as exc:
                if exc.status == 400:
                    proven.add(key)  # NetBox checked the value: it knows the filter
                    return False
                raise
            return bool(total) and answer.get("count") == total

        verdicts = await _together(*(ignored(key) for key in keys))
        # A filter is remembered as known once proven: NetBox refused the probe's value,
        # or the probe narrowed a list that has objects (an empty list proves nothing).
        self._checked.update(
            (path, k)
            for k, bad in zip(keys, verdicts, strict=True)
            if k in proven or (total and not bad)
        )
        return [key for key, bad in zip(keys, verdicts, strict=True) if bad]

    async def _chunked(
        self, read: Any, filters: Mapping[str, Any], key: str, ids: Iterable[int]
    ) -> list[dict[str, Any]]:
        ordered = sorted(ids)
        if not ordered:
            return []
        chunks = [ordered[i : i + ID_CHUNK] for i in range(0, len(ordered), ID_CHUNK)]
        parts = await _together(*(read({**filters, key: chunk}) for chunk in chunks))
        return [obj for part in parts for obj in part]

    async def _chassis_devices(self, chassis_ids: Iterable[int]) -> list[dict[str, Any]]:
        # virtual_chassis_id refuses ids that do not exist (400): ask which still do.
        wanted = sorted(chassis_ids)
        if not wanted:
            return []
        existing = {
            vc["id"]
            for part in [wanted[i : i + ID_CHUNK] for i in range(0, len(wanted), ID_CHUNK)]
            for vc in await self.client.all(CHASSIS, {"id": part, "fields": "id"})
        }
        if not existing:
            return []
        return await self._chunked(
            self._devices, self.settings.filters, "virtual_chassis_id", existing
        )

    async def _sites(self) -> dict[int, Mapping[str, Any] | None]:
        sites = await self.client.all(SITES, {"fields": "id,slug,region"})
        return {s["id"]: s.get("region") for s in sites if isinstance(s.get("id"), int)}

    def _map(
        self, devices: list[dict[str, Any]], vms: list[dict[str, Any]], now: datetime
    ) -> _Mapped:
        out = _Mapped()
        stand_ins = _stand_ins(devices)
        members: list[VcMember] = []
        objects: list[tuple[dict[str, Any], Kind]] = [(d, "device") for d in devices]
        objects += [(v, "vm") for v in vms]
        for obj, kind in objects:
            forced = stand_ins.get(obj["id"]) if kind == "device" else None
            result = map_device(obj, kind, self.settings, self._regions, now=now, vc_master=forced)
            if isinstance(result, VcMember):
                members.append(result)
                continue
            if isinstance(result, Skipped):
                out.skipped.append(result)
                continue
            if result.external_id in out.hosts:
                # Two objects of one name in NetBox map to different ids; one id twice
                # only happens when the list moved during the read: keep the first.
                continue
            out.hosts[result.external_id] = result
            out.objects[result.external_id] = obj
            if kind == "device":
                out.device_hosts[obj["id"]] = result.external_id
        for member in members:
            if member.chassis in out.hosts:
                out.device_hosts[parse_external_id(member.external_id)[1]] = member.chassis
        return out

    # --- cables ------------------------------------------------------------------------

    async def _cables(self, device_hosts: Mapping[int, str]) -> list[Cable]:
        """Cables whose two ends are interfaces of two different synced hosts. Read by
        ``device_id`` in chunks: it costs the cables of the synced devices, not every
        cable in NetBox (patch panels, power)."""
        if not device_hosts:
            return []
        ordered = sorted(device_hosts)
        chunks = [ordered[i : i + ID_CHUNK] for i in range(0, len(ordered), ID_CHUNK)]
        parts = await _together(
            *(
                self.client.all(CABLES, {"device_id": chunk, "fields": CABLE_FIELDS})
                for chunk in chunks
            )
        )
        seen: dict[int, dict[str, Any]] = {}
        for part in parts:
            for cable in part:
                seen[cable["id"]] = cable
        cables: list[Cable] = []
        for cable_id in sorted(seen):
            cables.extend(_cable(seen[cable_id], device_hosts))
        return cables

    # --- the change log ----------------------------------------------------------------

    async def changes_since(self, cursor: ChangeCursor | None) -> ChangeBatch:
        """What changed since ``cursor``. The first call (None) starts from the newest
        change NetBox has and reports nothing older."""
        if cursor is None:
            return ChangeBatch(frozenset(), False, await self._newest_cursor(None))
        params: dict[str, Any] = {"ordering": "time"}
        newer: dict[str, Any] = {}
        if cursor.time is not None:
            params["time_after"] = (_parse_time(cursor.time) - OVERLAP).isoformat()
            newer["time_after"] = cursor.time
        # Counted past the cursor only: counting the overlap too, a burst of changes
        # would look new at every read for a minute (a full sync at every read).
        count = await self._changes({**params, **newer, "limit": 1}, count=True)
        if count > MAX_CHANGES:
            # A bulk import or edit: reading thousands of changes costs more than one
            # full reconcile, which it needs anyway.
            return ChangeBatch(
                frozenset(),
                True,
                await self._newest_cursor(cursor.time),
                time.time(),
                (f"{count} changes since the last read",),
                count,
            )
        changes = await self._changes(params)
        fresh = [c for c in changes if c.get("id") not in cursor.seen]
        found = self._classify(fresh)
        if found.ip_ids:
            try:
                found.changed |= await self._primary_ip_hosts(found.ip_ids)
            except NetBoxRequestError:
                # An address deleted since (its id no longer validates): read everything.
                found.reasons.append("a changed IP address could not be traced to its device")
        times = [_parse_time(c["time"]) for c in changes if isinstance(c.get("time"), str)]
        fresh_times = [_parse_time(c["time"]) for c in fresh if isinstance(c.get("time"), str)]
        return ChangeBatch(
            ids=frozenset(found.changed),
            full=bool(found.reasons),
            cursor=_cursor(changes, max(times)) if times else cursor,
            newest=max(fresh_times).timestamp() if fresh_times else None,
            reasons=tuple(found.reasons),
            changes=len(fresh),
        )

    async def _newest_cursor(self, fallback: str | None) -> ChangeCursor:
        """A cursor at the newest change, knowing every change of the overlap before it
        (ids and times only), so that the next read reports none of them."""
        newest = await self._changes({"limit": 1, "ordering": "-time"}, one_page=True)
        if not newest or not isinstance(newest[0].get("time"), str):
            return ChangeCursor(fallback)
        at = _parse_time(newest[0]["time"])
        recent = await self._changes(
            {"time_after": (at - OVERLAP).isoformat(), "ordering": "time"}, fields="id,time"
        )
        return _cursor([*newest, *recent], at)

    @overload
    async def _changes(self, params: Mapping[str, Any], *, count: Literal[True]) -> int: ...

    @overload
    async def _changes(
        self, params: Mapping[str, Any], *, one_page: bool = False, fields: str = CHANGE_FIELDS
    ) -> list[dict[str, Any]]: ...

    async def _changes(
        self,
        params: Mapping[str, Any],
        *,
        one_page: bool = False,
        count: bool = False,
        fields: str = CHANGE_FIELDS,
    ) -> int | list[dict[str, Any]]:
        """The object-change log (of the watched types): all pages, one page, or the
        count. ``/api/core/`` first, ``/api/extras/`` on a NetBox before 4.1."""
        query = {**params, "changed_object_type": sorted(WATCHED_TYPES), "fields": fields}
        paths = [self._changes_path] if self._changes_path else list(CHANGES)
        for index, path in enumerate(paths):
            try:
                if count or one_page:
                    answer = await self.client.get(path, query)
                    self._changes_path = path
                    if count:
                        return int(answer.get("count") or 0)
                    return list(answer.get("results") or [])
                result = await self.client.all(path, query)
                self._changes_path = path
                return result
            except NetBoxRequestError as exc:
                if exc.status != 404 or index == len(paths) - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _classify(self, changes: list[dict[str, Any]]) -> Classified:
        out = Classified()
        for change in changes:
            kind = change.get("changed_object_type")
            object_id = change.get("changed_object_id")
            action = change.get("action")
            action = action.get("value") if isinstance(action, Mapping) else action
            if isinstance(kind, str) and isinstance(object_id, int) and isinstance(action, str):
                classify(
                    out,
                    kind,
                    object_id,
                    action,
                    change.get("prechange_data"),
                    change.get("postchange_data"),
                    cables=self.settings.cables,
                )
        return out

    async def _primary_ip_hosts(self, ip_ids: set[int]) -> set[str]:
        found: set[str] = set()
        reads = []
        for path, kind in ((DEVICES, "device"), (VMS, "vm")):
            for key in ("primary_ip4_id", "primary_ip6_id"):
                reads.append((kind, self.client.all(path, {key: sorted(ip_ids), "fields": "id"})))
        answers = await _together(*(read for _, read in reads))
        for (kind, _), objs in zip(reads, answers, strict=True):
            for obj in objs:
                found.add(external_id(kind, obj["id"]))
        return found


# --- helpers -----------------------------------------------------------------------------


async def _together(*aws: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run ``aws`` at once; the first failure cancels the others and is raised as itself
    (asyncio.gather would leave the others running against a client being closed)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(aw) for aw in aws]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _probe_worthy(key: str, value: Any) -> bool:
    # Booleans: a BooleanFilter reads an unknown value as "not given", like an unknown key.
    if isinstance(value, bool) or str(value).lower() in ("true", "false"):
        return False
    return key not in _NOT_PROBED and not any(n in key for n in _NEGATIONS)


async def _nothing() -> list[dict[str, Any]]:
    return []


def _stand_ins(devices: list[dict[str, Any]]) -> dict[int, bool]:
    """For chassis without a master: which member stands for it (lowest vc_position,
    then id): {device id: True for it, False for the others}."""
    masterless: dict[int, list[dict[str, Any]]] = {}
    for device in devices:
        vc = device.get("virtual_chassis")
        if isinstance(vc, Mapping) and vc.get("master") is None and isinstance(vc.get("id"), int):
            masterless.setdefault(vc["id"], []).append(device)
    out: dict[int, bool] = {}
    for members in masterless.values():
        members.sort(key=lambda d: (d.get("vc_position") or 256, d["id"]))
        for index, device in enumerate(members):
            out[device["id"]] = index == 0
    return out


def _cable(cable: Mapping[str, Any], device_hosts: Mapping[int, str]) -> list[Cable]:
    ends: list[list[tuple[str, str]]] = []
    for side in ("a_terminations", "b_terminations"):
        found = []
        for term in cable.get(side) or ():
            if not isinstance(term, Mapping) or term.get("object_type") != "dcim.interface":
                continue
            iface = term.get("object") or {}
            device = iface.get("device")
            device_id = device.get("id") if isinstance(device, Mapping) else None
            host = device_hosts.get(device_id) if isinstance(device_id, int) else None
            if host is not None and iface.get("name"):
                found.append((host, str(iface["name"])))
        ends.append(found)
    a_side, b_side = ends
    if not a_side or not b_side:
        return []
    status = _slug(cable.get("status")) or "connected"
    if len(a_side) == 1 and len(b_side) == 1:
        pairs = [(a_side[0], b_side[0])]
    elif len(a_side) == len(b_side):
        pairs = list(zip(a_side, b_side, strict=True))  # a breakout: port n to port n
    else:
        return []  # no way to tell which port faces which
    out = []
    for index, ((a_host, a_port), (b_host, b_port)) in enumerate(pairs):
        if a_host == b_host:
            continue  # between members of one chassis: not a link between hosts
        suffix = "" if len(pairs) == 1 else f"/{index}"
        out.append(
            Cable(f"dcim.cable:{cable['id']}{suffix}", a_host, a_port, b_host, b_port, status)
        )
    return out


def _slug(value: Any) -> str | None:
    """A choice field's value (``{"value": "connected", "label": ...}``)."""
    if isinstance(value, Mapping):
        found = value.get("value")
        return str(found) if found is not None else None
    return str(value) if isinstance(value, str) else None


def _cursor(changes: list[dict[str, Any]], newest: datetime) -> ChangeCursor:
    """A cursor at ``newest``, remembering the ids read within the overlap before it."""
    floor = newest - OVERLAP
    seen = frozenset(
        c["id"]
        for c in changes
        if isinstance(c.get("id"), int)
        and isinstance(c.get("time"), str)
        and _parse_time(c["time"]) >= floor
    )
    return ChangeCursor(newest.isoformat(), seen)


def _parse_time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
