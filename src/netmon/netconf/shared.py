"""NETCONF sessions for threads: the pool Nornir tasks share across polls.

The poller runs Nornir tasks in its worker threads, synchronously; :class:`SessionPool`
shares their sessions:

* at most ``max_sessions`` sessions open (ncclient costs two threads per session); to
  open one more, the least recently used idle session is closed first, and when every
  session is busy the caller waits (bounded by the target's connect + RPC timeouts);
* one operation at a time per device (a session is not thread-safe), others wait;
* a device's open session is reused while it is connected and its target unchanged, so
  a device polled every minute keeps one session (the SSH handshake and hello are paid
  once, not per poll);
* a session whose operation failed in a way that leaves its state unknown (timeout, lost
  connection, bad or unsafe reply, anything unexpected) is closed and dropped, never
  reused; an ``<rpc-error>`` or a missing capability leaves it open;
* sessions idle for ``idle_timeout`` seconds are closed by a daemon thread.

:func:`shared_pool` is the process-wide pool (created on first use);
:func:`configure_shared_pool` sizes it, :func:`close_shared_pool` closes it.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from netmon.errors import NetconfCapabilityError, NetconfRpcError, NetconfTimeoutError
from netmon.netconf.client import Capabilities, NetconfReply, Subtree, connect
from netmon.netconf.target import NetconfTarget

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_SESSIONS",
    "PooledSession",
    "Session",
    "SessionPool",
    "close_shared_pool",
    "configure_shared_pool",
    "shared_pool",
]

T = TypeVar("T")

# The poller runs up to 50 polls at once (poller.max_in_flight): room for each, and some.
DEFAULT_MAX_SESSIONS = 64
# Longer than the usual poll interval (60 s), so a session lasts from one poll to the next.
DEFAULT_IDLE_TIMEOUT = 300.0
_REAP_EVERY = 5.0  # seconds, at most, between idle checks

_serials = itertools.count(1)


class Session(Protocol):
    """What the pool needs of a session (``netmon.netconf.client.NetconfSession``)."""

    target: NetconfTarget
    capabilities: Capabilities

    @property
    def connected(self) -> bool: ...

    def get(
        self,
        *,
        subtree: Subtree | None = None,
        xpath: str | None = None,
        namespaces: Mapping[str, str] | None = None,
    ) -> NetconfReply: ...

    def get_config(
        self,
        source: Literal["running", "candidate"] = "running",
        *,
        subtree: Subtree | None = None,
        xpath: str | None = None,
        namespaces: Mapping[str, str] | None = None,
    ) -> NetconfReply: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PooledSession:
    """What a pooled call sees: the session and its serial number in this process (a new
    number means a new session: the hello may have changed)."""

    session: Session
    serial: int

    @property
    def capabilities(self) -> Capabilities:
        return self.session.capabilities


@dataclass(slots=True)
class _Entry:
    pooled: PooledSession
    last_used: float
    in_use: bool


class SessionPool:
    """Open NETCONF sessions by device name, shared by threads."""

    def __init__(
        self,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        connector: Callable[[NetconfTarget], Session] = connect,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be over 0 s")
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._connect = connector
        self._cond = threading.Condition()
        self._entries: dict[str, _Entry] = {}
        self._busy: set[str] = set()  # devices with an operation (or connect) in progress
        self._opening = 0  # sessions being connected: not in _entries yet
        self._closing = 0  # sessions out of _entries whose close has not finished
        self._closed = False
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.opened = 0  # sessions opened over the pool's life
        self.dropped = 0  # sessions closed after a failure

    @property
    def open_sessions(self) -> int:
        with self._cond:
            return len(self._entries)

    # -- operations --------------------------------------------------------------------

    def capabilities(self, target: NetconfTarget) -> Capabilities:
        return self.run(target, lambda p: p.capabilities)

    def get(
        self,
        target: NetconfTarget,
        *,
        subtree: Subtree | None = None,
        xpath: str | None = None,
        namespaces: Mapping[str, str] | None = None,
    ) -> NetconfReply:
        return self.run(
            target, lambda p: p.session.get(subtree=subtree, xpath=xpath, namespaces=namespaces)
        )

    def get_config(
        self,
        target: NetconfTarget,
        source: Literal["running", "candidate"] = "running",
        *,
        subtree: Subtree | None = None,
        xpath: str | None = None,
        namespaces: Mapping[str, str] | None = None,
    ) -> NetconfReply:
        return self.run(
            target,
            lambda p: p.session.get_config(
                source, subtree=subtree, xpath=xpath, namespaces=namespaces
            ),
        )

    def run(self, target: NetconfTarget, call: Callable[[PooledSession], T]) -> T:
        """``call`` on ``target``'s session (opened if need be), in the calling thread.

        Several operations in one ``call`` run back to back on one session, with no other
        thread's operation on that device in between."""
        entry = self._checkout(target)
        try:
            result = call(entry.pooled)
        except (NetconfRpcError, NetconfCapabilityError):
            self._checkin(target.device, entry)
            raise
        except BaseException:
            self._discard(target.device, entry, failed=True)
            raise
        self._checkin(target.device, entry)
        return result

    def drop(self, device: str) -> None:
        """Close ``device``'s session if it is idle (a device removed from the inventory)."""
        with self._cond:
            entry = self._entries.get(device)
            if entry is None or entry.in_use:
                return
            del self._entries[device]
            self._closing += 1
        self._close(entry.pooled.session)

    def close(self) -> None:
        """Close every idle session now and every busy one when its operation ends; the
        pool cannot be used again."""
        self._stop.set()
        with self._cond:
            self._closed = True
            idle = [d for d, e in self._entries.items() if not e.in_use]
            sessions = [self._entries.pop(d).pooled.session for d in idle]
            self._closing += len(sessions)
            self._cond.notify_all()
        for session in sessions:
            self._close(session)

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _checkout(self, target: NetconfTarget) -> _Entry:
        device = target.device
        deadline = time.monotonic() + target.connect_timeout + target.rpc_timeout
        stale: list[Session] = []  # taken out of _entries under the lock, closed after it
        try:
            with self._cond:
                entry = self._reserve(target, deadline, stale)
        finally:
            for session in stale:
                self._close(session)
        if entry is not None:
            return entry
        try:
            session = self._connect(target)
        except BaseException:
            with self._cond:
                self._opening -= 1
                self._busy.discard(device)
                self._cond.notify_all()
            raise
        entry = _Entry(PooledSession(session, next(_serials)), time.monotonic(), in_use=True)
        with self._cond:
            self._opening -= 1
            self.opened += 1
            self._entries[device] = entry
        return entry

    def _reserve(
        self, target: NetconfTarget, deadline: float, stale: list[Session]
    ) -> _Entry | None:
        """With the lock held: take the device, and its reusable session, or a place to
        open one (None)."""
        device = target.device
        if self._closed:
            raise RuntimeError("the NETCONF session pool is closed")
        self._start_reaper()
        while device in self._busy:
            self._wait_once(deadline, target)
        self._busy.add(device)
        try:
            entry = self._entries.get(device)
            if entry is not None and (
                entry.pooled.session.target != target or not entry.pooled.session.connected
            ):
                del self._entries[device]
                stale.append(entry.pooled.session)
                self._closing += 1
                entry = None
            if entry is not None:
                entry.in_use = True
                return entry
            self._make_room(deadline, target, stale)
            self._opening += 1
            return None
        except BaseException:
            self._busy.discard(device)
            self._cond.notify_all()
            raise

    def _make_room(self, deadline: float, target: NetconfTarget, stale: list[Session]) -> None:
        """With the lock held: close idle sessions until one more fits, or wait for one.

        Sessions put in ``stale`` here are closed by this caller before it connects, so
        they are not counted (waiting for them would wait for ourselves)."""
        while len(self._entries) + self._opening + self._closing - len(stale) >= self.max_sessions:
            idle = [(e.last_used, d) for d, e in self._entries.items() if not e.in_use]
            if idle:
                entry = self._entries.pop(min(idle)[1])
                stale.append(entry.pooled.session)
                self._closing += 1
            else:
                self._wait_once(deadline, target)

    def _wait_once(self, deadline: float, target: NetconfTarget) -> None:
        if self._closed:
            raise RuntimeError("the NETCONF session pool is closed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NetconfTimeoutError(
                f"{target.device}: no NETCONF session free within "
                f"{target.connect_timeout + target.rpc_timeout:g} s "
                f"({self.max_sessions} sessions, all busy)"
            )
        self._cond.wait(remaining)

    def _checkin(self, device: str, entry: _Entry) -> None:
        with self._cond:
            entry.in_use = False
            entry.last_used = time.monotonic()
            self._busy.discard(device)
            if self._closed and self._entries.get(device) is entry:
                del self._entries[device]
                self._closing += 1
                closing: Session | None = entry.pooled.session
            else:
                closing = None
            self._cond.notify_all()
        if closing is not None:
            self._close(closing)

    def _discard(self, device: str, entry: _Entry, *, failed: bool) -> None:
        with self._cond:
            if self._entries.get(device) is entry:
                del self._entries[device]
            self._busy.discard(device)
            self._closing += 1
            if failed:
                self.dropped += 1
            self._cond.notify_all()
        self._close(entry.pooled.session)

    def _close(self, session: Session) -> None:
        """Close ``session`` (counted in ``_closing`` by the caller) outside the lock."""
        try:
            session.close()
        finally:
            with self._cond:
                self._closing -= 1
                self._cond.notify_all()

    def _start_reaper(self) -> None:
        if self._reaper is None and not self._closed:
            self._reaper = threading.Thread(
                target=self._reap, name="netmon-netconf-reaper", daemon=True
            )
            self._reaper.start()

    def _reap(self) -> None:
        while not self._stop.wait(min(self.idle_timeout / 2, _REAP_EVERY)):
            now = time.monotonic()
            with self._cond:
                idle = [
                    d
                    for d, e in self._entries.items()
                    if not e.in_use and now - e.last_used >= self.idle_timeout
                ]
                sessions = [self._entries.pop(d).pooled.session for d in idle]
                self._closing += len(sessions)
            for session in sessions:
                with contextlib.suppress(Exception):
                    self._close(session)


_shared: SessionPool | None = None
_shared_lock = threading.Lock()
_shared_options: dict[str, float] = {}


def shared_pool() -> SessionPool:
    """The process-wide pool the NETCONF tasks use, created on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SessionPool(
                max_sessions=int(_shared_options.get("max_sessions", DEFAULT_MAX_SESSIONS)),
                idle_timeout=_shared_options.get("idle_timeout", DEFAULT_IDLE_TIMEOUT),
            )
        return _shared


def configure_shared_pool(
    *, max_sessions: int = DEFAULT_MAX_SESSIONS, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
) -> None:
    """Size the shared pool; a pool already made is closed and the next use makes a new
    one with these settings."""
    if max_sessions < 1 or idle_timeout <= 0:
        raise ValueError("max_sessions must be at least 1 and idle_timeout over 0 s")
    with _shared_lock:
        _shared_options.update(max_sessions=max_sessions, idle_timeout=idle_timeout)
    close_shared_pool()


def close_shared_pool() -> None:
    """Close the shared pool's sessions (at poller shutdown); a later use opens anew."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.close()
