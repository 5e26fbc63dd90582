"""The objects a lab device serves: a sorted OID table with one getter per instance.

The table depends only on the number of interfaces, so devices with the same count share
one: 5,000 devices do not hold 5,000 copies of ~300 OIDs. A getter takes the device, the
instance's index (the ifIndex for interface columns) and the uptime in seconds, and
computes the value then; nothing is stored per OID.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from netmon.lab.ber import (
    Counter32,
    Counter64,
    Gauge32,
    Oid,
    TimeTicks,
    Value,
    encode_oid,
)

if TYPE_CHECKING:
    from netmon.lab.device import Device, Interface

__all__ = ["BROADCAST_SHARE", "MULTICAST_SHARE", "UNICAST_SHARE", "Getter", "MibTable", "mib_table"]

Getter = Callable[["Device", int, float], Value]

SYSTEM = (1, 3, 6, 1, 2, 1, 1)
IF_NUMBER = (1, 3, 6, 1, 2, 1, 2, 1)
IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IFX_ENTRY = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
HR_SYSTEM_UPTIME = (1, 3, 6, 1, 2, 1, 25, 1, 1)
HR_STORAGE_ENTRY = (1, 3, 6, 1, 2, 1, 25, 2, 3, 1)
HR_PROCESSOR_LOAD = (1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 2)
SNMP_ENGINE = (1, 3, 6, 1, 6, 3, 10, 2, 1)
USM_STATS = (1, 3, 6, 1, 6, 3, 15, 1, 1)

SYS_OBJECT_ID = (1, 3, 6, 1, 4, 1, 8072, 3, 2, 10)
HR_STORAGE_RAM = (1, 3, 6, 1, 2, 1, 25, 2, 1, 2)
HR_STORAGE_FIXED_DISK = (1, 3, 6, 1, 2, 1, 25, 2, 1, 4)
MAX_MESSAGE_SIZE = 65507  # the largest UDP payload over IPv4

_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
# Shares of packets: unicast, multicast, broadcast (NETCONF's statistics use them too).
UNICAST_SHARE, MULTICAST_SHARE, BROADCAST_SHARE = 0.94, 0.045, 0.015
_UCAST, _MCAST, _BCAST = UNICAST_SHARE, MULTICAST_SHARE, BROADCAST_SHARE


def _ticks(seconds: float) -> TimeTicks:
    return TimeTicks(int(seconds * 100) & _M32)


def _if(column: Callable[[Interface, float], Value]) -> Getter:
    """A getter for an interface column from a function of (interface, uptime)."""
    return lambda d, i, t: column(d.interfaces[i - 1], t)


_IF_COLUMNS: dict[int, Getter] = {
    1: lambda d, i, t: i,
    2: _if(lambda f, t: f.descr),
    3: lambda d, i, t: 6,  # ethernetCsmacd
    4: lambda d, i, t: 1500,
    5: _if(lambda f, t: Gauge32(min(f.speed, _M32))),
    6: _if(lambda f, t: f.mac),
    7: _if(lambda f, t: 1 if f.admin_up else 2),
    8: _if(lambda f, t: 1 if f.down_since is None else 2),
    9: _if(lambda f, t: _ticks(f.last_change)),
    10: _if(lambda f, t: Counter32(f.in_octets(t) & _M32)),
    11: _if(lambda f, t: Counter32(f.in_packets(t, _UCAST) & _M32)),
    13: _if(lambda f, t: Counter32(f.discards(t) & _M32)),
    14: _if(lambda f, t: Counter32(f.errors(t) & _M32)),
    16: _if(lambda f, t: Counter32(f.out_octets(t) & _M32)),
    17: _if(lambda f, t: Counter32(f.out_packets(t, _UCAST) & _M32)),
    19: _if(lambda f, t: Counter32(f.discards(t) // 2 & _M32)),
    20: _if(lambda f, t: Counter32(f.errors(t) // 3 & _M32)),
}

_IFX_COLUMNS: dict[int, Getter] = {
    1: _if(lambda f, t: f.name),
    2: _if(lambda f, t: Counter32(f.in_packets(t, _MCAST) & _M32)),
    3: _if(lambda f, t: Counter32(f.in_packets(t, _BCAST) & _M32)),
    4: _if(lambda f, t: Counter32(f.out_packets(t, _MCAST) & _M32)),
    5: _if(lambda f, t: Counter32(f.out_packets(t, _BCAST) & _M32)),
    6: _if(lambda f, t: Counter64(f.in_octets(t) & _M64)),
    7: _if(lambda f, t: Counter64(f.in_packets(t, _UCAST) & _M64)),
    8: _if(lambda f, t: Counter64(f.in_packets(t, _MCAST) & _M64)),
    9: _if(lambda f, t: Counter64(f.in_packets(t, _BCAST) & _M64)),
    10: _if(lambda f, t: Counter64(f.out_octets(t) & _M64)),
    11: _if(lambda f, t: Counter64(f.out_packets(t, _UCAST) & _M64)),
    12: _if(lambda f, t: Counter64(f.out_packets(t, _MCAST) & _M64)),
    13: _if(lambda f, t: Counter64(f.out_packets(t, _BCAST) & _M64)),
    14: lambda d, i, t: 1,  # ifLinkUpDownTrapEnable: enabled
    15: _if(lambda f, t: Gauge32(f.speed // 1_000_000)),
    16: lambda d, i, t: 2,  # ifPromiscuousMode: false
    17: lambda d, i, t: 1,  # ifConnectorPresent: true
    18: _if(lambda f, t: f.alias),
    # Counters only restart at a reboot, i.e. at sysUpTime 0.
    19: lambda d, i, t: TimeTicks(0),
}

_SYSTEM: dict[int, Getter] = {
    1: lambda d, i, t: d.sys_descr,
    2: lambda d, i, t: SYS_OBJECT_ID,
    3: lambda d, i, t: _ticks(t),
    4: lambda d, i, t: d.sys_contact,
    5: lambda d, i, t: d.name,
    6: lambda d, i, t: d.sys_location,
    7: lambda d, i, t: 6,  # sysServices: layers 2 and 3
}

# hrStorageIndex -> columns 1..6 (index, type, descr, allocation units, size, used)
_STORAGE: dict[int, dict[int, Getter]] = {
    1: {
        1: lambda d, i, t: 1,
        2: lambda d, i, t: HR_STORAGE_RAM,
        3: lambda d, i, t: "Physical memory",
        4: lambda d, i, t: 1024,
        5: lambda d, i, t: d.ram_size,
        6: lambda d, i, t: d.ram_used_units(t),
    },
    31: {
        1: lambda d, i, t: 31,
        2: lambda d, i, t: HR_STORAGE_FIXED_DISK,
        3: lambda d, i, t: "flash:",
        4: lambda d, i, t: 4096,
        5: lambda d, i, t: d.flash_size,
        6: lambda d, i, t: d.flash_used_units(t),
    },
}

_ENGINE: dict[int, Getter] = {
    1: lambda d, i, t: d.engine_id,
    2: lambda d, i, t: d.boots,
    3: lambda d, i, t: int(t),
    4: lambda d, i, t: MAX_MESSAGE_SIZE,
}

_USM_STATS: dict[int, Getter] = {
    1: lambda d, i, t: Counter32(d.stats.unsupported_sec_levels & _M32),
    2: lambda d, i, t: Counter32(d.stats.not_in_time_windows & _M32),
    3: lambda d, i, t: Counter32(d.stats.unknown_user_names & _M32),
    4: lambda d, i, t: Counter32(d.stats.unknown_engine_ids & _M32),
    5: lambda d, i, t: Counter32(d.stats.wrong_digests & _M32),
    6: lambda d, i, t: Counter32(d.stats.decryption_errors & _M32),
}


class MibTable:
    """Parallel sorted lists: OIDs, their encoded TLVs, getters and instance indexes."""

    __slots__ = ("args", "encoded", "getters", "objects", "oids", "position")

    def __init__(self, entries: list[tuple[Oid, Getter, int]]) -> None:
        entries.sort(key=lambda e: e[0])
        self.oids = [e[0] for e in entries]
        self.encoded = [encode_oid(e[0]) for e in entries]
        self.getters = [e[1] for e in entries]
        self.args = [e[2] for e in entries]
        self.position = {oid: n for n, oid in enumerate(self.oids)}
        # Object types (an OID minus its one-arc instance): tells noSuchInstance (the
        # object exists, that instance does not) from noSuchObject.
        self.objects = {oid[:-1] for oid in self.oids}

    def __len__(self) -> int:
        return len(self.oids)

    def next_position(self, oid: Oid) -> int:
        """Position of the first OID after ``oid``; ``len(self)`` past the end."""
        return bisect.bisect_right(self.oids, oid)

    def is_object(self, oid: Oid) -> bool:
        """Whether some prefix of ``oid`` is an object type this table has instances of."""
        return any(oid[:k] in self.objects for k in range(len(oid) - 1, 0, -1))


@functools.lru_cache(maxsize=64)
def mib_table(interfaces: int) -> MibTable:
    entries: list[tuple[Oid, Getter, int]] = []
    for n, getter in _SYSTEM.items():
        entries.append(((*SYSTEM, n, 0), getter, 0))
    entries.append(((*IF_NUMBER, 0), lambda d, i, t: len(d.interfaces), 0))
    for column, getter in _IF_COLUMNS.items():
        entries.extend(((*IF_ENTRY, column, i), getter, i) for i in range(1, interfaces + 1))
    for column, getter in _IFX_COLUMNS.items():
        entries.extend(((*IFX_ENTRY, column, i), getter, i) for i in range(1, interfaces + 1))
    entries.append(((*HR_SYSTEM_UPTIME, 0), lambda d, i, t: _ticks(t), 0))
    for index, columns in _STORAGE.items():
        for column, getter in columns.items():
            entries.append(((*HR_STORAGE_ENTRY, column, index), getter, index))
    for cpu, index in enumerate((196608, 196609)):
        entries.append(((*HR_PROCESSOR_LOAD, index), _cpu_getter(cpu), index))
    for n, getter in _ENGINE.items():
        entries.append(((*SNMP_ENGINE, n, 0), getter, 0))
    for n, getter in _USM_STATS.items():
        entries.append(((*USM_STATS, n, 0), getter, 0))
    return MibTable(entries)


def _cpu_getter(cpu: int) -> Getter:
    return lambda d, i, t: d.cpu_load(cpu, t)
