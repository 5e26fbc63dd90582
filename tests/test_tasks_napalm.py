"""napalm_* tasks: napalm's ios driver against the lab's IOS-like CLI over SSH (the same
Device answers SNMP, so the series can be compared), and the getters' documented data
shapes for what the lab does not run (BGP)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netmon.config import PollerSettings
from netmon.errors import CliAuthError
from netmon.lab.cli_shell import Bgp
from netmon.poller.inventory import load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import run_poll
from netmon.records import DeviceFacts, Sample
from netmon.ssh.drivers import napalm_pool
from netmon.tasks.napalm_getters import bgp_records, interface_records, lldp_records
from tests import test_lab_cli_shell
from tests.test_lab_cli_shell import PASSWORD_ENV, LabCli, serve_lab_cli

lab_cli = test_lab_cli_shell.lab_cli  # the fixtures
lab_env = test_lab_cli_shell.lab_env
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


async def _poll(folder: Path):
    nr = load_inventory(folder)
    (plan,) = plan_polls(nr, PollerSettings(), TaskRegistry.discover())
    return await asyncio.to_thread(run_poll, nr, plan)


def _samples(records) -> dict[tuple[str, str], Sample]:
    return {
        (r.series.metric, r.series.label_map.get("interface", "")): r
        for r in records
        if isinstance(r, Sample)
    }


async def test_napalm_ios_getters_against_the_lab(lab_cli: LabCli, tmp_path: Path) -> None:
    snmp = await _poll(lab_cli.inventory(tmp_path / "snmp", ["system", "interfaces"]))
    assert snmp.error is None
    tasks = ["napalm_facts", "napalm_interfaces", "napalm_lldp", "napalm_bgp"]
    result = await _poll(lab_cli.inventory(tmp_path / "napalm", tasks))
    assert result.error is None, result.error
    device = lab_cli.device
    napalm, by_snmp = _samples(result.records), _samples(snmp.records)

    # get_facts: who the device is, and its uptime as the system task's series.
    facts = {}
    for r in result.records:
        if isinstance(r, DeviceFacts):
            facts.update(r.facts)
    assert facts["hostname"] == "lab-0001"
    assert facts["vendor"] == "Cisco"
    assert facts["model"] == f"NL-{len(device.interfaces)}P"
    assert facts["fqdn"] == "lab-0001.lab.example"
    uptime = napalm[("sysUpTime", "")]
    assert uptime.series == by_snmp[("sysUpTime", "")].series
    assert abs(uptime.value - by_snmp[("sysUpTime", "")].value) < 60  # IOS shows minutes

    # get_interfaces + counters: the SNMP task's series and, the clock standing, values.
    interface_keys = {k for k in napalm if k[1]}
    assert interface_keys <= set(by_snmp)
    assert {m for m, _ in interface_keys} == {
        "ifAdminStatus", "ifOperStatus", "ifSpeed", "ifHCInOctets", "ifHCOutOctets",
        "ifInErrors", "ifOutErrors", "ifInDiscards", "ifOutDiscards",
    }  # fmt: skip
    assert {n for _, n in interface_keys} == {i.name for i in device.interfaces}
    for key in interface_keys:
        assert napalm[key].series == by_snmp[key].series, key
        assert napalm[key].value == by_snmp[key].value, key

    # get_lldp_neighbors: the lab's uplinks see a distribution switch.
    uplinks = [i.name for i in device.interfaces if i.speed >= 10**10 and i.oper_up]
    assert uplinks
    assert sorted(facts["lldp_neighbors"]) == sorted(uplinks)
    for entries in facts["lldp_neighbors"].values():
        ((neighbor),) = entries
        assert neighbor["hostname"].startswith("dist-")
        assert neighbor["port"].startswith("Te1/1/")
    # An access switch runs no BGP: napalm reads the refused "show bgp all summary" as none.
    assert facts["bgp"] == {}
    assert not any(m.startswith("bgp") for m, _ in napalm)
    assert len(napalm_pool()) == 1  # one driver for the four tasks


async def test_napalm_login_refused_is_an_auth_error(
    lab_cli: LabCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    result = await _poll(lab_cli.inventory(tmp_path / "napalm", ["napalm_facts"]))
    assert isinstance(result.error, CliAuthError)
    assert "not-the-password" not in str(result.error)
    assert len(napalm_pool()) == 0


def test_bgp_neighbors_as_napalm_documents_them() -> None:
    neighbors = {
        "global": {
            "router_id": "192.0.2.1",
            "peers": {
                "192.0.2.2": {
                    "local_as": 65000,
                    "remote_as": 65001,
                    "remote_id": "192.0.2.2",
                    "is_up": True,
                    "is_enabled": True,
                    "description": "transit",
                    "uptime": 3600,
                    "address_family": {
                        "ipv4": {
                            "received_prefixes": 900,
                            "accepted_prefixes": 850,
                            "sent_prefixes": 10,
                        },
                        "ipv6": {
                            "received_prefixes": -1,
                            "accepted_prefixes": -1,
                            "sent_prefixes": -1,
                        },
                    },
                },
                "192.0.2.9": {
                    "local_as": 65000,
                    "remote_as": 65009,
                    "remote_id": "0.0.0.0",
                    "is_up": False,
                    "is_enabled": False,
                    "description": "",
                    "uptime": -1,
                    "address_family": {},
                },
            },
        }
    }
    records = bgp_records("r1", neighbors, NOW)
    samples = {
        (r.series.metric, r.series.label_map.get("peer"), r.series.label_map.get("afi")): r.value
        for r in records
        if isinstance(r, Sample)
    }
    assert samples == {
        ("bgpPeerUp", "192.0.2.2", None): 1,
        ("bgpPeerAdminEnabled", "192.0.2.2", None): 1,
        ("bgpPeerUptime", "192.0.2.2", None): 3600,
        ("bgpPeerPrefixesReceived", "192.0.2.2", "ipv4"): 900,
        ("bgpPeerPrefixesAccepted", "192.0.2.2", "ipv4"): 850,
        ("bgpPeerPrefixesSent", "192.0.2.2", "ipv4"): 10,
        ("bgpPeerUp", "192.0.2.9", None): 0,
        ("bgpPeerAdminEnabled", "192.0.2.9", None): 0,
    }  # napalm's -1 (unknown) gives no sample
    assert all(r.series.label_map["vrf"] == "global" for r in records if isinstance(r, Sample))
    (facts,) = [r for r in records if isinstance(r, DeviceFacts)]
    assert facts.facts["bgp"]["global"]["peers"]["192.0.2.2"]["remote_as"] == 65001


def test_non_ios_drivers_keep_names_and_per_cast_packets() -> None:
    counters = {"Ethernet1": {"rx_unicast_packets": 5, "tx_broadcast_packets": 2,
                              "rx_octets": 100, "tx_errors": -1}}  # fmt: skip
    eos = _samples(interface_records("sw", "eos", {}, counters, NOW))
    assert {k: s.value for k, s in eos.items()} == {
        ("ifHCInUcastPkts", "Ethernet1"): 5,
        ("ifHCOutBroadcastPkts", "Ethernet1"): 2,
        ("ifHCInOctets", "Ethernet1"): 100,
    }
    ios = _samples(
        interface_records("sw", "ios", {}, {"GigabitEthernet0/1": counters["Ethernet1"]}, NOW)
    )
    assert set(ios) == {("ifHCInOctets", "Gi0/1")}  # napalm ios' "unicast" is every packet
    (lldp,) = lldp_records(
        "sw", "ios", {"GigabitEthernet0/1": [{"hostname": "a", "port": "b"}]}, NOW
    )
    assert isinstance(lldp, DeviceFacts)
    assert lldp.facts == {"lldp_neighbors": {"Gi0/1": [{"hostname": "a", "port": "b"}]}}


async def test_napalm_bgp_on_a_distribution_switch(lab_env: None, tmp_path: Path) -> None:
    async with serve_lab_cli(devices=8, name="lab-0008") as running:
        assert running.device.role == "distribution"
        bgp = Bgp.of(running.device)
        assert bgp is not None
        result = await _poll(running.inventory(tmp_path / "napalm", ["napalm_bgp"]))
        assert result.error is None, result.error
        t = running.device.uptime()  # the clock stands still
    samples = {
        (r.series.metric, r.series.label_map["peer"]): r
        for r in result.records
        if isinstance(r, Sample)
    }
    up, standby, shut = (peer.address for peer in bgp.peers)
    for number, peer in enumerate((up, standby)):
        assert samples[("bgpPeerUp", peer)].value == 1
        assert samples[("bgpPeerAdminEnabled", peer)].value == 1
        received = samples[("bgpPeerPrefixesReceived", peer)]
        assert received.value == bgp.accepted(number, t)
        assert received.series.label_map == {"vrf": "global", "peer": peer, "afi": "ipv4 unicast"}
        assert samples[("bgpPeerPrefixesSent", peer)].value == bgp.sent(number)
        # IOS shows whole weeks and days past a week: within a day of the device's uptime.
        assert abs(samples[("bgpPeerUptime", peer)].value - t) < 86400
    assert samples[("bgpPeerUp", shut)].value == 0
    assert samples[("bgpPeerAdminEnabled", shut)].value == 0
    assert ("bgpPeerUptime", shut) not in samples  # "never": napalm's -1, no sample
    (facts,) = [r for r in result.records if isinstance(r, DeviceFacts)]
    table = facts.facts["bgp"]["global"]
    assert table["router_id"] == bgp.router_id
    assert table["peers"][up] == {
        "local_as": bgp.local_as,
        "remote_as": 64512,
        "remote_id": "10.255.255.1",
        "description": "core-01",
    }
