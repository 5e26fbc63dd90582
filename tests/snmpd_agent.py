"""A real Net-SNMP ``snmpd`` owned by the test: netmon's SNMP tests talk to it over UDP.

Each :class:`Snmpd` runs ``/usr/sbin/snmpd`` in the foreground as a child process of the
test, never the system service: its own directory holds its ``snmpd.conf``, its
persistent directory (engineBoots survives a restart there), its pid file and its log. It
listens on ``udp:127.0.0.1:<free port>`` only, with a fixed engine ID, USM users created
by ``createUser`` and ``rouser`` access for each, and serves what snmpd serves from the
host: IF-MIB (ifTable/ifXTable of the real interfaces, ``lo`` at least) and
HOST-RESOURCES-MIB (hrStorage; hrProcessorLoad once snmpd has a minute of CPU history).

Net-SNMP names of the privacy protocols (the evidence is in tests/test_snmpd_peer.py):
``AES-256`` is the Blumenthal key extension (draft-blumenthal-aes-usm, pysnmp's
``usmAesBlumenthalCfb256Protocol``, netmon's ``aes256``); ``AES-256-C`` is the Reeder
extension that Cisco implements (pysnmp's ``usmAesCfb256Protocol``, netmon's ``aes256c``).
The two only differ when the auth digest is shorter than the AES key, so the users that
tell them apart authenticate with SHA-1.

The ``snmpd`` fixture (module scope) and ``fresh_snmpd`` (one per test) skip with a reason
when Net-SNMP is not installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import pytest

from tests.peer_check import missing_peer

__all__ = [
    "DEFAULT_ENGINE_ID",
    "NET_SNMP_AUTH",
    "NET_SNMP_PRIV",
    "SNMPD",
    "SnmpUser",
    "Snmpd",
    "SnmpdError",
    "default_users",
    "fresh_snmpd",
    "require_net_snmp",
    "snmpd",
]

SNMPD = Path("/usr/sbin/snmpd")
SNMPGET = Path("/usr/bin/snmpget")

# RFC 3411 engine ID: 0x80 | enterprise 8072 (Net-SNMP), format 4 (text), the text.
DEFAULT_ENGINE_ID = bytes.fromhex("80001f8804") + b"netmon-test"

SYS_NAME = "netmon-test-agent"
SYS_LOCATION = "netmon test rack 7"
SYS_CONTACT = "netmon tests <noc@netmon.invalid>"

OID_SYS_NAME = "1.3.6.1.2.1.1.5.0"
OID_SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
OID_ENGINE_BOOTS = "1.3.6.1.6.3.10.2.1.2.0"
OID_HR_PROCESSOR_LOAD = "1.3.6.1.2.1.25.3.3.1.2"

# netmon's protocol names -> Net-SNMP's createUser / snmpget -a -x names.
NET_SNMP_AUTH: dict[str, str] = {
    "md5": "MD5",
    "sha1": "SHA",
    "sha224": "SHA-224",
    "sha256": "SHA-256",
    "sha384": "SHA-384",
    "sha512": "SHA-512",
}
NET_SNMP_PRIV: dict[str, str] = {
    "des": "DES",
    "aes128": "AES",
    "aes192": "AES-192",
    "aes256": "AES-256",
    "aes192c": "AES-192-C",
    "aes256c": "AES-256-C",
}

_READY_POLL = 0.05  # seconds between readiness probes
_STOP_GRACE = 5.0  # seconds for snmpd to save its persistent state and exit on SIGTERM
_MIN_UPTIME_BEFORE_REBOOT = 2.0  # seconds; see restart()


class SnmpdError(RuntimeError):
    """snmpd did not start, stop or reboot as asked; the message carries its log tail."""


class SnmpUser(NamedTuple):
    """One USM user, in netmon's protocol names (``priv_protocol`` None: authNoPriv)."""

    auth_protocol: str
    auth_key: str
    priv_protocol: str | None
    priv_key: str | None

    @property
    def security_level(self) -> str:
        return "authNoPriv" if self.priv_protocol is None else "authPriv"


def _key(label: str) -> str:
    return f"{label}-{secrets.token_hex(6)}"


