"""gufo-snmp: the compiled SNMP engine on the poll threads' hot path.

gufo-snmp does BER, USM and crypto in Rust and releases the GIL while it waits, so
Nornir's worker threads call it directly: no hop to an event loop, no ASN.1 objects. It
costs a few microseconds of CPU per value where pysnmp costs a hundred and more.

What it leaves to netmon, and how it is handled here:

* **Sessions.** One gufo session is one UDP socket bound to one agent, with the engine ID,
  boots and time it discovered. netmon keeps a session per device (discovery and key
  localisation are paid once), refreshes a session idle for ``refresh_after`` seconds
  before using it (the agent's time window is 150 s), and keeps at most ``max_sessions``
  open: the process's file-descriptor limit is the budget, and past it a random idle
  session is closed (random, not least-recently-used: polls come round in a cycle, and
  LRU would evict the very session that is due next).
* **Keys.** Pass phrases become RFC 3414 master keys once per pass phrase (about 1 ms
  each); a new session only localises them to the agent's engine ID.
* **Values** come back as plain int, bytes and str without their SMI type: types come
  from netmon's OID table (``netmon.snmp.oids.SMI_TYPES``), else from the Python type.
* **Errors.** A timeout is ``TimeoutError`` (``BlockingIOError`` from the socket); every
  USM refusal is one ``SnmpAuthError``. A refused request gets one new session (new
  engine ID, boots and time: the agent restarted, or another agent answers at that
  address); if that is refused too, one request through pysnmp says which refusal it is
  (unknown user, wrong digest, ...) so the message can say what to check.
* **Walks.** gufo-snmp walks one subtree per GETBULK sequence. Columns of one table that
  are most of the table's first columns are read as one walk of the table's entry (one
  round trip for an 8-row ifXTable); sparse ones column by column.
"""

from __future__ import annotations

import contextlib
import functools
import random
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from gufo.snmp import (
    Aes128Key,
    Aes192Key,
    Aes256Key,
    BaseAuthKey,
    BasePrivKey,
    DesKey,
    KeyExpansion,
    Md5Key,
    NoSuchInstance,
    Sha1Key,
    Sha224Key,
    Sha256Key,
    Sha384Key,
    Sha512Key,
    SnmpAuthError,
    SnmpDecodeError,
    SnmpEncodeError,
    User,
)
from gufo.snmp import SnmpError as GufoError
from gufo.snmp._fast import GetIter
from gufo.snmp.sync import SnmpSession
from gufo.snmp.user import KeyType

from netmon.errors import (
    SnmpError,
    SnmpMalformedReplyError,
    SnmpSecurityError,
    SnmpTimeoutError,
)
from netmon.logs import get_logger
from netmon.snmp.failures import failure, overload, slow
from netmon.snmp.lateness import LagMonitor, is_overload
from netmon.snmp.oids import SMI_TYPES, Oid, name_of, parse_oid, smi_type
from netmon.snmp.target import SnmpTarget
from netmon.snmp.values import Missing, VarBind, answered_at

__all__ = ["GufoEngine", "shared_gufo"]

log = get_logger(__name__)

T = TypeVar("T")

_AUTH: dict[str, type[BaseAuthKey]] = {
    "md5": Md5Key, "sha1": Sha1Key, "sha224": Sha224Key, "sha256": Sha256Key,
    "sha384": Sha384Key, "sha512": Sha512Key,
}  # fmt: skip
_PRIV: dict[str, tuple[type[BasePrivKey], KeyExpansion]] = {
    "des": (DesKey, KeyExpansion.Blumenthal),
    "aes128": (Aes128Key, KeyExpansion.Blumenthal),
    "aes192": (Aes192Key, KeyExpansion.Blumenthal),
    "aes256": (Aes256Key, KeyExpansion.Blumenthal),
    "aes192c": (Aes192Key, KeyExpansion.Cisco),
    "aes256c": (Aes256Key, KeyExpansion.Cisco),
}
REFRESH_AFTER = 120.0  # seconds idle; the agent's time window is 150 s (RFC 3414)
FD_RESERVE = 1024  # descriptors left for the database, SSH, NETCONF and the API
MAX_BULK = 64  # repetitions in one GETBULK: about 2 KB answers, under one MTU-sized PDU
_MAX_WALK_REQUESTS = 10_000  # a walk that needs more is an agent that loops
OVERLOAD_RETRIES = 2  # requests retried when this process, not the device, was late
SLOW_FACTOR = 2.0  # a device that timed out is asked once more with this much longer
PROBE_BACKOFF = 600.0  # seconds: a device that did not answer that either is not asked so
SLOW_MEMORY = 60.0  # seconds a late answer marks a device as slow rather than down
_MISSING = VarBind((), Missing.NO_SUCH_INSTANCE, "noSuchInstance")


