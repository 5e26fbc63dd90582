"""The NETCONF tasks against the lab's NETCONF devices (netmon.lab: asyncssh, NMDA
ietf-interfaces 2018, a candidate datastore): a second server implementation beside
netconfd, and one that also speaks SNMP about the same interfaces.

The lab's clock is frozen, so the SNMP ``interfaces`` task and ``netconf_interfaces``,
run one after the other on the same device, must give the same series with the same
values. The lab runs on the test's event loop; Nornir tasks are blocking and run in a
thread, as the poller runs them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from ncclient.operations import rpc as ncclient_rpc
from nornir.core import Nornir

from netmon.config import PollerSettings
from netmon.lab import (
    AUTH_KEY_ENV,
    DEFAULT_AUTH_KEY,
    DEFAULT_PRIV_KEY,
    DEFAULT_SSH_PASSWORD,
    PRIV_KEY_ENV,
    SSH_PASSWORD_ENV,
    Lab,
    write_inventory,
)
from netmon.netconf import xml as netconf_xml
from netmon.netconf.hosts import forget_netconf_targets
from netmon.netconf.shared import close_shared_pool
from netmon.poller.inventory import PollPlan, load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import run_poll
from netmon.records import ConfigSnapshot, DeviceFacts, Record, Sample, SeriesKey

DEVICE = "lab-0002"  # every 4th device from lab-0002 serves NETCONF


class FrozenClock:
    def __init__(self) -> None:
        self.t = 80_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def lab_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(AUTH_KEY_ENV, DEFAULT_AUTH_KEY)
    monkeypatch.setenv(PRIV_KEY_ENV, DEFAULT_PRIV_KEY)
    monkeypatch.setenv(SSH_PASSWORD_ENV, DEFAULT_SSH_PASSWORD)
    close_shared_pool()
    forget_netconf_targets()
    yield
    close_shared_pool()
    forget_netconf_targets()


@pytest.fixture
async def lab_inventory(tmp_path: Path) -> AsyncIterator[tuple[Lab, Nornir, PollPlan]]:
    async with Lab(devices=2, base_port=0, interfaces=6, now=FrozenClock()) as lab:
        write_inventory(lab, tmp_path / "inventory")
        nr = load_inventory(tmp_path / "inventory")
        registry = TaskRegistry()
        for module in ("system", "resources", "interfaces", "netconf_interfaces", "netconf_config"):
            registry.add_module(f"netmon.tasks.{module}")
        plans = {p.name: p for p in plan_polls(nr, PollerSettings(), registry)}
        yield lab, nr, plans[DEVICE]


async def run_tasks(nr: Nornir, plan: PollPlan, *names: str) -> list[Record]:
    tasks = tuple(fn for name, fn in zip(plan.task_names, plan.tasks, strict=True) if name in names)
    if "interfaces" in names:  # the SNMP task is not in the lab-netconf group's list
        from netmon.tasks.interfaces import interfaces

        tasks = (interfaces, *tasks)
    picked = dataclasses.replace(plan, task_names=names, tasks=tasks)
    result = await asyncio.to_thread(run_poll, nr, picked)
    assert result.error is None, result.error
    return result.records


def samples(records: list[Record]) -> dict[SeriesKey, Any]:
    return {r.series: r.value for r in records if isinstance(r, Sample)}


def configs(records: list[Record]) -> list[ConfigSnapshot]:
    return [r for r in records if isinstance(r, ConfigSnapshot)]


async def test_same_series_and_values_as_snmp(
    lab_inventory: tuple[Lab, Nornir, PollPlan],
) -> None:
    _lab, nr, plan = lab_inventory
    assert "netconf_interfaces" in plan.task_names
    snmp = await run_tasks(nr, plan, "interfaces")
    netconf = await run_tasks(nr, plan, "netconf_interfaces")
    by_snmp, by_netconf = samples(snmp), samples(netconf)
    assert by_netconf
    shared = set(by_snmp) & set(by_netconf)
    # Every NETCONF series but the discontinuity marker (its value is a date over
    # NETCONF, an uptime over SNMP) is one the SNMP task makes, with the same value.
    for key, value in by_netconf.items():
        if key.metric == "ifCounterDiscontinuityTime":
            continue
        assert key in shared, key
        assert by_snmp[key] == value, key
    metrics = {k.metric for k in shared}
    assert {"ifHCInOctets", "ifHCOutOctets", "ifOperStatus", "ifAdminStatus", "ifSpeed"} <= metrics
    assert any(k.metric == "ifCounterDiscontinuityTime" for k in by_netconf)

    def interface_facts(records: list[Record]) -> dict[str, Any]:
        (facts,) = [
            r.facts for r in records if isinstance(r, DeviceFacts) and "interfaces" in r.facts
        ]
        return {name: f["alias"] for name, f in facts["interfaces"].items()}

    assert interface_facts(netconf) == interface_facts(snmp)


async def test_running_and_candidate_snapshots(
    lab_inventory: tuple[Lab, Nornir, PollPlan],
) -> None:
    lab, nr, plan = lab_inventory
    first = [
        r for r in await run_tasks(nr, plan, "netconf_config") if isinstance(r, ConfigSnapshot)
    ]
    assert sorted(c.source for c in first) == ["candidate", "running"]
    again = [
        r for r in await run_tasks(nr, plan, "netconf_config") if isinstance(r, ConfigSnapshot)
    ]
    assert [c.content for c in again] == [c.content for c in first]
    # A configuration change on the device shows in the next snapshot of running.
    lab.device(DEVICE).change_config("moved by test_netconf_lab")
    changed = configs(await run_tasks(nr, plan, "netconf_config"))
    running = {c.source: c.content for c in changed}["running"]
    assert "moved by test_netconf_lab" in running
    assert running != {c.source: c.content for c in first}["running"]


async def test_each_reply_is_parsed_once_by_the_safe_parser(
    lab_inventory: tuple[Lab, Nornir, PollPlan],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ncclient's reply parse (its own parser, entities resolved) is never used: a poll
    parses each reply once, with netmon.netconf.xml.parse."""
    _lab, nr, plan = lab_inventory
    await run_tasks(nr, plan, "netconf_interfaces", "netconf_config")  # sessions open
    ncclient_parses: list[str] = []
    safe_parses: list[bytes | str] = []
    ncclient_to_ele = ncclient_rpc.to_ele
    safe_parse = netconf_xml.parse

    def counted_to_ele(x: Any, huge_tree: bool = False) -> Any:
        if isinstance(x, str):
            ncclient_parses.append(x)
        return ncclient_to_ele(x, huge_tree)

    def counted_parse(reply: bytes | str, **kwargs: Any) -> Any:
        safe_parses.append(reply)
        return safe_parse(reply, **kwargs)

    monkeypatch.setattr(ncclient_rpc, "to_ele", counted_to_ele)
    monkeypatch.setattr(netconf_xml, "parse", counted_parse)
    records = await run_tasks(nr, plan, "netconf_interfaces", "netconf_config")
    assert samples(records)
    assert len(configs(records)) == 2
    assert ncclient_parses == []
    as_bytes = [r if isinstance(r, bytes) else r.encode() for r in safe_parses]
    replies = [r for r in as_bytes if b"rpc-reply" in r]
    assert len(replies) == 3  # one <get>, <get-config> of running and of candidate