def default_users() -> dict[str, SnmpUser]:
    """The users every :class:`Snmpd` has unless told otherwise, with fresh random keys.

    The first three are the spec's; the SHA-1 AES-256 pair tells Blumenthal from Reeder;
    ``sha256-authonly`` has no privacy (for unsupportedSecurityLevel).
    """
    users: dict[str, SnmpUser] = {}
    for auth, priv in [
        ("sha1", "aes128"),
        ("sha256", "aes256"),
        ("sha512", "aes256"),
        ("sha1", "aes256"),
        ("sha1", "aes256c"),
        ("sha256", "aes256c"),
    ]:
        users[f"{auth}-{priv}"] = SnmpUser(auth, _key(f"auth-{auth}"), priv, _key(f"priv-{priv}"))
    users["sha256-authonly"] = SnmpUser("sha256", _key("auth-only"), None, None)
    return users


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_net_snmp() -> None:
    """Skip the calling test when Net-SNMP's snmpd or snmpget is missing."""
    for tool, package in ((SNMPD, "snmpd"), (SNMPGET, "snmp")):
        if not os.access(tool, os.X_OK):
            missing_peer(f"{tool} is not installed (Debian package {package}; .ci/run installs it)")


class Snmpd:
    """One Net-SNMP snmpd on 127.0.0.1, started and stopped by the test.

    ``Snmpd(workdir)`` writes nothing until :meth:`start`; without ``workdir`` it makes a
    temporary directory and removes it on :meth:`close` (or leaving the ``with`` block).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        users: dict[str, SnmpUser] | None = None,
        engine_id: bytes = DEFAULT_ENGINE_ID,
        sys_name: str = SYS_NAME,
        sys_location: str = SYS_LOCATION,
        sys_contact: str = SYS_CONTACT,
        start_timeout: float = 10.0,
        communities: tuple[str, ...] = (),
    ) -> None:
        self._own_dir = workdir is None
        self.communities = communities  # SNMPv2c read-only communities, from 127.0.0.1
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="netmon-snmpd-")) if workdir is None else workdir
        )
        self.users: dict[str, SnmpUser] = dict(users) if users is not None else default_users()
        if not any(u.security_level == "authPriv" for u in self.users.values()):
            raise ValueError("at least one authPriv user is needed to probe readiness")
        self.engine_id = engine_id
        self.sys_name = sys_name
        self.sys_location = sys_location
        self.sys_contact = sys_contact
        self.start_timeout = start_timeout
        self.port = 0  # chosen on the first start, kept across restarts
        self.conf_path = self.workdir / "snmpd.conf"
        self.persistent_dir = self.workdir / "persist"
        self.client_dir = self.workdir / "client"  # snmpget's own config/persistent dir
        self.log_path = self.workdir / "snmpd.log"
        self.pid_path = self.workdir / "snmpd.pid"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._started_at = 0.0

    # -- state ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Snmpd:
        """Start snmpd and return once it answers an SNMPv3 GET (a fresh port is tried if
        the first free one was taken in the meantime)."""
        if self.running:
            raise SnmpdError("snmpd is already running")
        self._prepare_dirs()
        first_start = self.port == 0
        for _attempt in range(3 if first_start else 1):
            if first_start:
                self.port = free_udp_port()
            self._write_config()
            try:
                self._spawn_and_wait()
                return self
            except SnmpdError:
                if not first_start or "Error opening specified endpoint" not in self.log_tail():
                    raise
        raise SnmpdError(f"snmpd could not bind a free UDP port\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (snmpd saves engineBoots and its users), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            self._paused = False
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise SnmpdError(
                    f"snmpd ignored SIGTERM for {_STOP_GRACE}s\n{self.log_tail()}"
                ) from None

    def restart(self) -> None:
        """A reboot: same port, engine ID and users; engineBoots goes up and sysUpTime
        starts again. Both are checked with snmpget, so a returning call proves them.

        The old agent is given at least two seconds of uptime first, so that a restarted
        sysUpTime is distinguishable from one that kept counting.
        """
        boots_before = self.engine_boots()
        age = time.monotonic() - self._started_at
        if age < _MIN_UPTIME_BEFORE_REBOOT:
            time.sleep(_MIN_UPTIME_BEFORE_REBOOT - age)
        uptime_before = self.sys_uptime()
        self.stop()
        self.start()
        boots_after, uptime_after = self.engine_boots(), self.sys_uptime()
        if boots_after <= boots_before or uptime_after >= uptime_before:
            raise SnmpdError(
                f"restart was not a reboot: engineBoots {boots_before} -> {boots_after}, "
                f"sysUpTime {uptime_before} -> {uptime_after}\n{self.log_tail()}"
            )

    def pause(self) -> None:
        """SIGSTOP: snmpd keeps its socket but answers nothing (a silent agent)."""
        if not self.running:
            raise SnmpdError("snmpd is not running")
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT: snmpd answers again (requests queued meanwhile are answered late)."""
        if self._proc is not None and self._paused:
            os.kill(self._proc.pid, signal.SIGCONT)
        self._paused = False

    @contextlib.contextmanager
    def silenced(self) -> Iterator[Snmpd]:
        """``with agent.silenced():`` pauses snmpd and resumes it however the block ends."""
        self.pause()
        try:
            yield self
        finally:
            self.resume()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._own_dir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Snmpd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- asking the agent with Net-SNMP's own snmpget -----------------------------------

    def snmpget(self, *oids: str, user: str | None = None, timeout: float = 1.0) -> dict[str, str]:
        """GET with Net-SNMP's snmpget as ``user`` (default: the first authPriv user):
        numeric OID (no leading dot) -> value as snmpget prints it with ``-Oqt``."""
        result = self._snmpget(oids, user=user, timeout=timeout)
        if result.returncode != 0:
            raise SnmpdError(
                f"snmpget {' '.join(oids)} failed: {result.stderr.strip() or result.stdout}"
            )
        values: dict[str, str] = {}
        for line in result.stdout.splitlines():
            oid, _, value = line.partition(" ")
            values[oid.lstrip(".")] = value.strip()
        return values

    def engine_boots(self) -> int:
        return int(self.snmpget(OID_ENGINE_BOOTS)[OID_ENGINE_BOOTS])

    def sys_uptime(self) -> int:
        """sysUpTime.0 in hundredths of a second."""
        return int(self.snmpget(OID_SYS_UPTIME)[OID_SYS_UPTIME])

    def wait_for_processor_load(self, timeout: float = 75.0) -> dict[str, int]:
        """hrProcessorLoad by hrDeviceIndex, once snmpd has it.

        Net-SNMP samples /proc/stat every 5 s and answers hrProcessorLoad (the last
        minute's average) only when its history is full: about 55 s after start.
        """
        deadline = time.monotonic() + timeout
        while True:
            out = self._snmpwalk(OID_HR_PROCESSOR_LOAD)
            loads = {
                oid.lstrip(".").rsplit(".", 1)[1]: int(value)
                for oid, _, value in (line.partition(" ") for line in out.splitlines())
                if value.strip().lstrip("-").isdigit()
            }
            if loads:
                return loads
            if time.monotonic() > deadline:
                raise SnmpdError(f"no hrProcessorLoad after {timeout}s: {out.strip()}")
            time.sleep(1.0)

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for path in (self.log_path, self.workdir / "snmpd.stderr"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()
                if text:
                    parts.append(f"--- {path.name} (last {lines} lines) ---")
                    parts.extend(text[-lines:])
        return "\n".join(parts) or "(snmpd wrote no log)"

    # -- internals --------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        for path in (self.workdir, self.persistent_dir, self.client_dir):
            path.mkdir(parents=True, exist_ok=True)
        # snmpd runs as the test's user (no -u/-g, no agentuser: it drops no privileges),
        # but keep the tree traversable should it ever run as another user.
        self.workdir.chmod(0o755)
        # Read back explicitly: with -C snmpd reads only the files named by -c, and the
        # persistent file is where it keeps engineBoots across restarts.
        (self.persistent_dir / "snmpd.conf").touch()

    def _write_config(self) -> None:
        lines = [
            "# Written by tests/snmpd_agent.py for one test agent; not the system snmpd.",
            f"agentaddress udp:127.0.0.1:{self.port}",
            f"exactEngineID 0x{self.engine_id.hex()}",
            f"sysName {self.sys_name}",
            f"sysLocation {self.sys_location}",
            f"sysContact {self.sys_contact}",
            "sysServices 72",
            "dontLogTCPWrappersConnects yes",
        ]
        for name, user in self.users.items():
            line = f"createUser {name} {NET_SNMP_AUTH[user.auth_protocol]} {user.auth_key}"
            if user.priv_protocol is not None:
                line += f" {NET_SNMP_PRIV[user.priv_protocol]} {user.priv_key}"
            lines.append(line)
        for name, user in self.users.items():
            lines.append(f"rouser {name} {'priv' if user.priv_protocol else 'auth'}")
        lines.extend(f"rocommunity {community} 127.0.0.1" for community in self.communities)
        self.conf_path.write_text("\n".join(lines) + "\n")
        self.conf_path.chmod(0o600)  # it holds the pass phrases

    def _env(self, persistent_dir: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SNMP_PERSISTENT_DIR=str(persistent_dir),
            SNMPCONFPATH=str(self.client_dir),  # no /etc/snmp, no ~/.snmp
            MIBS="",  # numeric OIDs only: Debian ships no MIB files
        )
        return env

    def _spawn_and_wait(self) -> None:
        with self.log_path.open("a") as log:
            log.write(f"=== netmon test harness: starting snmpd on udp:127.0.0.1:{self.port}\n")
        with (self.workdir / "snmpd.stderr").open("ab") as stderr:
            self._proc = subprocess.Popen(
                [
                    str(SNMPD),
                    "-f",  # foreground: the Popen is snmpd itself
                    "-C",  # no /etc/snmp, /usr/share/snmp, ~/.snmp
                    "-c",
                    f"{self.conf_path},{self.persistent_dir / 'snmpd.conf'}",
                    "-I",
                    "-smux",  # no SMUX listener on TCP 199 (the system snmpd's)
                    "-A",
                    "-Lf",
                    str(self.log_path),
                    "-p",
                    str(self.pid_path),
                ],
                env=self._env(self.persistent_dir),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # a ^C to pytest is not a signal to snmpd
            )
        self._started_at = time.monotonic()
        deadline = self._started_at + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise SnmpdError(f"snmpd exited with status {code} at start\n{self.log_tail()}")
            if self._snmpget([OID_SYS_NAME], user=None, timeout=0.2).returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SnmpdError(
                    f"snmpd did not answer on udp:127.0.0.1:{self.port} within "
                    f"{self.start_timeout}s\n{self.log_tail()}"
                )
            time.sleep(_READY_POLL)

    def _client_args(self, user: str | None, timeout: float) -> list[str]:
        if user is None:
            user = next(n for n, u in self.users.items() if u.security_level == "authPriv")
        u = self.users[user]
        args = ["-v3", "-u", user, "-l", u.security_level]
        args += ["-a", NET_SNMP_AUTH[u.auth_protocol], "-A", u.auth_key]
        if u.priv_protocol is not None and u.priv_key is not None:
            args += ["-x", NET_SNMP_PRIV[u.priv_protocol], "-X", u.priv_key]
        return [*args, "-r", "0", "-t", str(timeout), "-On", "-Oqt", f"udp:127.0.0.1:{self.port}"]

    def _snmpget(
        self, oids: list[str] | tuple[str, ...], *, user: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SNMPGET), *self._client_args(user, timeout), *oids],
            env=self._env(self.client_dir),
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            check=False,
        )

    def _snmpwalk(self, oid: str) -> str:
        result = subprocess.run(
            [str(SNMPGET.with_name("snmpwalk")), *self._client_args(None, 1.0), oid],
            env=self._env(self.client_dir),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise SnmpdError(f"snmpwalk {oid} failed: {result.stderr.strip()}")
        return result.stdout


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """One running snmpd shared by a test module (skipped without Net-SNMP)."""
    require_net_snmp()
    with Snmpd(tmp_path_factory.mktemp("snmpd")) as agent:
        yield agent


@pytest.fixture
def fresh_snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    """A running snmpd of the test's own, for tests that pause or reboot it."""
    require_net_snmp()
    with Snmpd(tmp_path / "snmpd") as agent:
        yield agent
