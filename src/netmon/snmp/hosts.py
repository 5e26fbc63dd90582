"""A Nornir host's SNMP settings, merged key by key and validated once.

Nornir resolves ``host.data`` per top-level key: a host that sets ``snmp: {port: 16101}``
would hide the group's ``snmp.user``. SNMP settings are therefore merged per key: defaults,
then groups (farthest first), then the host. The merged result is validated by
:func:`netmon.snmp.credentials.snmp_credentials` once per Host object, so a poll does
not re-read secrets; loading the inventory again (a reload) makes new Host objects, so a
key file fixed or rotated is used from then on, and a secret gone is reported.
"""

from __future__ import annotations

from typing import Any

from nornir.core.inventory import Host

from netmon.access import TargetCache, merged_settings
from netmon.errors import ConfigError
from netmon.snmp.credentials import snmp_credentials
from netmon.snmp.target import SnmpTarget

__all__ = ["forget_targets", "snmp_settings", "snmp_target"]


def snmp_settings(host: Host) -> dict[str, Any]:
    """The host's ``snmp`` data with defaults and groups merged in."""
    return merged_settings(host, "snmp")


def snmp_target(host: Host) -> SnmpTarget:
    """The validated target for ``host``; raises ConfigError naming the host and key.
    Built once per Host object (``netmon.access.TargetCache``)."""
    return _targets.get(host)


def _build(host: Host) -> SnmpTarget:
    settings = snmp_settings(host)
    if not settings:
        raise ConfigError(f"inventory host {host.name}: no snmp settings (snmp.user, ...)")
    address = host.hostname or host.name
    return SnmpTarget(host.name, address, snmp_credentials(host.name, settings))


_targets = TargetCache(_build)


def forget_targets() -> None:
    """Drop every cached target (and the Host objects it holds); the next use re-reads
    and re-checks the secrets."""
    _targets.forget()
