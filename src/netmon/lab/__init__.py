"""A built-in lab of simulated SNMPv3 devices, for demos, tests and benchmarks.

Pure Python, one process, no root: ``Lab(devices=N)`` serves N switches on 127.0.0.1,
each with its own UDP port, engine ID, interfaces and traffic, speaking SNMPv3 with USM
(HMAC-SHA-1 or HMAC-SHA-256 authentication, AES-128 privacy) well enough for Net-SNMP's
tools and pysnmp; some also serve NETCONF or a CLI over SSH (asyncssh). See lab.py for
the runner, device.py for what a device looks like, agent.py for the SNMP protocol and
its cost, ssh.py and netconf_server.py for the SSH side.
"""

from netmon.lab.agent import Agent
from netmon.lab.control import send_command
from netmon.lab.device import Device, Interface, UsmStats, device_protocols
from netmon.lab.inventory import write_inventory
from netmon.lab.lab import (
    AUTH_KEY_ENV,
    DEFAULT_AUTH_KEY,
    DEFAULT_PRIV_KEY,
    DEFAULT_SSH_PASSWORD,
    LAB_SECRETS,
    MAX_DEVICES,
    PRIV_KEY_ENV,
    SSH_PASSWORD_ENV,
    Lab,
    LabParams,
    device_name,
    use_lab_secrets,
)
from netmon.lab.usm import UsmUser

__all__ = [
    "AUTH_KEY_ENV",
    "DEFAULT_AUTH_KEY",
    "DEFAULT_PRIV_KEY",
    "DEFAULT_SSH_PASSWORD",
    "LAB_SECRETS",
    "MAX_DEVICES",
    "PRIV_KEY_ENV",
    "SSH_PASSWORD_ENV",
    "Agent",
    "Device",
    "Interface",
    "Lab",
    "LabParams",
    "UsmStats",
    "UsmUser",
    "device_name",
    "device_protocols",
    "send_command",
    "use_lab_secrets",
    "write_inventory",
]
