"""``cli_interfaces``: ``show interfaces`` over SSH, as the SNMP ``interfaces`` task's records.

Parsed by ntc-templates' ``cisco_ios_show_interfaces`` (IOS, IOS-XE) and, for the byte
and broadcast counts that template does not capture, netmon's own small template over the
same output. Series keys are the SNMP task's (``tasks/_interface_keys.py``), labelled by
the IOS short name (``Gi1/0/1``, IF-MIB's ifName on IOS):

=================================  ================================================
``N packets input, M bytes``       ifHCInOctets (M)
``Received B broadcasts (C mult)`` ifHCInMulticastPkts (C), ifHCInBroadcastPkts (B - C),
                                   ifHCInUcastPkts (N - B): IOS counts multicasts among
                                   "broadcasts" and every packet in "packets input"
``N packets output, M bytes``      ifHCOutOctets (M); IOS does not split output packets
``input errors``/``output errors`` ifInErrors/ifOutErrors (32-bit, as IF-MIB's)
``Input queue: s/m/DROPS/f``       ifInDiscards; ``Total output drops`` ifOutDiscards
``X is up, line protocol is up``   ifAdminStatus, ifOperStatus (IF-MIB numbers)
``BW N Kbit/sec``                  ifSpeed (bit/s)
=================================  ================================================

No ifCounterDiscontinuityTime: a CLI does not say when counters were cleared (``clear
counters`` looks like a reset to the rate pipeline, as a reboot does). Names, full names
and descriptions go to the device's facts.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Literal

import textfsm
from nornir.core.task import Result, Task

from netmon.errors import CliError, CliParseError
from netmon.records import DeviceFacts, Record, Sample
from netmon.ssh.hosts import cli_target
from netmon.ssh.names import if_name
from netmon.ssh.parse import integer, parse, sample
from netmon.ssh.session import send_command
from netmon.tasks._interface_keys import ADMIN_STATUS, OPER_STATUS
from netmon.tasks._interface_keys import interface_key as _key

__all__ = ["cli_interfaces"]

COMMAND = "show interfaces"
# netmiko device types whose "show interfaces" is IOS's, and the template platform.
_PLATFORMS = {"cisco_ios": "cisco_ios", "cisco_xe": "cisco_ios"}
_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
_BANDWIDTH = re.compile(r"(\d+)\s*([KMG]?)bit", re.IGNORECASE)
_SCALE = {"": 1, "K": 1_000, "M": 1_000_000, "G": 1_000_000_000}

# What ntc-templates' template matches but does not capture: bytes and broadcasts.
_COUNTS_TEMPLATE = r"""Value Required INTERFACE (\S+)
Value IN_PACKETS (\d+)
Value IN_OCTETS (\d+)
Value IN_BROADCASTS (\d+)
Value IN_MULTICASTS (\d+)
Value OUT_PACKETS (\d+)
Value OUT_OCTETS (\d+)

Start
  ^\S+\s+is\s+.+?,\s+line\s+protocol.*$$ -> Continue.Record
  ^${INTERFACE}\s+is\s+.+?,\s+line\s+protocol\s+is
  ^\s+${IN_PACKETS}\s+packets\s+input,\s+${IN_OCTETS}\s+bytes
  ^\s+Received\s+${IN_BROADCASTS}\s+broadcasts\s+\(${IN_MULTICASTS}\s+(?:IP\s+)?multicasts?\)
  ^\s+Received\s+${IN_BROADCASTS}\s+broadcasts
  ^\s+${OUT_PACKETS}\s+packets\s+output,\s+${OUT_OCTETS}\s+bytes
