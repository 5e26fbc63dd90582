"""The Nornir inventory, loaded and checked before anything is polled.

netmon reads a Nornir SimpleInventory folder (hosts.yaml, groups.yaml, defaults.yaml).
Each host becomes a :class:`PollPlan`: its interval (``poll_interval`` in host, group or
default data; the config's ``poller.interval`` otherwise) and its tasks (``tasks``, or
the config's ``poller.tasks``). Every host's SNMP settings are validated here, so a
missing secret is an error at load naming the host and the key, not a timeout later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from nornir import InitNornir
from nornir.core import Nornir
from nornir.core.inventory import Host

from netmon.config import PollerSettings
from netmon.durations import parse_duration
from netmon.errors import ConfigError
from netmon.netconf.hosts import netconf_settings, netconf_target
from netmon.poller.registry import NornirTask, TaskRegistry
from netmon.snmp.hosts import snmp_settings, snmp_target
from netmon.ssh.hosts import cli_settings, cli_target, uses_cli
from netmon.store.devices import DeviceInfo

__all__ = ["FILES", "PollPlan", "load_inventory", "plan_one", "plan_polls"]

FILES = {"host_file": "hosts.yaml", "group_file": "groups.yaml", "defaults_file": "defaults.yaml"}
SNMP_TASKS = frozenset({"system", "interfaces", "resources"})


@dataclass(frozen=True)
class PollPlan:
    host: Host
    interval: timedelta
    task_names: tuple[str, ...]
    tasks: tuple[NornirTask, ...]
    info: DeviceInfo

    @property
    def name(self) -> str:
        return self.host.name

    def same_schedule(self, other: PollPlan) -> bool:
        return self.interval == other.interval


def load_inventory(folder: Path) -> Nornir:
    """Load ``folder`` with Nornir's SimpleInventory; YAML errors name the file."""
    if not folder.is_dir():
        raise ConfigError(f"poller.inventory: {folder} is not a folder")
    options: dict[str, Any] = {}
    for option, name in FILES.items():
        path = folder / name
        if path.exists():
            try:
                content = yaml.safe_load(path.read_text())
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
            if content is not None and not isinstance(content, dict):
                raise ConfigError(f"{path}: expected a mapping of names to settings")
        elif option == "host_file":
            raise ConfigError(f"{path}: missing (the inventory needs a hosts file)")
        options[option] = str(path)
    try:
        return InitNornir(
            runner={"plugin": "threaded", "options": {"num_workers": 1}},
            inventory={"plugin": "SimpleInventory", "options": options},
            logging={"enabled": False},
        )
    except Exception as exc:  # Nornir raises plain errors for bad entries
        raise ConfigError(f"{folder}: cannot load the inventory: {exc}") from exc


def plan_polls(nr: Nornir, settings: PollerSettings, registry: TaskRegistry) -> list[PollPlan]:
    """One plan per host; ConfigError naming the host and key for anything wrong."""
    logging.getLogger("nornir.core.task").setLevel(logging.CRITICAL)
    return [plan_one(host, settings, registry) for host in nr.inventory.hosts.values()]


def plan_one(host: Host, settings: PollerSettings, registry: TaskRegistry) -> PollPlan:
    """The host's plan; ConfigError naming the host and the key for anything wrong."""
    where = f"inventory host {host.name}"
    raw_interval = host.get("poll_interval")
    try:
        interval = settings.interval if raw_interval is None else parse_duration(raw_interval)
    except ValueError as exc:
        raise ConfigError(f"{where}: poll_interval: {exc}") from exc
    if interval < timedelta(seconds=1):
        raise ConfigError(f"{where}: poll_interval: must be at least 1s")
    names = host.get("tasks") or settings.tasks
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: tasks: expected a list of task names")
    tasks = []
    for name in names:
        try:
            tasks.append(registry.get(name))
        except ConfigError as exc:
            raise ConfigError(f"{where}: tasks: {exc}") from None
    if SNMP_TASKS & set(names) or snmp_settings(host):
        snmp_target(host)  # validates credentials and secrets now
    if any(n.startswith("netconf_") for n in names) or netconf_settings(host):
        netconf_target(host)  # the netconf section's keys, secret refs, host-key policy
    if uses_cli(names) or cli_settings(host):
        cli_target(host)  # the cli section's keys, secrets by reference, host-key policy
    tags = host.get("tags") or []
    return PollPlan(
        host=host,
        interval=interval,
        task_names=tuple(names),
        tasks=tuple(tasks),
        info=DeviceInfo(
            name=host.name,
            address=host.hostname,
            site=_text(host.get("site")),
            role=_text(host.get("role")),
            platform=host.platform,
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        ),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
