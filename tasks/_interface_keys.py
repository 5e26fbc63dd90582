"""The series keys of interface records, shared by every protocol's interfaces task.

SNMP (IF-MIB), NETCONF (ietf-interfaces, openconfig-interfaces) and CLI (``show
interfaces``, napalm) produce the same metrics under the same names, labelled by the
interface's name, so that a device's graphs and alert rules do not depend on the protocol
it is polled by. Metric names are IF-MIB's; status values are IF-MIB's numbers.
"""

from __future__ import annotations

import functools
from typing import Literal

from netmon.records import SeriesKey

__all__ = ["ADMIN_STATUS", "OPER_STATUS", "interface_key"]

# ifAdminStatus / ifOperStatus numbers (RFC 2863), by the names YANG and CLIs use.
ADMIN_STATUS = {"up": 1, "down": 2, "testing": 3}
OPER_STATUS = {
    "up": 1,
    "down": 2,
    "testing": 3,
    "unknown": 4,
    "dormant": 5,
    "not-present": 6,
    "lower-layer-down": 7,
}


@functools.lru_cache(maxsize=1 << 20)
def interface_key(
    device: str,
    metric: str,
    interface: str,
    kind: Literal["gauge", "counter"] = "gauge",
    unit: str = "",
    bits: Literal[32, 64] = 64,
) -> SeriesKey:
    """The same key object poll after poll: built and hashed once, not per sample."""
    return SeriesKey.of(device, metric, {"interface": interface}, kind=kind, unit=unit, bits=bits)
