"""Checks shared by the built-in tasks: a value of the wrong type is the device's fault
and fails its poll as a malformed reply, never as a crash of the poller."""

from __future__ import annotations

from typing import TypeVar

from netmon.errors import SnmpEndOfMibError, SnmpMalformedReplyError, SnmpNoSuchError
from netmon.snmp.oids import name_of
from netmon.snmp.values import Missing, VarBind

__all__ = ["optional", "require", "text"]

T = TypeVar("T")


def require(vb: VarBind, kind: type[T]) -> T:
    """The value, which must be present and of ``kind``."""
    if vb.value is Missing.END_OF_MIB_VIEW:
        raise SnmpEndOfMibError(f"{name_of(vb.oid)}: endOfMibView")
    if isinstance(vb.value, Missing):
        raise SnmpNoSuchError(f"{name_of(vb.oid)}: {vb.value.value}")
    if not isinstance(vb.value, kind) or isinstance(vb.value, bool):
        raise SnmpMalformedReplyError(f"{name_of(vb.oid)}: expected {kind.__name__}, got {vb.type}")
    return vb.value


def optional(vb: VarBind | None, kind: type[T]) -> T | None:
    """The value, or None when the agent does not have it."""
    if vb is None or isinstance(vb.value, Missing):
        return None
    return require(vb, kind)


def text(vb: VarBind | None) -> str:
    """An OCTET STRING as text (invalid UTF-8 replaced, not fatal); '' when missing."""
    raw = optional(vb, bytes)
    return "" if raw is None else raw.decode("utf-8", "replace")