class _Session:
    """One device's gufo session, used by one thread at a time."""

    __slots__ = ("key", "last_used", "lock", "session")

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.lock = threading.Lock()
        self.session: SnmpSession | None = None
        self.last_used = 0.0


def _fd_budget() -> int:
    """Sessions this process can hold: its descriptor limit, raised to the hard limit
    once, less a reserve."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return max(64, soft - FD_RESERVE)


@functools.cache
def _master_key(auth_protocol: str, passphrase: str) -> bytes:
    return _AUTH[auth_protocol].get_master_key(passphrase.encode())


def _user(target: SnmpTarget) -> User:
    c = target.credentials
    if c.auth_protocol is None:
        return User(name=c.user)
    auth_cls = _AUTH[c.auth_protocol]
    auth = auth_cls(_master_key(c.auth_protocol, c.auth_key), key_type=KeyType.Master)
    if c.priv_protocol is None:
        return User(name=c.user, auth_key=auth)
    if c.priv_protocol not in _PRIV:
        raise SnmpError(f"{target.device}: gufo-snmp has no {c.priv_protocol}; use pysnmp")
    priv_cls, expansion = _PRIV[c.priv_protocol]
    # RFC 3414 derives the privacy key from its pass phrase with the auth hash.
    priv = priv_cls(_master_key(c.auth_protocol, c.priv_key), key_type=KeyType.Master)
    return User(name=c.user, auth_key=auth, priv_key=priv, key_expansion=expansion)


def _convert(oid: Oid, raw: Any, smi: str | None) -> VarBind:
    """A bare gufo value as a typed :class:`VarBind`."""
    if isinstance(raw, bool):
        raise SnmpMalformedReplyError(f"{name_of(oid)}: unexpected boolean value")
    if isinstance(raw, int):
        return VarBind(oid, raw, smi or "Integer")
    if isinstance(raw, bytes):
        return VarBind(oid, raw, smi or "OctetString")
    if isinstance(raw, str):
        if smi == "IpAddress":
            return VarBind(oid, raw, smi)
        try:
            return VarBind(oid, parse_oid(raw), "ObjectIdentifier")
        except ValueError:
            return VarBind(oid, raw, smi or "IpAddress")
    if raw is None:
        return VarBind(oid, None, "Null")
    if isinstance(raw, float):
        return VarBind(oid, raw, "Opaque")
    raise SnmpMalformedReplyError(f"{name_of(oid)}: unexpected value {type(raw).__name__}")


class GufoEngine:
    """gufo-snmp sessions for every device, shared by the poll threads. Thread-safe."""

    name = "gufo"

    def __init__(
        self,
        *,
        max_sessions: int | None = None,
        refresh_after: float = REFRESH_AFTER,
        diagnose: Callable[[SnmpTarget], SnmpError | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        lag: LagMonitor | None = None,
    ) -> None:
        self.max_sessions = max_sessions if max_sessions is not None else _fd_budget()
        self.refresh_after = refresh_after
        self._diagnose = diagnose if diagnose is not None else _diagnose_with_pysnmp
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._max_bulk: dict[str, int] = {}  # device -> repetitions its answers allow
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.lag = lag if lag is not None else _process_lag()
        self._late: dict[str, tuple[float, float]] = {}  # device -> (when, round trip)
        self._probe_failed: dict[str, float] = {}  # device -> when a longer wait failed

    # -- the engine interface --------------------------------------------------------

    def get(self, target: SnmpTarget, oids: Sequence[Oid]) -> list[VarBind]:
        """GET: one value (or a :class:`Missing` marker) per OID, in order."""
        names = [".".join(map(str, oid)) for oid in oids]
        reply = self._call(target, lambda s: s.get_many(names))
        out: list[VarBind] = []
        for oid, name in zip(oids, names, strict=True):
            raw = reply.get(name, _MISSING)
            # gufo leaves out what the agent had not (noSuchObject / noSuchInstance).
            out.append(
                _MISSING._replace(oid=oid)
                if raw is _MISSING
                else self._typed(target, oid, raw, smi_type(oid))
            )
        self.stats["values"] += len(out)
        return out

    def walk(
        self,
        target: SnmpTarget,
        columns: Sequence[Oid],
        *,
        max_repetitions: int | None = None,
        times: dict[Oid, dict[Oid, float]] | None = None,
    ) -> dict[Oid, dict[Oid, VarBind]]:
        """Read whole table columns, and only those: {column: {index: varbind}}.
        ``max_repetitions`` is rows per column, as for one multi-column GETBULK. With
        ``times``, ``times[column][index]`` is when the device answered with that cell
        (epoch seconds, see :func:`answered_at`)."""
        rows = max_repetitions or target.credentials.max_repetitions
        table: dict[Oid, dict[Oid, VarBind]] = {c: {} for c in columns}
        if times is not None:
            for column in columns:
                times[column] = {}
        by_entry: dict[Oid, list[Oid]] = {}
        for column in dict.fromkeys(columns):
            by_entry.setdefault(column[:-1], []).append(column)
        for entry, wanted in by_entry.items():
            last = max(c[-1] for c in wanted)
            if len(wanted) > 1 and 2 * len(wanted) >= last:
                self._walk_entry(target, entry, wanted, rows, table, times)
            else:
                for column in wanted:
                    cell_times = None if times is None else times[column]
                    self._walk_column(target, column, rows, table[column], cell_times)
        self.stats["values"] += sum(len(cells) for cells in table.values())
        return table

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()  # sockets close as the sessions are collected

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    # -- walks -----------------------------------------------------------------------

    def _bulk(
        self, target: SnmpTarget, prefix: str, repetitions: int
    ) -> tuple[list[tuple[str, Any]], list[float]]:
        """Every (oid, value) under ``prefix``, by GETBULK, and for each the time its
        answer came (:func:`answered_at`).

        gufo-snmp's own iterator ends quietly when it cannot take an answer (seen with
        Net-SNMP answering 99 repetitions that run past the subtree), which would lose
        rows without a word. The requests are driven here instead: such an answer makes
        the walk start over with half the repetitions, and the size that works is kept
        for the device.
        """
        while True:
            reps = min(repetitions, self._max_bulk.get(target.device, MAX_BULK))

            def read(
                s: SnmpSession, reps: int = reps
            ) -> tuple[list[tuple[str, Any]], list[float]] | None:
                walk = GetIter(prefix, reps)
                sock: Any = s._sock
                got: list[tuple[str, Any]] = []
                at: list[float] = []
                for _ in range(_MAX_WALK_REQUESTS):
                    sent = time.time()
                    try:
                        chunk = sock.get_bulk(walk)
                    except StopAsyncIteration:
                        return None
                    before = len(got)
                    ended = False
                    for item in chunk:
                        if item is None:
                            ended = True
                            break
                        got.append(item)
                    at.extend([answered_at(sent, time.time())] * (len(got) - before))
                    if ended or not chunk:
                        return got, at
                raise failure(SnmpMalformedReplyError, target, f"walk of {prefix} did not end")

            got = self._call(target, read)
            if got is not None:
                return got
            if reps <= 1:
                raise failure(
                    SnmpMalformedReplyError, target, f"GETBULK answers under {prefix} do not decode"
                )
            self._max_bulk[target.device] = reps // 2
            self.stats["bulk_shrunk"] += 1

    def _walk_column(
        self,
        target: SnmpTarget,
        column: Oid,
        rows: int,
        into: dict[Oid, VarBind],
        times: dict[Oid, float] | None,
    ) -> None:
        prefix = ".".join(map(str, column))
        smi = SMI_TYPES.get(column)
        cut = len(prefix) + 1
        last: Oid = column
        got, at = self._bulk(target, prefix, rows + 1)
        for position, (name, raw) in enumerate(got):
            index = self._index(target, column, name[cut:])
            if times is not None:
                times[index] = at[position]
            oid = (*column, *index)
            if oid <= last:
                raise failure(
                    SnmpMalformedReplyError, target, f"OID not increasing in walk: {name}"
                )
            last = oid
            if type(raw) is int:
                into[index] = VarBind(oid, raw, smi or "Integer")
            else:
                into[index] = self._typed(target, oid, raw, smi)

    def _walk_entry(
        self,
        target: SnmpTarget,
        entry: Oid,
        wanted: list[Oid],
        rows: int,
        table: dict[Oid, dict[Oid, VarBind]],
        times: dict[Oid, dict[Oid, float]] | None,
    ) -> None:
        prefix = ".".join(map(str, entry))
        cut = len(prefix) + 1
        last_column = max(c[-1] for c in wanted)
        wanted_numbers = {c[-1]: c for c in wanted}
        last_number = 0
        last_index: Oid = ()
        got, at = self._bulk(target, prefix, (rows + 1) * last_column)
        for position, (name, raw) in enumerate(got):
            number_text, _, index_text = name[cut:].partition(".")
            try:
                number = int(number_text)
            except ValueError:
                raise failure(SnmpMalformedReplyError, target, f"bad OID {name!r}") from None
            if number != last_number:
                if number < last_number:
                    raise failure(
                        SnmpMalformedReplyError, target, f"OID not increasing in walk: {name}"
                    )
                last_number, last_index = number, ()
            column = wanted_numbers.get(number)
            if column is None or not index_text:
                continue  # a column nobody asked for: not even its index is parsed
            index = self._index(target, entry, index_text)
            if index <= last_index:
                raise failure(
                    SnmpMalformedReplyError, target, f"OID not increasing in walk: {name}"
                )
            last_index = index
            if times is not None:
                times[column][index] = at[position]
            smi = SMI_TYPES.get(column)
            if type(raw) is int:  # most cells: counters, gauges, states
                table[column][index] = VarBind((*column, *index), raw, smi or "Integer")
            else:
                table[column][index] = self._typed(target, (*column, *index), raw, smi)

    def _index(self, target: SnmpTarget, base: Oid, text: str) -> Oid:
        try:
            return tuple(map(int, text.split(".")))
        except ValueError:
            raise failure(
                SnmpMalformedReplyError, target, f"bad OID under {name_of(base)}: {text!r}"
            ) from None

    def _typed(self, target: SnmpTarget, oid: Oid, raw: Any, smi: str | None) -> VarBind:
        try:
            return _convert(oid, raw, smi)
        except SnmpMalformedReplyError as exc:
            raise failure(SnmpMalformedReplyError, target, str(exc)) from None

    # -- sessions and errors ---------------------------------------------------------

    def _call(self, target: SnmpTarget, fn: Callable[[SnmpSession], T]) -> T:
        """``fn`` on the device's session, with retries on timeout and one new session
        on a USM refusal; every failure leaves as a netmon error.

        A timeout while this process could not run (:mod:`netmon.snmp.lateness`) is
        retried (bounded) and, if it stays ours, is an overload, not the device's fault.
        A timeout of a device that answered before is tried once more with twice the
        timeout: an answer then is a late answer (the device is slow, not down).
        """
        c = target.credentials
        timeout = c.timeout.total_seconds()
        with self._session(target) as entry:
            attempts = c.retries + 1
            starved_retries = OVERLOAD_RETRIES
            renewed = False
            while True:
                mark = self.lag.mark()
                try:
                    session = self._ready(target, entry)
                    result = fn(session)
                    entry.last_used = self._clock()
                    self.stats["requests"] += 1
                    return result
                except NoSuchInstance:
                    raise failure(SnmpMalformedReplyError, target, "noSuchInstance") from None
                except (TimeoutError, BlockingIOError) as exc:
                    self.stats["timeouts"] += 1
                    lag = self.lag.lag_since(mark)
                    refused = "refused" in str(exc)
                    if not refused and is_overload(lag, timeout):
                        if starved_retries > 0:
                            starved_retries -= 1
                            self.stats["overload_retries"] += 1
                            continue
                        entry.session = None
                        self.stats["overload"] += 1
                        raise overload(target, lag) from None
                    attempts -= 1
                    if attempts > 0 and not refused:
                        continue
                    entry.session = None  # the next poll discovers the agent anew
                    if not refused:
                        found = self._late_answer(target, entry, fn)
                        if found is not None:
                            return found[0]
                    raise failure(SnmpTimeoutError, target) from None
                except SnmpAuthError:
                    entry.session = None
                    if not renewed:
                        # A restarted agent (new boots), another agent at this address
                        # (new engine ID), a session past the time window: a new session
                        # discovers all three.
                        renewed = True
                        self.stats["renewals"] += 1
                        continue
                    self.stats["refused"] += 1
                    raise self._refusal(target) from None
                except SnmpDecodeError as exc:
                    raise failure(SnmpMalformedReplyError, target, str(exc)) from None
                except (SnmpEncodeError, GufoError, OSError) as exc:
                    entry.session = None
                    raise SnmpError(f"{target.device}: cannot send the request: {exc}") from None

    def _late_answer(
        self, target: SnmpTarget, entry: _Session, fn: Callable[[SnmpSession], T]
    ) -> tuple[T] | None:
        """After the last timeout: ask once more with ``SLOW_FACTOR`` times the timeout.
        An answer is a late answer; the longer session is kept for the device. None: no
        answer (the device is down), unless late answers were seen lately: then it is
        slow (:class:`SnmpSlowError`)."""
        device = target.device
        now = self._clock()
        failed_at = self._probe_failed.get(device)
        if failed_at is not None and now - failed_at < PROBE_BACKOFF:
            self._raise_if_slow(target, now)
            return None  # a down device does not pay the longer wait every poll
        timeout = target.credentials.timeout.total_seconds() * SLOW_FACTOR
        started = time.monotonic()
        try:
            session = self._open(target, timeout)
            result = fn(session)
        except (TimeoutError, BlockingIOError, SnmpAuthError, GufoError, OSError):
            self._probe_failed[device] = now
            self._raise_if_slow(target, now)
            return None
        round_trip = time.monotonic() - started
        self._probe_failed.pop(device, None)
        self._late[device] = (now, round_trip)
        self.stats["late_answers"] += 1
        self.stats["requests"] += 1
        entry.session, entry.last_used = session, self._clock()
        log.warning(
            "snmp.late_answer",
            device=device,
            timeout=target.credentials.timeout.total_seconds(),
            round_trip=round(round_trip, 3),
        )
        return (result,)

    def _raise_if_slow(self, target: SnmpTarget, now: float) -> None:
        """A timeout of a device whose late answers came lately: it is slow, not down."""
        seen = self._late.get(target.device)
        if seen is not None and now - seen[0] < SLOW_MEMORY:
            self.stats["slow"] += 1
            raise slow(target, seen[1]) from None

    def _ready(self, target: SnmpTarget, entry: _Session) -> SnmpSession:
        session = entry.session
        if session is None:
            session = self._open(target)
            entry.session = session
            self.stats["sessions_opened"] += 1
        elif self._clock() - entry.last_used > self.refresh_after:
            session.refresh()  # idle past the time window: resynchronise boots and time
            self.stats["refreshes"] += 1
        return session

    def _open(self, target: SnmpTarget, timeout: float | None = None) -> SnmpSession:
        c = target.credentials
        if timeout is None:
            timeout = c.timeout.total_seconds()
        if c.version == "2c":
            session = SnmpSession(
                addr=target.address, port=c.port, community=c.community, timeout=timeout
            )
        else:
            session = SnmpSession(
                addr=target.address, port=c.port, user=_user(target), timeout=timeout
            )
            session.refresh()  # engine ID discovery, then boots and time
        return session

    @contextlib.contextmanager
    def _session(self, target: SnmpTarget) -> Iterator[_Session]:
        c = target.credentials
        key = (target.address, c)
        with self._lock:
            entry = self._sessions.get(target.device)
            if entry is None or entry.key != key:
                if entry is None and len(self._sessions) >= self.max_sessions:
                    self._evict()
                entry = self._sessions[target.device] = _Session(key)
        with entry.lock:
            yield entry

    def _evict(self) -> None:
        """Close one idle session (the caller holds the engine lock)."""
        names = list(self._sessions)
        for _ in range(8):
            name = random.choice(names)  # noqa: S311
            entry = self._sessions[name]
            if entry.lock.acquire(blocking=False):
                try:
                    del self._sessions[name]
                    entry.session = None
                finally:
                    entry.lock.release()
                self.stats["evictions"] += 1
                return

    def _refusal(self, target: SnmpTarget) -> SnmpError:
        try:
            found = self._diagnose(target)
        except SnmpError as exc:
            found = exc
        if isinstance(found, SnmpSecurityError):
            return found
        return failure(SnmpSecurityError, target, "refused twice, also after rediscovery")


def _diagnose_with_pysnmp(target: SnmpTarget) -> SnmpError | None:
    """Ask once through pysnmp, whose USM tells refusals apart; the error it raises is the
    answer (None if the request went through: the refusal was passing)."""
    from netmon.snmp.client import shared_client  # pysnmp is loaded only when needed
    from netmon.snmp.oids import SYSTEM

    try:
        shared_client().get(target, [SYSTEM.sysUpTime])
    except SnmpError as exc:
        return exc
    return None


_shared: GufoEngine | None = None
_shared_lock = threading.Lock()
_lag: LagMonitor | None = None
_lag_lock = threading.Lock()


def _process_lag() -> LagMonitor:
    """One heartbeat thread for the process: gufo-snmp runs on the callers' threads, so
    what starves it is starvation of the process."""
    global _lag
    with _lag_lock:
        if _lag is None:
            _lag = LagMonitor()
            _lag.start_thread()
        return _lag


def shared_gufo() -> GufoEngine:
    """The process-wide gufo engine (made on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GufoEngine()
        return _shared
