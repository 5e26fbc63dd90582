"""/api/v1/silences: maintenance windows. A silence holds back the notifications of the
alerts its matchers match, between its start and its end (alerts still open and show on
/ws/alerts). Operators add and expire them; silences from the rules file are read-only.

A token limited to sites sees and makes only silences confined to its sites: with a
matcher ``site="<one of them>"`` and no other matcher on ``site`` (``api/scope.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import QueryParameter

from netmon.alerts import silences
from netmon.alerts.silences import SilenceRow
from netmon.api.auth import Principal, actor_of, requires
from netmon.api.context import Ctx
from netmon.api.problems import Conflict, responses
from netmon.api.schemas.alerts import SilenceCreate, SilencePage, checked_matchers, silence_window
from netmon.api.schemas.common import (
    Id,
    IdCursorQuery,
    LimitQuery,
    StrictJSONBody,
    id_cursor,
    next_id_cursor,
)
from netmon.api.scope import confinement, may_change, require_confined
from netmon.store.audit import audit_sites, record_audit

__all__ = ["SilenceController"]


async def _visible(
    conn: asyncpg.Connection, user: Principal, silence_id: int, *, lock: bool = False
) -> SilenceRow:
    silence = await silences.get_silence(conn, silence_id, lock=lock)
    if silence is None or not may_change(user, confinement(silence.matchers)):
        raise NotFoundException(f"silence {silence_id} not found")
    return silence


class SilenceController(Controller):
    path = "/api/v1/silences"
    tags = ["alerts"]
    guards = [requires("viewer")]

    @get("/", summary="List silences, newest first", responses=responses())
    async def list_silences(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        wanted: Annotated[
            Literal["active", "pending", "expired", "all"], QueryParameter(name="state")
        ] = "active",
        limit: LimitQuery = 100,
        cursor: IdCursorQuery = None,
    ) -> SilencePage:
        """`active` (default): in force now; `pending`: not started; `expired`: ended."""
        before = id_cursor(cursor)
        async with ctx.db.pool.acquire() as conn:
            rows = await silences.list_silences(
                conn,
                limit=limit + 1,
                before_id=before,
                state=None if wanted == "all" else wanted,
                sites=request.user.sites,
            )
        items = rows[:limit]
        more = len(rows) > limit
        return SilencePage(items=items, next_cursor=next_id_cursor(items[-1].id) if more else None)

    @get("/{silence_id:int}", summary="One silence", responses=responses(404))
    async def silence(
        self, ctx: Ctx, request: Request[Principal, Any, Any], silence_id: Id
    ) -> SilenceRow:
        async with ctx.db.pool.acquire() as conn:
            return await _visible(conn, request.user, silence_id)

    @post(
        "/",
        summary="Silence alerts for a while",
        guards=[requires("operator")],
        responses=responses(422),
    )
    async def create(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        data: StrictJSONBody[SilenceCreate],
    ) -> SilenceRow:
        """Matchers in Alertmanager's syntax (`site="lon1"`, `device=~"core-.*"`), all of
        which an alert must match. A matcher that is not one, or a window that ends before
        it starts or in the past: 422 naming the field."""
        matchers = checked_matchers("matchers", data.matchers, at_least_one=True)
        reach = confinement(matchers)
        require_confined(request.user, reach, "a silence")
        starts, ends = silence_window(data, datetime.now(UTC))
        actor = actor_of(request)
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            row = await silences.insert_silence(
                conn,
                matchers=matchers,
                starts_at=starts,
                ends_at=ends,
                comment=data.comment,
                created_by=actor.name,
            )
            await record_audit(
                conn,
                actor,
                "create",
                "silence",
                str(row.id),
                None,
                row,
                sites=audit_sites(reach.audited),
            )
        return row

    @post(
        "/{silence_id:int}/expire",
        summary="Expire a silence (it ends now)",
        guards=[requires("operator")],
        status_code=200,
        responses=responses(404, 409),
    )
    async def expire(
        self, ctx: Ctx, request: Request[Principal, Any, Any], silence_id: Id
    ) -> SilenceRow:
        """The silence ends now and stays listed as `expired`, for the record (as
        Alertmanager's), so this is not a DELETE: the resource is still there. Expiring an
        expired silence changes nothing. Silences from the rules file or the inventory
        (maintenance windows, muted devices): 409."""
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            before = await _visible(conn, request.user, silence_id, lock=True)
            if before.source != "api":
                where = (
                    "the inventory (a maintenance window or a muted device at the source)"
                    if before.source == "inventory"
                    else "the rules file"
                )
                raise Conflict(
                    f"silence {silence_id} ({before.name}) comes from {where}; change it there"
                )
            after = await silences.expire_silence(conn, silence_id)
            if after is None:
                return before
            await record_audit(
                conn,
                actor_of(request),
                "expire",
                "silence",
                str(silence_id),
                before,
                after,
                sites=audit_sites(confinement(before.matchers).audited),
            )
            return after
