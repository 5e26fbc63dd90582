"""Real NETCONF and SSH CLI peers owned by the test: yuma123 ``netconfd`` behind OpenSSH.

Two kinds of child process, never the system services:

- :class:`Netconfd` runs ``/usr/sbin/netconfd`` (yuma123) in the foreground with the
  ``ietf-interfaces`` and ``ietf-system`` modules, its own config file, startup file, log
  and ``ncxserver`` UNIX socket in its own directory (not ``/tmp/ncxserver.sock``). It
  listens on nothing but that socket.
- :class:`Sshd` runs ``/usr/sbin/sshd -D`` with its own config, a host key made by
  ``ssh-keygen`` in its directory, a client key pair for the login and an
  ``AuthorizedKeysFile`` there too; it listens on a free TCP port of 127.0.0.1 only.
  With a ``Netconfd`` it has ``Subsystem netconf /usr/sbin/netconf-subsystem
  --ncxserver-sockname=<port>@<socket>``; its shell sessions are the login user's own
  shell (a real ``bash`` for netmiko's ``linux`` device type).

The login is the user running the tests (root in CI), by key only: no system user is
made, and the key works only against this sshd. :class:`SshLogin` carries what a client
needs, including the host key so that clients can verify it.

What yuma123 2.13 (Debian 12) needs, found the hard way (docs/testing-peers.md):

- ``netconf-subsystem --ncxserver-sockname=PORT@PATH`` picks the socket by the SSH port
  the client connected to; a plain path, or another port, falls back to
  ``/tmp/ncxserver.sock``.
- netconfd refuses (``agt_connect error (access denied)``) a session whose SSH port is not
  one of its ``port`` values, so it is started with the sshd's port.
- netconfd will not start on a stale socket file, nor without its startup file.
- ``libietf-interfaces.so`` runs ``get-interface-ipv4 IFNAME`` for every interface and
  aborts when it fails; Debian does not ship it: tests/peers/ has one, first on the PATH.

Fixtures (module scope; each skips with a reason when a binary is missing, ``.ci/run``
installs them): ``netconf_peer`` (a :class:`NetconfPeer`) and ``ssh_cli_peer`` (a
:class:`SshLogin` to an sshd with no NETCONF subsystem).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from tests.peer_check import missing_peer

__all__ = [
    "NETCONFD",
    "NETCONF_SUBSYSTEM",
    "SSHD",
    "NetconfPeer",
    "Netconfd",
    "PeerError",
    "SshLogin",
    "Sshd",
    "netconf_peer",
    "require_netconfd",
    "require_sshd",
    "ssh_cli_peer",
]

NETCONFD = Path("/usr/sbin/netconfd")
NETCONF_SUBSYSTEM = Path("/usr/sbin/netconf-subsystem")
SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = Path("/usr/bin/ssh-keygen")
YUMA_SIL_DIR = Path("/usr/lib/x86_64-linux-gnu/yuma")
HELPER_DIR = Path(__file__).resolve().parent / "peers"  # get-interface-ipv4
NETCONF_MODULES = ("ietf-interfaces", "ietf-system")

_READY_POLL = 0.05  # seconds between readiness probes
_STOP_GRACE = 5.0  # seconds to exit on SIGTERM before SIGKILL
_PORT_ATTEMPTS = 3  # a free port may be taken between choosing it and binding it


class PeerError(RuntimeError):
    """A peer did not start or stop as asked; the message carries its log tail."""


@dataclass(frozen=True)
class SshLogin:
    """What an SSH client needs for one of these peers."""

    host: str
    port: int
    username: str
    key_filename: Path  # private key (ed25519, no passphrase)
    host_key_type: str  # e.g. "ssh-ed25519"
    host_key_b64: str  # the sshd's public host key, base64 (ncclient's hostkey_b64)
    known_hosts: Path  # an OpenSSH known_hosts file holding only that key
    password: str | None = None  # key authentication only


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _require(*files: tuple[Path, str]) -> None:
    for path, package in files:
        usable = path.is_file() if path.suffix == ".so" else os.access(path, os.X_OK)
        if not usable:
            missing_peer(f"{path} is not installed (Debian package {package}; .ci/run installs it)")


def require_sshd() -> None:
    """Skip the calling test when OpenSSH's sshd or ssh-keygen is missing."""
    _require((SSHD, "openssh-server"), (SSH_KEYGEN, "openssh-client"))


def require_netconfd() -> None:
    """Skip the calling test when yuma123's netconfd or its two modules are missing."""
    require_sshd()
    _require(
        (NETCONFD, "netconfd"),
        (NETCONF_SUBSYSTEM, "netconfd"),
        (YUMA_SIL_DIR / "libietf-interfaces.so", "netconfd-module-ietf-interfaces"),
        (YUMA_SIL_DIR / "libietf-system.so", "netconfd-module-ietf-system"),
    )


