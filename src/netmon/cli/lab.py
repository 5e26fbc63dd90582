"""``netmon lab``: serve the built-in lab of simulated devices, and break it on demand."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from netmon.durations import parse_duration
from netmon.lab import (
    AUTH_KEY_ENV,
    DEFAULT_AUTH_KEY,
    DEFAULT_PRIV_KEY,
    DEFAULT_SSH_PASSWORD,
    MAX_DEVICES,
    PRIV_KEY_ENV,
    SSH_PASSWORD_ENV,
    Lab,
    device_name,
    send_command,
    write_inventory,
)

__all__ = ["app"]

app = typer.Typer(
    name="lab",
    help=(
        "The built-in lab: simulated SNMPv3 switches on 127.0.0.1, one UDP port each;\n"
        "lab-0002, 0006, ... also serve NETCONF and lab-0003, 0007, ... a CLI over SSH, on\n"
        "the TCP port with the same number.\n\n"
        "Without a command, [bold]netmon lab[/bold] serves the lab until Ctrl-C; the other\n"
        "commands reach a running lab through its control socket.\n\n"
        "Examples:\n\n"
        "  netmon lab                  # 20 devices: lab-0001 on udp/16101, ...\n\n"
        "  netmon lab --devices 500 --write-inventory inventory/lab\n\n"
        "  netmon lab flap lab-0003 --interface 2 --down-for 30s\n\n"
        "  netmon lab config-change lab-0002\n\n"
        "  netmon lab status"
    ),
    rich_markup_mode="rich",
)

console = Console()
errors = Console(stderr=True)

DevicesOption = Annotated[
    int, typer.Option("--devices", "-n", min=1, max=MAX_DEVICES, help="How many devices.")
]
InterfacesOption = Annotated[
    int | None,
    typer.Option(min=1, max=1000, help="Interfaces per device (default: 8..48, fixed per name)."),
]
HostOption = Annotated[str, typer.Option(help="Address the devices listen on.")]
FirstOption = Annotated[
    int,
    typer.Option(
        "--first",
        min=1,
        help="The first device's number (lab-NNNN on base-port + NNNN): labs in several "
        "processes, past one process's open-file limit, number their devices apart.",
    ),
]
BasePortOption = Annotated[
    int,
    typer.Option(min=0, max=65000, help="lab-0001 listens on base-port + 1, and so on."),
]
AuthOption = Annotated[
    str, typer.Option("--auth-protocol", help="sha1 (HMAC-SHA-96) or sha256 (HMAC-SHA-256-192).")
]
InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--write-inventory",
        help="Write hosts.yaml, groups.yaml, defaults.yaml for this lab into DIR, then serve.",
        metavar="DIR",
    ),
]
ControlOption = Annotated[
    Path | None,
    typer.Option("--control", help="The lab's control socket (default: <data dir>/lab.sock)."),
]
DeviceArgument = Annotated[str, typer.Argument(help="Device name, e.g. lab-0003.")]
SnmpOnlyOption = Annotated[
    bool,
    typer.Option("--snmp-only", help="No NETCONF or CLI devices: every device SNMP only."),
]
HostKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--host-key-dir",
        help="Keep the SSH host key here (default: beside the control socket, in lab/).",
        metavar="DIR",
    ),
]


@app.callback(invoke_without_command=True)
def lab(
    ctx: typer.Context,
    devices: DevicesOption = 20,
    first: FirstOption = 1,
    interfaces: InterfacesOption = None,
    host: HostOption = "127.0.0.1",
    base_port: BasePortOption = 16100,
    auth_protocol: AuthOption = "sha1",
    write_inventory_dir: InventoryOption = None,
    control: ControlOption = None,
    snmp_only: SnmpOnlyOption = False,
    host_key_dir: HostKeyOption = None,
) -> None:
    if ctx.invoked_subcommand is None:
        _serve(
            devices,
            interfaces,
            host,
            base_port,
            auth_protocol,
            write_inventory_dir,
            control,
            snmp_only,
            host_key_dir,
            first,
        )


@app.command()
def serve(
    devices: DevicesOption = 20,
    first: FirstOption = 1,
    interfaces: InterfacesOption = None,
    host: HostOption = "127.0.0.1",
    base_port: BasePortOption = 16100,
    auth_protocol: AuthOption = "sha1",
    write_inventory_dir: InventoryOption = None,
    control: ControlOption = None,
    snmp_only: SnmpOnlyOption = False,
    host_key_dir: HostKeyOption = None,
) -> None:
    """Serve the lab until Ctrl-C or SIGTERM (what [bold]netmon lab[/bold] alone does).

    Keys: $NETMON_LAB_AUTH_KEY and $NETMON_LAB_PRIV_KEY, else the published lab-only
    defaults netmon-lab-auth-key / netmon-lab-priv-key. SSH password (NETCONF and CLI
    devices): $NETMON_LAB_SSH_PASSWORD, else netmon-lab-ssh.

    Example:

      netmon lab serve --devices 5000 --interfaces 8 --write-inventory /tmp/lab-inventory
    """
    _serve(
        devices,
        interfaces,
        host,
        base_port,
        auth_protocol,
        write_inventory_dir,
        control,
        snmp_only,
        host_key_dir,
        first,
    )


@app.command()
def reboot(device: DeviceArgument, control: ControlOption = None) -> None:
    """Reboot a device: engineBoots + 1, sysUpTime and every counter restart from 0.

    Example:  netmon lab reboot lab-0003
    """
    reply = _send(control, {"command": "reboot", "device": device})
    console.print(f"{device} rebooted (engineBoots {reply['boots']})")


@app.command()
def flap(
    device: DeviceArgument,
    interface: Annotated[int, typer.Option("--interface", "-i", help="ifIndex to flap.")],
    down_for: Annotated[
        str | None,
        typer.Option(help="Come back up after this long, e.g. 30s or 5m (default: stay down)."),
    ] = None,
    up: Annotated[bool, typer.Option("--up", help="Bring the interface back up now.")] = False,
    control: ControlOption = None,
) -> None:
    """Take an interface operationally down (ifOperStatus 2, ifLastChange now).

    Examples:

      netmon lab flap lab-0003 -i 2 --down-for 30s

      netmon lab flap lab-0003 -i 2          # down until: netmon lab flap lab-0003 -i 2 --up
    """
    request: dict[str, Any] = {"device": device, "interface": interface}
    if up:
        request["command"] = "up"
    else:
        request["command"] = "flap"
        if down_for is not None:
            try:
                request["down_for"] = parse_duration(down_for).total_seconds()
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--down-for") from None
    reply = _send(control, request)
    state = "up" if reply["oper_up"] else "down"
    until = f" for {down_for}" if down_for and not up else ""
    console.print(f"{device} interface {interface} is {state}{until}")


@app.command()
def silence(
    device: DeviceArgument,
    off: Annotated[bool, typer.Option("--off", help="Answer again.")] = False,
    control: ControlOption = None,
) -> None:
    """Make a device drop every request (looks dead); --off to revive it.

    Example:  netmon lab silence lab-0007
    """
    _send(control, {"command": "silence", "device": device, "on": not off})
    console.print(f"{device} {'answers again' if off else 'is silent'}")


@app.command()
def garbage(
    device: DeviceArgument,
    off: Annotated[bool, typer.Option("--off", help="Answer properly again.")] = False,
    control: ControlOption = None,
) -> None:
    """Make a device answer every request with malformed bytes; --off to fix it.

    Example:  netmon lab garbage lab-0009
    """
    _send(control, {"command": "garbage", "device": device, "on": not off})
    console.print(f"{device} {'answers properly again' if off else 'answers garbage'}")


@app.command("config-change")
def config_change(
    device: DeviceArgument,
    note: Annotated[
        str | None,
        typer.Option(help="The new interface description (default: one naming the revision)."),
    ] = None,
    control: ControlOption = None,
) -> None:
    """Change a device's running configuration (an interface description, also its
    ifAlias), so the next config backup records a new version and a config-changed event.

    Example:  netmon lab config-change lab-0002 --note "uplink moved to Te1/1/2"
    """
    request: dict[str, Any] = {"command": "config-change", "device": device}
    if note is not None:
        request["note"] = note
    reply = _send(control, request)
    console.print(f"{device} configuration changed (revision {reply['revision']})")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    control: ControlOption = None,
) -> None:
    """Show the running lab and the faults injected into it."""
    reply = _send(control, {"command": "status"})
    if as_json:
        typer.echo(json.dumps(reply))
        return
    table = Table("", "", show_header=False, box=None)
    table.add_row("devices", f"{reply['devices']} on {reply['host']}")
    if reply["base_port"]:
        number = reply.get("first", 1)
        first = reply["base_port"] + number
        last = first + reply["devices"] - 1
        table.add_row("ports", f"{first}..{last}")
    table.add_row("user", f"{reply['user']} (authPriv {reply['auth_protocol']}/aes128)")
    table.add_row("rebooted", _names(reply["rebooted"]))
    table.add_row("silent", _names(reply["silenced"]))
    table.add_row("garbage", _names(reply["garbage"]))
    changed = reply.get("config_changed", {})
    table.add_row("config changed", ", ".join(f"{n} (rev {r})" for n, r in changed.items()) or "-")
    down = ", ".join(
        f"{name} ifIndex {', '.join(map(str, ifs))}" for name, ifs in reply["down"].items()
    )
    table.add_row("flapped down", down or "-")
    console.print(table)


def _names(names: Any) -> str:
    if isinstance(names, dict):
        return ", ".join(f"{n} (boots {b})" for n, b in names.items()) or "-"
    return ", ".join(names) or "-"


def _control_path(control: Path | None) -> Path:
    if control is not None:
        return control
    from netmon.cli.main import settings

    return settings().data_dir / "lab.sock"


def _send(control: Path | None, request: dict[str, Any]) -> dict[str, Any]:
    path = _control_path(control)
    try:
        reply = send_command(path, request)
    except (FileNotFoundError, ConnectionRefusedError):
        errors.print(f"netmon lab: no lab is listening on {path} (start one with: netmon lab)")
        raise typer.Exit(1) from None
    except (OSError, ValueError) as exc:
        errors.print(f"netmon lab: {path}: {exc}")
        raise typer.Exit(1) from None
    if not reply.get("ok"):
        errors.print(f"netmon lab: {reply.get('error', 'refused')}")
        raise typer.Exit(1)
    return reply


def _serve(
    devices: int,
    interfaces: int | None,
    host: str,
    base_port: int,
    auth_protocol: str,
    inventory: Path | None,
    control: Path | None,
    snmp_only: bool = False,
    host_key_dir: Path | None = None,
    first: int = 1,
) -> None:
    if auth_protocol not in ("sha1", "sha256"):
        raise typer.BadParameter("sha1 or sha256", param_hint="--auth-protocol")
    protocol: Literal["sha1", "sha256"] = "sha1" if auth_protocol == "sha1" else "sha256"
    path = _control_path(control)
    try:
        the_lab = Lab(
            devices,
            host,
            base_port,
            interfaces,
            auth_protocol=protocol,
            ssh=not snmp_only,
            # Kept, so a client's known_hosts entry stays valid across lab restarts.
            host_key_dir=host_key_dir or path.parent / "lab",
            first=first,
        )
        asyncio.run(_run(the_lab, path, inventory))
    except (OSError, ValueError) as exc:
        errors.print(f"netmon lab: {exc}")
        raise typer.Exit(1) from None


async def _run(the_lab: Lab, control: Path, inventory: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with the_lab:
            await the_lab.serve_control(control)
            if inventory is not None:
                write_inventory(the_lab, inventory)
            _summary(the_lab, control, inventory)
            await stop.wait()
            errors.print("netmon lab: stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _summary(the_lab: Lab, control: Path, inventory: Path | None) -> None:
    params = the_lab.params
    first, last = device_name(params.first), device_name(params.first + params.devices - 1)
    table = Table(title="netmon lab", show_header=False, box=None, title_justify="left")
    table.add_row("devices", f"{params.devices}: {first} .. {last}")
    table.add_row(
        "listening", f"{params.host} udp/{the_lab.port(first)} .. udp/{the_lab.port(last)}"
    )
    table.add_row("interfaces", str(params.interfaces) if params.interfaces else "8..48 per device")
    custom = AUTH_KEY_ENV in os.environ or PRIV_KEY_ENV in os.environ
    keys = f"${AUTH_KEY_ENV} / ${PRIV_KEY_ENV}" if custom else "lab defaults (published)"
    table.add_row("snmpv3", f"user {params.user}, {params.auth_protocol}/aes128, keys: {keys}")
    ssh = [n for n in the_lab.devices if len(the_lab.protocols(n)) > 1]
    if ssh:
        password = f"${SSH_PASSWORD_ENV}" if SSH_PASSWORD_ENV in os.environ else "lab default"
        table.add_row(
            "ssh",
            f"NETCONF on {device_name(2)}, CLI on {device_name(3)}, ... every 4th: "
            f"tcp/{the_lab.ssh_port(ssh[0])} .. tcp/{the_lab.ssh_port(ssh[-1])}, "
            f"user {params.user}, password: {password}",
        )
    table.add_row("control", str(control))
    if inventory is not None:
        table.add_row("inventory", str(inventory))
    console.print(table)
    auth = "SHA" if params.auth_protocol == "sha1" else "SHA-256"
    auth_key = f"${AUTH_KEY_ENV}" if custom else DEFAULT_AUTH_KEY
    priv_key = f"${PRIV_KEY_ENV}" if custom else DEFAULT_PRIV_KEY
    console.print(
        "try: [bold]snmpget -v3 -l authPriv -u "
        f"{params.user} -a {auth} -A {auth_key} -x AES -X {priv_key} -On "
        f"{params.host}:{the_lab.port(first)} 1.3.6.1.2.1.1.5.0[/bold]",
        highlight=False,
        soft_wrap=True,
    )
    if the_lab.ssh_host_key_b64 and ssh:
        # Unwrapped, to be copied into a known_hosts file or an inventory's host_key.
        console.print(
            f"ssh host key: ssh-ed25519 {the_lab.ssh_host_key_b64}", highlight=False, soft_wrap=True
        )
    netconf = next((n for n in the_lab.devices if "netconf" in the_lab.protocols(n)), None)
    if netconf is not None:
        password = (
            f"${SSH_PASSWORD_ENV}" if SSH_PASSWORD_ENV in os.environ else DEFAULT_SSH_PASSWORD
        )
        console.print(
            f"try: [bold]ssh -p {the_lab.ssh_port(netconf)} -s {params.user}@{params.host} "
            f"netconf[/bold]  (password {password})",
            highlight=False,
            soft_wrap=True,
        )
    console.print("Ctrl-C stops the lab.", style="dim")
