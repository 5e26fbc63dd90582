"""``netconf_config``: the device's configuration by ``<get-config>``, for backups.

Reads the running datastore, and the candidate datastore where the server advertises
``:candidate``, each as a :class:`ConfigSnapshot` (protocol ``netconf``, format ``xml``)
whose content is normalised (``netmon.netconf.config``) so an unchanged configuration
gives the same text every time. The poller hands snapshots to the store, which redacts
secrets, keeps a version only when it changed and raises ``device.config_changed``.

The device's NETCONF capabilities and YANG modules are given as DeviceFacts ``netconf``
once per session, as ``netconf_interfaces`` does (whichever runs first on a session).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from nornir.core.task import Result, Task

from netmon.netconf.client import CANDIDATE, NetconfReply
from netmon.netconf.config import normalise
from netmon.netconf.facts import new_session_facts
from netmon.netconf.hosts import netconf_target
from netmon.netconf.shared import PooledSession, shared_pool
from netmon.records import ConfigSnapshot, Record

__all__ = ["netconf_config"]

Source = Literal["running", "candidate"]


def netconf_config(task: Task) -> Result:
    target = netconf_target(task.host)

    def read(pooled: PooledSession) -> tuple[PooledSession, list[tuple[Source, NetconfReply]]]:
        sources: list[Source] = ["running"]
        if pooled.capabilities.has(CANDIDATE):
            sources.append("candidate")
        return pooled, [(source, pooled.session.get_config(source)) for source in sources]

    pooled, replies = shared_pool().run(target, read)
    now = datetime.now(UTC)
    device = task.host.name
    records: list[Record] = [
        ConfigSnapshot(
            device=device,
            time=now,
            source=source,
            protocol="netconf",
            format="xml",
            content=normalise(reply.data),
        )
        for source, reply in replies
    ]
    records.extend(new_session_facts(device, pooled, now))
    return Result(host=task.host, result=records)
