"""The OIDs netmon reads, by name: a small table of our own instead of MIB files.

Resolving names through pysnmp's MIB view on every request costs more CPU than the request
itself, and the MIB files are often not installed; the built-in tasks need a few dozen
objects, all numeric here. ``name_of`` turns an OID back into ``ifHCInOctets.3`` style for
messages.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HR", "IF", "IFX", "NAMES", "SYSTEM", "Oid", "name_of", "parse_oid"]

Oid = tuple[int, ...]

_MIB2: Final = (1, 3, 6, 1, 2, 1)


def parse_oid(text: str) -> Oid:
    """``"1.3.6.1.2.1.1.5.0"`` (a leading dot is allowed) to a tuple of ints."""
    parts = text.strip().lstrip(".").split(".")
    try:
        oid = tuple(int(p) for p in parts)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a numeric OID") from exc
    if len(oid) < 2 or any(p < 0 for p in oid):
        raise ValueError(f"{text!r} is not a numeric OID")
    return oid


def _column(table_entry: Oid, column: int) -> Oid:
    return (*table_entry, column)


class SYSTEM:
    """SNMPv2-MIB system group (scalars, instance .0 included)."""

    sysDescr: Final = (*_MIB2, 1, 1, 0)
    sysObjectID: Final = (*_MIB2, 1, 2, 0)
    sysUpTime: Final = (*_MIB2, 1, 3, 0)
    sysContact: Final = (*_MIB2, 1, 4, 0)
    sysName: Final = (*_MIB2, 1, 5, 0)
    sysLocation: Final = (*_MIB2, 1, 6, 0)


_IF_ENTRY: Final = (*_MIB2, 2, 2, 1)
IF_NUMBER: Final = (*_MIB2, 2, 1, 0)
_IFX_ENTRY: Final = (*_MIB2, 31, 1, 1, 1)


class IF:
    """IF-MIB ifTable columns (append the ifIndex)."""

    ifNumber: Final = IF_NUMBER
    ifIndex: Final = _column(_IF_ENTRY, 1)
    ifDescr: Final = _column(_IF_ENTRY, 2)
    ifType: Final = _column(_IF_ENTRY, 3)
    ifMtu: Final = _column(_IF_ENTRY, 4)
    ifSpeed: Final = _column(_IF_ENTRY, 5)
    ifPhysAddress: Final = _column(_IF_ENTRY, 6)
    ifAdminStatus: Final = _column(_IF_ENTRY, 7)
    ifOperStatus: Final = _column(_IF_ENTRY, 8)
    ifLastChange: Final = _column(_IF_ENTRY, 9)
    ifInOctets: Final = _column(_IF_ENTRY, 10)
    ifInUcastPkts: Final = _column(_IF_ENTRY, 11)
    ifInDiscards: Final = _column(_IF_ENTRY, 13)
    ifInErrors: Final = _column(_IF_ENTRY, 14)
    ifOutOctets: Final = _column(_IF_ENTRY, 16)
    ifOutUcastPkts: Final = _column(_IF_ENTRY, 17)
    ifOutDiscards: Final = _column(_IF_ENTRY, 19)
    ifOutErrors: Final = _column(_IF_ENTRY, 20)


class IFX:
    """IF-MIB ifXTable columns (append the ifIndex)."""

    ifName: Final = _column(_IFX_ENTRY, 1)
    ifHCInOctets: Final = _column(_IFX_ENTRY, 6)
    ifHCInUcastPkts: Final = _column(_IFX_ENTRY, 7)
    ifHCInMulticastPkts: Final = _column(_IFX_ENTRY, 8)
    ifHCInBroadcastPkts: Final = _column(_IFX_ENTRY, 9)
    ifHCOutOctets: Final = _column(_IFX_ENTRY, 10)
    ifHCOutUcastPkts: Final = _column(_IFX_ENTRY, 11)
    ifHCOutMulticastPkts: Final = _column(_IFX_ENTRY, 12)
    ifHCOutBroadcastPkts: Final = _column(_IFX_ENTRY, 13)
    ifHighSpeed: Final = _column(_IFX_ENTRY, 15)
    ifAlias: Final = _column(_IFX_ENTRY, 18)
    ifCounterDiscontinuityTime: Final = _column(_IFX_ENTRY, 19)


_HR: Final = (*_MIB2, 25)


class HR:
    """HOST-RESOURCES-MIB objects netmon reads."""

    hrSystemUptime: Final = (*_HR, 1, 1, 0)
    hrStorageType: Final = (*_HR, 2, 3, 1, 2)
    hrStorageDescr: Final = (*_HR, 2, 3, 1, 3)
    hrStorageAllocationUnits: Final = (*_HR, 2, 3, 1, 4)
    hrStorageSize: Final = (*_HR, 2, 3, 1, 5)
    hrStorageUsed: Final = (*_HR, 2, 3, 1, 6)
    hrProcessorLoad: Final = (*_HR, 3, 3, 1, 2)


def _names() -> dict[Oid, str]:
    table: dict[Oid, str] = {}
    for group in (SYSTEM, IF, IFX, HR):
        for name, value in vars(group).items():
            if not name.startswith("_") and isinstance(value, tuple):
                table[value] = name
    return table


NAMES: Final[dict[Oid, str]] = _names()


def name_of(oid: Oid) -> str:
    """The best name for ``oid``: ``sysName.0``→``sysName``, ``ifHCInOctets.3``, or dotted."""
    for cut in range(len(oid), 0, -1):
        name = NAMES.get(oid[:cut])
        if name is not None:
            rest = oid[cut:]
            return name + "".join(f".{p}" for p in rest)
    return ".".join(map(str, oid))
