"""/health/live and /health/ready, public for load balancers and orchestrators.

Ready answers within ``api.ready_timeout`` (2 s) whatever the database does: the checks
run together under that one deadline, each within ``api.ready_db_timeout`` (1.5 s), and a
check that has not answered by then fails saying it timed out. A database that answers
slowly but within the threshold is ready: slow is not down.
Being public, it must not be a way to load the database: an answer is kept for a second
and shared by everyone who asks meanwhile (callers arriving while it is worked out wait
for that one), so a flood of probes costs at most one round of checks a second.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from netmon.api.context import ApiContext, Ctx
from netmon.api.schemas.health import Check, Live, Ready
from netmon.store.schema import schema_status

__all__ = ["HealthController"]

_LAG_FACTOR = 3  # polls this many intervals late make the poller "lagging"
READY_TTL = 1.0  # seconds an answer of /health/ready is served again


class _ReadyCache:
    def __init__(self) -> None:
        self.answer: Ready | None = None
        self.at = 0.0
        self.pending: asyncio.Task[Ready] | None = None

    async def get(self, ctx: ApiContext) -> Ready:
        if self.answer is not None and time.monotonic() - self.at < READY_TTL:
            return self.answer
        if self.pending is None:
            self.pending = asyncio.ensure_future(_checks(ctx))
            self.pending.add_done_callback(self._done)
        # Shielded: a caller that goes away does not cancel the round others wait for.
        return await asyncio.shield(self.pending)

    def _done(self, task: asyncio.Task[Ready]) -> None:
        self.pending = None
        if not task.cancelled() and task.exception() is None:
            self.answer, self.at = task.result(), time.monotonic()


_caches: weakref.WeakKeyDictionary[ApiContext, _ReadyCache] = weakref.WeakKeyDictionary()


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    # Public: the empty requirement overrides the document's bearer default, so the OpenAPI
    # document says what the server does (Litestar drops an empty `security=[]`).
    security = [{}]

    @get("/live", summary="The process is up", exclude_from_auth=True, cache_control=None)
    async def live(self) -> Live:
        return Live()

    @get(
        "/ready",
        summary="Ready to serve: database, schema, poller",
        exclude_from_auth=True,
        responses={
            503: ResponseSpec(data_container=Ready, description="Not ready; `checks` say why.")
        },
    )
    async def ready(self, ctx: Ctx) -> Response[Ready]:
        """Checked at most once a second; the answer says when (`checked_at`)."""
        cache = _caches.get(ctx)
        if cache is None:
            cache = _caches[ctx] = _ReadyCache()
        ready = await cache.get(ctx)
        return Response(ready, status_code=200 if ready.status == "ready" else 503)


async def _checks(ctx: ApiContext) -> Ready:
    """Every check at once, under one deadline: a check still running then is a failure
    that says so, and is cancelled without waiting for it (a connection being opened to a
    frozen database may take its own time to give up)."""
    deadline = ctx.settings.api.ready_timeout.total_seconds()
    tasks = {
        "database": asyncio.ensure_future(_database(ctx)),
        "migrations": asyncio.ensure_future(_migrations(ctx)),
        "poller": asyncio.ensure_future(_poller(ctx)),
    }
    await asyncio.wait(tasks.values(), timeout=deadline)
    checks: dict[str, Check] = {}
    for name, task in tasks.items():
        if not task.done():
            task.cancel()
            task.add_done_callback(_retrieve)
            checks[name] = Check(ok=False, detail=f"{name}: timed out after {deadline:g} s")
        elif task.exception() is not None:
            exc = task.exception()
            checks[name] = Check(ok=False, detail=f"{name}: {type(exc).__name__}: {exc}")
        else:
            checks[name] = task.result()
    ok = all(c.ok for c in checks.values())
    return Ready(status="ready" if ok else "not ready", checks=checks, checked_at=datetime.now(UTC))


def _retrieve(task: asyncio.Future[Check]) -> None:
    if not task.cancelled():
        task.exception()  # noted, so asyncio does not log it as never retrieved


def _budget(ctx: ApiContext) -> float:
    """One check's time: the database threshold, within the overall deadline."""
    api = ctx.settings.api
    return float(min(api.ready_db_timeout.total_seconds(), api.ready_timeout.total_seconds()))


