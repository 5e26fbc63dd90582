"""Interface names as SNMP's ifName has them, so CLI and SNMP series share their labels.

IOS (and IOS-XE) CLIs print full names (``GigabitEthernet1/0/1``) where IF-MIB's ifName is
the short one (``Gi1/0/1``); other platforms' CLIs print their ifName as it is (EOS
``Ethernet1``, NX-OS ``Ethernet1/1``, IOS-XR ``GigabitEthernet0/0/0/0``, Junos
``ge-0/0/0``).
"""

from __future__ import annotations

from netutils.interface import abbreviated_interface_name

__all__ = ["SHORT_NAME_PLATFORMS", "if_name"]

# netmiko device types and napalm drivers whose ifName is the abbreviated CLI name.
SHORT_NAME_PLATFORMS = frozenset({"cisco_ios", "cisco_xe", "ios"})


def if_name(platform: str, name: str) -> str:
    """``name`` as printed by ``platform``'s CLI, as the device's ifName."""
    if platform in SHORT_NAME_PLATFORMS:
        return str(abbreviated_interface_name(name))
    return name
