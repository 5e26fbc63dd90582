"""Hosts from any source as a Nornir inventory, and the poll plan of each.

The YAML source is Nornir's own SimpleInventory folder, read strictly: a wrong key is an
error naming the host and the key, and nothing changes until it is fixed. Hosts from
NetBox are built into a Nornir inventory on the same folder's ``groups.yaml`` and
``defaults.yaml`` (shared credentials and settings), each host planned on its own: one
that cannot be planned is skipped with the reason, and the others are polled.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection
from pathlib import Path

from nornir.core import Nornir
from nornir.core.inventory import Defaults, Groups, Host, Hosts, Inventory, ParentGroups
from nornir.plugins.inventory.simple import SimpleInventory

from netmon.config import PollerSettings
from netmon.errors import ConfigError
from netmon.inventory.model import Fetched, InventoryHost, Skipped
from netmon.poller.inventory import FILES, PollPlan, load_inventory, plan_one, plan_polls
from netmon.poller.registry import TaskRegistry

__all__ = ["NornirPlanner", "YamlSource", "host_from_plan"]


def host_from_plan(plan: PollPlan) -> InventoryHost:
    info = plan.info
    return InventoryHost(
        name=info.name,
        external_id=info.name,
        address=info.address,
        platform=info.platform,
        site=info.site,
        role=info.role,
        tags=info.tags,
    )


class NornirPlanner:
    """Plans hosts that come with their own data, on a folder's groups and defaults."""

    def __init__(self, folder: Path | None, settings: PollerSettings, registry: TaskRegistry):
        self.folder = folder
        self.settings = settings
        self.registry = registry

    def _base(self) -> tuple[Groups, Defaults]:
        if self.folder is None or not self.folder.is_dir():
            return Groups(), Defaults()
        logging.getLogger("nornir.plugins.inventory.simple").setLevel(logging.ERROR)
        try:
            inventory = SimpleInventory(
                host_file=os.devnull,
                group_file=str(self.folder / FILES["group_file"]),
                defaults_file=str(self.folder / FILES["defaults_file"]),
            ).load()
        except Exception as exc:  # ruamel and nornir raise plain errors for bad entries
            raise ConfigError(f"{self.folder}: cannot load groups and defaults: {exc}") from exc
        return inventory.groups, inventory.defaults

    def plan(self, hosts: list[InventoryHost]) -> tuple[Nornir, list[PollPlan], list[Skipped]]:
        groups, defaults = self._base()
        built = Hosts()
        skipped: list[Skipped] = []
        plans: list[PollPlan] = []
        logging.getLogger("nornir.core.task").setLevel(logging.CRITICAL)
        for h in hosts:
            missing = [g for g in h.groups if g not in groups]
            if missing:
                skipped.append(
                    Skipped(
                        h.name,
                        h.external_id,
                        "bad_context",
                        f"{h.name}: netmon.groups: no group {', '.join(missing)} in "
                        f"{self.folder}/groups.yaml",
                    )
                )
                continue
            host = Host(
                name=h.name,
                hostname=h.address,
                port=h.port,
                platform=h.platform,
                data={**h.data, "site": h.site, "role": h.role, "tags": list(h.tags)},
                groups=ParentGroups([groups[g] for g in h.groups]),
                defaults=defaults,
            )
            try:
                plans.append(plan_one(host, self.settings, self.registry))
            except ConfigError as exc:
                skipped.append(Skipped(h.name, h.external_id, "bad_context", str(exc)))
                continue
            built[h.name] = host
        nr = Nornir(inventory=Inventory(hosts=built, groups=groups, defaults=defaults))
        return nr, plans, skipped


class YamlSource:
    """The Nornir SimpleInventory folder: every host is the folder's, read strictly."""

    owner = "yaml"
    incremental = False

    def __init__(self, folder: Path, settings: PollerSettings, registry: TaskRegistry) -> None:
        self.folder = folder
        self.settings = settings
        self.registry = registry
        self._nr: Nornir | None = None
        self._plans: dict[str, PollPlan] = {}

    def load(self) -> tuple[Nornir, list[PollPlan]]:
        nr = load_inventory(self.folder)
        return nr, plan_polls(nr, self.settings, self.registry)

    async def fetch_all(self) -> Fetched:
        nr, plans = await asyncio.to_thread(self.load)
        self._nr = nr
        self._plans = {p.name: p for p in plans}
        return Fetched([host_from_plan(p) for p in plans])

    async def fetch_ids(self, ids: Collection[str]) -> Fetched:
        fetched = await self.fetch_all()
        return Fetched([h for h in fetched.hosts if h.external_id in ids], complete=False)

    def plan(self, hosts: list[InventoryHost]) -> tuple[Nornir, list[PollPlan], list[Skipped]]:
        assert self._nr is not None, "fetch_all first"
        names = {h.name for h in hosts}
        return self._nr, [p for n, p in self._plans.items() if n in names], []

    async def close(self) -> None:
        return None
