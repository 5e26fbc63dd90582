"""``system``: who the device is and how long it has been up (SNMPv2-MIB system group).

Returns a ``sysUpTime`` sample (seconds) and the device's facts (sysName, sysDescr,
sysObjectID). The uptime is what the ingest pipeline uses to recognise a reboot, so run
this task in the same poll as counter tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nornir.core.task import Result, Task

from netmon.records import DeviceFacts, Record, Sample, SeriesKey
from netmon.snmp.engines import engine_for
from netmon.snmp.hosts import snmp_target
from netmon.snmp.oids import SYSTEM
from netmon.snmp.values import VarBind
from netmon.tasks._values import require, text

__all__ = ["system"]

_OIDS = [SYSTEM.sysUpTime, SYSTEM.sysName, SYSTEM.sysDescr, SYSTEM.sysObjectID]


def system(task: Task) -> Result:
    target = snmp_target(task.host)
    uptime, name, descr, object_id = engine_for(target).get(target, _OIDS)
    now = datetime.now(UTC)
    records: list[Record] = [
        Sample(SeriesKey.of(task.host.name, "sysUpTime", unit="s"), now, _seconds(uptime)),
        DeviceFacts(
            task.host.name,
            now,
            {
                "sysName": text(name),
                "sysDescr": text(descr),
                "sysObjectID": ".".join(map(str, require(object_id, tuple))),
            },
        ),
    ]
    return Result(host=task.host, result=records)


def _seconds(uptime: VarBind) -> float:
    return require(uptime, int) / 100
