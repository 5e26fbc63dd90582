"""SNMP values as plain Python, translated once at the client boundary.

Tasks never see pysnmp's ASN.1 objects: each value is an ``int``, ``bytes``, an OID tuple,
an IPv4 string, or a :class:`Missing` marker, and keeps the name of its SMI type
(``Counter64``, ``TimeTicks``, ...) so a task can tell a 32-bit counter from a 64-bit one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NamedTuple

from netmon.snmp.oids import Oid

__all__ = [
    "COUNTER_TYPES",
    "INTEGER_TYPES",
    "Missing",
    "SnmpValue",
    "VarBind",
    "answered_at",
    "from_pysnmp",
]


class Missing(enum.Enum):
    """The three "exception" values an SNMPv2 agent puts in place of a value."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"
    END_OF_MIB_VIEW = "endOfMibView"


SnmpValue = int | float | bytes | Oid | str | Missing | None  # float: an Opaque float

INTEGER_TYPES = frozenset(
    {"Integer", "Integer32", "Counter32", "Gauge32", "Unsigned32", "TimeTicks", "Counter64"}
)
COUNTER_TYPES = {"Counter32": 32, "Counter64": 64}


def answered_at(sent: float, received: float) -> float:
    """When the device read the values of an answer: halfway between the request's send
    and the answer's arrival (a path as slow both ways).

    A counter's rate divides its growth by the time between two of its readings. Stamped
    at the end of a poll, a counter read ten round trips earlier carries ten round trips
    of error, and when the round trip changes (a congested link, a relay) the rate is off
    by that change over the interval: doubled once, in a chaos run, and then dropped as
    faster than the link. Stamped per answer, what is left is the path's asymmetry.
    """
    return sent + (received - sent) / 2


class VarBind(NamedTuple):
    oid: Oid
    value: SnmpValue
    type: str  # the SMI type name: Counter64, OctetString, noSuchInstance, ...

    @property
    def missing(self) -> bool:
        return isinstance(self.value, Missing)


def _ip(value: Any) -> str:
    return ".".join(str(b) for b in value.asOctets())


_CONVERT: dict[str, Callable[[Any], SnmpValue]] = {
    **{name: int for name in INTEGER_TYPES},
    "OctetString": lambda v: v.asOctets(),
    "Opaque": lambda v: v.asOctets(),
    "Bits": lambda v: v.asOctets(),
    "ObjectIdentifier": tuple,
    "ObjectName": tuple,
    "IpAddress": _ip,
    "Null": lambda _v: None,
    "NoSuchObject": lambda _v: Missing.NO_SUCH_OBJECT,
    "NoSuchInstance": lambda _v: Missing.NO_SUCH_INSTANCE,
    "EndOfMibView": lambda _v: Missing.END_OF_MIB_VIEW,
}
_TYPE_NAMES = {"NoSuchObject": "noSuchObject", "NoSuchInstance": "noSuchInstance"}
_TYPE_NAMES["EndOfMibView"] = "endOfMibView"


def from_pysnmp(name: Any, value: Any) -> VarBind:
    """One pysnmp (ObjectName, value) pair to a :class:`VarBind`.

    Raises ``ValueError`` for a type SNMP does not have (the caller maps it to a malformed
    reply).
    """
    type_name = type(value).__name__
    convert = _CONVERT.get(type_name)
    if convert is None:
        raise ValueError(f"unexpected SNMP value type {type_name}")
    return VarBind(tuple(name), convert(value), _TYPE_NAMES.get(type_name, type_name))
