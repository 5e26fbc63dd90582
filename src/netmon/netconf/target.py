"""Where and how to reach one NETCONF server: address, user, secret references, host-key
policy and timeouts. Nothing here opens a socket.

Secrets and host-key policies are ``netmon.access``'s (re-exported here): references,
never values, read only when a session is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from netmon.access import (
    AcceptAnyHostKey,
    HostKeyPolicy,
    KnownHosts,
    PinnedHostKey,
    Secret,
    host_port,
)
from netmon.errors import ConfigError
from netmon.netconf.xml import DEFAULT_MAX_BYTES

__all__ = [
    "AcceptAnyHostKey",
    "HostKeyPolicy",
    "KnownHosts",
    "NetconfTarget",
    "PinnedHostKey",
    "Secret",
]


@dataclass(frozen=True, slots=True)
class NetconfTarget:
    """One NETCONF-over-SSH server. Authenticates with ``password`` or with ``key_file``
    (whose pass phrase, if any, is ``password``). Timeouts are in seconds."""

    device: str
    host: str
    username: str
    port: int = 830
    password: Secret | None = None
    key_file: Path | None = None
    host_key: HostKeyPolicy = field(default_factory=KnownHosts)
    connect_timeout: float = 10.0
    rpc_timeout: float = 30.0
    max_reply_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        where = f"netconf target {self.device or '?'}"
        if not self.device:
            raise ConfigError(f"{where}: device name is empty")
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError(f"{where}: host {self.host!r} is not a host name or address")
        if not self.username:
            raise ConfigError(f"{where}: username is empty")
        if isinstance(self.port, bool) or not 1 <= self.port <= 65535:
            raise ConfigError(f"{where}: port must be 1 to 65535, got {self.port!r}")
        if self.password is None and self.key_file is None:
            raise ConfigError(f"{where}: set a password reference or a key_file")
        for name in ("connect_timeout", "rpc_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 3600:
                raise ConfigError(f"{where}: {name} must be over 0 and at most 3600 s")
        if self.max_reply_bytes < 1024:
            raise ConfigError(f"{where}: max_reply_bytes must be at least 1024")
        if isinstance(self.host_key, PinnedHostKey) and not self.host_key.key_b64.strip():
            raise ConfigError(f"{where}: pinned host key is empty")

    @property
    def address(self) -> str:
        """``host:port``, with brackets for an IPv6 literal."""
        return host_port(self.host, self.port)
