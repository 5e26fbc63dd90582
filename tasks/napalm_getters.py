"""napalm getters as netmon records, for the platforms napalm has a driver for.

The driver is ``cli.napalm_driver`` (default from the device type: cisco_ios -> ios,
arista_eos -> eos, juniper_junos -> junos, cisco_nxos -> nxos_ssh, cisco_xr -> iosxr),
opened with the ``cli`` section's login and host-key policy and kept between polls.

* ``napalm_facts``: get_facts -> facts (vendor, model, os_version, serial_number,
  hostname, fqdn) and ``sysUpTime`` (seconds, the SNMP ``system`` task's series).
* ``napalm_interfaces``: get_interfaces + get_interfaces_counters -> the SNMP
  ``interfaces`` task's series (status, speed, octets, errors, discards and, except on
  napalm's ios driver, whose "unicast" counts are every packet, per-cast packets) and
  the interfaces' facts. napalm's -1 (unknown) is left out.
* ``napalm_bgp``: get_bgp_neighbors -> per peer (labels ``vrf``, ``peer``):
  ``bgpPeerUp`` (1/0), ``bgpPeerAdminEnabled`` (1/0), ``bgpPeerUptime`` (s) and per
  address family (label ``afi``) ``bgpPeerPrefixesReceived``/``Accepted``/``Sent``; facts
  ``bgp`` (router id, AS numbers, descriptions).
* ``napalm_lldp``: get_lldp_neighbors -> facts ``lldp_neighbors`` (local interface, named
  as the interfaces' series are, -> neighbor hostname and port).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from nornir.core.task import Result, Task

from netmon.errors import CliParseError
from netmon.records import DeviceFacts, Record, Sample, SeriesKey
from netmon.ssh.drivers import napalm_call
from netmon.ssh.hosts import cli_target
from netmon.ssh.names import if_name
from netmon.tasks._interface_keys import interface_key as _key

__all__ = ["napalm_bgp", "napalm_facts", "napalm_interfaces", "napalm_lldp"]

_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
# get_interfaces_counters field -> (metric, counter bits)
_COUNTERS: dict[str, tuple[str, Literal[32, 64], str]] = {
    "rx_octets": ("ifHCInOctets", 64, "bytes"),
    "tx_octets": ("ifHCOutOctets", 64, "bytes"),
    "rx_errors": ("ifInErrors", 32, "packets"),
    "tx_errors": ("ifOutErrors", 32, "packets"),
    "rx_discards": ("ifInDiscards", 32, "packets"),
    "tx_discards": ("ifOutDiscards", 32, "packets"),
}
_PACKETS: dict[str, tuple[str, Literal[32, 64], str]] = {
    "rx_unicast_packets": ("ifHCInUcastPkts", 64, "packets"),
    "tx_unicast_packets": ("ifHCOutUcastPkts", 64, "packets"),
    "rx_multicast_packets": ("ifHCInMulticastPkts", 64, "packets"),
    "tx_multicast_packets": ("ifHCOutMulticastPkts", 64, "packets"),
    "rx_broadcast_packets": ("ifHCInBroadcastPkts", 64, "packets"),
    "tx_broadcast_packets": ("ifHCOutBroadcastPkts", 64, "packets"),
}
# napalm's ios driver puts "N packets input" (all casts) in rx_unicast_packets and
# parses multicasts wrongly: its packet counts are not IF-MIB's.
_NO_PACKET_COUNTS = frozenset({"ios"})


def napalm_facts(task: Task) -> Result:
    target = cli_target(task.host)
    facts = _mapping(target.device, "get_facts", napalm_call(target, "get_facts"))
    return Result(host=task.host, result=facts_records(target.device, facts, datetime.now(UTC)))


def napalm_interfaces(task: Task) -> Result:
    target = cli_target(task.host)
    driver = target.napalm_driver or ""
    interfaces = _mapping(target.device, "get_interfaces", napalm_call(target, "get_interfaces"))
    counters = _mapping(
        target.device,
        "get_interfaces_counters",
        napalm_call(target, "get_interfaces_counters"),
    )
    records = interface_records(target.device, driver, interfaces, counters, datetime.now(UTC))
    return Result(host=task.host, result=records)


def napalm_bgp(task: Task) -> Result:
    target = cli_target(task.host)
    raw = _mapping(target.device, "get_bgp_neighbors", napalm_call(target, "get_bgp_neighbors"))
    return Result(host=task.host, result=bgp_records(target.device, raw, datetime.now(UTC)))


def napalm_lldp(task: Task) -> Result:
    target = cli_target(task.host)
    raw = _mapping(target.device, "get_lldp_neighbors", napalm_call(target, "get_lldp_neighbors"))
    driver = target.napalm_driver or ""
    return Result(
        host=task.host, result=lldp_records(target.device, driver, raw, datetime.now(UTC))
    )


# --- getters' data to records (pure, so they can be checked on napalm's documented shapes)


def facts_records(device: str, facts: Mapping[str, Any], now: datetime) -> list[Record]:
    keys = ("vendor", "model", "os_version", "serial_number", "hostname", "fqdn")
    records: list[Record] = [
        DeviceFacts(device, now, {k: str(facts[k]) for k in keys if facts.get(k) is not None})
    ]
    uptime = _number(facts.get("uptime"))
    if uptime is not None and uptime >= 0:
        records.append(Sample(SeriesKey.of(device, "sysUpTime", unit="s"), now, float(uptime)))
    return records


def interface_records(
    device: str,
    driver: str,
    interfaces: Mapping[str, Any],
    counters: Mapping[str, Any],
    now: datetime,
) -> list[Record]:
    records: list[Record] = []
    names: dict[str, dict[str, object]] = {}
    fields = dict(_COUNTERS) if driver in _NO_PACKET_COUNTS else {**_COUNTERS, **_PACKETS}
    for full, info in interfaces.items():
        if not isinstance(info, Mapping):
            continue
        name = if_name(driver, str(full))
        names[name] = {"alias": str(info.get("description") or ""), "descr": str(full)}
        if isinstance(info.get("is_enabled"), bool):
            admin = 1 if info["is_enabled"] else 2
            records.append(Sample(_key(device, "ifAdminStatus", name), now, admin))
        if isinstance(info.get("is_up"), bool):
            records.append(
                Sample(_key(device, "ifOperStatus", name), now, 1 if info["is_up"] else 2)
            )
        speed = _number(info.get("speed"))  # Mbit/s
        if speed is not None and speed >= 0:
            speed_key = _key(device, "ifSpeed", name, unit="bit/s")
            records.append(Sample(speed_key, now, int(speed * 1_000_000)))
    for full, values in counters.items():
        if not isinstance(values, Mapping):
            continue
        name = if_name(driver, str(full))
        for field, (metric, bits, unit) in fields.items():
            value = values.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                key = _key(device, metric, name, "counter", unit, bits)
                records.append(Sample(key, now, value & (_M32 if bits == 32 else _M64)))
    records.append(DeviceFacts(device, now, {"interfaces": names}))
    return records


def bgp_records(device: str, neighbors: Mapping[str, Any], now: datetime) -> list[Record]:
    records: list[Record] = []
    facts: dict[str, object] = {}
    for vrf, table in neighbors.items():
        if not isinstance(table, Mapping):
            continue
        peers: dict[str, object] = {}
        for peer, info in (table.get("peers") or {}).items():
            if not isinstance(info, Mapping):
                continue
            labels = {"vrf": str(vrf), "peer": str(peer)}
            records.extend(_gauge(device, now, "bgpPeerUp", labels, _flag(info.get("is_up"))))
            enabled = _flag(info.get("is_enabled"))
            records.extend(_gauge(device, now, "bgpPeerAdminEnabled", labels, enabled))
            uptime = info.get("uptime")
            records.extend(_gauge(device, now, "bgpPeerUptime", labels, uptime, "s"))
            for afi, prefixes in (info.get("address_family") or {}).items():
                if not isinstance(prefixes, Mapping):
                    continue
                for kind in ("received", "accepted", "sent"):
                    value = prefixes.get(f"{kind}_prefixes")
                    metric = f"bgpPeerPrefixes{kind.title()}"
                    family = {**labels, "afi": str(afi)}
                    records.extend(_gauge(device, now, metric, family, value, "prefixes"))
            peers[str(peer)] = {
                "local_as": info.get("local_as"),
                "remote_as": info.get("remote_as"),
                "remote_id": info.get("remote_id"),
                "description": info.get("description") or "",
            }
        facts[str(vrf)] = {"router_id": table.get("router_id"), "peers": peers}
    records.append(DeviceFacts(device, now, {"bgp": facts}))
    return records


def lldp_records(
    device: str, driver: str, neighbors: Mapping[str, Any], now: datetime
) -> list[Record]:
    facts: dict[str, list[dict[str, str]]] = {}
    for port, entries in neighbors.items():
        if isinstance(entries, list):
            facts[if_name(driver, str(port))] = [
                {"hostname": str(e.get("hostname", "")), "port": str(e.get("port", ""))}
                for e in entries
                if isinstance(e, Mapping)
            ]
    return [DeviceFacts(device, now, {"lldp_neighbors": facts})]


def _gauge(
    device: str, now: datetime, metric: str, labels: dict[str, str], value: object, unit: str = ""
) -> list[Sample]:
    number = _number(value)
    if number is None or number < 0:  # napalm's -1: not known
        return []
    return [Sample(SeriesKey.of(device, metric, labels, unit=unit), now, number)]


def _mapping(device: str, getter: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CliParseError(
            f"{device}: napalm {getter} returned {type(value).__name__}, not a mapping",
            command=getter,
        )
    return value


def _flag(value: object) -> int | None:
    return int(value) if isinstance(value, bool) else None


def _number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value