async def _bounded(coro: Coroutine[Any, Any, Check], what: str, budget: float) -> Check:
    try:
        async with asyncio.timeout(budget):
            return await coro
    except TimeoutError:
        return Check(ok=False, detail=f"{what}: timed out after {budget:g} s")
    except Exception as exc:
        return Check(ok=False, detail=f"{what}: {type(exc).__name__}: {exc}")


_releasing: set[asyncio.Task[None]] = set()


async def _query(ctx: ApiContext, sql: str, budget: float, *, simple: bool = False) -> Any:
    """One query's answer. The connection goes back to the pool afterwards, not within
    the check: the pool resets it on release, a round trip of its own that would count a
    database 1 s away as twice as slow as it is."""
    conn = await ctx.db.pool.acquire(timeout=budget)
    try:
        if simple:
            return await conn.execute(sql, timeout=budget)
        return await conn.fetchval(sql, timeout=budget)
    finally:
        task = asyncio.ensure_future(ctx.db.pool.release(conn))
        _releasing.add(task)
        task.add_done_callback(_released)


def _released(task: asyncio.Task[None]) -> None:
    _releasing.discard(task)
    if not task.cancelled():
        task.exception()  # a connection that failed its reset is closed by the pool


async def _database(ctx: Ctx) -> Check:
    budget = _budget(ctx)

    async def probe() -> Check:
        started = time.perf_counter()
        # A simple query is one round trip; a prepared one, on a fresh connection, is two.
        await _query(ctx, "SELECT 1", budget, simple=True)
        return Check(ok=True, value=round((time.perf_counter() - started) * 1000, 3))

    return await _bounded(probe(), "database", budget)


_schema_current = False  # migrations never un-apply: once current, stop asking


async def _migrations(ctx: Ctx) -> Check:
    global _schema_current
    if _schema_current:
        return Check(ok=True)

    async def probe() -> Check:
        global _schema_current
        status = await schema_status(ctx.db)
        if status.unknown:
            return Check(ok=False, detail=f"database is newer than netmon: {status.unknown}")
        if status.pending:
            return Check(ok=False, detail=f"pending migrations: {status.pending}")
        _schema_current = True
        return Check(ok=True)

    return await _bounded(probe(), "migrations", _budget(ctx))


async def _poller(ctx: Ctx) -> Check:
    """How late the newest poll is, against the poll interval. No polls at all (an API
    with no poller yet, an empty inventory) is not a failure."""
    limit = ctx.settings.poller.interval.total_seconds() * _LAG_FACTOR
    budget = _budget(ctx)

    poll_lag = getattr(ctx.core, "poll_lag", None)
    if poll_lag is not None:
        return await _bounded(_recent_lag(poll_lag), "poller", budget)

    async def probe() -> Check:
        newest: datetime | None = await _query(
            ctx, "SELECT max(last_poll) FROM poll_health", budget
        )
        if newest is None:
            return Check(ok=True, detail="no polls recorded yet")
        lag = (datetime.now(UTC) - newest).total_seconds()
        if lag > limit:
            return Check(ok=False, value=round(lag, 1), detail=f"newest poll is {lag:.0f} s old")
        return Check(ok=True, value=round(lag, 1))

    return await _bounded(probe(), "poller", budget)


async def _recent_lag(poll_lag: Any) -> Check:
    """From the core: polls started late over about the last minute. The scheduler's own
    counters are cumulative, so polls late during an outage would keep the poller
    "lagging" long after it is on time again; this window forgets them."""
    result = poll_lag()
    lag = await result if asyncio.iscoroutine(result) else result
    if lag is None or lag.polls == 0:
        return Check(ok=True, detail="no polls recently")
    share = lag.late / lag.polls
    detail = f"{lag.late} of {lag.polls} polls late in the last {lag.window_s:.0f} s"
    # Most polls late, not one: a single slow start is noise, a backlog is lagging.
    return Check(ok=share <= 0.5, value=round(share, 3), detail=detail)
