"""``interfaces``: IF-MIB ifTable + ifXTable, only the columns netmon stores.

One sample per interface and counter (64-bit HC octets and unicast/multicast/broadcast
packets; 32-bit errors and discards), its oper/admin status and speed, and
ifCounterDiscontinuityTime for the rate pipeline. Interfaces are labelled by ifName (stable
across reboots, unlike ifIndex). Agents without ifXTable fall back to the 32-bit octet
counters of ifTable. Names and aliases go to the device's facts.

The ifXTable is walked, sized by its last size (``tasks/_walk.py``); the ifTable
columns, sparse in their table, are then read by GET for the rows the walk found.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from nornir.core.task import Result, Task

from netmon.records import DeviceFacts, Record, Sample
from netmon.snmp.engines import engine_for
from netmon.snmp.hosts import snmp_target
from netmon.snmp.oids import IF, IFX, Oid
from netmon.snmp.values import VarBind
from netmon.tasks._interface_keys import interface_key as _key
from netmon.tasks._values import optional, text
from netmon.tasks._walk import known_rows, read_rows, walk_sized

__all__ = ["interfaces"]

# column -> (metric, unit, counter bits or None for a gauge)
_COUNTERS: dict[Oid, tuple[str, str, Literal[32, 64]]] = {
    IFX.ifHCInOctets: ("ifHCInOctets", "bytes", 64),
    IFX.ifHCOutOctets: ("ifHCOutOctets", "bytes", 64),
    IFX.ifHCInUcastPkts: ("ifHCInUcastPkts", "packets", 64),
    IFX.ifHCOutUcastPkts: ("ifHCOutUcastPkts", "packets", 64),
    IFX.ifHCInMulticastPkts: ("ifHCInMulticastPkts", "packets", 64),
    IFX.ifHCOutMulticastPkts: ("ifHCOutMulticastPkts", "packets", 64),
    IFX.ifHCInBroadcastPkts: ("ifHCInBroadcastPkts", "packets", 64),
    IFX.ifHCOutBroadcastPkts: ("ifHCOutBroadcastPkts", "packets", 64),
    IF.ifInErrors: ("ifInErrors", "packets", 32),
    IF.ifOutErrors: ("ifOutErrors", "packets", 32),
    IF.ifInDiscards: ("ifInDiscards", "packets", 32),
    IF.ifOutDiscards: ("ifOutDiscards", "packets", 32),
}
_LEGACY_OCTETS: dict[Oid, tuple[str, str, Literal[32, 64]]] = {
    IF.ifInOctets: ("ifInOctets", "bytes", 32),
    IF.ifOutOctets: ("ifOutOctets", "bytes", 32),
}
_STATE = [IF.ifAdminStatus, IF.ifOperStatus, IF.ifSpeed, IFX.ifHighSpeed]
_META = [IFX.ifName, IFX.ifAlias, IFX.ifCounterDiscontinuityTime]
_COLUMNS = [*_META, *_STATE, *_COUNTERS]
_IFX_COLUMNS = [c for c in _COLUMNS if c[:-1] == IFX.ifName[:-1]]
_IF_COLUMNS = [c for c in _COLUMNS if c[:-1] == IF.ifOperStatus[:-1]]


def interfaces(task: Task) -> Result:
    target = snmp_target(task.host)
    guess = None
    if known_rows(target, _IFX_COLUMNS[0]) is None:
        # First poll: ask how many interfaces there are, rather than fetch 25 rows of 19
        # columns and throw most away.
        (count,) = engine_for(target).get(target, [IF.ifNumber])
        guess = count.value if isinstance(count.value, int) else None
    # Each counter is stamped with when the device answered with it, not when the walk
    # ended: the walk is many round trips, and a rate is only as good as its interval.
    times: dict[Oid, dict[Oid, float]] = {}
    table = walk_sized(target, _IFX_COLUMNS, first_guess=guess, times=times)
    rows = sorted({index for column in _IFX_COLUMNS for index in table[column]})
    if rows:
        # ifXTable augments ifTable: the same rows, so the sparse ifTable columns are
        # read by GET, in a third of the round trips of walking them one by one.
        table.update(read_rows(target, _IF_COLUMNS, rows, times=times))
    else:
        table.update(walk_sized(target, _IF_COLUMNS, times=times))
    counters = dict(_COUNTERS)
    if not table[IFX.ifHCInOctets] and table[IF.ifOperStatus]:
        table.update(walk_sized(target, list(_LEGACY_OCTETS), times=times))
        counters.update(_LEGACY_OCTETS)
    now = datetime.now(UTC)
    stamps = {t: datetime.fromtimestamp(t, UTC) for t in _distinct(times)}
    device = task.host.name
    records: list[Record] = []
    names: dict[str, dict[str, object]] = {}
    for index in table[IF.ifOperStatus]:
        name = text(table[IFX.ifName].get(index)) or f"ifIndex{'.'.join(map(str, index))}"
        names[name] = {"index": index[0] if len(index) == 1 else list(index)}
        names[name]["alias"] = text(table[IFX.ifAlias].get(index))
        for column, (metric, unit, bits) in counters.items():
            value = optional(table[column].get(index), int)
            if value is not None:
                key = _key(device, metric, name, "counter", unit, bits)
                at = times[column].get(index)
                records.append(Sample(key, now if at is None else stamps[at], value))
        records.extend(_state_samples(device, name, table, index, now))
    records.append(DeviceFacts(device, now, {"interfaces": names}))
    return Result(host=task.host, result=records)


def _distinct(times: dict[Oid, dict[Oid, float]]) -> set[float]:
    return {t for cells in times.values() for t in cells.values()}


def _state_samples(
    device: str,
    name: str,
    table: dict[Oid, dict[Oid, VarBind]],
    index: Oid,
    now: datetime,
) -> list[Sample]:
    out: list[Sample] = []
    for column, metric in ((IF.ifAdminStatus, "ifAdminStatus"), (IF.ifOperStatus, "ifOperStatus")):
        status = optional(table[column].get(index), int)
        if status is not None:
            out.append(Sample(_key(device, metric, name), now, status))
    high = optional(table[IFX.ifHighSpeed].get(index), int)
    speed = high * 1_000_000 if high else optional(table[IF.ifSpeed].get(index), int)
    if speed is not None:
        out.append(Sample(_key(device, "ifSpeed", name, unit="bit/s"), now, speed))
    disc = optional(table[IFX.ifCounterDiscontinuityTime].get(index), int)
    if disc is not None:
        key = _key(device, "ifCounterDiscontinuityTime", name, unit="ticks")
        out.append(Sample(key, now, disc))
    return out
