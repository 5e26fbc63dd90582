"""/api/v1/alerts: alerts (the most recently changed first), one with its history, and
acknowledgement by an operator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import asyncpg
from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import Operation, RequestBody
from litestar.params import FromQuery, QueryParameter

from netmon.alerts import admin
from netmon.alerts.model import AlertView, Severity
from netmon.api.auth import Principal, actor_of, requires
from netmon.api.context import Ctx
from netmon.api.problems import Conflict, responses
from netmon.api.schemas.alerts import RULE_NAME, AckBody, AlertDetail, AlertPage
from netmon.api.schemas.common import (
    Id,
    LabelQuery,
    LimitQuery,
    StrictJSONBody,
    TimeCursorQuery,
    next_time_cursor,
    time_cursor,
)
from netmon.store.audit import audit_sites, record_audit

__all__ = ["AlertController"]

StateQuery = Annotated[
    list[Literal["pending", "firing", "acknowledged", "resolved", "all"]] | None,
    QueryParameter(
        name="state",
        max_items=5,
        description="Alerts in these states (repeat it); `all` for every state. "
        "Default: the open ones (pending, firing, acknowledged).",
    ),
]
SeverityQuery = Annotated[
    list[Severity] | None, QueryParameter(max_items=5, description="Any of these (repeat it).")
]
RuleQuery = Annotated[str | None, QueryParameter(min_length=1, max_length=200, pattern=RULE_NAME)]


@dataclass
class OptionalBody(Operation):
    """An operation whose JSON body may be left out: Litestar documents every body as
    required."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


async def _visible(
    conn: asyncpg.Connection, user: Principal, alert_id: int, *, lock: bool = False
) -> AlertView:
    """The alert, if it exists within the token's sites; 404 otherwise."""
    alert = await admin.get_alert(conn, alert_id, lock=lock)
    if alert is None or not user.sees(alert.site):
        raise NotFoundException(f"alert {alert_id} not found")
    return alert


def _why_not(alert: AlertView, wanted: str) -> str:
    if alert.state == "acknowledged":
        return f"alert {alert.id} is acknowledged already (by {alert.acknowledged_by})"
    if alert.state == "pending":
        return f"alert {alert.id} is pending: it has not fired, so there is nothing to {wanted}"
    if alert.state == "resolved":
        return f"alert {alert.id} is resolved: its condition cleared"
    return f"alert {alert.id} is firing and not acknowledged"


class AlertController(Controller):
    path = "/api/v1/alerts"
    tags = ["alerts"]
    guards = [requires("viewer")]

    @get("/", summary="List alerts, the most recently changed first", responses=responses())
    async def list_alerts(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        states: StateQuery = None,
        severity: SeverityQuery = None,
        rule: RuleQuery = None,
        device: LabelQuery = None,
        site: LabelQuery = None,
        flapping: FromQuery[bool | None] = None,
        limit: LimitQuery = 100,
        cursor: TimeCursorQuery = None,
    ) -> AlertPage:
        """Filters combine with AND; the values of one repeated filter with OR. A token
        limited to sites sees the alerts of its sites' devices only."""
        before = time_cursor(cursor)
        wanted = None if states and "all" in states else (states or admin.OPEN_STATES)
        async with ctx.db.pool.acquire() as conn:
            items = await admin.list_alerts(
                conn,
                limit=limit + 1,
                before=before,
                states=wanted,
                severities=severity or (),
                rule=rule,
                device=device,
                site=site,
                flapping=flapping,
                sites=request.user.sites,
            )
        more = len(items) > limit
        items = items[:limit]
        next_cursor = next_time_cursor(items[-1].updated_at, items[-1].id) if more else None
        return AlertPage(items=items, next_cursor=next_cursor)

    @get("/{alert_id:int}", summary="One alert and its history", responses=responses(404))
    async def alert(
        self, ctx: Ctx, request: Request[Principal, Any, Any], alert_id: Id
    ) -> AlertDetail:
        async with ctx.db.pool.acquire() as conn:
            alert = await _visible(conn, request.user, alert_id)
            history = await admin.alert_history(conn, alert_id)
        return AlertDetail(alert=alert, history=history)

    @post(
        "/{alert_id:int}/ack",
        summary="Acknowledge a firing alert",
        status_code=200,
        guards=[requires("operator")],
        responses=responses(404, 409),
        operation_class=OptionalBody,
    )
    async def ack(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        alert_id: Id,
        data: StrictJSONBody[AckBody | None] = None,
    ) -> AlertView:
        """Firing -> acknowledged, by this token; the optional comment goes to the
        history. Anything but a firing alert: 409, saying what it is."""
        return await self._change(ctx, request, alert_id, data, "acknowledge")

    @post(
        "/{alert_id:int}/unack",
        summary="Take an acknowledgement back",
        status_code=200,
        guards=[requires("operator")],
        responses=responses(404, 409),
        operation_class=OptionalBody,
    )
    async def unack(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        alert_id: Id,
        data: StrictJSONBody[AckBody | None] = None,
    ) -> AlertView:
        """Acknowledged -> firing again; anything else: 409."""
        return await self._change(ctx, request, alert_id, data, "unacknowledge")

    async def _change(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        alert_id: int,
        data: AckBody | None,
        action: Literal["acknowledge", "unacknowledge"],
    ) -> AlertView:
        comment = data.comment if data is not None else ""
        actor = actor_of(request)
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            before = await _visible(conn, request.user, alert_id, lock=True)
            if action == "acknowledge":
                if before.state != "firing":
                    raise Conflict(_why_not(before, "acknowledge"))
                change = await admin.acknowledge_alert(conn, alert_id, actor.name, comment)
            else:
                if before.state != "acknowledged":
                    raise Conflict(_why_not(before, "unacknowledge"))
                change = await admin.unacknowledge_alert(conn, alert_id, actor.name, comment)
            await record_audit(
                conn,
                actor,
                action,
                "alert",
                str(alert_id),
                {"state": before.state},
                {"state": change.alert.state, "comment": comment},
                sites=audit_sites(before.site),
            )
        return change.alert
