"""A user's own Nornir task for netmon: the worked example of docs/tasks.md.

``uptime_days`` reads sysUpTime through the SNMP engine the host's inventory names
(gufo-snmp unless ``snmp.engine: pysnmp``) and returns it as a
gauge in days, plus an event when a device has run for more than a year without a reboot
(a patching reminder). netmon stores, serves and alerts on these records like its own.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nornir.core.task import Result, Task

from netmon.records import DeviceEvent, Record, Sample, SeriesKey
from netmon.snmp.engines import engine_for
from netmon.snmp.hosts import snmp_target
from netmon.snmp.oids import SYSTEM

__all__ = ["uptime_days"]

ONE_YEAR_DAYS = 365


def uptime_days(task: Task) -> Result:
    target = snmp_target(task.host)
    (uptime,) = engine_for(target).get(target, [SYSTEM.sysUpTime])
    if not isinstance(uptime.value, int):
        raise ValueError(f"sysUpTime is {uptime.type}")  # a failed Result for this host
    days = uptime.value / 100 / 86400
    now = datetime.now(UTC)
    records: list[Record] = [
        Sample(SeriesKey.of(task.host.name, "uptime_days", unit="d"), now, days)
    ]
    if days > ONE_YEAR_DAYS:
        records.append(
            DeviceEvent(task.host.name, now, "patching.overdue", f"up {days:.0f} days", "warning")
        )
    return Result(host=task.host, result=records)
