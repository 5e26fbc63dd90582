"""``netmon``: the root command, its global options and the commands that are not a group."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from netmon import __version__
from netmon.config import Settings, load_settings
from netmon.errors import (
    ConfigError,
    DatabaseUnavailableError,
    EmbeddedDatabaseError,
    NetmonError,
    SchemaError,
)
from netmon.logs import configure_logging

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="netmon",
    help=(
        "Network monitoring on Nornir, PostgreSQL and Litestar.\n\n"
        "Settings come from netmon.yaml (or --config / $NETMON_CONFIG), overridden by\n"
        "NETMON_* environment variables, e.g. NETMON_DATABASE__URL=postgresql://... .\n"
        "Without a database URL netmon runs its own embedded PostgreSQL in the data dir.\n\n"
        "Examples:\n\n"
        "  netmon run                      # everything, embedded database\n\n"
        "  netmon db status                # which migrations are applied\n\n"
        "  netmon -c prod.yaml db maintain # partitions, rollups, retention now"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

EXIT_CONFIG = 2
EXIT_DATABASE = 3
EXIT_SCHEMA = 4


class _State:
    config: Path | None = None
    log_level: str | None = None
    log_format: str | None = None
    settings: Settings | None = None


state = _State()


@app.callback()
def root(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file (default: ./netmon.yaml)."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error (overrides log.level).")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="json, console or auto (JSON unless on a terminal).")
    ] = None,
) -> None:
    # Each invocation reads its own config: a caller running the app twice in one process
    # (a test, a script) must not get the first invocation's settings.
    state.config = config
    state.log_level = log_level
    state.log_format = log_format
    state.settings = None


def settings() -> Settings:
    """Load settings once per invocation; a bad config exits 2 with the reason."""
    if state.settings is None:
        try:
            loaded = load_settings(state.config)
            if state.log_level or state.log_format:
                log = loaded.log.model_copy(
                    update={
                        k: v
                        for k, v in (("level", state.log_level), ("format", state.log_format))
                        if v
                    }
                )
                loaded = loaded.model_copy(update={"log": log})
        except ConfigError as exc:
            typer.echo(f"netmon: configuration error\n{exc}", err=True)
            raise typer.Exit(EXIT_CONFIG) from None
        configure_logging(loaded.log.level, loaded.log.format)
        state.settings = loaded
    return state.settings


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; turn netmon's errors into one line and an exit code."""
    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        typer.echo(f"netmon: configuration error\n{exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except (DatabaseUnavailableError, EmbeddedDatabaseError) as exc:
        typer.echo(f"netmon: database unavailable: {exc}", err=True)
        raise typer.Exit(EXIT_DATABASE) from None
    except SchemaError as exc:
        typer.echo(f"netmon: schema: {exc}", err=True)
        raise typer.Exit(EXIT_SCHEMA) from None
    except NetmonError as exc:
        typer.echo(f"netmon: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def version() -> None:
    """Print netmon's version."""
    typer.echo(f"netmon {__version__}")


LabOption = Annotated[
    bool | None,
    typer.Option(
        "--lab/--no-lab",
        help="Start the built-in lab of simulated SNMPv3 devices and poll it (lab.enabled).",
    ),
]
LabDevicesOption = Annotated[
    int | None, typer.Option(help="How many lab devices (lab.devices, default 20).")
]


def _with_lab(lab: bool | None, lab_devices: int | None) -> Settings:
    loaded = settings()
    update: dict[str, Any] = {}
    if lab is not None:
        update["enabled"] = lab
    if lab_devices is not None:
        update["devices"] = lab_devices
    if not update:
        return loaded
    merged = loaded.lab.model_validate({**loaded.lab.model_dump(), **update})
    return loaded.model_copy(update={"lab": merged})


@app.command()
def run(lab: LabOption = None, lab_devices: LabDevicesOption = None) -> None:
    """Run netmon's main job: database, migrations, write path, maintenance, the poller.

    The poller polls every host of the inventory (poller.inventory, default ./inventory)
    on its interval. With --lab, netmon also starts its built-in lab of simulated SNMPv3
    devices on 127.0.0.1 and polls that: real data within a minute, nothing to set up.
    SIGHUP re-reads the inventory without restarting polls. Stops cleanly on Ctrl-C or
    SIGTERM: polls in flight finish, accepted samples are written (or stay in the on-disk
    spool for the next start) and the embedded database is shut down.

    Examples:

      netmon run --lab                   # embedded database, 20 lab devices

      netmon run --lab --lab-devices 500

      NETMON_DATABASE__URL=postgresql://... netmon -c prod.yaml run
    """
    from netmon.service import Service

    run_async(Service(_with_lab(lab, lab_devices), config=state.config).run_until_stopped())


@app.command()
def poller(lab: LabOption = None, lab_devices: LabDevicesOption = None) -> None:
    """Run the poller and its write path alone (no API): for several pollers sharing one
    database, each with its own inventory and data dir (its own spool).

    Example:

      netmon -c poller-east.yaml poller
    """
    from netmon.service import Service

    run_async(Service(_with_lab(lab, lab_devices), api=False).run_until_stopped())


def _register_groups() -> None:
    from netmon.cli.alerts import alerts_app
    from netmon.cli.api import token_app
    from netmon.cli.chaos import chaos_app
    from netmon.cli.configs import configs_app
    from netmon.cli.db import db_app
    from netmon.cli.inventory import devices_app, inventory_app
    from netmon.cli.lab import app as lab_app

    app.add_typer(alerts_app, name="alerts")
    app.add_typer(chaos_app, name="chaos")
    app.add_typer(configs_app, name="configs")
    app.add_typer(db_app, name="db")
    app.add_typer(devices_app, name="devices")
    app.add_typer(inventory_app, name="inventory")
    app.add_typer(lab_app, name="lab")
    app.add_typer(token_app, name="token")


_register_groups()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
