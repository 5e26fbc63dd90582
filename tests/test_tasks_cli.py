"""cli_interfaces and cli_config: against the lab's IOS-like CLI over SSH (the same
Device answering SNMP, so CLI and SNMP records can be compared value for value), on
canned IOS output for what the lab does not print, and the ``cli`` inventory checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netmon.config import PollerSettings
from netmon.errors import CliCommandError, CliParseError, ConfigError
from netmon.poller.inventory import PollPlan, load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import run_poll
from netmon.records import ConfigSnapshot, DeviceFacts, Sample
from netmon.ssh.hosts import cli_target
from netmon.ssh.parse import SAMPLE_CHARS
from netmon.ssh.session import cli_pool
from netmon.tasks.cli_config import stable_config
from netmon.tasks.cli_interfaces import interface_records
from tests import test_lab_cli_shell
from tests.test_lab_cli_shell import LabCli

lab_cli = test_lab_cli_shell.lab_cli  # the fixtures
lab_env = test_lab_cli_shell.lab_env

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _plan(folder: Path) -> tuple[object, PollPlan]:
    nr = load_inventory(folder)
    (plan,) = plan_polls(nr, PollerSettings(), TaskRegistry.discover())
    return nr, plan


async def _poll(folder: Path) -> list[object]:
    nr, plan = _plan(folder)
    result = await asyncio.to_thread(run_poll, nr, plan)  # type: ignore[arg-type]
    assert result.error is None, result.error
    return list(result.records)


def _samples(records: list[object]) -> dict[tuple[str, str], tuple[object, int | float]]:
    out = {}
    for r in records:
        if isinstance(r, Sample):
            out[(r.series.metric, r.series.label_map.get("interface", ""))] = (r.series, r.value)
    return out


async def test_cli_interfaces_match_the_snmp_interfaces_task(lab_cli: LabCli, tmp_path: Path):
    snmp_folder = lab_cli.inventory(tmp_path / "snmp", ["interfaces"])
    cli_folder = lab_cli.inventory(tmp_path / "cli", ["cli_interfaces"])
    device = lab_cli.device
    device.flap(3)  # one interface oper-down, besides the lab's admin-down ones
    for _round in range(2):
        snmp = _samples(await _poll(snmp_folder))
        cli_records = await _poll(cli_folder)
        cli = _samples(cli_records)
        # The CLI's series are the SNMP task's: same keys (metric, labels, kind, unit, bits).
        assert set(cli) <= set(snmp)
        assert {metric for metric, _ in cli} == {
            "ifAdminStatus", "ifOperStatus", "ifSpeed", "ifHCInOctets", "ifHCOutOctets",
            "ifHCInUcastPkts", "ifHCInMulticastPkts", "ifHCInBroadcastPkts",
            "ifInErrors", "ifOutErrors", "ifInDiscards", "ifOutDiscards",
        }  # fmt: skip
        assert {name for _, name in cli} == {i.name for i in device.interfaces}
        for key, (series, value) in cli.items():
            assert series == snmp[key][0], key
            assert value == snmp[key][1], key  # the clock stood still: the same instant
        assert cli[("ifOperStatus", "Gi1/0/3")][1] == 2
        admin_down = [i.name for i in device.interfaces if not i.admin_up]
        assert admin_down
        assert all(cli[("ifAdminStatus", n)][1] == 2 for n in admin_down)
        (facts,) = [r for r in cli_records if isinstance(r, DeviceFacts)]
        first = device.interfaces[0]
        assert facts.facts["interfaces"][first.name] == {"alias": first.alias, "descr": first.descr}
        before = cli[("ifHCInOctets", "Te1/1/1")][1]
        lab_cli.clock.advance(60.0)
    after = _samples(await _poll(cli_folder))[("ifHCInOctets", "Te1/1/1")][1]
    assert after > before  # the counters track the device's traffic


async def test_cli_config_is_stable_until_the_config_changes(lab_cli: LabCli, tmp_path: Path):
    folder = lab_cli.inventory(tmp_path / "cli", ["cli_config"])

    async def read() -> ConfigSnapshot:
        (snapshot,) = await _poll(folder)
        assert isinstance(snapshot, ConfigSnapshot)
        return snapshot

    first = await read()
    lab_cli.clock.advance(30.0)
    await asyncio.sleep(0.01)  # the lab's ntp clock-period line changes with wall time
    second = await read()
    assert (first.source, first.protocol, first.format) == ("running", "cli", "text")
    assert first.content == second.content
    assert "hostname lab-0001" in first.content
    for volatile in ("Building configuration", "Current configuration", "ntp clock-period"):
        assert volatile not in first.content
    assert "Last configuration change" not in first.content

    lab_cli.device.change_config("patched by test_tasks_cli")
    third = await read()
    assert third.content != first.content
    assert " description patched by test_tasks_cli" in third.content
    assert len(cli_pool()) == 1  # one session, reused by every read


async def test_a_refused_command_is_a_cli_command_error_and_the_session_stays(
    lab_cli: LabCli, tmp_path: Path
):
    folder = lab_cli.inventory(
        tmp_path / "cli", ["cli_config"], cli="      config_command: show startup-config\n"
    )
    nr, plan = _plan(folder)
    result = await asyncio.to_thread(run_poll, nr, plan)  # type: ignore[arg-type]
    assert isinstance(result.error, CliCommandError)
    assert result.error.command == "show startup-config"
    assert "lab-0001" in str(result.error)
    assert "Invalid input" in str(result.error)
    assert len(cli_pool()) == 1  # the device refused; the session is fine


# --- canned IOS output ------------------------------------------------------------------

# A Catalyst 2960 as IOS 15.2 prints it (MAC addresses and counters changed).
IOS_SHOW_INTERFACES = """\
GigabitEthernet0/1 is up, line protocol is up (connected)
  Hardware is Gigabit Ethernet, address is 0c11.6720.8a01 (bia 0c11.6720.8a01)
  Description: uplink to core-1
  MTU 1500 bytes, BW 1000000 Kbit/sec, DLY 10 usec,
     reliability 255/255, txload 1/255, rxload 1/255
  Encapsulation ARPA, loopback not set
  Keepalive set (10 sec)
  Full-duplex, 1000Mb/s, media type is 10/100/1000BaseTX
  input flow-control is off, output flow-control is unsupported
  ARP type: ARPA, ARP Timeout 04:00:00
  Last input 00:00:00, output 00:00:00, output hang never
  Last clearing of "show interface" counters never
  Input queue: 0/75/12/0 (size/max/drops/flushes); Total output drops: 34
  Queueing strategy: fifo
  Output queue: 0/40 (size/max)
  5 minute input rate 2000 bits/sec, 3 packets/sec
  5 minute output rate 1000 bits/sec, 1 packets/sec
     9876543 packets input, 1234567890123 bytes, 0 no buffer
     Received 264071 broadcasts (39327 IP multicasts)
     0 runts, 0 giants, 0 throttles
     7 input errors, 5 CRC, 2 frame, 0 overrun, 0 ignored
     0 watchdog, 39327 multicast, 0 pause input
     0 input packets with dribble condition detected
     8765432 packets output, 987654321 bytes, 0 underruns
     4294967301 output errors, 0 collisions, 1 interface resets
     0 unknown protocol drops
     0 babbles, 0 late collision, 0 deferred
     0 lost carrier, 0 no carrier, 0 pause output
     0 output buffer failures, 0 output buffers swapped out
