"""A Nornir inventory plugin that reads NetBox the way netmon does, for a user's own
Nornir scripts: the same hosts, addresses, platforms and collection settings.

Registered as ``NetmonNetBoxInventory`` (entry point ``nornir.plugins.inventory``)::

    nr = InitNornir(inventory={"plugin": "NetmonNetBoxInventory", "options": {
        "nb_url": "https://netbox.example.net", "nb_token": "...",
        "filter_parameters": {"site": "lab-ams", "tag": "monitored"}}})

or ``{"config": "netmon.yaml"}`` to take ``inventory.netbox`` (and the groups and
defaults of ``poller.inventory``) from netmon's own configuration; the options above
then override it.

Shaped like nornir_netbox's ``NetBoxInventory2``: ``hostname`` is the management address
(primary IPv4, else IPv6), ``data`` is NetBox's whole object (``custom_fields`` flattened
into it with ``flatten_custom_fields``), and netmon puts on top of it what its poller
reads: ``site``, ``role`` and ``tags`` as slugs, the config context's ``netmon`` settings
(``snmp``, ``netconf``, ``cli``, ``tasks``, ``poll_interval``), ``labels``,
``lifecycle`` and ``external_id``. ``platform`` is the mapped platform
(``platform_map``, else the slug); ``groups`` are the config context's ``groups`` that
exist in the group file (a missing one is logged and left out). A virtual chassis is
one host, named after the chassis. Hosts whose lifecycle is not in ``lifecycles``
(default: active and muted, what netmon polls) and objects netmon skips (no address, a
secret value in the context) are left out and logged.

Nornir loads an inventory synchronously: the async source runs under ``asyncio.run``,
in a thread of its own when the caller already runs an event loop (a notebook).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from nornir.core.inventory import Defaults, Groups, Host, Hosts, Inventory, ParentGroups
from nornir.plugins.inventory.simple import SimpleInventory

from netmon.config import NetBoxSettings, load_settings
from netmon.errors import ConfigError
from netmon.inventory.model import Fetched, InventoryHost
from netmon.inventory.netbox.client import NetBoxClient
from netmon.inventory.netbox.source import NetBoxSource

__all__ = ["NetmonNetBoxInventory"]

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_ENV = "NB_TOKEN"  # noqa: S105 - the variable's name, as NetBoxInventory2 reads it
URL_ENV = "NB_URL"


class NetmonNetBoxInventory:
    """Options: ``nb_url`` (or ``$NB_URL``), ``nb_token`` (or ``$NB_TOKEN``),
    ``ssl_verify`` (bool or CA file), ``filter_parameters`` (NetBox device filters),
    ``include_vms``, ``flatten_custom_fields``, ``group_file``/``defaults_file``;
    netmon's: ``config`` (a netmon.yaml), ``netbox`` (more ``inventory.netbox``
    settings: ``platform_map``, ``custom_fields``, ``status_map``, ``vm_filters``, ...),
    ``lifecycles`` (which hosts to include)."""

    def __init__(
        self,
        nb_url: str | None = None,
        nb_token: str | None = None,
        ssl_verify: bool | str = True,
        filter_parameters: Mapping[str, Any] | None = None,
        include_vms: bool | None = None,
        flatten_custom_fields: bool = False,
        group_file: str | None = None,
        defaults_file: str | None = None,
        config: str | None = None,
        netbox: Mapping[str, Any] | None = None,
        lifecycles: Iterable[str] = ("active", "muted"),
        **kwargs: Any,
    ) -> None:
        folder: Path | None = None
        base: dict[str, Any] = {}
        if config is not None:
            settings = load_settings(Path(config))
            if settings.inventory.netbox is None:
                raise ConfigError(f"{config}: inventory.netbox is not set")
            base = settings.inventory.netbox.model_dump(exclude_none=True)
            folder = settings.poller.inventory
        url = nb_url or base.get("url") or os.environ.get(URL_ENV)
        if not url:
            raise ConfigError(f"NetmonNetBoxInventory: give nb_url (or {URL_ENV}, or config)")
        base["url"] = url
        if ssl_verify is not True:
            base["verify_tls"] = ssl_verify
        if filter_parameters is not None:
            base["filters"] = dict(filter_parameters)
        if include_vms is not None:
            base["virtual_machines"] = include_vms
        base.update(netbox or {})
        # A script passes its token as text, as with NetBoxInventory2; the settings'
        # reference is then only a placeholder that is never read.
        self._token = nb_token or os.environ.get(TOKEN_ENV)
        if self._token is None and "token" not in base:
            raise ConfigError(f"NetmonNetBoxInventory: give nb_token (or {TOKEN_ENV}, or config)")
        base.setdefault("token", {"env": TOKEN_ENV})
        try:
            self.settings = NetBoxSettings(**base)
        except ValueError as exc:
            raise ConfigError(f"NetmonNetBoxInventory options: {exc}") from exc
        self.flatten_custom_fields = flatten_custom_fields
        self.lifecycles = frozenset(lifecycles)
        self.group_file = Path(group_file) if group_file else _in(folder, "groups.yaml")
        self.defaults_file = Path(defaults_file) if defaults_file else _in(folder, "defaults.yaml")

    def load(self) -> Inventory:
        fetched, objects = _run(self._fetch())
        groups, defaults = self._base()
        hosts = Hosts()
        for skipped in fetched.skipped:
            log.warning("NetBox object left out: %s (%s)", skipped.message, skipped.reason)
        for h in fetched.hosts:
            if h.lifecycle not in self.lifecycles:
                log.info("%s left out: lifecycle %s (%s)", h.name, h.lifecycle, h.note)
                continue
            missing = [g for g in h.groups if g not in groups]
            if missing:
                log.warning("%s: no group %s in %s", h.name, ", ".join(missing), self.group_file)
            hosts[h.name] = Host(
                name=h.name,
                hostname=h.address,
                port=h.port,
                platform=h.platform,
                data=self._data(h, objects.get(h.external_id, {})),
                groups=ParentGroups([groups[g] for g in h.groups if g in groups]),
                defaults=defaults,
            )
        return Inventory(hosts=hosts, groups=groups, defaults=defaults)

    async def _fetch(self) -> tuple[Fetched, dict[str, dict[str, Any]]]:
        client = NetBoxClient(self.settings, token=self._token)
        source = NetBoxSource(self.settings, client, full_objects=True)
        try:
            fetched = await source.fetch_all()
            return fetched, source.objects
        finally:
            await client.close()

    def _data(self, host: InventoryHost, obj: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(obj)
        if self.flatten_custom_fields:
            data.update(data.pop("custom_fields", None) or {})
        data.update(host.data)
        data.update(
            site=host.site,
            role=host.role,
            tags=list(host.tags),
            labels=dict(host.labels),
            lifecycle=host.lifecycle,
            external_id=host.external_id,
        )
        if host.maintenance:
            data["maintenance"] = [
                {"starts_at": w.starts_at.isoformat(), "ends_at": w.ends_at.isoformat()}
                for w in host.maintenance
            ]
        return data

    def _base(self) -> tuple[Groups, Defaults]:
        # The same files and format as SimpleInventory's; its loader reads them (no hosts).
        group_file = self.group_file if self.group_file and self.group_file.is_file() else None
        defaults_file = (
            self.defaults_file if self.defaults_file and self.defaults_file.is_file() else None
        )
        if group_file is None and defaults_file is None:
            return Groups(), Defaults()
        try:
            inventory = SimpleInventory(
                host_file=os.devnull,
                group_file=str(group_file or os.devnull),
                defaults_file=str(defaults_file or os.devnull),
            ).load()
        except Exception as exc:  # ruamel and nornir raise plain errors for bad entries
            raise ConfigError(f"cannot load groups and defaults: {exc}") from exc
        return inventory.groups, inventory.defaults


def _in(folder: Path | None, name: str) -> Path | None:
    return folder / name if folder is not None else None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