"""


def cli_interfaces(task: Task) -> Result:
    target = cli_target(task.host)
    platform = _PLATFORMS.get(target.device_type)
    if platform is None:
        known = ", ".join(sorted(_PLATFORMS))
        raise CliError(
            f"{target.device}: cli_interfaces reads IOS's show interfaces ({known}), not "
            f"{target.device_type}; napalm_interfaces covers other platforms"
        )
    output = send_command(target, COMMAND)
    records = interface_records(target.device, platform, output, datetime.now(UTC))
    return Result(host=task.host, result=records)


def interface_records(device: str, platform: str, output: str, now: datetime) -> list[Record]:
    """The samples and facts in one ``show interfaces`` output (IOS format)."""
    rows = parse(device, platform, COMMAND, output)
    counts = {row["INTERFACE"]: row for row in _counts(device, output)}
    records: list[Record] = []
    names: dict[str, dict[str, object]] = {}
    for row in rows:
        full = row["interface"]
        name = if_name(platform, full)
        names[name] = {"alias": row.get("description", ""), "descr": full}
        records.extend(_row_samples(device, output, name, row, counts.get(full, {}), now))
    records.append(DeviceFacts(device, now, {"interfaces": names}))
    return records


def _counts(device: str, output: str) -> list[dict[str, str]]:
    fsm = textfsm.TextFSM(io.StringIO(_COUNTS_TEMPLATE))
    try:
        return [dict(r) for r in fsm.ParseTextToDicts(output)]
    except textfsm.TextFSMError as exc:
        raise CliParseError(
            f"{device}: {COMMAND!r}: byte counts did not parse: {exc}",
            command=COMMAND,
            sample=sample(output),
        ) from None


def _row_samples(
    device: str,
    output: str,
    name: str,
    row: dict[str, str],
    counts: dict[str, str],
    now: datetime,
) -> list[Sample]:
    out: list[Sample] = []

    def number(source: dict[str, str], field: str) -> int | None:
        return integer(device, COMMAND, output, source, field, optional=True)

    def counter(metric: str, value: int | None, bits: Literal[32, 64], unit: str) -> None:
        if value is not None:
            key = _key(device, metric, name, "counter", unit, bits)
            out.append(Sample(key, now, value & (_M32 if bits == 32 else _M64)))

    link = row.get("link_status", "").strip().lower()
    protocol = row.get("protocol_status", "").strip().lower()
    if not link or not protocol:
        raise CliParseError(
            f"{device}: {COMMAND!r}: no status for {name}", command=COMMAND, sample=sample(output)
        )
    admin = ADMIN_STATUS["down"] if "administratively" in link or "deleted" in link else 1
    oper = OPER_STATUS.get(protocol.split()[0], OPER_STATUS["unknown"])
    out.append(Sample(_key(device, "ifAdminStatus", name), now, admin))
    out.append(Sample(_key(device, "ifOperStatus", name), now, oper))
    speed = _speed(row.get("bandwidth", ""))
    if speed is not None:
        out.append(Sample(_key(device, "ifSpeed", name, unit="bit/s"), now, speed))

    counter("ifHCInOctets", number(counts, "IN_OCTETS"), 64, "bytes")
    counter("ifHCOutOctets", number(counts, "OUT_OCTETS"), 64, "bytes")
    packets, broadcasts = number(counts, "IN_PACKETS"), number(counts, "IN_BROADCASTS")
    multicasts = number(counts, "IN_MULTICASTS")
    if packets is not None and broadcasts is not None and broadcasts <= packets:
        counter("ifHCInUcastPkts", packets - broadcasts, 64, "packets")
        if multicasts is not None and multicasts <= broadcasts:
            counter("ifHCInMulticastPkts", multicasts, 64, "packets")
            counter("ifHCInBroadcastPkts", broadcasts - multicasts, 64, "packets")
    counter("ifInErrors", number(row, "input_errors"), 32, "packets")
    counter("ifOutErrors", number(row, "output_errors"), 32, "packets")
    counter("ifInDiscards", number(row, "queue_drops"), 32, "packets")
    counter("ifOutDiscards", number(row, "queue_output_drops"), 32, "packets")
    return out


def _speed(bandwidth: str) -> int | None:
    match = _BANDWIDTH.match(bandwidth.strip())
    if match is None:
        return None
    return int(match.group(1)) * _SCALE[match.group(2).upper()]
