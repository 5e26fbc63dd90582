"""/health/live and /health/ready, public for load balancers and orchestrators.

Ready answers within about two seconds whatever the database does: each check has its
own deadline, and a database that does not answer is a failed check, not a hung probe.
Being public, it must not be a way to load the database: an answer is kept for a second
and shared by everyone who asks meanwhile (callers arriving while it is worked out wait
for that one), so a flood of probes costs at most one round of checks a second.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from datetime import UTC, datetime

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from netmon.api.context import ApiContext, Ctx
from netmon.api.schemas.health import Check, Live, Ready
from netmon.store.schema import schema_status

__all__ = ["HealthController"]

_DEADLINE = 1.5  # seconds per check
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
    checks = dict(
        zip(
            ("database", "migrations", "poller"),
            await asyncio.gather(_database(ctx), _migrations(ctx), _poller(ctx)),
            strict=True,
        )
    )
    ok = all(c.ok for c in checks.values())
    return Ready(status="ready" if ok else "not ready", checks=checks, checked_at=datetime.now(UTC))


async def _bounded(coro: object, what: str) -> Check | BaseException:
    try:
        return await asyncio.wait_for(coro, _DEADLINE)  # type: ignore[arg-type]
    except TimeoutError:
        return Check(ok=False, detail=f"{what}: no answer within {_DEADLINE} s")
    except Exception as exc:
        return Check(ok=False, detail=f"{what}: {type(exc).__name__}: {exc}")


async def _database(ctx: Ctx) -> Check:
    async def probe() -> Check:
        started = time.perf_counter()
        async with ctx.db.pool.acquire(timeout=_DEADLINE) as conn:
            await conn.fetchval("SELECT 1", timeout=_DEADLINE)
        return Check(ok=True, value=round((time.perf_counter() - started) * 1000, 3))

    result = await _bounded(probe(), "database")
    assert isinstance(result, Check)
    return result


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

    result = await _bounded(probe(), "migrations")
    assert isinstance(result, Check)
    return result


async def _poller(ctx: Ctx) -> Check:
    """How late the newest poll is, against the poll interval. No polls at all (an API
    with no poller yet, an empty inventory) is not a failure."""
    limit = ctx.settings.poller.interval.total_seconds() * _LAG_FACTOR

    async def probe() -> Check:
        async with ctx.db.pool.acquire(timeout=_DEADLINE) as conn:
            newest: datetime | None = await conn.fetchval(
                "SELECT max(last_poll) FROM poll_health", timeout=_DEADLINE
            )
        if newest is None:
            return Check(ok=True, detail="no polls recorded yet")
        lag = (datetime.now(UTC) - newest).total_seconds()
        if lag > limit:
            return Check(ok=False, value=round(lag, 1), detail=f"newest poll is {lag:.0f} s old")
        return Check(ok=True, value=round(lag, 1))

    result = await _bounded(probe(), "poller")
    assert isinstance(result, Check)
    return result
