"""``resources``: HOST-RESOURCES-MIB processor load and storage, where the agent has them.

An agent without HOST-RESOURCES-MIB is not an error: the task returns no records. Storage
is reported in bytes (hrStorageUsed/Size x hrStorageAllocationUnits), labelled by
hrStorageDescr.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nornir.core.task import Result, Task

from netmon.records import Record, Sample, SeriesKey
from netmon.snmp.hosts import snmp_target
from netmon.snmp.oids import HR
from netmon.tasks._values import optional, text
from netmon.tasks._walk import walk_sized

__all__ = ["resources"]

_COLUMNS = [
    HR.hrProcessorLoad,
    HR.hrStorageDescr,
    HR.hrStorageAllocationUnits,
    HR.hrStorageSize,
    HR.hrStorageUsed,
]


def resources(task: Task) -> Result:
    # Hosts have a handful of CPUs and storage areas: 8 rows covers most in one trip.
    table = walk_sized(snmp_target(task.host), _COLUMNS, first_guess=8)
    now = datetime.now(UTC)
    device = task.host.name
    records: list[Record] = []
    for index, vb in table[HR.hrProcessorLoad].items():
        load = optional(vb, int)
        if load is not None:
            cpu = {"cpu": ".".join(map(str, index))}
            key = SeriesKey.of(device, "hrProcessorLoad", cpu, unit="percent")
            records.append(Sample(key, now, load))
    for index, vb in table[HR.hrStorageDescr].items():
        units = optional(table[HR.hrStorageAllocationUnits].get(index), int)
        size = optional(table[HR.hrStorageSize].get(index), int)
        used = optional(table[HR.hrStorageUsed].get(index), int)
        if units is None or size is None or used is None:
            continue
        labels = {"storage": text(vb) or ".".join(map(str, index))}
        records.append(
            Sample(SeriesKey.of(device, "hrStorageSize", labels, unit="bytes"), now, size * units)
        )
        records.append(
            Sample(SeriesKey.of(device, "hrStorageUsed", labels, unit="bytes"), now, used * units)
        )
    return Result(host=task.host, result=records)
