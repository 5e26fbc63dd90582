"""``netmon inventory`` and ``netmon devices``: the inventory sync now, and purging the
devices it retired."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from netmon.cli.main import run_async, settings
from netmon.durations import parse_duration
from netmon.inventory.sync import InventorySync, SyncReport
from netmon.poller.registry import TaskRegistry
from netmon.store.database import Database
from netmon.store.inventory import purge_retired, retire_poller
from netmon.store.notify import publish_control

__all__ = ["devices_app", "inventory_app"]

inventory_app = typer.Typer(
    help=(
        "The inventory: the YAML folder (poller.inventory) or NetBox (inventory.netbox).\n\n"
        "  netmon inventory sync --dry-run         # what a sync would change, as a table\n\n"
        "  netmon inventory sync --dry-run --json  # {added, changed, retired, unchanged}\n\n"
        "  netmon inventory sync                   # apply now; running pollers re-read\n\n"
        "A device that leaves the inventory is retired (not polled, its alerts resolved,\n"
        "kept until `netmon devices purge`). A NetBox read that would retire more than\n"
        "inventory.retire_guard of the devices retires nothing; --force lifts that once."
    ),
    no_args_is_help=True,
)
devices_app = typer.Typer(
    help="Devices: purge the ones the inventory retired.\n\n"
    "  netmon devices purge --dry-run    # which would go\n\n"
    "  netmon devices purge              # delete those retired longer than "
    "inventory.purge_after (30 days)",
    no_args_is_help=True,
)

console = Console()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"netmon: {message}", err=True)
    return typer.Exit(1)


@inventory_app.command("sync")
def sync_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='One JSON object: {"added": [names], "changed": [names], "retired": [names], '
            '"unchanged": N}.',
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Retire even past inventory.retire_guard, once.")
    ] = False,
) -> None:
    """Read the inventory and make the devices match it, as this config's poller would
    (same poller identity). Skipped hosts are listed with the reason; exit 1 if the
    inventory could not be read."""
    from netmon.poller.service import make_source

    s = settings()

    async def go() -> SyncReport:
        registry = TaskRegistry.discover(s.poller.task_modules)
        source = make_source(s, s.poller.inventory, registry)
        async with Database(s.database, s.data_dir) as db:
            try:
                sync = InventorySync(s, db, source)
                report = await sync.reconcile(dry_run=dry_run, force=force, strict=True)
                if report.ok and not dry_run:
                    async with db.pool.acquire() as conn:
                        await publish_control(conn, "inventory_reload")
                return report
            finally:
                await source.close()

    report = run_async(go())
    if not report.ok:
        raise _fail(report.error or "the inventory could not be read")
    if as_json:
        typer.echo(json.dumps(report.summary()))
        return
    _print(report)


def _print(report: SyncReport) -> None:
    result = report.result
    assert result is not None
    diff = result.diff
    verb = "would be" if report.dry_run else "were"
    table = Table("change", "device", "detail")
    for host in sorted(diff.added, key=lambda h: h.name):
        table.add_row("[green]add[/]", host.name, _where(host.site, host.address, host.note))
    for change in sorted(diff.changed, key=lambda c: c.host.name):
        fields = ", ".join(
            f"{f}: {getattr(change.row, f)!r} -> {_value(change.host, f)!r}" for f in change.fields
        )
        name = change.host.name
        if change.row.name != name:
            name = f"{change.row.name} -> {name}"
        table.add_row("[yellow]change[/]", name, fields)
    for row in sorted(diff.retired, key=lambda r: r.name):
        table.add_row("[red]retire[/]", row.name, "left the inventory")
    for skipped in diff.skipped:
        table.add_row("[magenta]skip[/]", skipped.name, f"{skipped.reason}: {skipped.message}")
    if table.row_count:
        console.print(table)
    console.print(
        f"{len(diff.added)} {verb} added, {len(diff.changed)} changed, "
        f"{len(diff.retired)} retired, {len(diff.unchanged)} unchanged, "
        f"{len(diff.skipped)} skipped ({report.fetched} read in {report.seconds:.1f} s)"
    )
    if report.held:
        console.print(f"[bold red]held:[/] {report.held} (--force to retire them anyway)")


def _value(host: object, field: str) -> object:
    value = getattr(host, field)
    return list(value) if isinstance(value, tuple) else value


def _where(site: str | None, address: str | None, note: str) -> str:
    return ", ".join(x for x in (site, address, note) if x)


@inventory_app.command("retire-poller")
def retire_poller_command(
    poller: Annotated[str, typer.Argument(help="The identity of a poller that is gone.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List them; change nothing.")] = False,
) -> None:
    """Retire every device a poller holds, when that poller is gone for good (its
    inventory.poller_id changed, or its data_dir moved, which changes the default one).
    Another poller's sync then takes those devices over by name, with their history."""
    s = settings()

    async def go() -> list[str]:
        async with (
            Database(s.database, s.data_dir) as db,
            db.pool.acquire() as conn,
            conn.transaction(),
        ):
            return await retire_poller(conn, poller, dry_run=dry_run)

    names = run_async(go())
    for name in names:
        typer.echo(name)
    verb = "would be retired" if dry_run else "retired"
    typer.echo(f"{len(names)} devices of poller {poller!r} {verb}", err=True)


@devices_app.command("purge")
def purge_command(
    older_than: Annotated[
        str | None,
        typer.Option(help="Retired longer than this (default: inventory.purge_after), e.g. 7d."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List them; delete nothing.")] = False,
) -> None:
    """Delete devices the inventory retired, with everything they measured."""
    s = settings()
    try:
        grace = parse_duration(older_than) if older_than else s.inventory.purge_after
    except ValueError as exc:
        raise _fail(f"--older-than: {exc}") from None
    if grace < timedelta(0):
        raise _fail("--older-than: must not be negative")

    async def go() -> list[tuple[int, str]]:
        async with (
            Database(s.database, s.data_dir) as db,
            db.pool.acquire() as conn,
            conn.transaction(),
        ):
            return await purge_retired(conn, grace, dry_run=dry_run)

    purged = run_async(go())
    for _, name in purged:
        typer.echo(name)
    verb = "would be purged" if dry_run else "purged"
    typer.echo(f"{len(purged)} retired devices {verb} (retired more than {grace} ago)", err=True)