def _log_tail(paths: list[Path], lines: int = 30) -> str:
    parts = []
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").splitlines()
            if text:
                parts.append(f"--- {path.name} (last {lines} lines) ---")
                parts.extend(text[-lines:])
    return "\n".join(parts) or "(no log written)"


def _stop(proc: subprocess.Popen[bytes] | None, name: str, log: str) -> None:
    """SIGTERM the process we started, SIGKILL it if it hangs; one that died on its own
    (netconfd aborting on a request, say) is an error too."""
    if proc is None:
        return
    if proc.poll() is not None:
        raise PeerError(f"{name} had exited with status {proc.returncode} before stop\n{log}")
    proc.terminate()
    try:
        proc.wait(_STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise PeerError(f"{name} ignored SIGTERM for {_STOP_GRACE}s\n{log}") from None


class Netconfd:
    """One yuma123 netconfd serving a private ncxserver socket in ``workdir``.

    ``ssh_port`` is the port of the sshd in front of it: netconfd accepts sessions from
    that port only. Root-run netconfd is fine here (a private instance on a socket).
    """

    def __init__(
        self, workdir: Path, *, ssh_port: int, superuser: str, start_timeout: float = 10.0
    ) -> None:
        self.workdir = workdir
        self.ssh_port = ssh_port
        self.superuser = superuser  # bypasses NACM, so tests may edit-config too
        self.start_timeout = start_timeout
        self.socket_path = workdir / "ncxserver.sock"
        self.conf_path = workdir / "netconfd.conf"
        self.startup_path = workdir / "startup-cfg.xml"
        self.log_path = workdir / "netconfd.log"
        self._stderr_path = workdir / "netconfd.stderr"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Netconfd:
        if self.running:
            raise PeerError("netconfd is already running")
        (self.workdir / "home").mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)  # netconfd fails on a stale socket
        if not self.startup_path.exists():
            self.startup_path.write_text(
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"/>\n'
            )
        self._write_config()
        env = dict(os.environ)
        env.update(PATH=f"{HELPER_DIR}:{env.get('PATH', '/usr/bin:/bin')}")
        env.update(HOME=str(self.workdir / "home"))  # netconfd keeps ~/.yuma there
        with self._stderr_path.open("ab") as stderr:
            self._proc = subprocess.Popen(
                [str(NETCONFD), f"--config={self.conf_path}"],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # a ^C to pytest is not a signal to netconfd
            )
        deadline = time.monotonic() + self.start_timeout
        while not self.socket_path.is_socket():
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise PeerError(f"netconfd exited with status {code}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise PeerError(f"netconfd made no socket in {self.start_timeout}s")
            time.sleep(_READY_POLL)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _stop(proc, "netconfd", self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        return _log_tail([self.log_path, self._stderr_path], lines)

    def _write_config(self) -> None:
        lines = [
            "# tests/netconf_peer.py: a test netconfd",  # netconfd warns past 72 chars
            "netconfd {",
            *(f"    module {name}" for name in NETCONF_MODULES),
            f"    port {self.ssh_port}",
            f"    ncxserver-sockname {self.socket_path}",
            f"    startup {self.startup_path}",
            "    target running",
            f"    superuser {self.superuser}",
            f"    log {self.log_path}",
            "    log-level info",
            "}",
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")


class Sshd:
    """One OpenSSH sshd on 127.0.0.1, its keys and config in ``workdir``.

    ``netconf_socket``: serve the ``netconf`` subsystem through that netconfd socket.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        netconf_socket: Path | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.netconf_socket = netconf_socket
        self.start_timeout = start_timeout
        self.username = pwd.getpwuid(os.getuid()).pw_name
        self.conf_path = workdir / "sshd_config"
        self.host_key = workdir / "ssh_host_ed25519_key"
        self.client_key = workdir / "id_ed25519"
        self.authorized_keys = workdir / "authorized_keys"
        self.known_hosts = workdir / "known_hosts"
        self.log_path = workdir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def login(self) -> SshLogin:
        key_type, key_b64 = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return SshLogin(
            host="127.0.0.1",
            port=self.port,
            username=self.username,
            key_filename=self.client_key,
            host_key_type=key_type,
            host_key_b64=key_b64,
            known_hosts=self.known_hosts,
        )

    def start(self) -> Sshd:
        if self.running:
            raise PeerError("sshd is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_keys()
        self._write_config()
        if os.geteuid() == 0:
            # Root sshd chroots its pre-auth child into this compiled-in directory, which
            # Debian makes at service start (tmpfiles.d/sshd.conf); no service ran here.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run(
            [str(SSHD), "-t", "-f", str(self.conf_path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise PeerError(f"sshd -t rejected {self.conf_path}: {check.stderr.strip()}")
        self._proc = subprocess.Popen(
            # An absolute path (sshd re-executes itself), foreground, log to a file.
            [str(SSHD), "-D", "-f", str(self.conf_path), "-E", str(self.log_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_for_banner()
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _stop(proc, "sshd", self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        return _log_tail([self.log_path], lines)

    def _wait_for_banner(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise PeerError(f"sshd exited with status {code}\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock,
            ):
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise PeerError(f"sshd sent no banner in {self.start_timeout}s")
            time.sleep(_READY_POLL)

    def _make_keys(self) -> None:
        for key, comment in ((self.host_key, "netmon-test-host"), (self.client_key, "netmon-test")):
            if not key.exists():
                subprocess.run(
                    [
                        str(SSH_KEYGEN),
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        comment,
                        "-f",
                        str(key),
                    ],
                    check=True,
                    capture_output=True,
                )
        shutil.copyfile(self.client_key.with_suffix(".pub"), self.authorized_keys)
        key_type, key_b64 = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_type} {key_b64}\n")

    def _write_config(self) -> None:
        lines = [
            "# Written by tests/netconf_peer.py for one test sshd; not the system sshd.",
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AllowUsers {self.username}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "AuthorizedKeysCommand none",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            # The files live under the pytest temp dir, whose parents (/tmp) sshd's
            # ownership checks would refuse.
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
        ]
        if self.netconf_socket is not None:
            lines.append(
                f"Subsystem netconf {NETCONF_SUBSYSTEM} "
                f"--ncxserver-sockname={self.port}@{self.netconf_socket}"
            )
        self.conf_path.write_text("\n".join(lines) + "\n")


class NetconfPeer:
    """netconfd behind sshd's ``netconf`` subsystem: a NETCONF-over-SSH server.

    Also an SSH CLI peer (the same sshd serves shells). Without ``workdir`` it makes a
    temporary directory and removes it on :meth:`close`.
    """

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="netmon-netconf-")) if workdir is None else workdir
        )
        self.netconfd: Netconfd | None = None
        self.sshd: Sshd | None = None

    @property
    def login(self) -> SshLogin:
        if self.sshd is None:
            raise PeerError("the NETCONF peer is not running")
        return self.sshd.login

    def start(self) -> NetconfPeer:
        """Start netconfd, then sshd on the port netconfd was told (another free port is
        tried, netconfd included, if that one was taken in the meantime)."""
        username = pwd.getpwuid(os.getuid()).pw_name
        for _attempt in range(_PORT_ATTEMPTS):
            port = free_tcp_port()
            self.netconfd = Netconfd(self.workdir / "netconfd", ssh_port=port, superuser=username)
            self.netconfd.start()
            self.sshd = Sshd(
                self.workdir / "sshd", port=port, netconf_socket=self.netconfd.socket_path
            )
            try:
                self.sshd.start()
                return self
            except PeerError:
                self.stop()
                if "Address already in use" not in _log_tail([self.workdir / "sshd" / "sshd.log"]):
                    raise
        raise PeerError("sshd could not bind a free TCP port")

    def stop(self) -> None:
        sshd, netconfd, self.sshd, self.netconfd = self.sshd, self.netconfd, None, None
        try:
            if sshd is not None:
                sshd.stop()
        finally:
            if netconfd is not None:
                netconfd.stop()

    def log_tail(self) -> str:
        parts = [p.log_tail() for p in (self.netconfd, self.sshd) if p is not None]
        return "\n".join(parts)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._own_dir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NetconfPeer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _start_sshd(workdir: Path) -> Sshd:
    for _attempt in range(_PORT_ATTEMPTS):
        sshd = Sshd(workdir, port=free_tcp_port())
        try:
            return sshd.start()
        except PeerError:
            if "Address already in use" not in sshd.log_tail():
                raise
    raise PeerError("sshd could not bind a free TCP port")


@pytest.fixture(scope="module")
def netconf_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetconfPeer]:
    """A running netconfd behind a private sshd, shared by a test module."""
    require_netconfd()
    with NetconfPeer(tmp_path_factory.mktemp("netconf")) as peer:
        yield peer


@pytest.fixture(scope="module")
def ssh_cli_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLogin]:
    """A login to a private sshd whose sessions are the test user's shell."""
    require_sshd()
    sshd = _start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield sshd.login
    finally:
        sshd.stop()
