"""/api/v1/inventory/sync (the last syncs of every source) and the NetBox webhook.

The webhook is called by a NetBox event rule, not by a netmon token holder: it is public
and authorised by NetBox's ``X-Hook-Signature`` (HMAC-SHA512 of the body with the
webhook's secret, ``inventory.netbox.webhook_secret``). The HTTP limits (body size,
connections) hold before it as before every route; a per-address rate limit holds
before the signature is checked. An accepted change is passed to the poller through the
database (``inventory_changed``), which re-reads those hosts from NetBox: the webhook's
body is a hint of what changed, never trusted as the data itself.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import (
    NotAuthorizedException,
    NotFoundException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.params import QueryParameter

from netmon.api.auth import Principal, RateLimiter, requires
from netmon.api.context import Ctx
from netmon.api.problems import responses
from netmon.errors import ConfigError
from netmon.store.inventory import recent_runs
from netmon.store.notify import publish_control

__all__ = ["WEBHOOK_PATH", "InventorySyncController", "NetBoxWebhookController"]

WEBHOOK_PATH = "/api/v1/inventory/netbox/webhook"
# The most hosts one webhook may name; more is a full sync (a NOTIFY payload holds 8 kB).
_MAX_IDS = 200


class SyncRun(msgspec.Struct, frozen=True):
    id: int
    source: str
    poller: str
    kind: str  # full, incremental
    started_at: datetime
    finished_at: datetime
    ok: bool
    # The guard kept retirements back (a read with far fewer hosts than before).
    held: bool
    error: str | None
    fetched: int
    added: int
    changed: int
    retired: int
    unchanged: int
    skipped: int
    # Names added, changed, retired and skipped (with the reason); not shown to a token
    # limited to sites, since they name devices of every site.
    detail: dict[str, Any] | None = None


class SyncRuns(msgspec.Struct, frozen=True):
    items: list[SyncRun]


class WebhookAccepted(msgspec.Struct, frozen=True):
    hosts: int  # hosts to read again
    full: bool  # a full sync was asked for


class InventorySyncController(Controller):
    path = "/api/v1/inventory"
    tags = ["inventory"]
    guards = [requires("viewer")]

    @get("/sync", summary="The last inventory syncs", responses=responses())
    async def runs(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 20,
    ) -> SyncRuns:
        """Newest first, of every source and poller. A held run retired nothing (see
        `detail.held`); a failed run (`ok: false`) changed nothing."""
        async with ctx.db.pool.acquire() as conn:
            rows = await recent_runs(conn, limit)
        whole = request.user.sites is None
        return SyncRuns(
            items=[
                SyncRun(
                    id=r["id"],
                    source=r["source"],
                    poller=r["poller"],
                    kind=r["kind"],
                    started_at=r["started_at"],
                    finished_at=r["finished_at"],
                    ok=r["ok"],
                    held=r["held"],
                    error=r["error"],
                    fetched=r["fetched"],
                    added=r["added"],
                    changed=r["changed"],
                    retired=r["retired"],
                    unchanged=r["unchanged"],
                    skipped=r["skipped"],
                    detail=json.loads(r["detail"]) if whole else None,
                )
                for r in rows
            ]
        )


class NetBoxWebhookController(Controller):
    path = WEBHOOK_PATH
    tags = ["inventory"]

    @post(
        "/",
        summary="NetBox event rule webhook",
        status_code=202,
        responses=responses(400, 401, 404, 429),
        security=[{}],  # no token: NetBox signs the body (Litestar drops an empty list)
    )
    async def webhook(self, ctx: Ctx, request: Request[Any, Any, Any]) -> WebhookAccepted:
        """For a NetBox event rule on devices and virtual machines (created, updated,
        deleted), and on what they depend on (IP addresses, config contexts, sites, tags:
        a full sync). Signed with the webhook's secret; 404 when netmon has none set."""
        from netmon.inventory.netbox.webhook import parse_event, verify_signature

        netbox = ctx.settings.inventory.netbox
        if netbox is None or netbox.webhook_secret is None:
            raise NotFoundException("no NetBox webhook is configured here")
        client = request.client.host if request.client else "unknown"
        wait = _limiter(ctx.settings.api.rate_limit).take(f"netbox-webhook:{client}")
        if wait:
            retry = str(max(1, int(wait + 0.999)))
            raise TooManyRequestsException(
                f"too many webhook calls; retry in {retry} s", headers={"Retry-After": retry}
            )
        body = await request.body()
        try:
            secret = netbox.webhook_secret.reveal("inventory.netbox.webhook_secret")
        except ConfigError as exc:
            raise NotFoundException(f"the NetBox webhook secret cannot be read: {exc}") from exc
        if not verify_signature(body, secret, request.headers.get("x-hook-signature")):
            raise NotAuthorizedException(
                "X-Hook-Signature is missing or does not match the body signed with the "
                "webhook's secret (HMAC-SHA512)"
            )
        try:
            change = parse_event(body, cables=netbox.cables)
        except ValueError as exc:
            raise ValidationException(f"not a NetBox webhook body: {exc}") from exc
        ids = sorted(change.changed)
        full = change.full or len(ids) > _MAX_IDS
        async with ctx.db.pool.acquire() as conn:
            await publish_control(
                conn, "inventory_changed", ids=[] if full else ids, full=full, at=time.time()
            )
        return WebhookAccepted(hosts=0 if full else len(ids), full=full)


_limiters: dict[int, RateLimiter] = {}


def _limiter(per_minute: int) -> RateLimiter:
    per_minute = per_minute or 6000
    limiter = _limiters.get(per_minute)
    if limiter is None:
        limiter = _limiters[per_minute] = RateLimiter(per_minute)
    return limiter
