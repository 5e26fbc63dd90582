"""A built-in lab of simulated SNMPv3 devices, for demos, tests and benchmarks.

Pure Python, one process, no root: ``Lab(devices=N)`` serves N switches on 127.0.0.1,
each with its own UDP port, engine ID, interfaces and traffic, speaking SNMPv3 with USM
(HMAC-SHA-1 or HMAC-SHA-256 authentication, AES-128 privacy) well enough for Net-SNMP's
tools and pysnmp. See lab.py for the runner, device.py for what a device looks like,
agent.py for the protocol and its cost.
"""

from netmon.lab.agent import Agent
from netmon.lab.control import send_command
from netmon.lab.device import Device, Interface, UsmStats
from netmon.lab.inventory import write_inventory
from netmon.lab.lab import (
    AUTH_KEY_ENV,
    DEFAULT_AUTH_KEY,
    DEFAULT_PRIV_KEY,
    MAX_DEVICES,
    PRIV_KEY_ENV,
    Lab,
    LabParams,
    device_name,
)
from netmon.lab.usm import UsmUser

__all__ = [
    "AUTH_KEY_ENV",
    "DEFAULT_AUTH_KEY",
    "DEFAULT_PRIV_KEY",
    "MAX_DEVICES",
    "PRIV_KEY_ENV",
    "Agent",
    "Device",
    "Interface",
    "Lab",
    "LabParams",
    "UsmStats",
    "UsmUser",
    "device_name",
    "send_command",
    "write_inventory",
]
