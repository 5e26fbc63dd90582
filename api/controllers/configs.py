"""/api/v1/devices/{id}/configs and /api/v1/configs: configuration backups, their text and
the diffs between them. A token limited to sites sees only its sites' devices' versions
(others answer 404, as if they did not exist)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import Example
from litestar.params import FromQuery, QueryParameter

from netmon.api.auth import Principal, actor_of, check_site, requires
from netmon.api.context import Ctx
from netmon.api.problems import Conflict, responses
from netmon.api.schemas.common import (
    ID_MAX,
    Id,
    IdCursorQuery,
    LimitQuery,
    id_cursor,
    next_id_cursor,
)
from netmon.api.schemas.configs import (
    BackupOutcome,
    ConfigDiff,
    ConfigVersionDetail,
    ConfigVersionPage,
    detail_of,
    summary_of,
)
from netmon.store import configs as store
from netmon.store.audit import audit_sites, record_audit
from netmon.store.configs import ConfigVersion, DifferentDevicesError
from netmon.store.notify import ORIGIN, publish_control

__all__ = ["ConfigController", "DeviceConfigController"]

AgainstQuery = Annotated[
    int | None,
    QueryParameter(
        ge=1,
        le=ID_MAX,
        description="The version to diff from; default the version before this one.",
        examples=[Example(value=1)],
    ),
]
_TEXT = "text/plain"


async def _visible(conn: Any, user: Principal, version_id: int) -> ConfigVersion:
    version = await store.get_version(conn, version_id)
    if version is None or not user.sees(version.site):
        raise NotFoundException(f"configuration version {version_id} not found")
    return version


class DeviceConfigController(Controller):
    path = "/api/v1/devices/{device_id:int}/configs"
    tags = ["configs"]
    guards = [requires("viewer")]

    @get("/", summary="A device's configuration versions, newest first", responses=responses(404))
    async def list_configs(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        device_id: Id,
        source: FromQuery[Literal["running", "candidate", "startup"] | None] = None,
        limit: LimitQuery = 100,
        cursor: IdCursorQuery = None,
    ) -> ConfigVersionPage:
        """Versions without their text; `GET /api/v1/configs/{id}` has it."""
        before = id_cursor(cursor)
        async with ctx.db.pool.acquire() as conn:
            site = await conn.fetchrow("SELECT site FROM devices WHERE id = $1", device_id)
            if site is None:
                raise NotFoundException(f"device {device_id} not found")
            check_site(request.user, site["site"], f"device {device_id}")
            rows = await store.list_versions(
                conn, device_id, limit=limit + 1, before=before, source=source
            )
        items = [summary_of(v) for v in rows[:limit]]
        more = len(rows) > limit
        return ConfigVersionPage(
            items=items, next_cursor=next_id_cursor(items[-1].id) if more else None
        )

    @post(
        "/backup",
        summary="Back up a device's configuration now",
        guards=[requires("operator")],
        status_code=202,
        responses=responses(404, 409),
    )
    async def backup(
        self, ctx: Ctx, request: Request[Principal, Any, Any], device_id: Id
    ) -> BackupOutcome:
        """Runs the device's configuration tasks (`netconf_config`, `cli_config`) out of
        schedule. The poller of this netmon (`netmon run`) does it before answering;
        pollers in other processes are asked through the database (`netmon_control`) and
        do it on their own. A device whose poller here has no configuration task: 409."""
        async with ctx.db.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT name, site FROM devices WHERE id = $1", device_id)
        if row is None:
            raise NotFoundException(f"device {device_id} not found")
        check_site(request.user, row["site"], f"device {device_id}")
        name: str = row["name"]
        reply = await ctx.core.backup(name) if ctx.core is not None else None
        here = reply is not None and reply.here
        if reply is not None and reply.refused is not None:
            raise Conflict(reply.refused)
        ok, error = (reply.ok, reply.error) if reply is not None and here else (True, None)
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            versions = [summary_of(v) for v in await store.latest_versions(conn, device_id)]
            outcome = BackupOutcome(
                device_id=device_id,
                device=name,
                here=here,
                ok=ok,
                error=error,
                versions=versions,
                broadcast=not here,
            )
            await record_audit(
                conn,
                actor_of(request),
                "backup",
                "device_config",
                str(device_id),
                None,
                outcome,
                sites=audit_sites(row["site"]),
            )
            if not here:
                await publish_control(conn, "config_backup", device=name, origin=ORIGIN)
        return outcome


class ConfigController(Controller):
    path = "/api/v1/configs"
    tags = ["configs"]
    guards = [requires("viewer")]

    @get(
        "/{version_id:int}",
        summary="One configuration version, with its text",
        responses=responses(404),
    )
    async def version(
        self, ctx: Ctx, request: Request[Principal, Any, Any], version_id: Id
    ) -> ConfigVersionDetail:
        async with ctx.db.pool.acquire() as conn:
            return detail_of(await _visible(conn, request.user, version_id))

    @get(
        "/{version_id:int}/diff",
        summary="The unified diff of a version against another (default: the one before)",
        responses=responses(404, 409),
    )
    async def diff(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        version_id: Id,
        against: AgainstQuery = None,
    ) -> Response[ConfigDiff]:
        """JSON by default; the bare diff as `text/plain` for `Accept: text/plain`. The
        first version of a device and source, without `against`, is diffed against the
        empty configuration. Versions of another device or source: 409."""
        async with ctx.db.pool.acquire() as conn:
            new = await _visible(conn, request.user, version_id)
            from_id = against if against is not None else new.previous_id
            old = await _visible(conn, request.user, from_id) if from_id is not None else None
        try:
            text, added, removed = store.version_diff(old, new)
        except DifferentDevicesError as exc:
            raise Conflict(str(exc)) from exc
        if _wants_text(request):
            # Outside the document's one declared body: asked for by name only.
            plain: Response[Any] = Response(text, media_type=_TEXT)
            return plain
        return Response(
            ConfigDiff(
                device_id=new.device_id,
                device=new.device,
                source=new.source,
                from_id=old.id if old is not None else None,
                to_id=new.id,
                lines_added=added,
                lines_removed=removed,
                diff=text,
            )
        )


def _wants_text(request: Request[Any, Any, Any]) -> bool:
    accept = request.headers.get("accept", "")
    return _TEXT in accept and "json" not in accept
