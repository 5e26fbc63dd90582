"""A Nornir host's NETCONF settings, merged key by key and validated once.

Inventory section ``netconf`` (in host, group or defaults data; merged per key by
``netmon.access.merged_settings``)::

    netconf:
      port: 830                          # default 830
      username: netmon                   # required
      password: {env: NETCONF_PASSWORD}  # or {file: PATH}; never inline
      key_file: ~/.ssh/netmon_ed25519    # a password or a key_file (or both: pass phrase)
      host_key: {known_hosts: PATH}      # default ~/.ssh/known_hosts; {pinned: BASE64}; accept_any
      connect_timeout: 10s               # TCP + SSH + auth + hello
      rpc_timeout: 30s                   # each <get>/<get-config>
      max_reply_bytes: 67108864          # a bigger reply is refused unparsed

The target is built once per Host object, as ``netmon.snmp.hosts.snmp_target`` does: a
reloaded inventory is new Host objects and is validated afresh. Secrets are references:
checked readable when the target is built (so a missing one is an error at load), and
read again only when a session opens (``netmon.netconf.client.connect``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nornir.core.inventory import Host

from netmon.access import (
    TargetCache,
    Where,
    merged_settings,
    parse_host_key,
    parse_port,
    parse_seconds,
    parse_secret,
)
from netmon.errors import ConfigError
from netmon.netconf.target import NetconfTarget
from netmon.netconf.xml import DEFAULT_MAX_BYTES

__all__ = ["KEYS", "forget_netconf_targets", "netconf_settings", "netconf_target"]

KEYS = frozenset(
    {
        "port",
        "username",
        "password",
        "key_file",
        "host_key",
        "connect_timeout",
        "rpc_timeout",
        "max_reply_bytes",
    }
)
_MAX_REPLY_LIMIT = 1 << 30  # past this a "bound" bounds nothing a poller can hold


def netconf_settings(host: Host) -> dict[str, Any]:
    """The host's ``netconf`` data with defaults and groups merged in, key by key."""
    return merged_settings(host, "netconf")


def netconf_target(host: Host) -> NetconfTarget:
    """The validated target for ``host``; raises ConfigError naming the host and key.

    Built once per Host object (``netmon.access.TargetCache``)."""
    return _targets.get(host)


def forget_netconf_targets() -> None:
    """Drop every cached target (and the Host objects it holds)."""
    _targets.forget()


def _build(host: Host) -> NetconfTarget:
    where = Where(host.name, "netconf")
    settings = netconf_settings(host)
    if not settings:
        raise ConfigError(
            f"inventory host {host.name}: no netconf settings (netconf.username, ...)"
        )
    unknown = sorted(set(settings) - KEYS)
    if unknown:
        raise where.error(unknown[0], f"unknown key (known: {', '.join(sorted(KEYS))})")
    username = settings.get("username")
    if not isinstance(username, str) or not username.strip():
        raise where.error("username", "required, a non-empty string")
    password = settings.get("password")
    key_file = settings.get("key_file")
    if password is None and key_file is None:
        raise where.error("password", "set a password reference or a key_file")
    if key_file is not None and (not isinstance(key_file, str | Path) or not str(key_file)):
        raise where.error("key_file", f"expected a path, got {key_file!r}")
    values: dict[str, Any] = {
        "device": host.name,
        "host": host.hostname or host.name,
        "username": username,
        "port": parse_port(where, "port", settings.get("port", 830)),
        "password": None if password is None else parse_secret(where, "password", password),
        "key_file": None if key_file is None else Path(str(key_file)).expanduser(),
        "host_key": parse_host_key(where, "host_key", settings.get("host_key")),
        "connect_timeout": parse_seconds(
            where, "connect_timeout", settings.get("connect_timeout", 10)
        ),
        "rpc_timeout": parse_seconds(where, "rpc_timeout", settings.get("rpc_timeout", 30)),
        "max_reply_bytes": _max_reply(where, settings.get("max_reply_bytes", DEFAULT_MAX_BYTES)),
    }
    try:
        target = NetconfTarget(**values)
    except ConfigError as exc:  # e.g. a host name with spaces
        raise ConfigError(f"inventory host {host.name}: netconf: {exc}") from None
    _check_readable(where, target)
    return target


def _check_readable(where: Where, target: NetconfTarget) -> None:
    """A secret or key that cannot be read is an error at load, naming the key, rather
    than a failed poll later. The value is read and dropped: sessions read it again."""
    if target.password is not None:
        try:
            target.password.reveal()
        except ConfigError as exc:
            raise where.error("password", str(exc)) from None
    if target.key_file is not None and not target.key_file.is_file():
        raise where.error("key_file", f"{target.key_file} is not a readable file")


def _max_reply(where: Where, value: Any) -> int:
    in_range = isinstance(value, int) and 1024 <= value <= _MAX_REPLY_LIMIT
    if isinstance(value, bool) or not in_range:
        raise where.error(
            "max_reply_bytes", f"expected a number of bytes, 1024 to {_MAX_REPLY_LIMIT}"
        )
    return int(value)


_targets = TargetCache(_build)
