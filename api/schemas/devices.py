"""Devices as the API shows and takes them, and the one place rows become these shapes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from netmon.api.schemas.common import Label, Name

__all__ = [
    "DeviceCreate",
    "DeviceDetail",
    "DevicePage",
    "DeviceStatus",
    "DeviceSummary",
    "DeviceUpdate",
    "Interface",
    "PollHealth",
    "detail_from_row",
    "interface_reader",
    "make_interface",
    "summary_from_row",
]

# up, down, unknown: polled; unpolled: known to the inventory, not polled (planned,
# staged); retired: gone from the inventory, kept until purged.
DeviceStatus = Literal["up", "down", "unknown", "unpolled", "retired"]
Lifecycle = Literal["active", "muted", "unpolled", "retired"]
Address = Annotated[
    str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:_\[\]-]+$")
]
Tags = Annotated[list[Label], msgspec.Meta(max_length=50)]

# ifOperStatus / ifAdminStatus (IF-MIB) by number
IF_STATUS = {
    1: "up",
    2: "down",
    3: "testing",
    4: "unknown",
    5: "dormant",
    6: "notPresent",
    7: "lowerLayerDown",
}


class DeviceSummary(msgspec.Struct, frozen=True):
    id: int
    name: str
    address: str | None
    site: str | None
    role: str | None
    platform: str | None
    tags: list[str]
    # The inventory source that owns the row (yaml, netbox); null: the API's to change.
    owner: str | None = None
    status: DeviceStatus = "unknown"
    last_poll: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # The poller whose inventory holds it, and the source's id for it (dcim.device:42).
    poller: str | None = None
    external_id: str | None = None
    # active: polled and alerted; muted: polled, alerts silenced; unpolled; retired.
    lifecycle: Lifecycle = "active"
    retired_at: datetime | None = None
    retired_reason: str | None = None
    # From the source: region, tenant, cluster, custom fields (cf_<name>), ...
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class DevicePage(msgspec.Struct, frozen=True):
    items: list[DeviceSummary]
    next_cursor: str | None


class PollHealth(msgspec.Struct, frozen=True):
    reachable: bool
    last_poll: datetime
    last_success: datetime | None
    last_error_class: str | None
    last_error: str | None
    last_error_at: datetime | None
    duration_ms: float
    consecutive_failures: int
    overruns: int


class Interface(msgspec.Struct, frozen=True):
    """The newest values of one interface (rates in units per second)."""

    name: str
    admin_status: str | None = None
    oper_status: str | None = None
    speed_mbps: float | None = None
    in_bps: float | None = None
    out_bps: float | None = None
    in_errors_per_s: float | None = None
    out_errors_per_s: float | None = None
    in_discards_per_s: float | None = None
    out_discards_per_s: float | None = None
    updated_at: datetime | None = None


class DeviceDetail(msgspec.Struct, frozen=True):
    device: DeviceSummary
    facts: dict[str, Any]
    health: PollHealth | None
    interfaces: list[Interface]


class DeviceCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    address: Address | None = None
    site: Label | None = None
    role: Label | None = None
    platform: Label | None = None
    tags: Tags = msgspec.field(default_factory=list)


class DeviceUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fields to change; a field left out keeps its value, null clears it."""

    address: Address | msgspec.UnsetType | None = msgspec.UNSET
    site: Label | msgspec.UnsetType | None = msgspec.UNSET
    role: Label | msgspec.UnsetType | None = msgspec.UNSET
    platform: Label | msgspec.UnsetType | None = msgspec.UNSET
    tags: Tags | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> dict[str, object]:
        return {
            f: getattr(self, f)
            for f in self.__struct_fields__
            if getattr(self, f) is not msgspec.UNSET
        }


def _device_status(reachable: bool | None, lifecycle: str = "active") -> DeviceStatus:
    if lifecycle == "retired":
        return "retired"
    if lifecycle == "unpolled":
        return "unpolled"
    if reachable is None:
        return "unknown"
    return "up" if reachable else "down"


