"""The lab's SSH servers: NETCONF and CLI devices, one asyncssh listener per device.

A device that speaks NETCONF or CLI (:func:`netmon.lab.device.device_protocols`) listens
on TCP ``host:port`` with the same port number as its SNMP UDP port. Login is by password
only: the lab's user with NETMON_LAB_SSH_PASSWORD, else :data:`DEFAULT_SSH_PASSWORD`
(published on purpose, as the SNMP keys are). All devices show one host key, made once
per lab (or kept in a directory and reused), so an inventory can pin it.

On a NETCONF device the ``netconf`` subsystem is a NETCONF session (netconf_server.py);
a shell or exec request on any SSH device goes to ``netmon.lab.cli_shell.serve_shell``
(imported when first needed). Anything else is answered on stderr and closed.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import importlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import asyncssh

from netmon.lab.device import Device, Protocol
from netmon.lab.netconf_server import serve_netconf

__all__ = [
    "DEFAULT_SSH_PASSWORD",
    "SSH_PASSWORD_ENV",
    "LabSsh",
    "host_key_b64",
    "load_host_key",
]

DEFAULT_SSH_PASSWORD = "netmon-lab-ssh"  # noqa: S105 -- a published lab-only default
SSH_PASSWORD_ENV = "NETMON_LAB_SSH_PASSWORD"  # noqa: S105 -- a variable name
HOST_KEY_FILE = "ssh_host_ed25519_key"

log = logging.getLogger(__name__)
ShellHandler = Callable[[Device, "asyncssh.SSHServerProcess[str]"], Awaitable[None]]


def load_host_key(directory: Path | None = None) -> asyncssh.SSHKey:
    """An ed25519 host key: read from ``directory`` when it holds one, else made (and
    written there, mode 0600, when a directory is given)."""
    if directory is None:
        return asyncssh.generate_private_key("ssh-ed25519")
    path = directory / HOST_KEY_FILE
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="netmon lab")
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{HOST_KEY_FILE}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key.export_private_key("openssh"))
    temporary.replace(path)
    return key


def host_key_b64(key: asyncssh.SSHKey) -> str:
    """The public key in base64, as in ``ssh_host_*.pub`` without the type and comment."""
    return key.export_public_key("openssh").split()[1].decode("ascii")


class _Server(asyncssh.SSHServer):
    """Password authentication against the lab's one user and password."""

    def __init__(
        self, user: str, password: str, connections: set[asyncssh.SSHServerConnection]
    ) -> None:
        self._user = user.encode()
        self._password = password.encode()
        self._connections = connections
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # always ask, even for an unknown user (no user enumeration)

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        user_ok = hmac.compare_digest(username.encode(), self._user)
        return hmac.compare_digest(password.encode(), self._password) and user_ok


class LabSsh:
    """The SSH side of a lab: options built once, one listener per SSH-speaking device."""

    def __init__(self, user: str, password: str, host_key: asyncssh.SSHKey) -> None:
        self.user = user
        self.host_key = host_key
        self._password = password
        self._options = asyncssh.SSHServerConnectionOptions(
            server_host_keys=[host_key],
            server_version="netmon_lab",
            login_timeout=30,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            keepalive_interval=0,
        )
        self._acceptors: dict[str, asyncssh.SSHAcceptor] = {}
        # Open connections, closed with the lab: an acceptor leaves them open, and from
        # Python 3.12 on its wait_closed() would wait for every client to leave.
        self._connections: set[asyncssh.SSHServerConnection] = set()
        # asyncssh logs every listener and connection at INFO: 2,500 lines for a big lab.
        quiet = logging.getLogger("asyncssh")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)

    async def listen(
        self, device: Device, protocols: tuple[Protocol, ...], host: str, port: int
    ) -> int:
        """Serve ``device`` on TCP ``host:port`` (0: any free port); return the port."""
        acceptor = await asyncssh.listen(
            host,
            port,
            options=self._options,
            server_factory=functools.partial(_Server, self.user, self._password, self._connections),
            process_factory=functools.partial(_start_process, device, protocols),
            reuse_address=True,
        )
        self._acceptors[device.name] = acceptor
        return acceptor.get_port()

    def port(self, name: str) -> int | None:
        acceptor = self._acceptors.get(name)
        return None if acceptor is None else acceptor.get_port()

    async def close(self) -> None:
        acceptors = list(self._acceptors.values())
        self._acceptors.clear()
        for acceptor in acceptors:
            acceptor.close()
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        for conn in connections:
            await conn.wait_closed()
        for acceptor in acceptors:
            await acceptor.wait_closed()


def _start_process(
    device: Device, protocols: tuple[Protocol, ...], process: asyncssh.SSHServerProcess[str]
) -> Awaitable[None]:
    """asyncssh's process factory: which server a new session channel gets."""
    subsystem = process.subsystem
    if subsystem == "netconf" and "netconf" in protocols:
        return serve_netconf(device, process)
    if subsystem is not None:
        return _refuse(process, f"subsystem {subsystem!r} is not enabled on {device.name}")
    shell = _shell_handler()
    if shell is None:
        return _refuse(process, f"{device.name} has no CLI in this netmon version")
    return _run_shell(shell, device, process)


def _shell_handler() -> ShellHandler | None:
    """The CLI shell, imported on first use (sys.modules keeps it); None without one."""
    try:
        module = importlib.import_module("netmon.lab.cli_shell")
        return cast(ShellHandler, module.serve_shell)
    except ModuleNotFoundError as exc:
        if exc.name != "netmon.lab.cli_shell":
            log.exception("lab CLI: cannot import the shell")
        return None
    except Exception:  # a broken shell module must not take the lab down
        log.exception("lab CLI: cannot import the shell")
        return None


async def _run_shell(
    shell: ShellHandler, device: Device, process: asyncssh.SSHServerProcess[str]
) -> None:
    try:
        await shell(device, process)
    except (OSError, asyncssh.Error, asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
        pass  # the client went away or sent what the shell did not handle
    except Exception:  # a shell bug must not take the lab down
        log.exception("lab CLI %s: shell failed", device.name)
    finally:
        with contextlib.suppress(Exception):
            process.exit(0)


async def _refuse(process: asyncssh.SSHServerProcess[str], reason: str) -> None:
    with contextlib.suppress(Exception):
        process.stderr.write(f"netmon lab: {reason}\r\n")
        process.exit(1)
