"""The OIDs netmon reads, by name: a small table of our own instead of MIB files.

Resolving names through pysnmp's MIB view on every request costs more CPU than the request
itself, and the MIB files are often not installed; the built-in tasks need a few dozen
objects, all numeric here. ``name_of`` turns an OID back into ``ifHCInOctets.3`` style for
messages.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "HR", "IF", "IFX", "NAMES", "SMI_TYPES", "SYSTEM", "Oid", "name_of", "parse_oid", "smi_type",
]  # fmt: skip

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


def _smi_types() -> dict[Oid, str]:
    c64 = "Counter64"
    c32 = "Counter32"
    octets = "OctetString"
    integer = "Integer"
    return {
        SYSTEM.sysDescr: octets, SYSTEM.sysObjectID: "ObjectIdentifier",
        SYSTEM.sysUpTime: "TimeTicks", SYSTEM.sysContact: octets, SYSTEM.sysName: octets,
        SYSTEM.sysLocation: octets,
        IF.ifNumber: integer, IF.ifIndex: integer, IF.ifDescr: octets, IF.ifType: integer,
        IF.ifMtu: integer, IF.ifSpeed: "Gauge32", IF.ifPhysAddress: octets,
        IF.ifAdminStatus: integer, IF.ifOperStatus: integer, IF.ifLastChange: "TimeTicks",
        IF.ifInOctets: c32, IF.ifInUcastPkts: c32, IF.ifInDiscards: c32, IF.ifInErrors: c32,
        IF.ifOutOctets: c32, IF.ifOutUcastPkts: c32, IF.ifOutDiscards: c32,
        IF.ifOutErrors: c32,
        IFX.ifName: octets, IFX.ifHCInOctets: c64, IFX.ifHCInUcastPkts: c64,
        IFX.ifHCInMulticastPkts: c64, IFX.ifHCInBroadcastPkts: c64, IFX.ifHCOutOctets: c64,
        IFX.ifHCOutUcastPkts: c64, IFX.ifHCOutMulticastPkts: c64,
        IFX.ifHCOutBroadcastPkts: c64, IFX.ifHighSpeed: "Gauge32", IFX.ifAlias: octets,
        IFX.ifCounterDiscontinuityTime: "TimeTicks",
        HR.hrSystemUptime: "TimeTicks", HR.hrStorageType: "ObjectIdentifier",
        HR.hrStorageDescr: octets, HR.hrStorageAllocationUnits: integer,
        HR.hrStorageSize: integer, HR.hrStorageUsed: integer, HR.hrProcessorLoad: integer,
    }  # fmt: skip


# The SMI type of each object above. Engines that return bare values (gufo-snmp: int,
# bytes, str) take the type from here, so a counter's width and an OID-valued object are
# known without the agent's type tags.
SMI_TYPES: Final[dict[Oid, str]] = _smi_types()


def smi_type(oid: Oid) -> str | None:
    """The SMI type of ``oid`` (a scalar instance or a column's cell), if netmon knows it."""
    for cut in range(len(oid), 1, -1):
        found = SMI_TYPES.get(oid[:cut])
        if found is not None:
            return found
    return None


def name_of(oid: Oid) -> str:
    """The best name for ``oid``: ``sysName.0``→``sysName``, ``ifHCInOctets.3``, or dotted."""
    for cut in range(len(oid), 0, -1):
        name = NAMES.get(oid[:cut])
        if name is not None:
            rest = oid[cut:]
            return name + "".join(f".{p}" for p in rest)
    return ".".join(map(str, oid))
