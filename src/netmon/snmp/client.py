"""One pysnmp engine on one asyncio loop, shared by every thread that polls.

pysnmp users who give each host its own engine report one core at 90 %: an engine builds
its MIB instrumentation and USM tables, and each runs its own dispatcher. netmon keeps a
single long-lived engine and UDP socket on a loop in a thread of its own. Nornir's worker
threads call the blocking methods (:meth:`SnmpClient.get`, :meth:`get_bulk`,
:meth:`walk`), which hand the request to that loop and wait for it; code already on an
event loop can await the ``a*`` twins through :meth:`SnmpClient.submit`.

The hot path never touches MIBs: OIDs are numeric tuples (``netmon.snmp.oids`` names them),
requests go straight to pysnmp's command generators, and answers are turned into plain
Python values (``netmon.snmp.values``). Engine IDs and time windows are discovered once per
agent and cached by pysnmp's message processing (per transport address) and USM (per
engine ID); a rebooted agent is re-synchronised by its notInTimeWindow report.

Errors are translated here, once, into ``netmon.errors.SnmpError`` and its subclasses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.config import AUTH_SERVICES, PRIV_SERVICES
from pysnmp.entity.rfc3413 import cmdgen
from pysnmp.proto import errind
from pysnmp.proto.rfc1902 import Null, ObjectName

from netmon.errors import (
    SnmpAgentError,
    SnmpDecryptionError,
    SnmpError,
    SnmpMalformedReplyError,
    SnmpOverloadError,
    SnmpSecurityError,
    SnmpTimeoutError,
    SnmpUnknownUserError,
    SnmpWrongDigestError,
)
from netmon.snmp.credentials import SnmpCredentials
from netmon.snmp.failures import failure, overload, slow
from netmon.snmp.lateness import LagMonitor, is_overload
from netmon.snmp.oids import Oid, name_of
from netmon.snmp.target import SnmpTarget
from netmon.snmp.usm import AUTH_PROTOCOLS, PRIV_PROTOCOLS
from netmon.snmp.values import Missing, VarBind, answered_at, from_pysnmp

__all__ = ["SnmpClient", "SnmpTarget", "shared_client"]

T = TypeVar("T")

ERROR_STATUS = (
    "noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess",
    "wrongType", "wrongLength", "wrongEncoding", "wrongValue", "noCreation",
    "inconsistentValue", "resourceUnavailable", "commitFailed", "undoFailed",
    "authorizationError", "notWritable", "inconsistentName",
)  # fmt: skip

# errorIndication -> our class. Anything else is a plain SnmpError with pysnmp's text.
_INDICATIONS: dict[type[errind.ErrorIndication], type[SnmpError]] = {
    errind.RequestTimedOut: SnmpTimeoutError,
    errind.UnknownUserName: SnmpUnknownUserError,
    errind.UnknownSecurityName: SnmpUnknownUserError,
    errind.WrongDigest: SnmpWrongDigestError,
    errind.AuthenticationFailure: SnmpWrongDigestError,
    errind.AuthenticationError: SnmpWrongDigestError,
    errind.DecryptionError: SnmpDecryptionError,
    errind.UnsupportedSecurityLevel: SnmpSecurityError,
    errind.NotInTimeWindow: SnmpSecurityError,
    errind.UnknownEngineID: SnmpSecurityError,
    errind.ParseError: SnmpMalformedReplyError,
    errind.DeserializationError: SnmpMalformedReplyError,
    errind.EmptyResponse: SnmpMalformedReplyError,
    errind.DataMismatch: SnmpMalformedReplyError,
    errind.OidNotIncreasing: SnmpMalformedReplyError,
    errind.TooBig: SnmpAgentError,
}
RECEIVE_BUFFER = 4 << 20  # capped by net.core.rmem_max; the kernel doubles it
_MAX_WALK_REQUESTS = 10_000  # a walk that needs more is an agent that loops
OVERLOAD_RETRIES = 2  # requests retried when the client's loop, not the device, was late
SLOW_FACTOR = 2.0  # a device that timed out is asked once more with this much longer
PROBE_BACKOFF = 600.0  # seconds: a device that did not answer that either is not asked so
SLOW_MEMORY = 60.0  # seconds a late answer marks a device as slow rather than down


@dataclass(slots=True)
class _Reply:
    indication: Any
    status: int
    index: int
    varbinds: Sequence[tuple[Any, Any]]
    garbage_before: int = 0  # datagrams from the agent that failed, before the request


def _deadline(target: SnmpTarget) -> float:
    """How long a thread waits for one request: its tries, and the longer wait after."""
    c = target.credentials
    return target.request_deadline + c.timeout.total_seconds() * (c.retries + 1) * SLOW_FACTOR


def _longer(target: SnmpTarget) -> SnmpTarget:
    """``target`` with ``SLOW_FACTOR`` times its timeout and no retries: one long wait."""
    c = target.credentials
    timeout = c.timeout * (SLOW_FACTOR * (c.retries + 1))
    return replace(target, credentials=replace(c, timeout=timeout, retries=0))


class SnmpClient:
    """The process's pysnmp engine. Thread-safe; start once, share everywhere."""

    name = "pysnmp"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._engine: Any = None
        self._lock = threading.Lock()
        # device -> (what it was configured from, pysnmp target name)
        self._targets: dict[str, tuple[tuple[Any, ...], str]] = {}
        # USM rows: (engine ID, user) -> the keys it holds, and every key set that needs it
        self._rows: dict[tuple[Any, str], _RowIdentity] = {}
        self._row_users: dict[tuple[Any, str], set[_RowIdentity]] = {}
        self._row_locks: dict[tuple[Any, str], asyncio.Lock] = {}
        self._params: set[str] = set()
        self._next_id = 0
        self._garbage: dict[tuple[str, int], int] = {}  # agent -> datagrams that failed
        self._null = Null("")
        self._get = cmdgen.GetCommandGenerator()
        self._bulk = cmdgen.BulkCommandGeneratorSingleRun()
        self.stats: Counter[str] = Counter()
        self.receive_buffer = 0
        self.lag = LagMonitor()  # heartbeat on the client's loop: how late the loop runs
        self._lag_task: asyncio.Task[None] | None = None
        self._late: dict[str, tuple[float, float]] = {}  # device -> (when, round trip)
        self._probe_failed: dict[str, float] = {}  # device -> when a longer wait failed
        self._stretched: set[str] = set()  # devices asked with the longer timeout

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            ready = concurrent.futures.Future[None]()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name="netmon-snmp", daemon=True
            )
            self._thread.start()
            ready.result()

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _open(self) -> None:
        self._engine = engine.SnmpEngine()
        transport = udp.UdpAsyncioTransport().open_client_mode()
        config.add_transport(self._engine, udp.DOMAIN_NAME, transport)
        # One socket receives every answer. GETBULK answers run to several KB, and with
        # 50 polls in flight they arrive faster than a busy loop drains them: the
        # default 208 KB buffer drops some, which shows up as timeouts.
        while transport.transport is None:  # pysnmp gives nothing to await  # noqa: ASYNC110
            await asyncio.sleep(0)
        sock = transport.transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.receive_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._watch_for_garbage()
        self._lag_task = asyncio.get_running_loop().create_task(self.lag.run())

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            self._thread = None

        async def shut() -> None:
            if self._lag_task is not None:
                self._lag_task.cancel()
            self._engine.close_dispatcher()

        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> SnmpClient:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- blocking API for worker threads --------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, T], deadline: float) -> T:
        """Run ``coro`` on the client's loop and wait at most ``deadline`` seconds."""
        if self._loop is None:
            self.start()
        assert self._loop is not None
        mark = self.lag.mark()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        done, _ = concurrent.futures.wait([future], timeout=deadline)
        if not done:
            lag = self.lag.lag_since(mark)
            if is_overload(lag, deadline / 4):
                # The loop itself ran late: give it the time it lost, once, to finish.
                done, _ = concurrent.futures.wait([future], timeout=lag)
                lag = self.lag.lag_since(mark)
        if not done:
            # (not ``except TimeoutError``: SnmpTimeoutError from the coroutine is one too)
            future.cancel()
            if is_overload(lag, deadline / 4):
                self.stats["overload"] += 1
                raise SnmpOverloadError(
                    f"netmon's SNMP engine was starved (CPU): its loop could not run for "
                    f"{lag:.2f} s of the {deadline:g} s the request had"
                )
            raise SnmpTimeoutError("the SNMP engine did not finish the request in time")
        return future.result()

    def get(self, target: SnmpTarget, oids: Sequence[Oid]) -> list[VarBind]:
        """GET: one value (or a :class:`Missing` marker) per OID, in order."""
        return self.submit(self.aget(target, oids), _deadline(target))

    def get_bulk(
        self,
        target: SnmpTarget,
        oids: Sequence[Oid],
        *,
        non_repeaters: int = 0,
        max_repetitions: int | None = None,
    ) -> list[VarBind]:
        """One GETBULK, answered as the agent sends it (row-major)."""
        coro = self.aget_bulk(
            target, oids, non_repeaters=non_repeaters, max_repetitions=max_repetitions
        )
        return self.submit(coro, _deadline(target))

    def walk(
        self,
        target: SnmpTarget,
        columns: Sequence[Oid],
        *,
        max_repetitions: int | None = None,
        times: dict[Oid, dict[Oid, float]] | None = None,
    ) -> dict[Oid, dict[Oid, VarBind]]:
        """Read whole table columns, and only those: {column: {index: varbind}}; with
        ``times``, when the device answered with each cell (``SnmpEngine.walk``)."""
        coro = self.awalk(target, columns, max_repetitions=max_repetitions, times=times)
        # A walk is many requests; its deadline grows with what it has received.
        return self.submit(coro, target.request_deadline * 20)

    # -- async API (runs on the client's loop) ----------------------------------------

    async def aget(self, target: SnmpTarget, oids: Sequence[Oid]) -> list[VarBind]:
        reply = await self._request(target, oids, None)
        result = self._convert(target, reply)
        if len(result) != len(oids):
            raise SnmpMalformedReplyError(
                f"{target.device}: asked for {len(oids)} values, got {len(result)}"
            )
        return result

    async def aget_bulk(
        self,
        target: SnmpTarget,
        oids: Sequence[Oid],
        *,
        non_repeaters: int = 0,
        max_repetitions: int | None = None,
    ) -> list[VarBind]:
        reps = max_repetitions or target.credentials.max_repetitions
        reply = await self._request(target, oids, (non_repeaters, reps))
        return self._convert(target, reply)

    async def awalk(
        self,
        target: SnmpTarget,
        columns: Sequence[Oid],
        *,
        max_repetitions: int | None = None,
        times: dict[Oid, dict[Oid, float]] | None = None,
    ) -> dict[Oid, dict[Oid, VarBind]]:
        table: dict[Oid, dict[Oid, VarBind]] = {c: {} for c in columns}
        if times is not None:
            for column in columns:
                times[column] = {}
        cursor = {c: c for c in columns}
        active = list(dict.fromkeys(columns))
        for _ in range(_MAX_WALK_REQUESTS):
            if not active:
                return table
            sent = time.time()
            row = await self.aget_bulk(
                target, [cursor[c] for c in active], max_repetitions=max_repetitions
            )
            at = answered_at(sent, time.time())
            if not row:
                raise SnmpMalformedReplyError(f"{target.device}: empty GETBULK response")
            done: set[Oid] = set()
            for i, vb in enumerate(row):
                column = active[i % len(active)]
                if column in done:
                    continue
                if vb.value is Missing.END_OF_MIB_VIEW or vb.oid[: len(column)] != column:
                    done.add(column)
                    continue
                if vb.oid <= cursor[column]:
                    raise SnmpMalformedReplyError(
                        f"{target.device}: OID not increasing in walk of "
                        f"{name_of(column)}: {name_of(vb.oid)}"
                    )
                table[column][vb.oid[len(column) :]] = vb
                if times is not None:
                    times[column][vb.oid[len(column) :]] = at
                cursor[column] = vb.oid
            active = [c for c in active if c not in done]
        raise SnmpMalformedReplyError(f"{target.device}: walk did not end")

    # -- pysnmp plumbing --------------------------------------------------------------

    async def _request(
        self, target: SnmpTarget, oids: Sequence[Oid], bulk: tuple[int, int] | None
    ) -> _Reply:
        """One request and its failure as a netmon error.

        A timeout while the client's loop could not run (:mod:`netmon.snmp.lateness`) is
        retried (bounded) and, if it stays ours, is an overload. A timeout of a device is
        tried once more with ``SLOW_FACTOR`` times the timeout: an answer then is a late
        answer (the device is slow, not down), and the device keeps the longer timeout.
        """
        asked = target
        device = target.device
        if device in self._stretched:
            target = _longer(target)
        starved_retries = OVERLOAD_RETRIES
        while True:
            mark = self.lag.mark()
            reply = await self._attempt(target, oids, bulk)
            if not isinstance(reply.indication, errind.RequestTimedOut):
                break
            lag = self.lag.lag_since(mark)
            timeout = target.credentials.timeout.total_seconds()
            if not is_overload(lag, timeout):
                break
            if starved_retries == 0:
                self.stats["overload"] += 1
                raise overload(asked, lag)
            starved_retries -= 1
            self.stats["overload_retries"] += 1
        if isinstance(reply.indication, errind.RequestTimedOut) and target is asked:
            reply = await self._late_answer(asked, oids, bulk, reply)
        elif isinstance(reply.indication, errind.RequestTimedOut):
            self._stretched.discard(device)  # timed out with the longer timeout too
            self._probe_failed[device] = asyncio.get_running_loop().time()
            self._raise_if_slow(asked)
        agent = (target.address, target.credentials.port)
        if reply.indication is not None:
            if isinstance(reply.indication, errind.RequestTimedOut):
                # An agent that is not the engine we remember may drop our requests or
                # answer with reports pysnmp discards; the next request discovers anew.
                self._forget_engine_id(agent)
            garbage = self._garbage.get(agent, 0) > reply.garbage_before
            raise self._error(asked, reply.indication, garbage)
        if reply.status:
            raise self._status_error(asked, reply, oids)
        return reply

    async def _attempt(
        self, target: SnmpTarget, oids: Sequence[Oid], bulk: tuple[int, int] | None
    ) -> _Reply:
        c = target.credentials
        agent = (target.address, c.port)
        garbage_before = self._garbage.get(agent, 0)
        reply = await self._exchange(target, agent, oids, bulk)
        if isinstance(reply.indication, errind.UnknownEngineID):
            # The agent at this address is not the engine pysnmp learnt there (a device
            # replaced, an address or port handed to another agent). pysnmp would keep
            # the old engine ID for 5 minutes, ignoring the agent's reports, and every
            # poll would fail until then: forget it and discover again, once.
            self._forget_engine_id(agent)
            reply = await self._exchange(target, agent, oids, bulk)
        reply.garbage_before = garbage_before
        return reply

    async def _late_answer(
        self,
        target: SnmpTarget,
        oids: Sequence[Oid],
        bulk: tuple[int, int] | None,
        timed_out: _Reply,
    ) -> _Reply:
        """After a timeout: ask once more with the longer timeout. Its answer, if any, is
        a late answer; no answer is a timeout, or slow if late answers came lately."""
        device = target.device
        loop = asyncio.get_running_loop()
        now = loop.time()
        failed_at = self._probe_failed.get(device)
        if failed_at is not None and now - failed_at < PROBE_BACKOFF:
            self._raise_if_slow(target)
            return timed_out  # a down device does not pay the longer wait every poll
        started = time.monotonic()
        reply = await self._attempt(_longer(target), oids, bulk)
        if isinstance(reply.indication, errind.RequestTimedOut):
            self._probe_failed[device] = now
            self._raise_if_slow(target)
            return timed_out
        round_trip = time.monotonic() - started
        self._probe_failed.pop(device, None)
        self._late[device] = (now, round_trip)
        self._stretched.add(device)
        self.stats["late_answers"] += 1
        return reply

    async def _exchange(
        self,
        target: SnmpTarget,
        agent: tuple[str, int],
        oids: Sequence[Oid],
        bulk: tuple[int, int] | None,
    ) -> _Reply:
        """One request as pysnmp carries it, with its engine discovery and retries."""
        c = target.credentials
        addr_name = self._configure(target)
        if c.version == "2c":
            return await self._send(addr_name, target, oids, bulk)
        engine_id = self._peer_engine_id(agent)
        if engine_id is None:
            # First contact, or pysnmp's 5-minute engine-ID cache expired: pysnmp
            # discovers the engine ID, then sends with whatever USM row it has for it:
            # none (unknownSecurityName), ours, or another device's keys.
            reply = await self._send(addr_name, target, oids, bulk)
            engine_id = self._peer_engine_id(agent)
            if engine_id is None or (
                reply.indication is not errind.unknownSecurityName
                and self._rows.get((engine_id, c.user)) == _row_identity(c)
            ):
                return reply
            # not sent with our keys: send again, with them
        return await self._send_with_row(engine_id, addr_name, target, oids, bulk)

    async def _send_with_row(
        self,
        engine_id: Any,
        addr_name: str,
        target: SnmpTarget,
        oids: Sequence[Oid],
        bulk: tuple[int, int] | None,
    ) -> _Reply:
        """Send with ``target``'s keys in the agent's USM row.

        pysnmp has one row per (engine ID, user name) and uses it both to sign the
        request and to check the answer. Agents that share an engine ID (cloned images,
        vendor defaults) and a user name but not the keys would take each other's keys;
        their requests take turns on the row instead, under a lock of its own.
        """
        c = target.credentials
        key = (engine_id, c.user)
        identities = self._row_users.setdefault(key, set())
        identities.add(_row_identity(c))
        if len(identities) == 1:
            self._set_row(engine_id, c)
            return await self._send(addr_name, target, oids, bulk)
        lock = self._row_locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._set_row(engine_id, c)
            return await self._send(addr_name, target, oids, bulk)

    async def _send(
        self,
        addr_name: str,
        target: SnmpTarget,
        oids: Sequence[Oid],
        bulk: tuple[int, int] | None,
    ) -> _Reply:
        future: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()

        def done(
            _engine: Any, _handle: Any, indication: Any, status: Any, index: Any,
            varbinds: Any, _ctx: Any,
        ) -> None:  # fmt: skip
            if not future.done():
                future.set_result(_Reply(indication, int(status or 0), int(index or 0), varbinds))

        varbinds = [(ObjectName(oid), self._null) for oid in oids]
        context = target.credentials.context.encode()
        self.stats["requests"] += 1
        try:
            if bulk is None:
                self._get.send_varbinds(self._engine, addr_name, None, context, varbinds, done)
            else:
                self._bulk.send_varbinds(
                    self._engine, addr_name, None, context, bulk[0], bulk[1], varbinds, done
                )
        except Exception as exc:  # pysnmp raises its own errors for local failures
            raise SnmpError(f"{target.device}: cannot send request: {exc}") from exc
        return await future

    def _raise_if_slow(self, target: SnmpTarget) -> None:
        """A timeout of a device whose late answers came lately: it is slow, not down."""
        seen = self._late.get(target.device)
        if seen is not None and asyncio.get_running_loop().time() - seen[0] < SLOW_MEMORY:
            self.stats["slow"] += 1
            raise slow(target, seen[1])

    def _error(self, target: SnmpTarget, indication: Any, garbage: bool) -> SnmpError:
        cls = _INDICATIONS.get(type(indication), SnmpError)
        if cls is SnmpTimeoutError and garbage:
            cls = SnmpMalformedReplyError
            text = "answered only with datagrams that are not valid SNMP"
        elif indication == "badResponse":
            cls, text = SnmpMalformedReplyError, "response does not match the request"
        else:
            text = str(indication)
        self.stats[cls.error_class] += 1
        return failure(cls, target, text)

    def _status_error(self, target: SnmpTarget, reply: _Reply, oids: Sequence[Oid]) -> SnmpError:
        name = ERROR_STATUS[reply.status] if reply.status < len(ERROR_STATUS) else "unknown"
        where = f" at {name_of(oids[reply.index - 1])}" if 0 < reply.index <= len(oids) else ""
        self.stats["agent_error"] += 1
        return SnmpAgentError(f"{target.device}: agent answered {name}({reply.status}){where}")

    def _convert(self, target: SnmpTarget, reply: _Reply) -> list[VarBind]:
        try:
            result = [from_pysnmp(name, value) for name, value in reply.varbinds]
        except (ValueError, TypeError) as exc:
            self.stats["malformed"] += 1
            raise SnmpMalformedReplyError(f"{target.device}: {exc}") from exc
        self.stats["values"] += len(result)
        return result

    def _configure(self, target: SnmpTarget) -> str:
        """The pysnmp target name for ``target``, set up on first use or when it changed."""
        c = target.credentials
        key = (target.address, c.port, c, c.timeout, c.retries)
        known = self._targets.get(target.device)
        if known is not None and known[0] == key:
            return known[1]
        params = self._parameters(c)
        if known is not None:
            config.delete_target_address(self._engine, known[1])
        self._next_id += 1
        addr_name = f"a{self._next_id}"
        config.add_target_address(
            self._engine,
            addr_name,
            udp.DOMAIN_NAME,
            (target.address, c.port),
            params,
            timeout=max(1, round(c.timeout.total_seconds() * 100)),
            retryCount=c.retries,
        )
        self._targets[target.device] = (key, addr_name)
        return addr_name

    def _parameters(self, c: SnmpCredentials) -> str:
        """pysnmp's target parameters for ``c``: an SNMPv3 user and level, or an SNMPv2c
        community (a community is a pysnmp "security name" of its own)."""
        if c.version == "2c":
            name = f"c-{_community_id(c.community)}"
            if name not in self._params:
                config.add_v1_system(self._engine, name, c.community)
                config.add_target_parameters(self._engine, name, name, "noAuthNoPriv", 1)
                self._params.add(name)
            return name
        name = f"p-{c.user}-{c.security_level}"
        if name not in self._params:
            config.add_target_parameters(self._engine, name, c.user, c.security_level, 3)
            self._params.add(name)
        return name

    def _set_row(self, engine_id: Any, c: SnmpCredentials) -> None:
        """Make the USM row of (engine ID, user) hold ``c``'s keys.

        Each agent gets a row under the engine ID pysnmp discovered (RFC 3414); without
        one pysnmp would clone the row of its own engine ID, so two devices with one user
        name but different keys would share keys.
        """
        key = (engine_id, c.user)
        identity = _row_identity(c)
        if self._rows.get(key) == identity:
            return
        replacing = key in self._rows
        if replacing:
            config.delete_v3_user(self._engine, c.user, engine_id)
        usm_map_fresh = not replacing and self._usm_map_is_fresh()
        auth, priv, auth_key, priv_key = _master_keys(*identity)
        config.add_v3_user(
            self._engine,
            c.user,
            auth,
            auth_key,
            priv,
            priv_key,
            securityEngineId=engine_id,
            authKeyType=config.USM_KEY_TYPE_MASTER,
            privKeyType=config.USM_KEY_TYPE_MASTER,
        )
        self._rows[key] = identity
        if usm_map_fresh:
            self._index_user(engine_id, c.user)

    # pysnmp's USM finds a user through a map from (engine ID, security name) that it
    # rebuilds, by walking every row of its user table, whenever the table changed. Adding
    # one row per device made that quadratic: minutes of CPU while 5,000 devices are
    # first polled. So after adding a row, netmon adds the same entry to the map itself
    # and marks the map current. If pysnmp's internals change, the lookups below fail
    # and pysnmp simply rebuilds, as it always did.
    _MAP = "_SnmpUSMSecurityModel__securityToUserMap"
    _MAP_VERSION = "_SnmpUSMSecurityModel__paramsBranchId"

    def _usm_table(self) -> tuple[Any, Any, Any, Any]:
        return self._engine.get_mib_builder().import_symbols(  # type: ignore[no-any-return]
            "SNMP-USER-BASED-SM-MIB",
            "usmUserEntry",
            "usmUserEngineID",
            "usmUserName",
            "usmUserSecurityName",
        )

    def _usm_map_is_fresh(self) -> bool:
        try:
            usm = self._engine.security_models[3]
            _entry, engine_ids, _names, _security = self._usm_table()
            return bool(getattr(usm, self._MAP_VERSION) == engine_ids.branchVersionId)
        except Exception:
            return False

    def _index_user(self, engine_id: Any, user: str) -> None:
        try:
            usm = self._engine.security_models[3]
            entry, engine_ids, names, security = self._usm_table()
            index = entry.getInstIdFromIndices(engine_id, user)
            key = (
                engine_ids.getNode(engine_ids.name + index).syntax,
                security.getNode(security.name + index).syntax,
            )
            getattr(usm, self._MAP)[key] = names.getNode(names.name + index).syntax
            setattr(usm, self._MAP_VERSION, engine_ids.branchVersionId)
        except Exception:
            return  # pysnmp rebuilds its map on the next lookup

    # pysnmp has no call to forget the engine ID it cached for an address; its cache and
    # expiry queue are dropped together (the queue's expiry deletes without checking).
    _ENGINE_IDS = "_SnmpV3MessageProcessingModel__engineIdCache"
    _ENGINE_ID_EXPIRY = "_SnmpV3MessageProcessingModel__engineIdCacheExpQueue"

    def _forget_engine_id(self, address: tuple[str, int]) -> None:
        mp = self._engine.message_processing_subsystems[3]
        key = (udp.DOMAIN_NAME, address)
        cache = getattr(mp, self._ENGINE_IDS, None)
        expiry = getattr(mp, self._ENGINE_ID_EXPIRY, None)
        if not isinstance(cache, dict) or not isinstance(expiry, dict) or key not in cache:
            return
        for keys in expiry.values():
            while key in keys:
                keys.remove(key)
        del cache[key]
        self.stats["rediscoveries"] += 1

    def _peer_engine_id(self, address: tuple[str, int]) -> Any:
        mp = self._engine.message_processing_subsystems[3]
        engine_id, _context_engine, _context = mp.get_peer_engine_info(udp.DOMAIN_NAME, address)
        return engine_id or None

    def _watch_for_garbage(self) -> None:
        """Count, per agent, datagrams pysnmp drops as undecodable.

        pysnmp drops such a datagram silently and the request later times out; knowing the
        agent did answer, with garbage, turns that timeout into a malformed-reply error,
        which is what the operator needs to hear.
        """
        dispatcher = self._engine.message_dispatcher
        (parse_errors,) = self._engine.get_mib_builder().import_symbols(
            "__SNMPv2-MIB", "snmpInASNParseErrs"
        )
        receive = dispatcher.receive_message

        def counting(snmp_engine: Any, domain: Any, address: Any, message: Any) -> Any:
            before = int(parse_errors.syntax)
            failed = True
            try:
                result = receive(snmp_engine, domain, address, message)
                failed = False
                return result
            finally:
                if failed or int(parse_errors.syntax) != before:
                    self._note_garbage(address)

        dispatcher.receive_message = counting

    def _note_garbage(self, address: Any) -> None:
        agent = (str(address[0]), int(address[1]))
        self._garbage[agent] = self._garbage.get(agent, 0) + 1