FastEthernet0/2 is administratively down, line protocol is down (disabled)
  Hardware is Fast Ethernet, address is 0c11.6720.8a02 (bia 0c11.6720.8a02)
  MTU 1500 bytes, BW 100000 Kbit/sec, DLY 100 usec,
     reliability 255/255, txload 1/255, rxload 1/255
  Encapsulation ARPA, loopback not set
  Auto-duplex, Auto-speed, media type is 10/100BaseTX
  Input queue: 0/75/0/0 (size/max/drops/flushes); Total output drops: 0
     0 packets input, 0 bytes, 0 no buffer
     Received 0 broadcasts (0 multicasts)
     0 input errors, 0 CRC, 0 frame, 0 overrun, 0 ignored
     0 packets output, 0 bytes, 0 underruns
     0 output errors, 0 collisions, 0 interface resets
"""


def _values(records: list[object]) -> dict[tuple[str, str], int | float]:
    return {k: v for k, (_, v) in _samples(records).items()}


def test_canned_ios_show_interfaces_maps_to_if_mib() -> None:
    values = _values(interface_records("sw1", "cisco_ios", IOS_SHOW_INTERFACES, NOW))
    gi = {m: v for (m, n), v in values.items() if n == "Gi0/1"}
    assert gi == {
        "ifAdminStatus": 1,
        "ifOperStatus": 1,
        "ifSpeed": 1_000_000_000,
        "ifHCInOctets": 1234567890123,
        "ifHCOutOctets": 987654321,
        "ifHCInUcastPkts": 9876543 - 264071,
        "ifHCInMulticastPkts": 39327,
        "ifHCInBroadcastPkts": 264071 - 39327,
        "ifInErrors": 7,
        "ifOutErrors": 4294967301 & 0xFFFF_FFFF,  # IF-MIB's 32-bit counter
        "ifInDiscards": 12,
        "ifOutDiscards": 34,
    }
    assert values[("ifAdminStatus", "Fa0/2")] == 2
    assert values[("ifOperStatus", "Fa0/2")] == 2
    assert values[("ifSpeed", "Fa0/2")] == 100_000_000


@pytest.mark.parametrize(
    ("output", "error", "words"),
    [
        ("           ^\n% Invalid input detected at '^' marker.\n", CliCommandError, "refused"),
        ("% Incomplete command.\n", CliCommandError, "refused"),
        ("Gi0/1 up up\nthis is not show interfaces\n", CliParseError, "none of the rows"),
        ("", CliParseError, "none of the rows"),
    ],
)
def test_output_that_is_not_show_interfaces_is_an_error(output, error, words) -> None:
    with pytest.raises(error) as caught:
        interface_records("sw1", "cisco_ios", output, NOW)
    assert "sw1" in str(caught.value)
    assert words in str(caught.value)
    assert caught.value.command == "show interfaces"


def test_a_field_it_cannot_read_is_a_parse_error_with_a_bounded_redacted_sample() -> None:
    # A bandwidth the template does not match leaves the field empty: no ifSpeed, no error.
    odd = IOS_SHOW_INTERFACES.replace("BW 1000000 Kbit/sec", "BW lots Kbit/sec")
    assert ("ifSpeed", "Gi0/1") not in _values(interface_records("sw1", "cisco_ios", odd, NOW))
    # A status line the template takes but without a protocol state is not guessed at.
    bad_status = IOS_SHOW_INTERFACES.replace(
        "GigabitEthernet0/1 is up, line protocol is up (connected)",
        "GigabitEthernet0/1 is up, line protocol is  ",
    )
    output = "enable secret 5 $1$abc\n" + bad_status + "x" * 2000
    with pytest.raises(CliParseError) as caught:
        interface_records("sw1", "cisco_ios", output, NOW)
    assert "sw1" in str(caught.value)
    assert "Gi0/1" in str(caught.value)
    assert caught.value.command == "show interfaces"
    assert len(caught.value.sample) == SAMPLE_CHARS
    assert caught.value.sample.startswith("enable secret <redacted>\nGigabitEthernet0/1 is up")
    assert "$1$abc" not in caught.value.sample


def test_stable_config_drops_the_lines_that_change_by_themselves() -> None:
    raw = (
        "Building configuration...\n\nCurrent configuration : 1234 bytes\n!\n"
        "! Last configuration change at 10:01:02 UTC Fri Nov 27 2026 by admin\n"
        "! NVRAM config last updated at 09:00:00 UTC Fri Nov 27 2026 by admin\n"
        "version 15.2\nhostname sw1   \nntp clock-period 17179412\n!\nend\n\n"
    )
    assert stable_config("sw1", "show running-config", raw) == (
        "!\nversion 15.2\nhostname sw1\n!\nend\n"
    )
    with pytest.raises(CliParseError):
        stable_config("sw1", "show running-config", "Building configuration...\n\n")
    with pytest.raises(CliCommandError):
        stable_config("sw1", "show run", "% Invalid input detected at '^' marker.\n")
    # Further down, such words are data (a banner, a description), not a refusal.
    banner = "version 15.2\nhostname sw1\n!\nbanner motd ^C\n% Invalid input is logged\n^C\nend\n"
    assert stable_config("sw1", "show run", banner) == banner


# --- inventory ------------------------------------------------------------------------


def _inventory(folder: Path, cli: str, *, tasks: str = "[cli_config]", more: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.yaml").write_text(
        f"sw1:\n  hostname: 192.0.2.1\n  platform: ios\n  data:\n    tasks: {tasks}\n"
        + (f"    cli: {cli}\n" if cli else "")
        + more
    )
    return plan_polls(load_inventory(folder), PollerSettings(), TaskRegistry.discover())


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ("", "no cli settings"),
        ("{password: {env: CLI_PW}}", "cli.username: required"),
        ("{username: u}", "cli.password: set a password reference or a key_file"),
        ("{username: u, password: hunter2}", "cli.password: secrets are not accepted inline"),
        ("{username: u, password: {env: NOT_SET_ANYWHERE}}", "cli.password: environment"),
        ("{username: u, password: {env: CLI_PW}, port: 0}", "cli.port"),
        ("{username: u, password: {env: CLI_PW}, device_type: ios_typo}", "cli.device_type"),
        ("{username: u, password: {env: CLI_PW}, napalm_driver: nope}", "cli.napalm_driver"),
        ("{username: u, password: {env: CLI_PW}, host_key: trust_me}", "cli.host_key"),
        ("{username: u, password: {env: CLI_PW}, host_key: {pinned: bm90IGEga2V5}}", "pinned"),
        ("{username: u, password: {env: CLI_PW}, timeout: forever}", "cli.timeout"),
        ("{username: u, password: {env: CLI_PW}, key_file: /nonexistent/key}", "cli.key_file"),
        ("{username: u, password: {env: CLI_PW}, prot: 22}", "cli.prot: unknown key"),
    ],
)
def test_bad_cli_settings_fail_at_load_naming_host_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: str, message: str
) -> None:
    monkeypatch.setenv("CLI_PW", "secret-value")
    with pytest.raises(ConfigError) as caught:
        _inventory(tmp_path, cli)
    assert "inventory host sw1" in str(caught.value)
    assert message in str(caught.value)
    assert "secret-value" not in str(caught.value)


def test_good_cli_settings_become_a_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLI_PW", "secret-value")
    (plan,) = _inventory(
        tmp_path,
        "{username: u, password: {env: CLI_PW}, port: 2222, host_key: accept_any, timeout: 3s}",
    )
    target = cli_target(plan.host)
    assert target is cli_target(plan.host)  # cached per Host object
    assert (target.device_type, target.napalm_driver, target.port) == ("cisco_ios", "ios", 2222)
    assert target.timeout == 3.0
    assert "secret-value" not in repr(target)
    # A host with a cli section is checked even when no CLI task is scheduled.
    snmp = (
        "    snmp: {user: u, auth: {protocol: sha256, key: {env: CLI_PW}},"
        " priv: {protocol: aes128, key: {env: CLI_PW}}}\n"
    )
    with pytest.raises(ConfigError, match=r"cli\.username"):
        _inventory(tmp_path / "b", "{port: 22}", tasks="[system]", more=snmp)
