"""Administration: tokens and the audit log (admin), inventory reload (operator).

A token limited to sites administers only within them: it makes tokens limited to some
of its own sites with a role no higher than its own, lists and revokes only such tokens,
and reads only the audit entries within its sites. Reloading the inventory reaches every
site, so it needs a token for every site.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.exceptions import (
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import QueryParameter

from netmon.api.auth import ROLE_RANK, Principal, actor_of, requires
from netmon.api.context import Ctx
from netmon.api.problems import responses
from netmon.api.schemas.common import (
    Id,
    IdCursorQuery,
    Label,
    LimitQuery,
    Name,
    StrictJSONBody,
    id_cursor,
    next_id_cursor,
    parse_time,
    time_query,
    to_utc,
)
from netmon.api.scope import check_unscoped
from netmon.config import Role
from netmon.store.audit import AuditRow, audit_sites, list_audit, record_audit
from netmon.store.notify import ORIGIN, publish_control
from netmon.store.tokens import TokenRow, create_token, get_token, list_tokens, revoke_token

__all__ = ["AuditController", "InventoryController", "TokenController"]


class TokenCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    role: Role
    sites: Annotated[list[Label], msgspec.Meta(min_length=1, max_length=100)] | None = None
    expires_at: datetime | None = None


class TokenCreated(msgspec.Struct, frozen=True):
    token: str  # shown this once
    info: TokenRow


class TokenList(msgspec.Struct, frozen=True):
    items: list[TokenRow]


class AuditPage(msgspec.Struct, frozen=True):
    items: list[AuditRow]
    next_cursor: str | None


class ReloadOutcome(msgspec.Struct, frozen=True):
    here: bool  # a poller in this process reloaded
    ok: bool
    devices: int | None
    error: str | None
    broadcast: bool  # other pollers were asked through the database


class TokenController(Controller):
    path = "/api/v1/tokens"
    tags = ["admin"]
    guards = [requires("admin")]

    @get("/", summary="List tokens (never their secrets)", responses=responses())
    async def list_tokens(self, ctx: Ctx, request: Request[Principal, Any, Any]) -> TokenList:
        """A token limited to sites lists only tokens limited to some of its sites."""
        async with ctx.db.pool.acquire() as conn:
            return TokenList(items=await list_tokens(conn, within=request.user.sites))

    @post(
        "/",
        summary="Create a token; the response is the only time it is shown",
        responses=responses(),
    )
    async def create(
        self, ctx: Ctx, request: Request[Principal, Any, Any], data: StrictJSONBody[TokenCreate]
    ) -> TokenCreated:
        """A token limited to sites makes only tokens limited to some of its own sites
        (`sites` required), with a role no higher than its own: 403 otherwise."""
        _check_grant(request.user, data)
        if data.expires_at is not None:
            if data.expires_at.tzinfo is None:
                raise ValidationException(
                    "expires_at needs a timezone",
                    extra=[{"key": "expires_at", "message": "timezone required"}],
                )
            if data.expires_at <= datetime.now(UTC):
                raise ValidationException(
                    "expires_at is in the past",
                    extra=[{"key": "expires_at", "message": "in the past"}],
                )
        expires_at = to_utc(data.expires_at) if data.expires_at is not None else None
        actor = actor_of(request)
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            row, token = await create_token(
                conn,
                name=data.name,
                role=data.role,
                created_by=actor.name,
                pepper=ctx.settings.api.resolved_pepper(),
                sites=data.sites,
                expires_at=expires_at,
            )
            await record_audit(
                conn, actor, "create", "token", str(row.id), None, row, sites=audit_sites(row.sites)
            )
        return TokenCreated(token=token, info=row)

    @delete("/{token_id:int}", summary="Revoke a token", responses=responses(404))
    async def revoke(self, ctx: Ctx, request: Request[Principal, Any, Any], token_id: Id) -> None:
        """The token stops working within `api.token_cache`. A token revoked already, or
        outside the caller's sites: 404."""
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            before = await get_token(conn, token_id, lock=True)
            if before is None or not _within(request.user, before.sites):
                raise NotFoundException(f"token {token_id} not found")
            row = await revoke_token(conn, token_id)
            if row is None:  # revoked already: gone, as far as DELETE goes
                raise NotFoundException(f"token {token_id} not found")
            await record_audit(
                conn,
                actor_of(request),
                "revoke",
                "token",
                str(token_id),
                None,
                row,
                sites=audit_sites(row.sites),
            )
            await publish_control(conn, "token_revoked", id=token_id)  # feeds close at once
        if ctx.tokens is not None:
            ctx.tokens.forget()


