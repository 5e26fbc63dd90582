"""``cli_config``: the running configuration over SSH, as a ConfigSnapshot.

The command is ``cli.config_command`` if set, else the device type's (``show
running-config``; ``show configuration | display set`` on Junos). Lines that change
without any configuration change are removed, so that an unchanged configuration reads
the same twice and the store (which redacts, dedups and diffs) keeps one version:
IOS's "Building configuration...", "Current configuration : N bytes", "! Last
configuration change at ...", "! NVRAM config last updated at ...", "ntp clock-period",
NX-OS's "!Time: ...", Junos' "## Last commit: ...". Secrets are left for the store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from nornir.core.task import Result, Task

from netmon.errors import CliParseError, ConfigError
from netmon.records import ConfigSnapshot
from netmon.ssh.hosts import CONFIG_COMMANDS, cli_target
from netmon.ssh.parse import check_refused, sample
from netmon.ssh.session import send_command

__all__ = ["cli_config"]

_VOLATILE = re.compile(
    r"^(?:Building configuration\.\.\."
    r"|Current configuration\s*:.*"
    r"|! Last configuration change at .*"
    r"|! NVRAM config last updated at .*"
    r"|! No configuration change since last restart.*"
    r"|ntp clock-period .*"
    r"|!Time: .*"
    r"|## Last (?:commit|changed): .*)\s*$"
)


def cli_config(task: Task) -> Result:
    target = cli_target(task.host)
    command = target.config_command or CONFIG_COMMANDS.get(target.device_type)
    if command is None:
        raise ConfigError(
            f"inventory host {target.device}: cli.config_command: required for device type "
            f"{target.device_type} (no default command prints its configuration)"
        )
    output = send_command(target, command)
    snapshot = ConfigSnapshot(
        device=target.device,
        time=datetime.now(UTC),
        source="running",
        protocol="cli",
        format="text",
        content=stable_config(target.device, command, output),
    )
    return Result(host=task.host, result=[snapshot])


def stable_config(device: str, command: str, output: str) -> str:
    """``output`` without the lines that change on every read, blank lines at either end
    and trailing spaces; CliCommandError if the device refused, CliParseError if empty."""
    check_refused(device, command, output)
    lines = [line.rstrip() for line in output.splitlines() if not _VOLATILE.match(line)]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise CliParseError(
            f"{device}: {command!r} printed no configuration",
            command=command,
            sample=sample(output),
        )
    return "\n".join(lines) + "\n"
