"""A lab of simulated SNMPv3 devices in this process: one UDP socket per device.

::

    async with Lab(devices=20) as lab:          # lab-0001 on 127.0.0.1:16101, ...
        lab.devices["lab-0003"].flap(2, down_for=30)

``base_port=0`` gives every device an ephemeral port (tests); :meth:`Lab.port` tells which.
All devices share one USM user; its pass phrases come from NETMON_LAB_AUTH_KEY and
NETMON_LAB_PRIV_KEY, else the lab-only defaults below (this is a lab: they are published
on purpose). The 1 MB pass-phrase hashing runs once for the whole lab.

Half of the devices also speak SSH (:func:`~netmon.lab.device.device_protocols`: NETCONF
on numbers 2, 6, 10, ..., a CLI on 3, 7, 11, ...) on TCP with the same port number as
their UDP one (:meth:`Lab.ssh_port`), password NETMON_LAB_SSH_PASSWORD else
``netmon-lab-ssh``, one ed25519 host key per lab (:attr:`Lab.ssh_host_key_b64`).
``ssh=False`` makes every device SNMP only. The 2,500 SSH listeners of a 5,000-device lab
add about 18 MB and 1 s to its start (asyncssh builds each listener's options); see
docs/lab.md.

Measured: 5,000 devices with 8 interfaces take 45 MB of RSS (9 KB per device, socket
included) and start in 0.2 s; with 8..48 interfaces per device, 121 MB. Each device holds
one file descriptor, so :meth:`Lab.start` raises the soft RLIMIT_NOFILE to the hard limit
when the lab needs more.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from netmon.lab.agent import Agent
from netmon.lab.control import serve_control
from netmon.lab.device import Device, Protocol, device_protocols
from netmon.lab.ssh import (
    DEFAULT_SSH_PASSWORD,
    SSH_PASSWORD_ENV,
    LabSsh,
    host_key_b64,
    load_host_key,
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
    "Lab",
    "LabParams",
    "device_name",
    "use_lab_secrets",
]

DEFAULT_AUTH_KEY = "netmon-lab-auth-key"
DEFAULT_PRIV_KEY = "netmon-lab-priv-key"
AUTH_KEY_ENV = "NETMON_LAB_AUTH_KEY"
PRIV_KEY_ENV = "NETMON_LAB_PRIV_KEY"
MAX_DEVICES = 20_000  # the poll benchmark's fleet; ports base+1..base+20,000 must be free
_SPARE_FILES = 64  # for the control socket, logs, the database, ...


# The lab's published secrets by the environment variable its inventory names them by.
LAB_SECRETS = {
    AUTH_KEY_ENV: DEFAULT_AUTH_KEY,
    PRIV_KEY_ENV: DEFAULT_PRIV_KEY,
    SSH_PASSWORD_ENV: DEFAULT_SSH_PASSWORD,
}


def use_lab_secrets() -> None:
    """Put the lab's documented secrets in the environment, where its inventory refers
    to them (as any inventory must), unless the user chose others."""
    for name, value in LAB_SECRETS.items():
        os.environ.setdefault(name, value)


def device_name(number: int) -> str:
    """The name of the lab's device ``number`` (1-based): ``lab-0001``."""
    return f"lab-{number:04d}"


@dataclass(frozen=True)
class LabParams:
    """What a lab looks like from outside: enough to write its inventory."""

    devices: int = 20
    host: str = "127.0.0.1"
    base_port: int = 16100
    interfaces: int | None = None
    user: str = "netmon"
    auth_protocol: Literal["sha1", "sha256"] = "sha1"
    # False: every device SNMP only (no SSH listeners; one inventory group).
    ssh: bool = True
    # The SSH host key's base64, for the inventory to pin; None when not known.
    ssh_host_key: str | None = None
    # The first device's number: labs in several processes (one process's descriptor
    # limit caps its sockets) number their devices, and so their ports, apart.
    first: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= MAX_DEVICES:
            raise ValueError(f"a lab has 1 to {MAX_DEVICES} devices, not {self.devices}")
        if self.first < 1:
            raise ValueError(f"device numbers start at 1 or later, not {self.first}")
        last = self.first + self.devices - 1
        if self.base_port and not 1 <= self.base_port <= 65535 - last:
            raise ValueError(f"ports {self.base_port}+{self.first}..+{last} do not fit in 1..65535")
        if self.auth_protocol not in ("sha1", "sha256"):
            raise ValueError(f"auth_protocol is sha1 or sha256, not {self.auth_protocol!r}")

    def names(self) -> list[str]:
        return [device_name(n) for n in range(self.first, self.first + self.devices)]

    def protocols(self, name: str) -> tuple[Protocol, ...]:
        """What device ``name`` speaks in this lab (SNMP only when ``ssh`` is off)."""
        return device_protocols(name) if self.ssh else ("snmp",)


