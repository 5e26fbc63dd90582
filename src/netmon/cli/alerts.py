"""``netmon alerts``: check a rules file, list alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from netmon.alerts.model import ALERT_SELECT, AlertView, alert_view
from netmon.alerts.rules import Rule, load_rules_file
from netmon.cli.main import run_async, settings
from netmon.errors import ConfigError
from netmon.store.database import Database

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    help=(
        "Alert rules and alerts.\n\n"
        "  netmon alerts check rules.yaml   # check a rules file (as promtool check rules)\n\n"
        "  netmon alerts list               # open alerts, most severe first\n\n"
        "Rules, silences and webhooks are managed in the rules file (alerts.rules_file)\n"
        "and through the API (/api/v1/rules, /silences, /webhooks); see docs/alerts.md."
    ),
    no_args_is_help=True,
)

console = Console()


@alerts_app.command("check")
def check_command(
    path: Annotated[Path, typer.Argument(help="The rules file (YAML with rules: and silences:).")],
) -> None:
    """Check a rules file without starting anything; exit 2 naming the rule and field of
    the first problem.

    Example:

      netmon alerts check /etc/netmon/rules.yaml
    """
    try:
        content = load_rules_file(path)
    except ConfigError as exc:
        typer.echo(f"netmon: {exc}", err=True)
        raise typer.Exit(2) from None
    table = Table("rule", "kind", "watches", "condition", "for", "severity", "matchers")
    for spec in content.rules:
        rule = Rule.from_spec(spec, "file")
        table.add_row(
            rule.name,
            rule.kind,
            rule.metric + (f" / {rule.divide_by} x {rule.scale:g}" if rule.divide_by else ""),
            _condition(rule),
            f"{rule.for_s:g}s",
            rule.severity,
            ", ".join(str(m) for m in rule.matchers),
        )
    console.print(table)
    typer.echo(f"{path}: {len(content.rules)} rule(s), {len(content.silences)} silence(s): ok")


def _condition(rule: Rule) -> str:
    if rule.kind == "state":
        return rule.state or ""
    if rule.kind == "absent":
        return "no samples"
    if rule.kind == "event":
        return f"event {rule.metric}"
    clear = f" (clears {rule.clear:g})" if rule.clear is not None else ""
    return f"{rule.op} {rule.value:g}{clear}"


@alerts_app.command("list")
def list_command(
    all_states: Annotated[
        bool, typer.Option("--all", help="Resolved alerts too (newest 200).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List open alerts (pending, firing, acknowledged), most severe first."""

    async def go() -> list[AlertView]:
        where = "" if all_states else " WHERE a.state <> 'resolved'"
        sql = (
            ALERT_SELECT
            + where
            + " ORDER BY array_position(ARRAY['critical','major','minor','warning','info'],"
            " a.severity), a.updated_at DESC LIMIT 200"
        )
        async with Database(settings().database, settings().data_dir) as db:
            return [alert_view(r) for r in await db.pool.fetch(sql)]

    alerts = run_async(go())
    if as_json:
        for a in alerts:
            typer.echo(msgspec.json.encode(a).decode())
        return
    table = Table("id", "severity", "state", "device", "rule", "summary", "since")
    for a in alerts:
        state = a.state + (" (flapping)" if a.flapping else "")
        since = a.started_at or a.pending_at
        table.add_row(
            str(a.id),
            a.severity,
            state,
            a.device,
            a.rule,
            a.summary,
            since.isoformat(" ", "seconds"),
        )
    console.print(table)
    if not alerts:
        typer.echo("no open alerts" if not all_states else "no alerts")
