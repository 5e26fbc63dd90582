"""``netmon db``: schema migrations and storage maintenance."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from netmon.cli.main import run_async, settings
from netmon.store.database import Database
from netmon.store.maintenance import MaintenanceReport, maintain
from netmon.store.schema import SchemaStatus, schema_status, upgrade

__all__ = ["db_app"]

db_app = typer.Typer(
    help=(
        "Schema and storage.\n\n"
        "  netmon db upgrade   # apply pending migrations (safe to run any time)\n\n"
        "  netmon db status    # applied and pending migrations\n\n"
        "  netmon db maintain  # create partitions ahead, roll up, drop expired data"
    ),
    no_args_is_help=True,
)

console = Console(stderr=True)


@db_app.command("upgrade")
def upgrade_command() -> None:
    """Apply pending migrations. Idempotent; several processes may run it at once.

    A database already migrated by a newer netmon is refused (exit 4).
    """

    async def go() -> list[str]:
        async with Database(settings().database, settings().data_dir) as db:
            return await upgrade(db)

    applied = run_async(go())
    typer.echo(f"applied {len(applied)} migration(s)" if applied else "schema is current")


@db_app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show which migrations are applied; exit 1 if any is pending or unknown."""

    async def go() -> SchemaStatus:
        async with Database(settings().database, settings().data_dir) as db:
            return await schema_status(db)

    status = run_async(go())
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "current": status.current,
                    "migrations": [
                        {
                            "id": m.id,
                            "description": m.description,
                            "applied_at": m.applied_at.isoformat() if m.applied_at else None,
                        }
                        for m in status.migrations
                    ],
                    "unknown": status.unknown,
                }
            )
        )
    else:
        table = Table("migration", "description", "applied")
        for m in status.migrations:
            table.add_row(m.id, m.description, str(m.applied_at) if m.applied_at else "pending")
        for mid in status.unknown:
            table.add_row(mid, "(unknown: from a newer netmon)", "yes")
        Console().print(table)
    if not status.current:
        raise typer.Exit(1)


@db_app.command("maintain")
def maintain_command() -> None:
    """Create partitions ahead, compute rollups of closed intervals, enforce retention.

    `netmon run` does this on a timer (storage.maintenance_interval); run it by hand after
    changing retention or to backfill rollups. Safe while netmon runs: a second maintainer
    waits for nobody, it just skips.
    """
    progress = Progress(
        TextColumn("[bold]rollup {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def advance(resolution: str, fraction: float) -> None:
        if resolution not in tasks:
            tasks[resolution] = progress.add_task(resolution, total=1.0)
        progress.update(tasks[resolution], completed=fraction)

    async def go() -> MaintenanceReport:
        async with Database(settings().database, settings().data_dir) as db:
            with progress:
                return await maintain(db, settings().storage, progress=advance)

    report = run_async(go())
    if report.skipped:
        typer.echo("skipped: another netmon process is maintaining right now")
        return
    typer.echo(
        f"partitions created: {len(report.created)}, dropped: {len(report.dropped)}, "
        f"deferred: {len(report.deferred)}; rollup rows 5m: {report.rollups.rows_5m}, "
        f"1h: {report.rollups.rows_1h}"
    )
