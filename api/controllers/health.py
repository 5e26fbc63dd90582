"""/health/live and /health/ready, public for load balancers and orchestrators.

Ready answers within about two seconds whatever the database does: each check has its
own deadline, and a database that does not answer is a failed check, not a hung probe.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from netmon.api.context import Ctx
from netmon.api.schemas.health import Check, Live, Ready
from netmon.store.schema import schema_status

__all__ = ["HealthController"]

_DEADLINE = 1.5  # seconds per check
_LAG_FACTOR = 3  # polls this many intervals late make the poller "lagging"


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
        checks = dict(
            zip(
                ("database", "migrations", "poller"),
                await asyncio.gather(_database(ctx), _migrations(ctx), _poller(ctx)),
                strict=True,
            )
        )
        ok = all(c.ok for c in checks.values())
        return Response(
            Ready(status="ready" if ok else "not ready", checks=checks),
            status_code=200 if ok else 503,
        )


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
