"""Interface state read over NETCONF, as the records of the SNMP ``interfaces`` task.

Three YANG shapes are read, all mapped onto IF-MIB's metric names, units, counter widths
and status numbers (``netmon.tasks._interface_keys``), so an interface's series are the
same whichever protocol polls it:

* ietf-interfaces, RFC 7223: ``/interfaces-state/interface`` (state), with
  ``/interfaces/interface`` (configuration) for ``description`` and ``enabled``;
* ietf-interfaces, RFC 8343 (NMDA): ``/interfaces/interface`` holds state too;
* openconfig-interfaces: ``/interfaces/interface/state`` and ``state/counters``, with
  openconfig-if-ethernet's ``ethernet/state`` for the speed.

Which is read (:func:`choose_model`): ietf-interfaces, unless the server advertises
openconfig-interfaces and not ietf-interfaces. ietf-interfaces is preferred where both
are there because it is the YANG twin of IF-MIB: the same counter widths, the speed in
bit/s, a mandatory ``discontinuity-time``. A YANG 1.1 server lists its modules in
ietf-yang-library rather than in its hello; with neither module in the hello,
ietf-interfaces is asked for.

Counters whose YANG type is wider than the IF-MIB column (openconfig's errors and
discards are 64-bit, IF-MIB's 32-bit) are reduced modulo 2**32, which is what the
device's own IF-MIB agent would show; the rate pipeline handles the wrap.

``ifCounterDiscontinuityTime`` is, over NETCONF, the time the counters last restarted
(ietf ``discontinuity-time``, a date-time; openconfig ``last-clear``, nanoseconds since the
epoch), in hundredths of a second since the Unix epoch: unit "ticks" like the SNMP
series, and it changes exactly when the counters were reset, which is all the rate
pipeline asks of it (it compares one poll's value with the previous one's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from netmon.errors import NetconfMalformedReplyError
from netmon.netconf import xml
from netmon.netconf.client import Capabilities
from netmon.records import DeviceFacts, Record, Sample
from netmon.tasks._interface_keys import ADMIN_STATUS, OPER_STATUS
from netmon.tasks._interface_keys import interface_key as _key

__all__ = [
    "IETF_INTERFACES",
    "OPENCONFIG_ETHERNET",
    "OPENCONFIG_INTERFACES",
    "InterfaceState",
    "Model",
    "choose_model",
    "interface_records",
    "parse_ietf",
    "parse_openconfig",
    "subtree_filter",
]

IETF_INTERFACES = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
OPENCONFIG_INTERFACES = "http://openconfig.net/yang/interfaces"
OPENCONFIG_ETHERNET = "http://openconfig.net/yang/interfaces/ethernet"

Model = Literal["ietf", "openconfig"]

# YANG leaf (the same name in ietf and openconfig) -> (metric, unit, IF-MIB width)
COUNTERS: dict[str, tuple[str, str, Literal[32, 64]]] = {
    "in-octets": ("ifHCInOctets", "bytes", 64),
    "out-octets": ("ifHCOutOctets", "bytes", 64),
    "in-unicast-pkts": ("ifHCInUcastPkts", "packets", 64),
    "out-unicast-pkts": ("ifHCOutUcastPkts", "packets", 64),
    "in-multicast-pkts": ("ifHCInMulticastPkts", "packets", 64),
    "out-multicast-pkts": ("ifHCOutMulticastPkts", "packets", 64),
    "in-broadcast-pkts": ("ifHCInBroadcastPkts", "packets", 64),
    "out-broadcast-pkts": ("ifHCOutBroadcastPkts", "packets", 64),
    "in-errors": ("ifInErrors", "packets", 32),
    "out-errors": ("ifOutErrors", "packets", 32),
    "in-discards": ("ifInDiscards", "packets", 32),
    "out-discards": ("ifOutDiscards", "packets", 32),
}
# The most IF-MIB can say (ifHighSpeed is a Gauge32 of Mbit/s). Above it is a driver's
# "unknown": Linux reports a speed of -1 Mb/s, which netconfd sends as 2**64 - 10**6.
MAX_SPEED = (2**32 - 1) * 1_000_000
_U64 = 2**64
_INTEGER = re.compile(r"\+?[0-9]+")
_OC_SPEED = re.compile(r"SPEED_([0-9]+)(MB|GB)")
_TICK = timedelta(milliseconds=10)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_IETF_LEAVES = "<name/><if-index/><admin-status/><oper-status/><speed/><statistics/>"
_IETF_FILTER = (
    f'<interfaces xmlns="{IETF_INTERFACES}"><interface>'
    f"{_IETF_LEAVES}<description/><enabled/></interface></interfaces>",
    f'<interfaces-state xmlns="{IETF_INTERFACES}"><interface>'
    f"{_IETF_LEAVES}</interface></interfaces-state>",
)
_OPENCONFIG_FILTER = (
    f'<interfaces xmlns="{OPENCONFIG_INTERFACES}"><interface><name/><state/>'
    f'<ethernet xmlns="{OPENCONFIG_ETHERNET}"><state/></ethernet></interface></interfaces>',
)


@dataclass(slots=True)
class InterfaceState:
    """One interface as read, before it becomes records."""

    name: str
    index: int | None = None
    alias: str = ""
    admin_status: int | None = None
    oper_status: int | None = None
    speed: int | None = None  # bit/s
    discontinuity: int | None = None  # 1/100 s since the Unix epoch
    counters: dict[str, int] = field(default_factory=dict)  # YANG leaf -> value


def choose_model(capabilities: Capabilities) -> Model:
    if capabilities.module("openconfig-interfaces") and not capabilities.module("ietf-interfaces"):
        return "openconfig"
    return "ietf"


def subtree_filter(model: Model) -> tuple[str, ...]:
    """The ``<get>`` filter for ``model``: only the leaves that become records."""
    return _IETF_FILTER if model == "ietf" else _OPENCONFIG_FILTER


# -- ietf-interfaces ---------------------------------------------------------------------

_IF = {"if": IETF_INTERFACES}


def parse_ietf(device: str, data: xml.Element) -> list[InterfaceState]:
    """Interfaces from a ``<data>`` holding ``interfaces`` and/or ``interfaces-state``."""
    config = [
        _leaves(e, IETF_INTERFACES) for e in xml.elements(data, "if:interfaces/if:interface", _IF)
    ]
    nmda = [e for e in config if "oper-status" in e or "statistics" in e]
    if nmda:  # RFC 8343: one list, state included (a deprecated interfaces-state is ignored)
        return [_ietf_interface(device, e, e) for e in nmda]
    by_name = {_text(e.get("name")): e for e in config}
    out = []
    for entry in xml.elements(data, "if:interfaces-state/if:interface", _IF):
        state = _leaves(entry, IETF_INTERFACES)
        out.append(_ietf_interface(device, state, by_name.get(_text(state.get("name")))))
    return out


def _ietf_interface(device: str, state: _Leaves, config: _Leaves | None) -> InterfaceState:
    name = _text(state.get("name"))
    if not name:
        raise NetconfMalformedReplyError(f"{device}: an interface without a name")
    where = f"{device}: interface {name}"
    iface = InterfaceState(name)
    iface.index = _optional_int(where, "if-index", _text(state.get("if-index")))
    if config is not None:
        iface.alias = _text(config.get("description")) or ""
    iface.admin_status = _status(ADMIN_STATUS, _text(state.get("admin-status")))
    if iface.admin_status is None and config is not None:
        enabled = _text(config.get("enabled"))
        iface.admin_status = {"true": 1, "false": 2}.get(enabled or "")
    iface.oper_status = _status(OPER_STATUS, _text(state.get("oper-status")))
    iface.speed = _speed(_optional_int(where, "speed", _text(state.get("speed"))))
    stats = state.get("statistics")
    if stats is not None:
        leaves = _leaves(stats, IETF_INTERFACES)
        when = _text(leaves.get("discontinuity-time"))
        iface.discontinuity = None if not when else _date_time_ticks(where, when)
        iface.counters = _counters(where, leaves)
    return iface


# -- openconfig-interfaces ---------------------------------------------------------------

_OC = {"oc": OPENCONFIG_INTERFACES, "eth": OPENCONFIG_ETHERNET}


def parse_openconfig(device: str, data: xml.Element) -> list[InterfaceState]:
    """Interfaces from a ``<data>`` holding openconfig ``interfaces`` (subinterfaces are
    not read: IF-MIB's view is the interface)."""
    out = []
    for entry in xml.elements(data, "oc:interfaces/oc:interface", _OC):
        name = _name(device, entry, "oc:name", _OC)
        where = f"{device}: interface {name}"
        iface = InterfaceState(name)
        state = xml.element(entry, "oc:state", _OC)
        if state is not None:
            iface.index = _optional_int(where, "ifindex", xml.text(state, "oc:ifindex", _OC))
            iface.alias = xml.text(state, "oc:description", _OC) or ""
            iface.admin_status = _status(ADMIN_STATUS, _oc_enum(state, "oc:admin-status"))
            iface.oper_status = _status(OPER_STATUS, _oc_enum(state, "oc:oper-status"))
            counters = xml.element(state, "oc:counters", _OC)
            if counters is not None:
                iface.counters = _counters(where, _leaves(counters, OPENCONFIG_INTERFACES))
                iface.discontinuity = _last_clear(where, xml.text(counters, "oc:last-clear", _OC))
        eth = xml.element(entry, "eth:ethernet/eth:state", _OC)
        if eth is not None:
            iface.speed = _oc_speed(xml.text(eth, "eth:negotiated-port-speed", _OC)) or _oc_speed(
                xml.text(eth, "eth:port-speed", _OC)
            )
        out.append(iface)
    return out


def _oc_enum(state: xml.Element, path: str) -> str | None:
    value = xml.text(state, path, _OC)
    return None if value is None else value.lower().replace("_", "-")


def _oc_speed(identity: str | None) -> int | None:
    """``oc-eth:SPEED_10GB`` -> 10**10; SPEED_UNKNOWN and the like -> None."""
    if not identity:
        return None
    m = _OC_SPEED.fullmatch(identity.rsplit(":", 1)[-1])
    if m is None:
        return None
    return int(m.group(1)) * (10**6 if m.group(2) == "MB" else 10**9)


def _last_clear(where: str, value: str | None) -> int | None:
    if not value:
        return None
    if _INTEGER.fullmatch(value):  # oc-types:timeticks64, nanoseconds since the epoch
        return int(value) // 10_000_000
    return _date_time_ticks(where, value)  # older models: yang:date-and-time


# -- shared --------------------------------------------------------------------------------


def _name(device: str, entry: xml.Element, path: str, ns: dict[str, str]) -> str:
    name = xml.text(entry, path, ns)
    if not name:
        raise NetconfMalformedReplyError(f"{device}: an interface without a name")
    return name


def _counters(where: str, leaves: _Leaves) -> dict[str, int]:
    out = {}
    for leaf, (_metric, _unit, bits) in COUNTERS.items():
        value = _optional_int(where, leaf, _text(leaves.get(leaf)))
        if value is not None:
            out[leaf] = value % 2**bits
    return out


# A reply's leaves by local name, read in one pass over an element's children: a path
# lookup per leaf made parsing cost half as much CPU as the <get> itself.
_Leaves = dict[str, xml.Element]


def _leaves(parent: xml.Element, namespace: str) -> _Leaves:
    """``parent``'s children in ``namespace`` by local name (the first of a name wins)."""
    skip = len(namespace) + 2  # "{namespace}"
    out: _Leaves = {}
    # lxml picks the namespace's elements (no comments or PIs) in C
    for child in parent.iterchildren("{" + namespace + "}*"):
        out.setdefault(child.tag[skip:], child)
    return out


def _text(element: xml.Element | None) -> str | None:
    """As ``xml.text``: None when absent, the stripped text ("" when empty) otherwise."""
    return None if element is None else (element.text or "").strip()


def _optional_int(where: str, leaf: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    digits = value[1:] if value[0] == "+" else value
    # isascii: str.isdigit alone takes other scripts' digits and superscripts
    if digits.isascii() and digits.isdigit() and (number := int(digits)) < _U64:
        return number
    raise NetconfMalformedReplyError(f"{where}: {leaf}: {value[:40]!r} is not an unsigned integer")


def _status(numbers: dict[str, int], value: str | None) -> int | None:
    # A value outside the enumeration (a vendor's own) gives no sample, not a failed poll.
    return None if value is None else numbers.get(value)


def _speed(value: int | None) -> int | None:
    return value if value is not None and value <= MAX_SPEED else None


def _date_time_ticks(where: str, value: str) -> int:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise NetconfMalformedReplyError(f"{where}: {value[:40]!r} is not a date-time") from None
    if when.tzinfo is None:  # yang:date-and-time requires an offset; be lenient: UTC
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _TICK


# -- records ----------------------------------------------------------------------------


def interface_records(device: str, now: datetime, interfaces: list[InterfaceState]) -> list[Record]:
    """The SNMP ``interfaces`` task's records for these interfaces: counters, status,
    speed, discontinuity, then one DeviceFacts ``{"interfaces": {name: {index, alias}}}``."""
    records: list[Record] = []
    facts: dict[str, dict[str, object]] = {}
    for iface in interfaces:
        name = iface.name
        facts[name] = {"index": iface.index, "alias": iface.alias}
        for leaf, value in iface.counters.items():
            metric, unit, bits = COUNTERS[leaf]
            records.append(Sample(_key(device, metric, name, "counter", unit, bits), now, value))
        if iface.admin_status is not None:
            records.append(Sample(_key(device, "ifAdminStatus", name), now, iface.admin_status))
        if iface.oper_status is not None:
            records.append(Sample(_key(device, "ifOperStatus", name), now, iface.oper_status))
        if iface.speed is not None:
            records.append(Sample(_key(device, "ifSpeed", name, unit="bit/s"), now, iface.speed))
        if iface.discontinuity is not None:
            key = _key(device, "ifCounterDiscontinuityTime", name, unit="ticks")
            records.append(Sample(key, now, iface.discontinuity))
    records.append(DeviceFacts(device, now, {"interfaces": facts}))
    return records
