"""/api/v1/webhooks: subscriptions of other systems to alerts (admin), their deliveries,
and redelivery of a message (operator).

A webhook's URL must be allowed by ``alerts.webhooks.allow`` (the SSRF guard,
``netmon.alerts.destinations``): refused with a 422 naming ``url`` otherwise. Its signing
secret is never shown, but once, in the answer that made it.

A token limited to sites sees and manages only webhooks confined to its sites (a matcher
``site="<one of them>"`` and no other matcher on ``site``, ``api/scope.py``), so that it
hears only its own sites' alerts; global webhooks need a token for every site.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery, QueryParameter

from netmon.alerts import webhooks
from netmon.alerts.destinations import DestinationError, check_destination
from netmon.alerts.webhooks import DeliveryRow, WebhookRow
from netmon.api.auth import Principal, actor_of, requires
from netmon.api.context import ApiContext, Ctx
from netmon.api.problems import Conflict, responses
from netmon.api.schemas.alerts import (
    GROUP_INTERVAL,
    GROUP_WAIT,
    REPEAT_INTERVAL,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookUpdate,
    checked_matchers,
    duration_in,
    new_secret,
    unprocessable,
)
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
from netmon.store.notify import publish_control

__all__ = ["DeliveryController", "WebhookController"]

_BOUNDS = {
    "group_wait": GROUP_WAIT,
    "group_interval": GROUP_INTERVAL,
    "repeat_interval": REPEAT_INTERVAL,
}


async def _check_url(ctx: ApiContext, url: str) -> None:
    try:
        await check_destination(url, ctx.settings.alerts.webhooks.allow)
    except DestinationError as exc:
        raise unprocessable("url", str(exc)) from None


async def _webhook(
    conn: asyncpg.Connection, user: Principal, webhook_id: int, *, lock: bool = False
) -> WebhookRow:
    row = await webhooks.get_webhook(conn, webhook_id, lock=lock)
    if row is None or not may_change(user, confinement(row.matchers)):
        raise NotFoundException(f"webhook {webhook_id} not found")
    return row


async def _name_taken(conn: asyncpg.Connection, user: Principal, name: str) -> Exception:
    """What to answer when ``name`` is another webhook's: 409, or 404 when that webhook
    is out of the user's sites (it is not there for them)."""
    for row in await webhooks.list_webhooks(conn):
        if row.name == name and not may_change(user, confinement(row.matchers)):
            return NotFoundException(f"the webhook name {name!r} is not available")
    return Conflict(f"a webhook named {name!r} exists")


def _or(value: timedelta | None, default: timedelta) -> timedelta:
    return default if value is None else value


