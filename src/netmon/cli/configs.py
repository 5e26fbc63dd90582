"""``netmon configs``: configuration backups from the command line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from netmon.cli.main import run_async, settings
from netmon.errors import QueryError
from netmon.store import configs as store
from netmon.store.database import Database
from netmon.store.notify import publish_control

__all__ = ["configs_app"]

configs_app = typer.Typer(
    help=(
        "Configuration backups, read over NETCONF or CLI by the tasks netconf_config and\n"
        "cli_config: secrets redacted, a version per change.\n\n"
        "  netmon configs list lab-0002     # versions, newest first\n\n"
        "  netmon configs show 12           # one version's text\n\n"
        "  netmon configs diff 12           # against the version before\n\n"
        "  netmon configs backup lab-0002   # the poller reads it now\n\n"
        "The same through the API: /api/v1/devices/{id}/configs, /api/v1/configs/{id}."
    ),
    no_args_is_help=True,
)

console = Console()


def _db() -> Database:
    return Database(settings().database, settings().data_dir)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"netmon: {message}", err=True)
    return typer.Exit(1)


@configs_app.command("list")
def list_command(
    device: Annotated[str, typer.Argument(help="The device's name.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many versions.")] = 20,
) -> None:
    """A device's configuration versions, newest first, with the lines changed since the
    version before."""

    async def go() -> list[store.ConfigVersion] | None:
        async with _db() as db, db.pool.acquire() as conn:
            device_id = await conn.fetchval("SELECT id FROM devices WHERE name = $1", device)
            if device_id is None:
                return None
            return await store.list_versions(conn, device_id, limit=limit)

    versions = run_async(go())
    if versions is None:
        raise _fail(f"no device named {device!r}")
    table = Table("id", "source", "via", "first read", "last read", "+lines", "-lines", "sha256")
    for v in versions:
        table.add_row(
            str(v.id),
            v.source,
            v.protocol,
            v.collected_at.isoformat(" ", "seconds"),
            v.last_seen_at.isoformat(" ", "seconds"),
            str(v.lines_added),
            str(v.lines_removed),
            v.sha256[:12],
        )
    console.print(table)
    if not versions:
        typer.echo(f"no configuration stored for {device} yet")


@configs_app.command("show")
def show_command(version_id: Annotated[int, typer.Argument(help="A version id.")]) -> None:
    """One version's text, as the device returned it, secrets redacted."""

    async def go() -> store.ConfigVersion | None:
        async with _db() as db, db.pool.acquire() as conn:
            return await store.get_version(conn, version_id)

    version = run_async(go())
    if version is None or version.content is None:
        raise _fail(f"configuration version {version_id} not found")
    typer.echo(version.content, nl=not version.content.endswith("\n"))


@configs_app.command("diff")
def diff_command(
    version_id: Annotated[int, typer.Argument(help="The newer version.")],
    against: Annotated[
        int | None, typer.Option(help="The version to diff from (default: the one before).")
    ] = None,
) -> None:
    """The unified diff between two versions of one device and source."""

    async def go() -> str:
        async with _db() as db, db.pool.acquire() as conn:
            new = await store.get_version(conn, version_id)
            if new is None:
                raise store.VersionNotFoundError(f"configuration version {version_id} not found")
            from_id = against if against is not None else new.previous_id
            old = await store.get_version(conn, from_id) if from_id is not None else None
            if from_id is not None and old is None:
                raise store.VersionNotFoundError(f"configuration version {from_id} not found")
            return store.version_diff(old, new).text

    try:
        text = run_async(go())
    except QueryError as exc:
        raise _fail(str(exc)) from None
    typer.echo(text or "(no difference)", nl=not text.endswith("\n"))


@configs_app.command("backup")
def backup_command(device: Annotated[str, typer.Argument(help="The device's name.")]) -> None:
    """Ask the poller of DEVICE to read its configuration now (through the database, as
    the API does); `netmon configs list DEVICE` shows the result."""

    async def go() -> bool:
        async with _db() as db, db.pool.acquire() as conn:
            if await conn.fetchval("SELECT id FROM devices WHERE name = $1", device) is None:
                return False
            await publish_control(conn, "config_backup", device=device)
            return True

    if not run_async(go()):
        raise _fail(f"no device named {device!r}")
    typer.echo(f"asked the pollers to back up {device}")
