"""NetBox objects (the JSON of ``/api/dcim/devices/`` and
``/api/virtualization/virtual-machines/``) to netmon hosts: pure functions, no I/O.

:func:`map_device` gives an :class:`InventoryHost`, a :class:`Skipped` with the reason, or
a :class:`VcMember` for a virtual-chassis member that is not the chassis' master (the
chassis is one monitored host: its master; the other members are not hosts and are not
errors either).

* Identity: ``dcim.device:<id>``, ``virtualization.virtualmachine:<id>``, and
  ``dcim.virtualchassis:<id>`` for a chassis, so a rename in NetBox renames the device
  in netmon and keeps its history.
* Address: ``primary_ip4``, else ``primary_ip6``, without the prefix length (IPv6 bare,
  no brackets). ``oob_ip`` is not used: it is the console/BMC network, not what SNMP,
  NETCONF or the CLI poll. No address: skipped (``no_address``) if the status says poll
  it; a device NetBox says is planned or decommissioned is still taken, unpolled or
  retired, without one.
* Lifecycle: ``status.value`` through ``status_map``; a status not listed is unpolled,
  and the note says so.
* Collection settings: the rendered config context's ``netmon`` key (``snmp``,
  ``netconf``, ``cli``, ``tasks``, ``poll_interval``, ``groups``, ``port``). Secrets
  there are references only (``{env: NAME}`` / ``{file: PATH}``): a value is refused
  with a message naming the device and the key path, never the value.
* Maintenance: see :func:`maintenance_windows`.

Found the hard way, against NetBox 4.7.3:

* A device's ``virtual_chassis`` is the nested chassis *with* its ``master`` (``id``,
  ``name``, ...) and ``member_count``; a chassis may have no master (``null``): the
  source then picks the member to stand for it (lowest ``vc_position``, then id) and
  passes ``vc_master=True``.
* The device's nested ``site`` is brief (id, name, slug, description): no region. The
  source reads the sites once and passes ``regions`` (site id -> the site's region).
* Datetime custom fields come back as ISO text with an offset
  (``2026-03-01T22:00:00+00:00``); a naive one is taken as UTC.
* ``custom_fields`` holds every custom field defined for the type, unset ones as null.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from netmon.config import NetBoxSettings
from netmon.inventory.model import InventoryHost, Lifecycle, MaintenanceWindow, Skipped

__all__ = [
    "CONTEXT_KEY",
    "CONTEXT_KEYS",
    "Kind",
    "VcMember",
    "external_id",
    "maintenance_windows",
    "map_device",
    "parse_external_id",
    "strip_prefix",
]

Kind = Literal["device", "vm"]
CONTEXT_KEY = "netmon"
CONTEXT_KEYS = frozenset({"snmp", "netconf", "cli", "tasks", "poll_interval", "groups", "port"})
SECRET_SECTIONS = ("snmp", "netconf", "cli")
# Key names that hold secrets: SNMP's auth/priv ``key`` and ``community``, SSH
# ``password``, and anything named like a secret. ``key_file`` (a path) and
# ``host_key`` (a public key) are not secrets.
SECRET_NAME = re.compile(
    r"(^key$|private_key|password|passwd|secret|community|passphrase|token)", re.I
)
# A maintenance tag without an end: a window to the next hour + 24 h. The full sync (hourly
# at most) extends it while the tag stays; it moves once an hour, not at every sync, and a
# silence outlives a sync that stopped by a day at most.
TAG_WINDOW = timedelta(hours=25)

_TYPES: dict[str, str] = {
    "device": "dcim.device",
    "vm": "virtualization.virtualmachine",
    "virtualchassis": "dcim.virtualchassis",
}
_KINDS = {v: k for k, v in _TYPES.items()}


@dataclass(frozen=True)
class VcMember:
    """A virtual-chassis member that is not its master: monitored through the chassis
    (``chassis``, its external id). Kept so cables on its ports map to the chassis."""

    name: str
    external_id: str
    chassis: str


def external_id(kind: str, object_id: int) -> str:
    """``dcim.device:42``; kind is ``device``, ``vm`` or ``virtualchassis``."""
    return f"{_TYPES[kind]}:{object_id}"


def parse_external_id(ref: str) -> tuple[str, int]:
    """``dcim.device:42`` -> (``device``, 42); ValueError for anything else."""
    prefix, _, number = ref.partition(":")
    if prefix not in _KINDS or not number.isdigit():
        raise ValueError(f"not a NetBox external id: {ref!r}")
    return _KINDS[prefix], int(number)


def strip_prefix(address: str) -> str:
    """``10.0.0.1/24`` -> ``10.0.0.1``; ``2001:db8::1/64`` -> ``2001:db8::1``."""
    host = address.split("/", 1)[0].strip()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def map_device(
    obj: Mapping[str, Any],
    kind: Kind,
    settings: NetBoxSettings,
    regions: Mapping[int, Mapping[str, Any] | None] | None = None,
    *,
    now: datetime | None = None,
    vc_master: bool | None = None,
) -> InventoryHost | Skipped | VcMember:
    """One NetBox device or VM as a netmon host, or why not.

    ``regions`` maps a site id to that site's region (nested JSON with ``slug``);
    ``vc_master`` overrides whether this device stands for its virtual chassis (for a
    chassis without a master); ``now`` is for tests.
    """
    now = now or datetime.now(UTC)
    object_id = obj.get("id")
    if not isinstance(object_id, int):
        raise ValueError("a NetBox object without an integer id")
    own_id = external_id(kind, object_id)
    name = obj.get("name") or ""
    chassis = obj.get("virtual_chassis") if kind == "device" else None
    labels: dict[str, str] = {}
    if isinstance(chassis, Mapping) and isinstance(chassis.get("id"), int):
        master = chassis.get("master")
        is_master = (
            vc_master
            if vc_master is not None
            else isinstance(master, Mapping) and master.get("id") == object_id
        )
        chassis_id = external_id("virtualchassis", chassis["id"])
        if not is_master:
            return VcMember(name=str(name or object_id), external_id=own_id, chassis=chassis_id)
        labels["virtual_chassis"] = str(chassis.get("name") or chassis["id"])
        name = chassis.get("name") or name
        own_id = chassis_id
    if not name:
        return Skipped(
            name=f"#{object_id}",
            external_id=own_id,
            reason="no_name",
            message=f"NetBox {_TYPES[kind]} {object_id} has no name: name it to monitor it",
        )
    name = str(name)
    who = f"{name} ({own_id})"

    status = _slug(obj.get("status"), "value") or "unknown"
    lifecycle: Lifecycle = settings.status_map.get(status, "unpolled")
    notes = [f"status {status}"]
    if status not in settings.status_map:
        notes.append(f"status {status} is not in inventory.netbox.status_map: unpolled")

    address = _address(obj)
    if address is None and lifecycle in ("active", "muted"):
        return Skipped(
            name=name,
            external_id=own_id,
            reason="no_address",
            message=f"{who} has no primary IPv4 or IPv6 address in NetBox",
        )

    context = _context(obj, who)
    if isinstance(context, Skipped):
        return Skipped(name, own_id, context.reason, context.message)

    site = _slug(obj.get("site"))
    role = _slug(obj.get("role"))
    platform_slug = _slug(obj.get("platform"))
    tags = tuple(t for t in (_slug(tag) for tag in obj.get("tags") or ()) if t)
    if site:
        labels["site"] = site
        site_id = (obj.get("site") or {}).get("id")
        region = _slug((regions or {}).get(site_id)) if isinstance(site_id, int) else None
        if region:
            labels["region"] = region
    for label, value in (
        ("role", role),
        ("tenant", _slug(obj.get("tenant"))),
        ("platform", platform_slug),
        ("cluster", _name(obj.get("cluster"))),
    ):
        if value:
            labels[label] = value
    custom = obj.get("custom_fields") or {}
    for field_name in settings.custom_fields:
        text = _text(custom.get(field_name)) if isinstance(custom, Mapping) else None
        if text is not None:
            labels[f"cf_{field_name}"] = text

    windows, warnings = maintenance_windows(obj, settings, now=now)
    notes.extend(warnings)
    data = {k: v for k, v in context.items() if k not in ("groups", "port")}
    return InventoryHost(
        name=name,
        external_id=own_id,
        address=address,
        platform=settings.platform_map.get(platform_slug, platform_slug) if platform_slug else None,
        site=site,
        role=role,
        tags=tags,
        labels=labels,
        lifecycle=lifecycle,
        data=data,
        groups=tuple(context.get("groups") or ()),
        port=context.get("port"),
        maintenance=windows,
        note="; ".join(notes),
    )


def maintenance_windows(
    obj: Mapping[str, Any], settings: NetBoxSettings, *, now: datetime
) -> tuple[tuple[MaintenanceWindow, ...], list[str]]:
    """The device's maintenance, and warnings for the note.

    * Tagged ``maintenance_tag`` with the end field set: start field (or now) to end.
    * Tagged without an end: from the start field (or the hour) to the next hour + 24 h,
      extended by each full sync while the tag stays; removing the tag ends it at the
      next sync.
    * Not tagged: a window only when the end field is set and still ahead.
    * A window that has ended is dropped (a tag left behind is reported). A value that
      is not a date/time is reported and ignored; the device is taken all the same.
    """
    custom = obj.get("custom_fields") or {}
    if not isinstance(custom, Mapping):
        custom = {}
    tags = {_slug(tag) for tag in obj.get("tags") or ()} | {
        _name(tag) for tag in obj.get("tags") or ()
    }
    tagged = settings.maintenance_tag in tags
    warnings: list[str] = []
    start = _when(
        custom.get(settings.maintenance_start_field), settings.maintenance_start_field, warnings
    )
    end = _when(
        custom.get(settings.maintenance_end_field), settings.maintenance_end_field, warnings
    )
    if start is not None and end is not None and end <= start:
        warnings.append(
            f"{settings.maintenance_end_field} is not after {settings.maintenance_start_field}: "
            "window ignored"
        )
        start = end = None
    hour = now.replace(minute=0, second=0, microsecond=0)
    comment = f"NetBox: tag {settings.maintenance_tag}" if tagged else "NetBox: maintenance fields"
    if end is not None:
        if end <= now:
            if tagged:
                warnings.append(
                    f"tag {settings.maintenance_tag} set but {settings.maintenance_end_field} "
                    f"{end.isoformat()} has passed: not in maintenance"
                )
            return (), warnings
        return (MaintenanceWindow(start or hour, end, comment),), warnings
    if not tagged:
        return (), warnings
    begin = start or hour
    return (MaintenanceWindow(begin, max(begin, hour) + TAG_WINDOW, comment),), warnings


# --- pieces --------------------------------------------------------------------------


def _address(obj: Mapping[str, Any]) -> str | None:
    for key in ("primary_ip4", "primary_ip6"):
        ip = obj.get(key)
        if isinstance(ip, Mapping) and ip.get("address"):
            return strip_prefix(str(ip["address"]))
    return None


def _slug(value: Any, key: str = "slug") -> str | None:
    if isinstance(value, Mapping):
        found = value.get(key)
        return str(found) if found not in (None, "") else None
    return None


def _name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        found = value.get("name")
        return str(found) if found not in (None, "") else None
    return None


def _text(value: Any) -> str | None:
    """A custom field's value as a label: scalars as text, booleans true/false, an
    object by slug/name/display, a list joined by commas; null or empty: absent."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        for key in ("slug", "name", "display", "id"):
            if value.get(key) not in (None, ""):
                return str(value[key])
        return None
    if isinstance(value, list):
        parts = [t for t in (_text(v) for v in value) if t is not None]
        return ",".join(parts) or None
    return str(value)


