"""What every inventory source gives netmon: hosts with an identity, a lifecycle and
labels, or the reason an object could not be taken.

A source (the YAML folder, NetBox) turns its objects into :class:`InventoryHost`; the
sync (``netmon.inventory.sync``) compares them with the devices the source owns and
applies the difference. Nothing here talks to a network or a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "LIFECYCLES",
    "Cable",
    "Fetched",
    "InventoryHost",
    "Lifecycle",
    "MaintenanceWindow",
    "Skipped",
]

# active: polled and alerted. muted: polled, its alerts silenced (NetBox offline, failed).
# unpolled: known, not polled (planned, staged). retired: left the inventory, or
# decommissioning: not polled, alerts resolved, purged after a grace period.
Lifecycle = Literal["active", "muted", "unpolled", "retired"]
LIFECYCLES: tuple[Lifecycle, ...] = ("active", "muted", "unpolled", "retired")


@dataclass(frozen=True)
class MaintenanceWindow:
    """A time the source says the device is in maintenance: a silence in netmon."""

    starts_at: datetime
    ends_at: datetime
    comment: str = ""


@dataclass(frozen=True)
class InventoryHost:
    """One monitored host as a source describes it.

    ``external_id`` is the source's identity for it (NetBox: ``dcim.device:42``; YAML: the
    name), so that a rename at the source renames the device and keeps its history.
    ``data`` is the Nornir host data (``snmp``, ``netconf``, ``cli``, ``tasks``,
    ``poll_interval``, ...) that the poll plan reads; ``groups`` name Nornir groups of the
    local inventory folder it inherits from.
    """

    name: str
    external_id: str
    address: str | None = None
    platform: str | None = None
    site: str | None = None
    role: str | None = None
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    lifecycle: Lifecycle = "active"
    data: dict[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    port: int | None = None
    maintenance: tuple[MaintenanceWindow, ...] = ()
    # What the source said of it, for the dry run and the audit ("status: offline").
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    """An object the source holds that netmon could not take, and why. ``reason`` is a
    short key for metrics (``no_address``, ``secret_value``, ``bad_context``, ``owned``);
    ``message`` says what to fix."""

    name: str
    external_id: str
    reason: str
    message: str


@dataclass(frozen=True)
class Cable:
    """An intended link between two synced hosts (a NetBox cable), by the hosts'
    ``external_id`` so that a rename keeps it. The LLDP check compares neighbours to these."""

    external_id: str
    a_host: str
    a_port: str
    b_host: str
    b_port: str
    status: str = "connected"


@dataclass(frozen=True)
class Fetched:
    """What one read of a source gave. ``complete`` is false when the read was partial
    (an incremental fetch of some ids): then what is absent is not gone."""

    hosts: list[InventoryHost]
    skipped: list[Skipped] = field(default_factory=list)
    complete: bool = True
    # Objects the source counted (hosts + skipped), for the mass-deletion guard.
    total: int | None = None
    # Intended links between synced hosts; None: the source has no cables (YAML).
    cables: list[Cable] | None = None