def summary_from_row(r: asyncpg.Record) -> DeviceSummary:
    return DeviceSummary(
        id=r["id"],
        name=r["name"],
        address=r["address"],
        site=r["site"],
        role=r["role"],
        platform=r["platform"],
        tags=list(r["tags"]),
        owner=r["owner"],
        status=_device_status(r["reachable"], r["lifecycle"]),
        last_poll=r["last_poll"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        poller=r["poller"],
        external_id=r["external_id"],
        lifecycle=r["lifecycle"],
        retired_at=r["retired_at"],
        retired_reason=r["retired_reason"],
        labels=json.loads(r["labels"]) if r["labels"] else {},
    )


# interface metric -> Interface field, and how to read the value. The speed comes from
# either of two metrics, kept apart until ``make_interface`` picks: every built-in task
# stores ``ifSpeed`` in bit/s (the SNMP one from ifHighSpeed when the agent has it, so a
# 10G port is not the Gauge32 cap); a user's task may store IF-MIB's ``ifHighSpeed``
# (Mbit/s) too, which is then the better figure.
INTERFACE_METRICS: dict[str, str] = {
    "ifAdminStatus": "admin_status",
    "ifOperStatus": "oper_status",
    "ifHighSpeed": "_high_speed",
    "ifSpeed": "_speed",
    "ifHCInOctets:rate": "in_bps",
    "ifHCOutOctets:rate": "out_bps",
    "ifInErrors:rate": "in_errors_per_s",
    "ifOutErrors:rate": "out_errors_per_s",
    "ifInDiscards:rate": "in_discards_per_s",
    "ifOutDiscards:rate": "out_discards_per_s",
}


def _status(number: float) -> object:
    return IF_STATUS.get(int(number), "unknown")


def _bits(number: float) -> object:
    return number * 8  # octets/s -> bits/s


def _same(number: float) -> object:
    return number


# interface metric -> (Interface field, how to read its value)
_INTERFACE_READ = {
    metric: (
        field,
        _status
        if field.endswith("_status")
        else _bits
        if field in ("in_bps", "out_bps")
        else _same,
    )
    for metric, field in INTERFACE_METRICS.items()
}


# IF-MIB's ifSpeed is a Gauge32: a faster link reads 4,294,967,295, not its speed.
IF_SPEED_CAP = 2**32 - 1


def make_interface(fields: dict[str, Any]) -> Interface:
    """An Interface from the fields the readers gave, the speed resolved: ifHighSpeed
    (Mbit/s) when above 0 (IF-MIB's 0 means "below 1 Mbit/s, see ifSpeed"), else
    ifSpeed (bit/s) unless it is the Gauge32 cap, which says only "4.29 Gbit/s or more"."""
    high = fields.pop("_high_speed", None)
    bps = fields.pop("_speed", None)
    if high:
        fields["speed_mbps"] = float(high)
    elif bps is not None and bps != IF_SPEED_CAP:
        fields["speed_mbps"] = bps / 1_000_000
    return Interface(**fields)


def interface_reader(metric: str) -> tuple[str, Any]:
    """The Interface field an interface metric feeds, and how its value (a float) reads."""
    return _INTERFACE_READ[metric]


def interfaces_from_rows(rows: list[asyncpg.Record]) -> list[Interface]:
    """Interfaces by name from ``store.interface_values``' rows (interface, newest time,
    metrics, values as floats)."""
    by_name: dict[str, dict[str, Any]] = {}
    read = _INTERFACE_READ
    for name, time, metrics, values in rows:
        fields: dict[str, Any] = {"name": name, "updated_at": time}
        for metric, value in zip(metrics, values, strict=True):
            field, convert = read[metric]
            fields[field] = convert(value)
        by_name[name] = fields
    return [make_interface(by_name[name]) for name in sorted(by_name)]


def detail_from_row(r: asyncpg.Record, interfaces: list[Interface]) -> DeviceDetail:
    health = None
    if r["last_poll"] is not None:
        health = PollHealth(
            reachable=r["reachable"],
            last_poll=r["last_poll"],
            last_success=r["last_success"],
            last_error_class=r["last_error_class"],
            last_error=r["last_error"],
            last_error_at=r["last_error_at"],
            duration_ms=r["duration_ms"],
            consecutive_failures=r["consecutive_failures"],
            overruns=r["overruns"],
        )
    return DeviceDetail(
        device=summary_from_row(r),
        facts=json.loads(r["facts"]),
        health=health,
        interfaces=interfaces,
    )