def _when(value: Any, field_name: str, warnings: list[str]) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        # A datetime custom field's value is no secret; shown so it can be found.
        warnings.append(f"{field_name} {str(value)[:40]!r} is not an ISO date/time: ignored")
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _context(obj: Mapping[str, Any], who: str) -> dict[str, Any] | Skipped:
    """The ``netmon`` key of the rendered config context, checked."""
    rendered = obj.get("config_context")
    if rendered is None:
        return {}
    if not isinstance(rendered, Mapping):
        return _bad(who, "config_context", "is not a mapping")
    settings = rendered.get(CONTEXT_KEY)
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        return _bad(who, CONTEXT_KEY, "must be a mapping of netmon settings")
    unknown = sorted(str(k) for k in settings if k not in CONTEXT_KEYS)
    if unknown:
        return _bad(
            who,
            f"{CONTEXT_KEY}.{unknown[0]}",
            f"is not a netmon setting (expected {', '.join(sorted(CONTEXT_KEYS))})",
        )
    for section in SECRET_SECTIONS:
        value = settings.get(section)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            return _bad(who, f"{CONTEXT_KEY}.{section}", "must be a mapping")
        found = _secret_values(value, f"{CONTEXT_KEY}.{section}")
        if found is not None:
            path, problem = found
            reason = "secret_value" if problem == "value" else "bad_context"
            detail = (
                "holds a secret value; use a reference: {env: NAME} or {file: PATH}"
                if problem == "value"
                else "expected a reference: {env: NAME} or {file: PATH}"
            )
            return Skipped(who, "", reason, f"{who}: config context {path} {detail}")
    groups = settings.get("groups")
    if groups is not None and (
        not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups)
    ):
        return _bad(who, f"{CONTEXT_KEY}.groups", "must be a list of group names")
    tasks = settings.get("tasks")
    if tasks is not None and (
        not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks)
    ):
        return _bad(who, f"{CONTEXT_KEY}.tasks", "must be a list of task names")
    port = settings.get("port")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        return _bad(who, f"{CONTEXT_KEY}.port", "must be a port 1 to 65535")
    return dict(settings)


def _secret_values(section: Mapping[str, Any], path: str) -> tuple[str, str] | None:
    """The first secret-bearing key under ``section`` that is not a reference: (key
    path, "value" for a value where a reference belongs, "shape" for anything else)."""
    for key, value in section.items():
        where = f"{path}.{key}"
        if SECRET_NAME.search(str(key)) and not str(key).endswith("_file"):
            if value is None:
                continue
            if isinstance(value, Mapping):
                if len(value) == 1 and (
                    isinstance(value.get("env"), str) or isinstance(value.get("file"), str)
                ):
                    continue
                return where, "shape"
            return where, "value"
        if isinstance(value, Mapping):
            found = _secret_values(value, where)
            if found is not None:
                return found
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    found = _secret_values(item, f"{where}[{index}]")
                    if found is not None:
                        return found
    return None


def _bad(who: str, path: str, problem: str) -> Skipped:
    return Skipped(who, "", "bad_context", f"{who}: config context {path} {problem}")
