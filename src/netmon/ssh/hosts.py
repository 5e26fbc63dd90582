"""A Nornir host's CLI settings (section ``cli``), merged key by key and validated once.

Keys (all optional but ``username`` and one of ``password``/``key_file``)::

    cli:
      port: 22
      username: netmon
      password: {env: NETMON_CLI_PASSWORD}   # or {file: PATH}; also the enable secret
      key_file: ~/.ssh/netmon_ed25519        # its pass phrase, if any, is ``password``
      host_key: {known_hosts: ~/.ssh/known_hosts}   # or {pinned: BASE64} or accept_any
      device_type: cisco_ios                 # netmiko's; default from the host's platform
      napalm_driver: ios                     # default from the platform, where napalm has one
      config_command: show running-config    # default per device type
      timeout: 10s                           # connect, login and each command's output

Validated once per Host object (as :func:`netmon.snmp.hosts.snmp_target`): a reload makes
new Host objects and so reads the settings again; :func:`forget_cli_targets` drops them.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netmiko.ssh_dispatcher import CLASS_MAPPER
from nornir.core.inventory import Host

from netmon.access import (
    HostKeyPolicy,
    KnownHosts,
    PinnedHostKey,
    Secret,
    TargetCache,
    Where,
    host_port,
    merged_settings,
    parse_host_key,
    parse_port,
    parse_seconds,
    parse_secret,
)
from netmon.errors import ConfigError

__all__ = [
    "CONFIG_COMMANDS",
    "CliTarget",
    "cli_settings",
    "cli_target",
    "forget_cli_targets",
    "pinned_key_type",
    "uses_cli",
]

SECTION = "cli"
_KEYS = frozenset(
    {
        "port",
        "username",
        "password",
        "key_file",
        "host_key",
        "device_type",
        "napalm_driver",
        "config_command",
        "timeout",
    }
)

# Nornir/napalm platform names -> netmiko device types.
_PLATFORM_DEVICE_TYPES = {
    "ios": "cisco_ios",
    "iosxe": "cisco_xe",
    "iosxr": "cisco_xr",
    "nxos": "cisco_nxos",
    "nxos_ssh": "cisco_nxos",
    "eos": "arista_eos",
    "junos": "juniper_junos",
}
# netmiko device types -> napalm drivers (the ones napalm ships).
_NAPALM_DRIVERS = {
    "cisco_ios": "ios",
    "cisco_xe": "ios",
    "cisco_xr": "iosxr",
    "cisco_nxos": "nxos_ssh",
    "arista_eos": "eos",
    "juniper_junos": "junos",
}
NAPALM_DRIVERS = frozenset({"ios", "iosxr", "nxos", "nxos_ssh", "eos", "junos"})
# What prints the running configuration, per netmiko device type.
CONFIG_COMMANDS = {
    "cisco_ios": "show running-config",
    "cisco_xe": "show running-config",
    "cisco_xr": "show running-config",
    "cisco_nxos": "show running-config",
    "arista_eos": "show running-config",
    "juniper_junos": "show configuration | display set",
}


@dataclass(frozen=True, slots=True)
class CliTarget:
    """One device's SSH command line. Secrets are references, read at connect time."""

    device: str
    host: str
    username: str
    device_type: str
    port: int = 22
    password: Secret | None = None
    key_file: Path | None = None
    host_key: HostKeyPolicy = field(default_factory=KnownHosts)
    napalm_driver: str | None = None
    config_command: str | None = None
    timeout: float = 10.0

    @property
    def address(self) -> str:
        """``host:port``, with brackets for an IPv6 literal."""
        return host_port(self.host, self.port)

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH and paramiko look this server up by in a known_hosts file."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def cli_settings(host: Host) -> dict[str, Any]:
    """The host's ``cli`` data with defaults and groups merged in."""
    return merged_settings(host, SECTION)