def _checked(changes: dict[str, Any]) -> dict[str, Any]:
    """Matchers in their stored form, durations read and bounded (422 otherwise)."""
    out = dict(changes)
    if "matchers" in out:
        out["matchers"] = checked_matchers("matchers", out["matchers"])
    for name, (low, high) in _BOUNDS.items():
        if out.get(name) is not None:
            out[name] = duration_in(name, out[name], low, high)
    return out


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ["webhooks"]
    guards = [requires("admin")]

    @get("/", summary="List webhooks (never their secrets)", responses=responses())
    async def list_webhooks(self, ctx: Ctx, request: Request[Principal, Any, Any]) -> WebhookList:
        async with ctx.db.pool.acquire() as conn:
            rows = await webhooks.list_webhooks(conn)
        user = request.user
        return WebhookList(items=[r for r in rows if may_change(user, confinement(r.matchers))])

    @get("/{webhook_id:int}", summary="One webhook", responses=responses(404))
    async def webhook(
        self, ctx: Ctx, request: Request[Principal, Any, Any], webhook_id: Id
    ) -> WebhookRow:
        async with ctx.db.pool.acquire() as conn:
            return await _webhook(conn, request.user, webhook_id)

    @post(
        "/",
        summary="Subscribe a URL to alerts; a secret made here is shown this once",
        responses=responses(404, 409, 422),
    )
    async def create(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        data: StrictJSONBody[WebhookCreate],
    ) -> WebhookCreated:
        fields = _checked(
            {f: getattr(data, f) for f in data.__struct_fields__ if f not in ("name", "url")}
        )
        user = request.user
        reach = confinement(fields["matchers"])
        require_confined(user, reach, "a webhook")
        defaults = ctx.settings.alerts
        await _check_url(ctx, data.url)
        secret = data.secret if data.secret is not None else new_secret()
        actor = actor_of(request)
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            row = await webhooks.insert_webhook(
                conn,
                name=data.name,
                url=data.url,
                secret=secret,
                format=data.format,
                matchers=fields["matchers"],
                group_by=data.group_by,
                group_wait=_or(fields["group_wait"], defaults.group_wait),
                group_interval=_or(fields["group_interval"], defaults.group_interval),
                repeat_interval=_or(fields["repeat_interval"], defaults.repeat_interval),
                send_resolved=data.send_resolved,
                enabled=data.enabled,
                created_by=actor.name,
            )
            if row is None:
                raise await _name_taken(conn, user, data.name)
            await record_audit(
                conn,
                actor,
                "create",
                "webhook",
                str(row.id),
                None,
                row,
                sites=audit_sites(reach.audited),
            )
        # Shown once, if netmon made it; a secret the request gave is not sent back.
        shown = secret if data.secret is None else None
        return WebhookCreated(**msgspec.structs.asdict(row), secret=shown)

    @patch("/{webhook_id:int}", summary="Change a webhook", responses=responses(404, 409, 422))
    async def update(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        webhook_id: Id,
        data: StrictJSONBody[WebhookUpdate],
    ) -> WebhookRow:
        """Enabling it again clears `disabled_reason` (a 410 from the receiver disables a
        webhook; its messages wait) and wakes the deliverers."""
        changes = _checked(data.changes())
        user = request.user
        if "matchers" in changes:
            require_confined(user, confinement(changes["matchers"]), "a webhook")
        if "url" in changes:
            await _check_url(ctx, changes["url"])
        actor = actor_of(request)
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            before = await _webhook(conn, user, webhook_id, lock=True)
            if changes.get("enabled") is True:
                changes["disabled_reason"] = None
            elif changes.get("enabled") is False and before.enabled:
                changes["disabled_reason"] = f"disabled through the API by {actor.name}"
            after = await webhooks.update_webhook(conn, webhook_id, changes)
            if after is None:
                raise await _name_taken(conn, user, changes.get("name", ""))
            # The secret is never written down; that it changed is.
            audited = {**msgspec.structs.asdict(after), "secret_changed": "secret" in changes}
            await record_audit(
                conn,
                actor,
                "update",
                "webhook",
                str(webhook_id),
                before,
                audited,
                sites=audit_sites(
                    confinement(before.matchers).audited, confinement(after.matchers).audited
                ),
            )
            if after.enabled and not before.enabled:
                await publish_control(conn, "outbox_wake")
        return after

    @delete("/{webhook_id:int}", summary="Delete a webhook", responses=responses(404))
    async def remove(self, ctx: Ctx, request: Request[Principal, Any, Any], webhook_id: Id) -> None:
        """Its notification groups and undelivered messages go with it."""
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            before = await _webhook(conn, request.user, webhook_id, lock=True)
            await webhooks.delete_webhook(conn, webhook_id)
            await record_audit(
                conn,
                actor_of(request),
                "delete",
                "webhook",
                str(webhook_id),
                before,
                None,
                sites=audit_sites(confinement(before.matchers).audited),
            )

    @get(
        "/{webhook_id:int}/deliveries",
        summary="A webhook's messages, newest first",
        responses=responses(404),
    )
    async def deliveries(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        webhook_id: Id,
        wanted: Annotated[
            Literal["pending", "delivered", "dead"] | None, QueryParameter(name="state")
        ] = None,
        payload: FromQuery[bool] = False,
        limit: LimitQuery = 100,
        cursor: IdCursorQuery = None,
    ) -> DeliveryPage:
        """`payload=true` adds each message's exact body."""
        before = id_cursor(cursor)
        async with ctx.db.pool.acquire() as conn:
            await _webhook(conn, request.user, webhook_id)
            rows = await webhooks.list_deliveries(
                conn, webhook_id, limit=limit + 1, before_id=before, state=wanted, payload=payload
            )
        items = rows[:limit]
        more = len(rows) > limit
        return DeliveryPage(items=items, next_cursor=next_id_cursor(items[-1].id) if more else None)


class DeliveryController(Controller):
    path = "/api/v1/webhooks/deliveries"
    tags = ["webhooks"]
    guards = [requires("operator")]

    @post(
        "/{outbox_id:int}/redeliver",
        summary="Send a dead (or delivered) message again",
        status_code=200,
        responses=responses(404, 409),
    )
    async def redeliver(
        self, ctx: Ctx, request: Request[Principal, Any, Any], outbox_id: Id
    ) -> DeliveryRow:
        """The same message (`message_id`, body) from attempt 0, retried for
        `alerts.webhooks.retry_for` from now. A message still pending: 409. A token
        limited to sites may redeliver only messages of webhooks confined to its sites,
        about its sites' alerts."""
        retry_for: timedelta = ctx.settings.alerts.webhooks.retry_for
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            before = await webhooks.get_delivery(conn, outbox_id, lock=True)
            user = request.user
            sites = await webhooks.delivery_sites(conn, before.alert_ids) if before else []
            if before is not None and user.sites is not None:
                hook = await webhooks.get_webhook(conn, before.webhook_id)
                if (
                    hook is None
                    or not may_change(user, confinement(hook.matchers))
                    or not sites
                    or not all(user.sees(s) for s in sites)
                ):
                    before = None
            if before is None:
                raise NotFoundException(f"delivery {outbox_id} not found")
            after = await webhooks.redeliver(conn, outbox_id, retry_for)
            if after is None:
                raise Conflict(
                    f"delivery {outbox_id} is pending already (attempt {before.attempts}, "
                    f"next at {before.next_attempt_at.isoformat()})"
                )
            await record_audit(
                conn,
                actor_of(request),
                "redeliver",
                "webhook_delivery",
                str(outbox_id),
                before,
                after,
                sites=audit_sites(sites),
            )
            await publish_control(conn, "outbox_wake")
        return after
