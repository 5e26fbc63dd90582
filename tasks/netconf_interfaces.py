"""``netconf_interfaces``: interface counters, status and speed over NETCONF.

The same records as the SNMP ``interfaces`` task (IF-MIB metric names, units, counter
widths, status numbers, ``ifCounterDiscontinuityTime``, DeviceFacts ``interfaces``),
read with one ``<get>`` and a subtree filter from ietf-interfaces (RFC 7223 or the NMDA
RFC 8343 shape) or openconfig-interfaces: ``netmon.netconf.interfaces`` has the mapping
and which model is read. The device's NETCONF capabilities and YANG modules are given
as DeviceFacts ``netconf`` once per session (``netmon.netconf.facts``).

The session comes from the process-wide pool (``netmon.netconf.shared``) and is kept for
the next poll. Inventory: the host's ``netconf`` section (``netmon.netconf.hosts``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from nornir.core.task import Result, Task

from netmon.netconf.client import NetconfReply
from netmon.netconf.facts import new_session_facts
from netmon.netconf.hosts import netconf_target
from netmon.netconf.interfaces import (
    Model,
    choose_model,
    interface_records,
    parse_ietf,
    parse_openconfig,
    subtree_filter,
)
from netmon.netconf.shared import PooledSession, shared_pool
from netmon.records import Record

__all__ = ["netconf_interfaces"]


def netconf_interfaces(task: Task) -> Result:
    target = netconf_target(task.host)

    def read(pooled: PooledSession) -> tuple[PooledSession, Model, NetconfReply]:
        model = choose_model(pooled.capabilities)
        return pooled, model, pooled.session.get(subtree=subtree_filter(model))

    pooled, model, reply = shared_pool().run(target, read)
    now = datetime.now(UTC)
    device = task.host.name
    parse = parse_ietf if model == "ietf" else parse_openconfig
    records: list[Record] = interface_records(device, now, parse(device, reply.data))
    records.extend(new_session_facts(device, pooled, now))
    return Result(host=task.host, result=records)
