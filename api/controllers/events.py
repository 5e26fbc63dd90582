"""/api/v1/events: device events (reboots, reachability, ...), newest first."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery, QueryParameter

from netmon.api.auth import Principal, requires
from netmon.api.context import Ctx
from netmon.api.problems import responses
from netmon.api.schemas.common import (
    LimitQuery,
    TimeCursorQuery,
    next_time_cursor,
    parse_time,
    time_cursor,
    time_query,
)
from netmon.store.events import EventRow, list_events

__all__ = ["EventController", "EventPage"]


class EventPage(msgspec.Struct, frozen=True):
    items: list[EventRow]
    next_cursor: str | None


class EventController(Controller):
    path = "/api/v1/events"
    tags = ["events"]
    guards = [requires("viewer")]

    @get("/", summary="Device events, newest first", responses=responses())
    async def events(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        device: Annotated[
            str | None,
            QueryParameter(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"),
        ] = None,
        kind: Annotated[
            str | None,
            QueryParameter(
                max_length=100,
                pattern=r"^[a-z][a-z0-9_.-]*$",
                description="e.g. device.rebooted, device.unreachable",
            ),
        ] = None,
        severity: FromQuery[Literal["info", "warning", "critical"] | None] = None,
        since: Annotated[str | None, time_query("inclusive.")] = None,
        until: Annotated[str | None, time_query("exclusive.")] = None,
        limit: LimitQuery = 100,
        cursor: TimeCursorQuery = None,
    ) -> EventPage:
        before = time_cursor(cursor)
        async with ctx.db.pool.acquire() as conn:
            rows = await list_events(
                conn,
                limit=limit + 1,
                before=before,
                device=device,
                kind=kind,
                severity=severity,
                since=parse_time("since", since),
                until=parse_time("until", until),
                sites=request.user.sites,
            )
        items = rows[:limit]
        more = len(rows) > limit
        next_cursor = next_time_cursor(items[-1].time, items[-1].id) if more else None
        return EventPage(items=items, next_cursor=next_cursor)
