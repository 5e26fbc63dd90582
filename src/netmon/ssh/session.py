"""SSH command-line sessions (netmiko), reused across polls, and their errors.

A poll's tasks run in a worker thread; a device's tasks run one after another, so one
session per device suffices. :class:`SessionPool` keeps it between polls (logging in
costs far more than a command) behind a per-device lock, and drops it when it broke
(any error but the device refusing a command or its output not parsing) or when the
device's target changed (an inventory reload). napalm drivers use the same pool type.

The host key is checked by paramiko before authentication: ``known_hosts`` and
``pinned`` load exactly the trusted keys and reject anything else (``ssh_strict``);
never the system's or the user's known_hosts files, nor an SSH agent.

Every netmiko/paramiko error becomes a :class:`netmon.errors.CliError` whose message names
the device, its address and what was being done, and never carries the password.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import paramiko
from netmiko import ConnectHandler
from netmiko.base_connection import BaseConnection
from netmiko.exceptions import (
    NetmikoAuthenticationException,
    NetmikoTimeoutException,
    ReadTimeout,
)

from netmon.access import AcceptAnyHostKey, KnownHosts, PinnedHostKey, quiet_transport
from netmon.errors import (
    CliAuthError,
    CliCommandError,
    CliConnectionError,
    CliError,
    CliParseError,
    CliTimeoutError,
    ConfigError,
)
from netmon.ssh.hosts import CliTarget, pinned_key_type

__all__ = [
    "SessionPool",
    "cli_pool",
    "connect",
    "host_key_options",
    "netmiko_options",
    "send_command",
    "translate_error",
]

S = TypeVar("S")
T = TypeVar("T")


# --- host keys ----------------------------------------------------------------------

_pinned_lock = threading.Lock()
_pinned_dir: Path | None = None
_pinned_files: dict[tuple[str, str], Path] = {}


def _pinned_known_hosts(target: CliTarget, key_b64: str) -> Path:
    """A private known_hosts file holding only the pinned key (paramiko checks keys
    against files or its own HostKeys; a file lets netmiko and napalm take it too)."""
    global _pinned_dir
    entry = (target.known_hosts_name, key_b64)
    with _pinned_lock:
        path = _pinned_files.get(entry)
        if path is not None and path.exists():
            return path
        key_type = pinned_key_type(key_b64)
        if key_type is None:
            raise ConfigError(
                f"inventory host {target.device}: cli.host_key: pinned is not a base64 SSH "
                "public key"
            )
        if _pinned_dir is None:
            _pinned_dir = Path(tempfile.mkdtemp(prefix="netmon-ssh-"))
            atexit.register(shutil.rmtree, _pinned_dir, True)
        path = _pinned_dir / f"known_hosts.{len(_pinned_files)}"
        path.write_text(f"{target.known_hosts_name} {key_type} {key_b64}\n")
        _pinned_files[entry] = path
        return path


def host_key_options(target: CliTarget) -> dict[str, Any]:
    """netmiko's host-key arguments for the target's policy (napalm passes them on)."""
    policy = target.host_key
    if isinstance(policy, AcceptAnyHostKey):
        return {"ssh_strict": False, "system_host_keys": False, "alt_host_keys": False}
    if isinstance(policy, KnownHosts):
        if not policy.path.is_file():
            # netmiko would skip a missing file and paramiko then refuse the key: say why.
            raise CliAuthError(
                f"{target.device} ({target.address}): known_hosts file {policy.path} does not "
                "exist; no host key is trusted, not connecting"
            )
        path = policy.path
    else:
        assert isinstance(policy, PinnedHostKey)
        path = _pinned_known_hosts(target, policy.key_b64)
    return {
        "ssh_strict": True,
        "system_host_keys": False,
        "alt_host_keys": True,
        "alt_key_file": str(path),
    }


def netmiko_options(target: CliTarget) -> dict[str, Any]:
    """Everything ConnectHandler needs but the device type; reads the password now."""
    password = target.password.reveal() if target.password is not None else None
    options: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "username": target.username,
        "password": password,
        "secret": password or "",
        # look_for_keys off: the key_file named, never the poller user's ~/.ssh keys.
        "use_keys": False,
        "key_file": str(target.key_file) if target.key_file is not None else None,
        "passphrase": password if target.key_file is not None else None,
        "allow_agent": False,
        "conn_timeout": target.timeout,
        "auth_timeout": target.timeout,
        "banner_timeout": target.timeout,
        **host_key_options(target),
    }
    return options


# --- errors -------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def translate_error(
    exc: BaseException, target: CliTarget, doing: str, *, password: str | None = None
) -> CliError:
    """A CliError for what netmiko, napalm or paramiko raised while ``doing``."""
    if isinstance(exc, CliError):
        return exc
    where = f"{target.device} ({target.address}): {doing}"
    result: CliError
    if isinstance(exc, paramiko.BadHostKeyException):
        result = CliAuthError(f"{where}: the host key is not the trusted one")
    elif isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        result = CliAuthError(f"{where}: the host key is not trusted (not in known_hosts)")
    elif isinstance(exc, NetmikoAuthenticationException | paramiko.AuthenticationException):
        result = CliAuthError(f"{where}: login refused for user {target.username}")
    elif isinstance(exc, ReadTimeout):
        result = CliTimeoutError(f"{where}: no prompt within {target.timeout:g}s")
    elif isinstance(exc, NetmikoTimeoutException) and exc.__context__ is not None:
        # netmiko reports every socket and paramiko error at connect as a "timeout"; what
        # it caught says what happened (refused, host key, banner).
        return translate_error(exc.__context__, target, doing, password=password)
    elif isinstance(exc, TimeoutError | socket.timeout | NetmikoTimeoutException) or (
        isinstance(exc, paramiko.SSHException) and "banner" in str(exc)
    ):
        result = CliTimeoutError(f"{where}: timed out after {target.timeout:g}s")
    elif isinstance(exc, ConnectionError) or (isinstance(exc, OSError) and exc.errno):
        result = CliConnectionError(f"{where}: {exc.strerror or _first_line(exc)}")
    elif isinstance(exc, OSError | EOFError | paramiko.SSHException):
        result = CliConnectionError(f"{where}: session lost: {_first_line(exc)}")
    else:
        # netmiko's prompt detection failing, a napalm getter tripping on the output...
        result = CliError(f"{where}: {type(exc).__name__}: {_first_line(exc)}")
    if password:
        result.args = tuple(str(a).replace(password, "<password>") for a in result.args)
    result.__cause__ = exc
    return result


# --- sessions -----------------------------------------------------------------------


def connect(target: CliTarget) -> BaseConnection:
    """A logged-in netmiko session (enable mode where the platform has one)."""
    options = netmiko_options(target)
    try:
        conn = ConnectHandler(device_type=target.device_type, **options)
        # Cisco's show running-config needs privileged mode; elsewhere "enable" means
        # something else (sudo on linux) or nothing.
        if target.device_type.startswith("cisco") and not conn.check_enable_mode():
            conn.enable()
        quiet_transport(getattr(conn.remote_conn, "transport", None))  # kept between polls
        return conn
    except CliError:
        raise
    except Exception as exc:
        raise translate_error(exc, target, "login", password=options["password"]) from exc


def _alive(conn: BaseConnection) -> bool:
    # netmiko's is_alive() writes a NUL into the shell; ask the transport instead.
    channel = conn.remote_conn
    transport = getattr(channel, "transport", None)
    return bool(transport is not None and transport.is_active())


def _close(conn: BaseConnection) -> None:
    # A broken session may fail to say goodbye; it is gone either way.
    with contextlib.suppress(Exception):
        conn.disconnect()


@dataclass
class _Slot(Generic[S]):
    lock: threading.Lock = field(default_factory=threading.Lock)
    target: CliTarget | None = None
    session: S | None = None
    used: float = 0.0  # clock() when last used


class SessionPool(Generic[S]):
    """One reusable session per device, opened on first use, dropped when broken, closed
    when unused for ``idle_seconds`` (a device polled every minute keeps its session; one
    removed from the inventory does not hold a login and a thread for ever)."""

    def __init__(
        self,
        open_session: Callable[[CliTarget], S],
        close_session: Callable[[S], None],
        alive: Callable[[S], bool],
        translate: Callable[[BaseException, CliTarget, str], CliError] = translate_error,
        *,
        idle_seconds: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_session
        self._close = close_session
        self._alive = alive
        self._translate = translate
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._slots: dict[str, _Slot[S]] = {}
        self._lock = threading.Lock()
        self._swept = clock()

    def _slot(self, device: str) -> _Slot[S]:
        with self._lock:
            slot = self._slots.get(device)
            if slot is None:
                slot = self._slots[device] = _Slot()
            return slot

    def run(self, target: CliTarget, doing: str, work: Callable[[S], T]) -> T:
        """``work(session)`` under the device's lock; errors become CliErrors, and any
        but a refused command or unparsable output drop the session."""
        self.close_idle()
        slot = self._slot(target.device)
        with slot.lock:
            slot.used = self._clock()
            session = slot.session
            if session is not None and (slot.target != target or not self._alive(session)):
                self._close(session)
                slot.session = session = None
            if session is None:
                try:
                    session = self._open(target)
                except CliError:
                    raise
                except Exception as exc:
                    raise self._translate(exc, target, "login") from exc
                slot.session, slot.target = session, target
            try:
                return work(session)
            except (CliCommandError, CliParseError):
                raise  # the session itself is fine
            except Exception as exc:
                slot.session = None
                self._close(session)
                if isinstance(exc, CliError):
                    raise
                raise self._translate(exc, target, doing) from exc
            finally:
                slot.used = self._clock()

    def close_idle(self) -> int:
        """Close the sessions unused for ``idle_seconds`` (at most once a tenth of that
        apart; busy ones are skipped); how many were closed."""
        now = self._clock()
        with self._lock:
            if now - self._swept < self.idle_seconds / 10:
                return 0
            self._swept = now
            slots = list(self._slots.values())
        closed = 0
        for slot in slots:
            if slot.session is None or now - slot.used < self.idle_seconds:
                continue
            if not slot.lock.acquire(blocking=False):
                continue  # in use right now
            try:
                session = None
                if now - slot.used >= self.idle_seconds:  # still idle, now that it is ours
                    session, slot.session = slot.session, None
            finally:
                slot.lock.release()
            if session is not None:
                self._close(session)
                closed += 1
        return closed

    def close(self, device: str) -> None:
        slot = self._slot(device)
        with slot.lock:
            session, slot.session = slot.session, None
        if session is not None:
            self._close(session)

    def close_all(self) -> None:
        with self._lock:
            devices = list(self._slots)
        for device in devices:
            self.close(device)

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for s in self._slots.values() if s.session is not None)


_cli_pool: SessionPool[BaseConnection] = SessionPool(connect, _close, _alive)


def cli_pool() -> SessionPool[BaseConnection]:
    """The process's netmiko sessions."""
    return _cli_pool


def send_command(target: CliTarget, command: str) -> str:
    """``command``'s output from the device's (reused) session."""

    def work(conn: BaseConnection) -> str:
        output = conn.send_command(command, read_timeout=target.timeout)
        return output if isinstance(output, str) else str(output)

    return _cli_pool.run(target, f"command {command!r}", work)