def cli_target(host: Host) -> CliTarget:
    """The validated target for ``host``; ConfigError naming the host and the key.
    Built once per Host object (``netmon.access.TargetCache``)."""
    return _targets.get(host)


def forget_cli_targets() -> None:
    """Drop every cached target; the next use reads and checks the settings again."""
    _targets.forget()


def _parse(host: Host, settings: dict[str, Any]) -> CliTarget:
    where = Where(host.name, SECTION)
    if not settings:
        raise ConfigError(f"inventory host {host.name}: no cli settings (cli.username, ...)")
    unknown = sorted(set(settings) - _KEYS)
    if unknown:
        raise where.error(unknown[0], f"unknown key (known: {', '.join(sorted(_KEYS))})")
    username = settings.get("username")
    if not isinstance(username, str) or not username:
        raise where.error("username", "required, a non-empty string")
    password = None
    if settings.get("password") is not None:
        password = parse_secret(where, "password", settings["password"])
        try:
            password.reveal()  # a secret that is not there is a load error, not a poll error
        except ConfigError as exc:
            raise where.error("password", str(exc)) from None
    key_file = _key_file(where, settings.get("key_file"))
    if password is None and key_file is None:
        raise where.error("password", "set a password reference or a key_file")
    device_type = _device_type(where, host, settings.get("device_type"))
    return CliTarget(
        device=host.name,
        host=host.hostname or host.name,
        username=username,
        device_type=device_type,
        port=parse_port(where, "port", settings.get("port", 22)),
        password=password,
        key_file=key_file,
        host_key=_host_key(where, settings.get("host_key")),
        napalm_driver=_napalm_driver(where, device_type, settings.get("napalm_driver")),
        config_command=_config_command(where, settings.get("config_command")),
        timeout=parse_seconds(where, "timeout", settings.get("timeout", 10), most=600.0),
    )


def pinned_key_type(key_b64: str) -> str | None:
    """The key type named inside an SSH public key blob (``ssh-ed25519``...); None if
    ``key_b64`` is not one."""
    try:
        blob = base64.b64decode(key_b64, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        key_type = blob[4 : 4 + length].decode("ascii")
    except (ValueError, struct.error, UnicodeDecodeError):
        return None
    return key_type if key_type and len(blob) > 4 + length else None


def _host_key(where: Where, value: Any) -> HostKeyPolicy:
    policy = parse_host_key(where, "host_key", value)
    if isinstance(policy, PinnedHostKey) and pinned_key_type(policy.key_b64) is None:
        raise where.error("host_key", "pinned is not a base64 SSH public key")
    return policy


def _key_file(where: Where, value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise where.error("key_file", "expected a path")
    path = Path(value).expanduser()
    if not path.is_file():
        raise where.error("key_file", f"{path} is not a readable file")
    return path


def _device_type(where: Where, host: Host, value: Any) -> str:
    if value is None:
        platform = host.platform
        if not platform:
            raise where.error("device_type", "required when the host has no platform")
        value = _PLATFORM_DEVICE_TYPES.get(platform, platform)
    if not isinstance(value, str) or value not in CLASS_MAPPER:
        raise where.error("device_type", f"{value!r} is not a netmiko device type")
    return value


def _napalm_driver(where: Where, device_type: str, value: Any) -> str | None:
    if value is None:
        return _NAPALM_DRIVERS.get(device_type)
    if not isinstance(value, str) or value not in NAPALM_DRIVERS:
        known = ", ".join(sorted(NAPALM_DRIVERS))
        raise where.error("napalm_driver", f"{value!r} is not a napalm driver ({known})")
    return value


def _config_command(where: Where, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise where.error("config_command", "expected one command line")
    return value.strip()


def uses_cli(task_names: list[str] | tuple[str, ...]) -> bool:
    """Whether any of these tasks talks to the device's command line (cli_*, napalm_*)."""
    return any(name.startswith(("cli_", "napalm_")) for name in task_names)


_targets = TargetCache(lambda host: _parse(host, cli_settings(host)))