class Lab:
    """N simulated devices answering SNMPv3 (authPriv, AES-128) on ``host``."""

    def __init__(
        self,
        devices: int = 20,
        host: str = "127.0.0.1",
        base_port: int = 16100,
        interfaces: int | None = None,
        user: str = "netmon",
        auth_key: str | None = None,
        priv_key: str | None = None,
        auth_protocol: Literal["sha1", "sha256"] = "sha1",
        *,
        ssh: bool = True,
        ssh_password: str | None = None,
        host_key_dir: Path | None = None,
        now: Callable[[], float] = time.monotonic,
        first: int = 1,
    ) -> None:
        host_key = load_host_key(host_key_dir) if ssh else None
        self.ssh_host_key_b64: str | None = host_key_b64(host_key) if host_key else None
        self.params = LabParams(
            devices,
            host,
            base_port,
            interfaces,
            user,
            auth_protocol,
            ssh,
            self.ssh_host_key_b64,
            first,
        )
        password = ssh_password or os.environ.get(SSH_PASSWORD_ENV) or DEFAULT_SSH_PASSWORD
        self._ssh = LabSsh(user, password, host_key) if host_key is not None else None
        auth_key = auth_key or os.environ.get(AUTH_KEY_ENV) or DEFAULT_AUTH_KEY
        priv_key = priv_key or os.environ.get(PRIV_KEY_ENV) or DEFAULT_PRIV_KEY
        self.user = UsmUser.from_passwords(user, auth_protocol, auth_key, priv_key)
        self.devices: dict[str, Device] = {
            name: Device(name, interfaces, now=now) for name in self.params.names()
        }
        self._agents: dict[str, Agent] = {}
        self._control: asyncio.Server | None = None
        self._control_path: Path | None = None

    # --- serving ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every device's sockets on the running loop; all or none."""
        ssh_devices = {n for n in self.devices if len(self.params.protocols(n)) > 1}
        _ensure_file_limit(len(self.devices) + len(ssh_devices) + _SPARE_FILES)
        loop = asyncio.get_running_loop()
        host, base = self.params.host, self.params.base_port
        for number, (name, device) in enumerate(self.devices.items(), start=self.params.first):
            port = base + number if base else 0
            agent = Agent(device, self.user)
            try:
                await loop.create_datagram_endpoint(
                    functools.partial(_same, agent), local_addr=(host, port)
                )
                self._agents[name] = agent
                if self._ssh is not None and name in ssh_devices:
                    # Same number as the UDP port (TCP is another space); with base 0
                    # any free TCP port, as for UDP.
                    await self._ssh.listen(device, self.params.protocols(name), host, port)
            except OSError as exc:
                await self.stop()
                raise OSError(
                    exc.errno, f"lab device {name} cannot listen on {host}:{port}: {exc.strerror}"
                ) from exc

    async def stop(self) -> None:
        agents = list(self._agents.values())
        self._agents.clear()
        await asyncio.gather(*(agent.close() for agent in agents))
        if self._ssh is not None:
            await self._ssh.close()
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            self._control = None
            if self._control_path is not None:
                _unlink(self._control_path)
                self._control_path = None

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return bool(self._agents)

    def port(self, name: str) -> int:
        """The UDP port device ``name`` listens on (with base_port 0: once started)."""
        if name not in self.devices:
            raise KeyError(f"no lab device {name!r}")
        agent = self._agents.get(name)
        if agent is not None and agent.transport is not None:
            return int(agent.transport.get_extra_info("sockname")[1])
        if not self.params.base_port:
            raise RuntimeError("with base_port=0 the ports are known once the lab has started")
        return self.params.base_port + int(name.rsplit("-", 1)[1])

    def ssh_port(self, name: str) -> int:
        """The TCP port of device ``name``'s SSH server (NETCONF or CLI): the number of
        its UDP port; with base_port 0, known once started. ValueError if it has none."""
        if "netconf" not in self.protocols(name) and "cli" not in self.protocols(name):
            raise ValueError(f"lab device {name} speaks SNMP only")
        port = self._ssh.port(name) if self._ssh is not None else None
        if port is not None:
            return port
        if not self.params.base_port:
            raise RuntimeError("with base_port=0 the ports are known once the lab has started")
        return self.params.base_port + int(name.rsplit("-", 1)[1])

    def protocols(self, name: str) -> tuple[Protocol, ...]:
        """What device ``name`` speaks: ``snmp``, and ``netconf`` or ``cli`` for some."""
        self.device(name)
        return self.params.protocols(name)

    def device(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            raise ValueError(
                f"no lab device {name!r} (this lab has {device_name(1)}.."
                f"{device_name(len(self.devices))})"
            ) from None

    async def serve_control(self, path: Path) -> None:
        """Accept control commands (JSON lines, see netmon.lab.control) on a unix socket
        at ``path`` until :meth:`stop`."""
        if self._control is not None:
            raise RuntimeError(f"the lab already serves control commands on {self._control_path}")
        self._control = await serve_control(self, path)
        self._control_path = path


def _ensure_file_limit(needed: int) -> None:
    """Raise the soft open-file limit toward the hard one when the lab needs more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(
            errno.EMFILE,
            f"the lab needs {needed} open files but the hard limit is {hard}; "
            "raise it (ulimit -Hn, LimitNOFILE=) or run fewer devices",
        )
    # An unlimited hard limit still cannot be the soft one (the kernel's nr_open caps it).
    target = hard if hard != resource.RLIM_INFINITY else max(needed, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _same(agent: Agent) -> Agent:
    return agent


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
