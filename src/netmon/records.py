"""The typed records that cross from collection to ingest, and nothing else does.

A record is immutable and carries its device, time and labels. Tasks (built-in or a
user's) return lists of these; the write path persists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid4

import msgspec

__all__ = [
    "ConfigSnapshot",
    "DeviceEvent",
    "DeviceFacts",
    "Record",
    "Sample",
    "SeriesKey",
    "SeriesKind",
]

SeriesKind = Literal["gauge", "counter"]

U64_MAX = 2**64 - 1


class SeriesKey(msgspec.Struct, frozen=True, cache_hash=True):
    """What a series is: a metric of a device, told apart by labels (ifName, ...).

    Build it once per series and reuse it across polls: equal keys hash alike, and the
    writer resolves each key to its database id only once. ``bits`` is a counter's width
    (32 or 64): rates need it to tell a wrap from a reset.
    """

    device: str
    metric: str
    labels: tuple[tuple[str, str], ...] = ()
    kind: SeriesKind = "gauge"
    unit: str = ""
    bits: Literal[32, 64] = 64

    @classmethod
    def of(
        cls,
        device: str,
        metric: str,
        labels: Mapping[str, str] | None = None,
        *,
        kind: SeriesKind = "gauge",
        unit: str = "",
        bits: Literal[32, 64] = 64,
    ) -> SeriesKey:
        pairs = tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))
        return cls(device=device, metric=metric, labels=pairs, kind=kind, unit=unit, bits=bits)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


class Sample(msgspec.Struct, frozen=True):
    """One value of one series at one time. Counters are raw integers up to 2**64-1;
    gauges may be floats. ``time`` must be timezone-aware."""

    series: SeriesKey
    time: datetime
    value: int | float


class DeviceEvent(msgspec.Struct, frozen=True):
    """A change of state on a device: reachability, reboot, config changed, ..."""

    device: str
    time: datetime
    kind: str
    message: str = ""
    severity: Literal["info", "warning", "critical"] = "info"
    attributes: dict[str, str] = msgspec.field(default_factory=dict)
    # Identifies the event across re-delivery (spool replay): stored once whatever happens.
    uid: UUID = msgspec.field(default_factory=uuid4)


class DeviceFacts(msgspec.Struct, frozen=True):
    """What a device says about itself (sysDescr, interface names and aliases, ...).

    Latest value wins: each top-level key replaces the stored one; nothing is kept as
    history (changes that matter are :class:`DeviceEvent`s).
    """

    device: str
    time: datetime
    facts: dict[str, Any]


class ConfigSnapshot(msgspec.Struct, frozen=True):
    """A device's configuration as a collector read it (NETCONF ``<get-config>``, CLI
    ``show running-config``), whole and unredacted: the store redacts secrets before it
    hashes or keeps it (``netmon.store.configs``), and stores it only if it changed.

    ``source`` is the datastore (running, candidate, startup); ``format`` is ``xml`` for
    NETCONF and ``text`` for CLI output.
    """

    device: str
    time: datetime
    source: Literal["running", "candidate", "startup"]
    protocol: Literal["netconf", "cli"]
    format: Literal["xml", "text"]
    content: str

    def __repr__(self) -> str:  # a config holds secrets until it is stored: never log one
        return (
            f"ConfigSnapshot(device={self.device!r}, source={self.source!r}, "
            f"protocol={self.protocol!r}, {len(self.content)} characters)"
        )


Record = Sample | DeviceEvent | DeviceFacts | ConfigSnapshot