_RowIdentity = tuple[str | None, str, str | None, str]


def _community_id(community: str) -> str:
    """A name for a community that does not show the community (it is a secret)."""
    return hashlib.sha256(community.encode()).hexdigest()[:16]


def _row_identity(c: SnmpCredentials) -> _RowIdentity:
    return (c.auth_protocol, c.auth_key, c.priv_protocol, c.priv_key)


@functools.cache
def _master_keys(
    auth_protocol: str | None, auth_pass: str, priv_protocol: str | None, priv_pass: str
) -> tuple[Any, Any, Any, Any]:
    """Protocols and RFC 3414 master keys (Ku), computed once per pass phrase.

    Turning a pass phrase into Ku hashes a megabyte (pysnmp does it in a Python loop, about
    10 ms); only the cheap localisation to each agent's engine ID is left per device.
    """
    auth = AUTH_PROTOCOLS[auth_protocol] if auth_protocol else config.USM_AUTH_NONE
    priv = PRIV_PROTOCOLS[priv_protocol] if priv_protocol else config.USM_PRIV_NONE
    auth_key = AUTH_SERVICES[auth].hash_passphrase(auth_pass) if auth_pass else None
    priv_key = PRIV_SERVICES[priv].hash_passphrase(auth, priv_pass) if priv_pass else None
    return auth, priv, auth_key, priv_key


_shared: SnmpClient | None = None
_shared_lock = threading.Lock()


def shared_client() -> SnmpClient:
    """The process-wide client, started on first use (tasks run from a user's own Nornir
    script get it without any setup)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SnmpClient()
            _shared.start()
        return _shared
