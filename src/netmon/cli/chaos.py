"""``netmon chaos``: is netmon production ready? Run the faults and count what survived."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

chaos_app = typer.Typer(
    help="Chaos experiments: faults injected into a running netmon, and what it lost.",
    no_args_is_help=True,
)

# Wide enough for the table when stderr is a file or a CI log, not a terminal.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# The order of a full run: cheap and harmless first, the database faults after, the
# machine-wide stress last (they slow everything else that runs on the machine).
ORDER = (
    "latency-devices",
    "latency-database",
    "database-outage",
    "database-outage-10min",
    "database-freeze",
    "alerts-during-outage",
    "poller-restart",
    "poller-sigkill",
    "poller-sigkill-during-outage",
    "api-restart-under-load",
    "cpu-exhaustion",
    "memory-pressure",
    "disk-saturation",
)


def _pick(names: list[str] | None, quick: bool) -> list[str]:
    from netmon.chaos.runner import available

    found = available()
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise typer.BadParameter(
                f"no experiment {', '.join(unknown)}; there are: {', '.join(found)}",
                param_hint="NAME",
            )
        return names
    ordered = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    if quick:
        # The 10-minute outage is the 60 s one, longer; --quick shortens both to the same.
        ordered = [n for n in ordered if n != "database-outage-10min"]
    return ordered


@chaos_app.command("list")
def list_() -> None:
    """List the experiments netmon ships, with what each proves."""
    from netmon.chaos.runner import available, load

    for name, path in available().items():
        experiment = load(path)
        typer.echo(f"{name:30} {experiment.get('title', '')}")


@chaos_app.command()
def run(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME]...", help="Experiments to run (default: all)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Short faults (a 10 s outage): what CI runs.")
    ] = False,
    devices: Annotated[
        int | None, typer.Option(help="Lab devices (default 20 with --quick, else 200).")
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(help="Poll interval in seconds (default 20 with --quick, else 30)."),
    ] = None,
    interfaces: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            help="Interfaces per lab device (default 16 with --quick, else the lab's 8..48).",
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where the rig, journals and report go (default: a new temp dir)."),
    ] = None,
    target_file: Annotated[
        Path | None,
        typer.Option(
            "--target",
            help="A target.json (from `netmon chaos target`, or a rig's) instead of "
            "starting a rig.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per experiment on stdout.")
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            help="Keep the work folder even when every experiment passed, and the rig's "
            "database, stopped, to query afterwards (the report says how to start it)."
        ),
    ] = False,
) -> None:
    """Start a private netmon (its own PostgreSQL, the lab, relays before both), run the
    experiments one after another, and print what each lost: per experiment

      produced N, stored once N, missing 0, duplicated 0, false unreachable 0, recovery T s

    "produced" is every device's every poll cycle that the schedule says was due in the
    experiment's window; "stored once" those the database holds exactly once, complete.
    The count comes from the database, not from netmon's own counters. Exit 1 when any
    experiment failed. The Chaos Toolkit journals and a Markdown report stay in the work
    folder.

    Examples:

      netmon chaos run --quick                       # every experiment, short faults (~12 min)

      netmon chaos run database-outage cpu-exhaustion

      netmon chaos run --json database-outage | jq .missing
    """
    from netmon.chaos.report import line, markdown, table
    from netmon.chaos.rig import Rig, RigOptions, warm_up_s
    from netmon.chaos.runner import Outcome, run_all
    from netmon.chaos.target import Target

    picked = _pick(names, quick)
    # SIGTERM as Ctrl-C: the rig's processes are stopped on the way out either way.
    signal.signal(signal.SIGTERM, _interrupt)
    count = devices or (20 if quick else 200)
    every = interval or (20.0 if quick else 30.0)
    # A poll of a lab device with n interfaces is about n / 2.6 + 4 SNMP round trips in a
    # row (16 interfaces: 11; 48: 22): with 1 s more per round trip (latency-devices) a
    # 48-port device needs more than the quick interval, and a poll longer than its
    # interval skips the next one. The quick rig's devices are 16-port switches; the full
    # run keeps the lab's 8..48 ports with a 30 s interval.
    ports = interfaces if interfaces is not None else (16 if quick else None)
    folder = workdir or Path(tempfile.mkdtemp(prefix="netmon-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    rig: Rig | None = None
    outcomes: list[Outcome] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        overall = progress.add_task("starting the rig", total=len(picked))
        try:
            if target_file is not None:
                the_target = Target.load(target_file)
            else:
                rig = Rig(
                    RigOptions(
                        workdir=folder,
                        devices=count,
                        interval_s=every,
                        quick=quick,
                        interfaces=ports,
                    )
                )
                what = f"starting the rig: PostgreSQL, relays, {count} lab devices, netmon"
                progress.update(overall, description=what)
                the_target = rig.start()
                progress.update(overall, description="warming up: three poll cycles")
                time.sleep(warm_up_s(every))
            current = {"name": ""}

            def started(name: str, title: str) -> None:
                current["name"] = name
                progress.update(overall, description=f"[bold]{name}[/]: {title}")

            def activity(what: str) -> None:
                progress.update(overall, description=f"[bold]{current['name']}[/]: {what}")

            def done(o: Outcome) -> None:
                progress.advance(overall)
                mark = "[green]passed[/]" if o.passed else "[red]FAILED[/]"
                progress.console.print(f"{mark} {o.name}: {line(o)}")
                for reason in o.reasons:
                    progress.console.print(f"       [red]{reason}[/]")
                if as_json:
                    typer.echo(json.dumps(o.as_json()))

            outcomes = run_all(
                the_target, picked, on_start=started, on_activity=activity, on_done=done
            )
        finally:
            progress.update(overall, description="stopping the rig")
            if rig is not None:
                rig.stop(keep_database=keep)
    report = folder / "report.md"
    report.write_text(
        markdown(outcomes, quick=quick, devices=count, interval_s=every, interfaces=ports)
    )
    console.print(table(outcomes))
    console.print(f"report: {report}")
    if keep and rig is not None and rig.postgres is not None and rig.postgres.cluster:
        console.print(
            f"database kept: {rig.postgres.start_command()}, then psql {rig.postgres.url}"
        )
    failed = [o for o in outcomes if not o.passed and o.status != "skipped"]
    if not failed and not keep and workdir is None:
        shutil.rmtree(folder / "postgres", ignore_errors=True)  # the bulk of it
    raise typer.Exit(1 if failed else 0)


@chaos_app.command()
def target(
    api_url: Annotated[str, typer.Option(help="The deployment's API, e.g. http://nms:8080.")],
    database_url: Annotated[
        str,
        typer.Option(
            envvar="NETMON_CHAOS_DATABASE_URL",
            help="Its database, read-only use: the judge counts samples there.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for target.json, marks and journals.")],
    interval: Annotated[float, typer.Option(help="Its poll interval in seconds.")] = 60.0,
    site: Annotated[str | None, typer.Option(help="Judge only the devices of this site.")] = None,
) -> None:
    """Describe a running deployment for `netmon chaos run --target`: its API and database,
    and its devices (from the database). The API token comes from $NETMON_TOKEN.

    Against a deployment netmon did not start, the experiments that need a part of their
    own (the private PostgreSQL, the relays, the lab, netmon's process) are reported as
    skipped; the machine stresses (cpu-exhaustion, memory-pressure, disk-saturation with
    no outage) run on this machine, so run the command on the deployment's host.

    Example:

      NETMON_TOKEN=... netmon chaos target --api-url http://127.0.0.1:8080 \\
          --database-url postgresql://netmon@db/netmon --out /tmp/prod-chaos
      netmon chaos run --target /tmp/prod-chaos/target.json cpu-exhaustion
    """
    import asyncio
    import os

    import asyncpg

    from netmon.chaos.target import Target

    async def names() -> list[str]:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT name FROM devices WHERE $1::text IS NULL OR site = $1 ORDER BY name",
                site,
            )
        finally:
            await conn.close()
        return [r["name"] for r in rows]

    out.mkdir(parents=True, exist_ok=True)
    devices = asyncio.run(names())
    if not devices:
        raise typer.BadParameter("the database has no devices to judge", param_hint="--site")
    t = Target(
        workdir=out,
        api_url=api_url.rstrip("/"),
        database_url=database_url,
        devices=dict.fromkeys(devices, interval),
        admin_token=os.environ.get("NETMON_TOKEN"),
        stress_dir=out / "stress",
    )
    (out / "stress").mkdir(exist_ok=True)
    typer.echo(str(t.save()))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _mount_relay() -> None:
    from netmon.cli.chaos_relay import relay

    chaos_app.command("relay")(relay)


_mount_relay()
