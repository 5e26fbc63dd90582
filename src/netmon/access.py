"""How netmon reaches a device over SSH (NETCONF and CLI): secret references, host-key
policy, and a host's per-protocol settings read from the Nornir inventory.

Secrets are references, never values: :class:`Secret` names an environment variable or
a file and is read only when a session is opened. ``repr``/``str`` show the reference,
never what it points to, and errors never include it.

Host keys (choose one per protocol section, e.g. ``netconf.host_key``):

* ``{known_hosts: PATH}`` (:class:`KnownHosts`, the default with ``~/.ssh/known_hosts``):
  the key the server shows must be listed for ``host`` or ``[host]:port`` in that file;
  a host with no entry is refused before anything is sent.
* ``{pinned: BASE64}`` (:class:`PinnedHostKey`): exactly this public key (as in
  ``/etc/ssh/ssh_host_*.pub``, without the type and comment).
* ``accept_any`` (:class:`AcceptAnyHostKey`): no check at all, for lab devices on a
  private network only (a man in the middle would receive the password).

Inventory sections (``snmp``, ``netconf``, ``cli``) are merged key by key: defaults, then
groups (farthest first), then the host, so a host that sets ``netconf: {port: 2830}``
keeps the group's ``netconf.username`` (Nornir alone would replace the whole mapping).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from nornir.core.inventory import Host

from netmon.durations import parse_duration
from netmon.errors import ConfigError

__all__ = [
    "AcceptAnyHostKey",
    "HostKeyPolicy",
    "KnownHosts",
    "PinnedHostKey",
    "Secret",
    "TargetCache",
    "Where",
    "host_port",
    "merged_settings",
    "parse_host_key",
    "parse_port",
    "parse_seconds",
    "parse_secret",
    "quiet_transport",
]

# paramiko's transport thread wakes every 0.1 s to see whether the transport was closed;
# a session kept between polls is idle nearly all its life, so it sleeps longer. The cost:
# a closed session's thread ends up to this long after the close (daemon thread, socket
# closed). 50 idle sessions: 27 ms of CPU per second at 0.1 s.
PARAMIKO_IDLE_S = 5.0


@dataclass(frozen=True, slots=True)
class Secret:
    """A password or pass phrase by reference: exactly one of ``env`` or ``file``."""

    env: str | None = None
    file: Path | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ConfigError("a secret is {env: NAME} or {file: PATH}, exactly one")

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"

    def reveal(self) -> str:
        """The secret's value; raises :class:`ConfigError` naming only the reference."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.file}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class KnownHosts:
    """Trust only keys listed in this OpenSSH known_hosts file."""

    path: Path = field(default_factory=lambda: Path("~/.ssh/known_hosts").expanduser())


@dataclass(frozen=True, slots=True)
class PinnedHostKey:
    """Trust exactly this public key (base64, without the key type or comment)."""

    key_b64: str


@dataclass(frozen=True, slots=True)
class AcceptAnyHostKey:
    """Accept whatever key the server shows. For lab devices only."""


HostKeyPolicy = KnownHosts | PinnedHostKey | AcceptAnyHostKey


T = TypeVar("T")


class TargetCache(Generic[T]):
    """A host's validated target (SNMP, NETCONF, CLI), built once per Host object: every
    task of every poll asks, and merging settings and checking secrets each time would
    be wasted work. A loaded inventory is new Host objects, so a reload (or another
    inventory with the same names) builds afresh; :meth:`forget` drops them all."""

    def __init__(self, build: Callable[[Host], T]) -> None:
        self._build = build
        self._cache: dict[str, tuple[Host, T]] = {}
        self._lock = threading.Lock()

    def get(self, host: Host) -> T:
        with self._lock:
            cached = self._cache.get(host.name)
        if cached is not None and cached[0] is host:
            return cached[1]
        target = self._build(host)  # outside the lock: it may read secret files
        with self._lock:
            self._cache[host.name] = (host, target)
        return target

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


def host_port(host: str, port: int) -> str:
    """``host:port``, with brackets for an IPv6 literal."""
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


class Where:
    """Builds error messages that name the inventory host and the section's key."""

    def __init__(self, host: str, section: str) -> None:
        self.host = host
        self.section = section

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"inventory host {self.host}: {self.section}.{key}: {reason}")


def _merge(into: dict[str, Any], layer: Any) -> None:
    if isinstance(layer, Mapping):
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                into[key] = {**into[key], **value}
            else:
                into[key] = value


def merged_settings(host: Host, section: str) -> dict[str, Any]:
    """The host's ``section`` data with defaults and groups merged in, key by key."""
    merged: dict[str, Any] = {}
    if host.defaults is not None:
        _merge(merged, host.defaults.data.get(section))
    for group in reversed(host.extended_groups()):
        _merge(merged, group.data.get(section))
    _merge(merged, host.data.get(section))
    return merged


def parse_secret(where: Where, key: str, ref: Any) -> Secret:
    """``{env: NAME}`` or ``{file: PATH}``; an inline string is refused (it would sit in
    the inventory, in git and in backups). Only the reference is checked here."""
    if isinstance(ref, str):
        raise where.error(key, "secrets are not accepted inline; use {env: NAME} or {file: PATH}")
    if not isinstance(ref, Mapping) or len(ref) != 1 or not ({"env", "file"} & set(ref)):
        raise where.error(key, "expected {env: NAME} or {file: PATH}")
    if "env" in ref:
        return Secret(env=str(ref["env"]))
    return Secret(file=Path(str(ref["file"])).expanduser())


def parse_host_key(where: Where, key: str, value: Any) -> HostKeyPolicy:
    if value is None:
        return KnownHosts()
    if value == "accept_any":
        return AcceptAnyHostKey()
    if isinstance(value, Mapping) and len(value) == 1:
        if "known_hosts" in value:
            return KnownHosts(Path(str(value["known_hosts"])).expanduser())
        if "pinned" in value:
            pinned = str(value["pinned"]).strip()
            if pinned:
                return PinnedHostKey(pinned)
    raise where.error(key, "expected {known_hosts: PATH}, {pinned: BASE64} or accept_any")


def parse_port(where: Where, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise where.error(key, f"expected a port 1 to 65535, got {value!r}")
    return value


def parse_seconds(where: Where, key: str, value: Any, *, most: float = 3600.0) -> float:
    """A duration (``10s``, ``2m``) or a number of seconds, over 0 and at most ``most``."""
    try:
        if isinstance(value, bool):
            raise ValueError("not a duration")
        seconds = (
            float(value)
            if isinstance(value, int | float)
            else parse_duration(str(value)).total_seconds()
        )
    except ValueError as exc:
        raise where.error(key, f"expected a duration such as 10s: {exc}") from None
    if not 0 < seconds <= most:
        raise where.error(key, f"must be over 0 and at most {most:g} s")
    return seconds


def quiet_transport(transport: Any) -> None:
    """Let an open paramiko ``Transport``'s thread sleep between packets (see
    ``PARAMIKO_IDLE_S``); call it once the session is up. Anything else is left alone."""
    sock = getattr(transport, "sock", None)
    if sock is not None and hasattr(sock, "settimeout"):
        with contextlib.suppress(OSError):
            sock.settimeout(PARAMIKO_IDLE_S)
