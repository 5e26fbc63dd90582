"""/api/v1/devices: list, detail (with interfaces and poll health), and changes to the
devices that no sync owns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery, QueryParameter

from netmon.api.auth import Principal, actor_of, check_site, requires
from netmon.api.context import Ctx
from netmon.api.problems import Conflict, responses
from netmon.api.schemas.common import (
    Id,
    Label,
    LabelQuery,
    LimitQuery,
    NameCursorQuery,
    StrictJSONBody,
    name_cursor,
    next_name_cursor,
)
from netmon.api.schemas.devices import (
    INTERFACE_METRICS,
    DeviceCreate,
    DeviceDetail,
    DevicePage,
    DeviceStatus,
    DeviceSummary,
    DeviceUpdate,
    detail_from_row,
    interfaces_from_rows,
    summary_from_row,
)
from netmon.core_control import LocalCore
from netmon.store import devices as store
from netmon.store.audit import audit_sites, record_audit
from netmon.store.notify import publish_control
from netmon.store.queries import device_detail_counted

__all__ = ["DeviceController"]

NameQuery = Annotated[
    str | None,
    QueryParameter(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9*][A-Za-z0-9._:/@*-]*$",
        description="Exact name, or a pattern with `*` wildcards (`core-*`).",
    ),
]
TagQuery = Annotated[
    list[Label] | None,
    QueryParameter(max_items=20, description="Devices carrying every tag given (repeat it)."),
]


async def _locked_row(conn: Any, user: Principal, device_id: int) -> Any:
    """The device's row, locked for this transaction: a concurrent change waits, then
    finds what this one left (a deleted device: 404, as if it never was)."""
    row = await store.device_detail(conn, device_id, lock=True)
    if row is None or not user.sees(row["site"]):
        raise NotFoundException(f"device {device_id} not found")
    return row


def _writable(row: Any, *, deleting: bool = False) -> None:
    """A device an inventory source holds is changed at the source. A retired one may be
    deleted (purged early); it is no longer polled."""
    if row["owner"] is None or (deleting and row["lifecycle"] == "retired"):
        return
    where = f" of poller {row['poller']}" if row["poller"] else ""
    raise Conflict(
        f"device {row['name']!r} is owned by the {row['owner']} inventory{where}; change it "
        "there (a host removed from the inventory is retired at the next sync, and may then "
        "be deleted)"
    )


class DeviceController(Controller):
    path = "/api/v1/devices"
    tags = ["devices"]
    guards = [requires("viewer")]

    @get("/", summary="List devices", responses=responses())
    async def list_devices(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        limit: LimitQuery = 100,
        cursor: NameCursorQuery = None,
        site: LabelQuery = None,
        role: LabelQuery = None,
        platform: LabelQuery = None,
        tag: TagQuery = None,
        status: FromQuery[DeviceStatus | None] = None,
        name: NameQuery = None,
    ) -> DevicePage:
        """Devices by name, a page at a time; filters combine with AND."""
        after = name_cursor(cursor)
        async with ctx.db.pool.acquire() as conn:
            rows = await store.list_devices(
                conn,
                limit=limit + 1,
                after=after,
                site=site,
                role=role,
                platform=platform,
                tags=tag or (),
                status=status,
                name=name,
                sites=request.user.sites,
            )
        more = len(rows) > limit
        items = [summary_from_row(r) for r in rows[:limit]]
        return DevicePage(
            items=items, next_cursor=next_name_cursor(items[-1].name) if more else None
        )

    @get("/{device_id:int}", summary="One device", responses=responses(404))
    async def device(
        self, ctx: Ctx, request: Request[Principal, Any, Any], device_id: Id
    ) -> DeviceDetail:
        """The device, its facts, its poll health and its interfaces' newest values."""
        now = datetime.now(UTC)
        lookback = max(timedelta(minutes=15), ctx.settings.poller.interval * 3)
        hub = ctx.hub
        async with hub.last.connection() if hub is not None else ctx.db.pool.acquire() as conn:
            row = await device_detail_counted(conn, device_id)
            if row is None or not request.user.sees(row["site"]):
                raise NotFoundException(f"device {device_id} not found")
            interfaces = (
                hub.last.interfaces(device_id, row["series_count"], now - lookback, now)
                if hub is not None and hub.last.usable()
                else None
            )
            if interfaces is None:
                values = await store.interface_values(
                    conn, device_id, list(INTERFACE_METRICS), now - lookback, now
                )
                interfaces = interfaces_from_rows(values)
        return detail_from_row(row, interfaces)

    @post(
        "/",
        summary="Create a device",
        guards=[requires("operator")],
        responses=responses(404, 409),
    )
    async def create(
        self, ctx: Ctx, request: Request[Principal, Any, Any], data: StrictJSONBody[DeviceCreate]
    ) -> DeviceSummary:
        """A device that no sync owns (the inventory's own hosts come from the inventory).
        A name taken: 409; for a token limited to sites, a name taken outside them: 404
        (the device is not there for it)."""
        user = request.user
        check_site(user, data.site, f"site {data.site!r}")
        fields = {f: getattr(data, f) for f in data.__struct_fields__}
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            device_id = await store.create_device(conn, fields)
            if device_id is None:
                exists, site = await store.device_site(conn, data.name)
                if exists and not user.sees(site):
                    # The name is another site's device: not there for this token.
                    raise NotFoundException(f"the device name {data.name!r} is not available")
                raise Conflict(f"a device named {data.name!r} exists")
            row = await store.device_detail(conn, device_id)
            after = summary_from_row(row)
            await record_audit(
                conn,
                actor_of(request),
                "create",
                "device",
                str(device_id),
                None,
                after,
                sites=audit_sites(after.site),
            )
        return after

    @patch(
        "/{device_id:int}",
        summary="Change a device",
        guards=[requires("operator")],
        responses=responses(404, 409),
    )
    async def update(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        device_id: Id,
        data: StrictJSONBody[DeviceUpdate],
    ) -> DeviceSummary:
        changes = data.changes()
        if "site" in changes:
            check_site(request.user, changes["site"], f"site {changes['site']!r}")  # type: ignore[arg-type]
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            row = await _locked_row(conn, request.user, device_id)
            _writable(row)
            before = summary_from_row(row)
            await store.update_device(conn, device_id, changes)
            after = summary_from_row(await store.device_detail(conn, device_id))
            await record_audit(
                conn,
                actor_of(request),
                "update",
                "device",
                str(device_id),
                before,
                after,
                sites=audit_sites(before.site, after.site),
            )
            if "site" in changes:
                # Live-feed hubs hold each series' device site for scoping: refresh it.
                await publish_control(conn, "device_changed", device=row["name"])
        return after

    @delete(
        "/{device_id:int}",
        summary="Delete a device and everything it measured",
        guards=[requires("operator")],
        responses=responses(404, 409),
    )
    async def remove(self, ctx: Ctx, request: Request[Principal, Any, Any], device_id: Id) -> None:
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            row = await _locked_row(conn, request.user, device_id)
            _writable(row, deleting=True)
            before = summary_from_row(row)
            await store.delete_device(conn, device_id)
            await record_audit(
                conn,
                actor_of(request),
                "delete",
                "device",
                str(device_id),
                before,
                None,
                sites=audit_sites(before.site),
            )
            # Writers in other processes drop their series ids on commit; this one now.
            await publish_control(conn, "series_forget", device=row["name"])
        if isinstance(ctx.core, LocalCore) and ctx.core.writer is not None:
            ctx.core.writer.series.clear()  # a writer in this process: now, not at NOTIFY
        if ctx.hub is not None:
            ctx.hub.forget_series()
