"""What a NETCONF server says about itself in its hello, as DeviceFacts, once per session.

The hello is sent once per session, and the pool keeps a session from poll to poll, so
the facts are given by the first task that uses a new session and not again until the
device's session is replaced (reconnect, reload, failure): a new session may be a new
software release with other modules.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from netmon.netconf.client import Capabilities
from netmon.netconf.shared import PooledSession
from netmon.records import DeviceFacts

__all__ = ["capability_facts", "new_session_facts"]

_reported: dict[str, int] = {}  # device -> serial of the session whose facts were given
_lock = threading.Lock()


def capability_facts(capabilities: Capabilities) -> dict[str, Any]:
    """``{"capabilities": [...], "modules": [...]}``: protocol capabilities (URIs that do
    not announce a YANG module) and the modules, sorted so equal hellos give equal facts."""
    module_uris = {m.namespace for m in capabilities.modules}
    return {
        "capabilities": sorted(
            uri for uri in capabilities.uris if uri.split("?", 1)[0] not in module_uris
        ),
        "modules": [
            {
                "name": m.name,
                "revision": m.revision,
                "namespace": m.namespace,
                "features": sorted(m.features),
                "deviations": sorted(m.deviations),
            }
            for m in sorted(capabilities.modules, key=lambda m: (m.name, m.revision or ""))
        ],
    }


def new_session_facts(device: str, pooled: PooledSession, now: datetime) -> list[DeviceFacts]:
    """``[DeviceFacts(device, now, {"netconf": ...})]`` the first time ``pooled`` is seen
    for ``device``; ``[]`` after that."""
    with _lock:
        if _reported.get(device) == pooled.serial:
            return []
        _reported[device] = pooled.serial
    return [DeviceFacts(device, now, {"netconf": capability_facts(pooled.capabilities)})]
