"""``netmon api`` and ``netmon token``: serve the API alone, manage its tokens."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from netmon.cli.main import app, run_async, settings, state
from netmon.config import Role
from netmon.durations import parse_duration
from netmon.errors import ConfigError
from netmon.store.audit import Actor, audit_sites, record_audit
from netmon.store.database import Database
from netmon.store.schema import upgrade
from netmon.times import TIME_MAX, bounded_utc

__all__ = ["token_app"]

token_app = typer.Typer(
    help="API tokens: create (shown once), list, revoke.\n\n"
    "Roles: viewer reads; operator also changes devices and reloads the inventory; "
    "admin also reads the audit log and manages tokens.",
    no_args_is_help=True,
)


@app.command()
def api(
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes sharing the port (api.workers, default 1)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Listen address (api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (api.port, default 8080).")] = None,
) -> None:
    """Serve the API alone, on a database that pollers write to (no poller here).

    Applies pending migrations first. OpenAPI at /schema, health at /health/live and
    /health/ready, Prometheus at /metrics.

    Examples:

      netmon api --port 8080

      NETMON_DATABASE__URL=postgresql://db/netmon netmon api --workers 4
    """
    from pathlib import Path

    from netmon.api.server import REUSE_PORT_ENV, ApiServer, serve_workers
    from netmon.core_control import CORE_SOCKET_ENV, RemoteCore

    loaded = settings()
    update = {
        k: v for k, v in (("workers", workers), ("host", host), ("port", port)) if v is not None
    }
    if update:
        merged = loaded.api.model_validate({**loaded.api.model_dump(), **update})
        loaded = loaded.model_copy(update={"api": merged})
    worker_of_supervisor = os.environ.get(REUSE_PORT_ENV) == "1"

    async def migrate() -> None:
        async with Database(loaded.database, loaded.data_dir) as db:
            await upgrade(db)

    if not worker_of_supervisor:  # the supervisor migrated before it started us
        run_async(migrate())
    if loaded.api.workers > 1:
        config = str(state.config.resolve()) if state.config else None
        raise typer.Exit(serve_workers(loaded, config))

    async def serve() -> None:
        import signal

        from netmon.api.context import ApiContext

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Started by `netmon run`: its core (poller, writer, alerting) answers here.
        core_path = os.environ.get(CORE_SOCKET_ENV)
        core = RemoteCore(Path(core_path)) if core_path else None
        ctx = ApiContext(settings=loaded, db=Database(loaded.database, loaded.data_dir), core=core)
        server = ApiServer(ctx, manage_db=True, reuse_port=worker_of_supervisor)
        await server.start()
        orphaned = asyncio.create_task(_until_orphaned(stop)) if worker_of_supervisor else None
        try:
            await stop.wait()
        finally:
            if orphaned is not None:
                orphaned.cancel()
            await server.stop()

    # An API-only process: uvloop's event loop (asyncpg and uvicorn are built for it).
    # `netmon run` keeps asyncio's own, as the poller's SNMP engine runs its own loops.
    import uvloop

    uvloop.install()
    run_async(serve())


async def _until_orphaned(stop: asyncio.Event) -> None:
    """A worker whose supervisor is gone (killed, not stopped) stops too, rather than hold
    the port: its parent is then no longer the one that started it."""
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            stop.set()


def _expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        length = parse_duration(text)
    except ValueError:
        pass  # then it should be a date
    else:
        try:
            return datetime.now(UTC) + length
        except OverflowError:
            return TIME_MAX
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--expires: expected a duration (90d, 12h) or an ISO date, not {text!r}"
        ) from None
    return bounded_utc(when if when.tzinfo else when.replace(tzinfo=UTC))


@token_app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="viewer, operator or admin.")],
    name: Annotated[
        str | None, typer.Option(help="Who or what uses it (shown in the audit log).")
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="A duration (90d) or a date (2027-06-30); default never.")
    ] = None,
    site: Annotated[
        list[str] | None, typer.Option(help="Limit the token to a site (repeatable).")
    ] = None,
) -> None:
    """Create a token and print it. It is shown this once: only a salted hash is kept.

    Examples:

      netmon token create --role viewer --name grafana --expires 365d

      netmon token create --role operator --name noc-lon --site lon1 --site lon2
    """
    from netmon.store.tokens import create_token

    loaded = settings()

    async def go() -> str:
        when = _expiry(expires)
        if when is not None and when <= datetime.now(UTC):
            raise ConfigError("--expires: that is in the past")
        async with Database(loaded.database, loaded.data_dir) as db:
            await upgrade(db)
            async with db.pool.acquire() as conn, conn.transaction():
                row, token = await create_token(
                    conn,
                    name=name or f"{role}-token",
                    role=role,
                    created_by="cli",
                    pepper=loaded.api.resolved_pepper(),
                    sites=site or None,
                    expires_at=when,
                )
                await record_audit(
                    conn,
                    Actor(name="cli"),
                    "create",
                    "token",
                    str(row.id),
                    None,
                    _public(row),
                    sites=audit_sites(row.sites),
                )
        return token

    token = run_async(go())
    typer.echo(token)
    typer.echo("Keep it now: netmon cannot show it again.", err=True)


def _public(row: object) -> dict[str, object]:
    import msgspec

    data: dict[str, object] = msgspec.to_builtins(row)
    return data


@token_app.command("list")
def list_() -> None:
    """List tokens (never their secrets)."""
    from netmon.store.tokens import list_tokens

    loaded = settings()

    async def go() -> list[object]:
        async with Database(loaded.database, loaded.data_dir) as db:
            await upgrade(db)
            async with db.pool.acquire() as conn:
                return list(await list_tokens(conn))

    rows = run_async(go())
    table = Table("id", "name", "role", "sites", "created", "expires", "last used", "state")
    now = datetime.now(UTC)
    for row in rows:
        r = _public(row)
        expires_at = getattr(row, "expires_at", None)
        state_ = (
            "revoked"
            if r["revoked_at"]
            else "expired"
            if expires_at is not None and expires_at <= now
            else "active"
        )
        table.add_row(
            str(r["id"]),
            str(r["name"]),
            str(r["role"]),
            ", ".join(r["sites"]) if r["sites"] else "all",  # type: ignore[arg-type]
            str(r["created_at"])[:19],
            str(r["expires_at"] or "never")[:19],
            str(r["last_used_at"] or "never")[:19],
            state_,
        )
    Console().print(table)


@token_app.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(help="The id from `netmon token list`.")],
) -> None:
    """Revoke a token; it stops working within api.token_cache (5 s), and its open live
    feeds are closed within the same time."""
    from netmon.store.notify import publish_control
    from netmon.store.tokens import get_token, revoke_token

    loaded = settings()

    async def go() -> str:
        async with (
            Database(loaded.database, loaded.data_dir) as db,
            db.pool.acquire() as conn,
            conn.transaction(),
        ):
            before = await get_token(conn, token_id, lock=True)
            if before is None:
                return "missing"
            row = await revoke_token(conn, token_id)
            if row is None:
                return "revoked already"
            await record_audit(
                conn,
                Actor(name="cli"),
                "revoke",
                "token",
                str(token_id),
                None,
                _public(row),
                sites=audit_sites(row.sites),
            )
            await publish_control(conn, "token_revoked", id=token_id)  # feeds close at once
            return "revoked"

    outcome = run_async(go())
    if outcome == "missing":
        typer.echo(f"netmon: no token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"token {token_id} {outcome}")
