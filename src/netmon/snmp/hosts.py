"""A Nornir host's SNMP settings, merged key by key and validated once.

Nornir resolves ``host.data`` per top-level key: a host that sets ``snmp: {port: 16101}``
would hide the group's ``snmp.user``. SNMP settings are therefore merged per key: defaults,
then groups (farthest first), then the host. The merged result is validated by
:func:`netmon.snmp.credentials.snmp_credentials` once per Host object, so a poll does
not re-read secrets; loading the inventory again (a reload) makes new Host objects, so a
key file fixed or rotated is used from then on, and a secret gone is reported.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from nornir.core.inventory import Host

from netmon.errors import ConfigError
from netmon.snmp.client import SnmpTarget
from netmon.snmp.credentials import snmp_credentials

__all__ = ["forget_targets", "snmp_settings", "snmp_target"]

_cache: dict[str, tuple[Host, SnmpTarget]] = {}
_lock = threading.Lock()


def _merge(into: dict[str, Any], layer: Any) -> None:
    if isinstance(layer, Mapping):
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                into[key] = {**into[key], **value}
            else:
                into[key] = value


def snmp_settings(host: Host) -> dict[str, Any]:
    """The host's ``snmp`` data with defaults and groups merged in."""
    merged: dict[str, Any] = {}
    if host.defaults is not None:
        _merge(merged, host.defaults.data.get("snmp"))
    for group in reversed(host.extended_groups()):
        _merge(merged, group.data.get("snmp"))
    _merge(merged, host.data.get("snmp"))
    return merged


def snmp_target(host: Host) -> SnmpTarget:
    """The validated target for ``host``; raises ConfigError naming the host and key.

    Cached per Host object: every task of every poll asks, and merging the settings and
    resolving secrets each time is wasted work. A loaded inventory is new Host objects,
    so a reload (or another inventory with the same names) resolves afresh.
    """
    with _lock:
        cached = _cache.get(host.name)
    if cached is not None and cached[0] is host:
        return cached[1]
    settings = snmp_settings(host)
    if not settings:
        raise ConfigError(f"inventory host {host.name}: no snmp settings (snmp.user, ...)")
    address = host.hostname or host.name
    target = SnmpTarget(host.name, address, snmp_credentials(host.name, settings))
    with _lock:
        _cache[host.name] = (host, target)
    return target


def forget_targets() -> None:
    """Drop every cached target (and the Host objects it holds); the next use re-reads
    and re-checks the secrets."""
    with _lock:
        _cache.clear()