def _within(user: Principal, sites: list[str] | None) -> bool:
    """Whether a token limited to ``sites`` (None: all) is within the user's scope."""
    return user.sites is None or (bool(sites) and set(sites or ()) <= user.sites)


def _check_grant(user: Principal, data: TokenCreate) -> None:
    if ROLE_RANK[data.role] > ROLE_RANK[user.role]:
        raise PermissionDeniedException(
            f"the token {user.name!r} is {user.role}: it cannot make a token with the "
            f"{data.role} role"
        )
    if not _within(user, data.sites):
        mine = ", ".join(sorted(user.sites or ()))
        raise PermissionDeniedException(
            f"the token {user.name!r} is limited to {mine}: a token it makes needs `sites` "
            "within them"
        )


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["admin"]
    guards = [requires("admin")]

    @get("/", summary="The audit log, newest first", responses=responses())
    async def audit(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        resource: Annotated[
            str | None,
            QueryParameter(
                max_length=100, pattern=r"^[a-z_]+$", description="device, token, inventory"
            ),
        ] = None,
        resource_id: Annotated[
            str | None, QueryParameter(max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")
        ] = None,
        actor: Annotated[
            str | None, QueryParameter(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")
        ] = None,
        since: Annotated[str | None, time_query("inclusive.")] = None,
        until: Annotated[str | None, time_query("exclusive.")] = None,
        limit: LimitQuery = 100,
        cursor: IdCursorQuery = None,
    ) -> AuditPage:
        since_, until_ = parse_time("since", since), parse_time("until", until)
        before = id_cursor(cursor)
        async with ctx.db.pool.acquire() as conn:
            rows = await list_audit(
                conn,
                limit=limit + 1,
                before_id=before,
                resource=resource,
                resource_id=resource_id,
                actor=actor,
                since=since_,
                until=until_,
                within=request.user.sites,
            )
        items = rows[:limit]
        more = len(rows) > limit
        return AuditPage(items=items, next_cursor=next_id_cursor(items[-1].id) if more else None)


class InventoryController(Controller):
    path = "/api/v1/inventory"
    tags = ["inventory"]
    guards = [requires("operator")]

    @post("/reload", summary="Re-read the inventory", status_code=200, responses=responses())
    async def reload(self, ctx: Ctx, request: Request[Principal, Any, Any]) -> ReloadOutcome:
        """The poller of this netmon (`netmon run`) reloads now and reports; pollers in
        other processes are asked through the database (`netmon_control`) and reload on
        their own. It reaches every site: a token limited to sites gets 403."""
        check_unscoped(request.user, "reloading the inventory")
        result = await ctx.core.reload() if ctx.core is not None else None
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            outcome = ReloadOutcome(
                here=result is not None,
                ok=result.ok if result is not None else True,
                devices=result.devices if result is not None else None,
                error=result.error if result is not None else None,
                broadcast=True,
            )
            await record_audit(
                conn, actor_of(request), "reload", "inventory", None, None, outcome, sites=None
            )
            # The core that reloaded already skips its own broadcast.
            origin = result.origin if result is not None else ORIGIN
            await publish_control(conn, "inventory_reload", origin=origin)
        return outcome
