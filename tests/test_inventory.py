"""Loading the inventory: clear errors that name the file, the host and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from netmon.config import PollerSettings
from netmon.errors import ConfigError
from netmon.lab import LabParams, write_inventory
from netmon.poller.inventory import load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.snmp.credentials import snmp_credentials
from netmon.snmp.hosts import snmp_settings

REPO = Path(__file__).resolve().parent.parent


def _write(folder: Path, hosts: str, groups: str = "", defaults: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.yaml").write_text(hosts)
    (folder / "groups.yaml").write_text(groups or "{}\n")
    (folder / "defaults.yaml").write_text(defaults or "{}\n")
    return folder


DEFAULTS = """
data:
  snmp:
    user: netmon
    auth: {protocol: sha256, key: {env: TEST_AUTH}}
    priv: {protocol: aes128, key: {env: TEST_PRIV}}
"""


def _plans(folder: Path):
    return plan_polls(load_inventory(folder), PollerSettings(), TaskRegistry.discover())


def test_the_committed_lab_inventory_matches_the_lab(tmp_path):
    write_inventory(LabParams(devices=20), tmp_path)
    for name in ("hosts.yaml", "groups.yaml", "defaults.yaml"):
        assert (REPO / "inventory" / "lab" / name).read_text() == (tmp_path / name).read_text()


def test_the_example_inventory_loads(monkeypatch):
    for var in (
        "NETMON_SNMP_AUTH_KEY", "NETMON_SNMP_LEGACY_AUTH_KEY", "NETMON_SNMP_LEGACY_PRIV_KEY",
        "NETMON_SNMP_CISCO_PRIV_KEY", "NETMON_SNMP_COMMUNITY",
    ):  # fmt: skip
        monkeypatch.setenv(var, "a-long-enough-key")
    folder = REPO / "inventory" / "example"
    nr = load_inventory(folder)
    # defaults' priv key is a file under /run/secrets: resolving it is the operator's job,
    # so check the merge rather than the secret.
    merged = snmp_settings(nr.inventory.hosts["core1.par1"])
    assert merged["user"] == "netmon"
    assert merged["priv"]["protocol"] == "aes256c"  # the cisco group's, over the defaults'
    assert snmp_settings(nr.inventory.hosts["acc-17.par1"])["port"] == 1161
    ups = snmp_credentials("ups-2.lyon", snmp_settings(nr.inventory.hosts["ups-2.lyon"]))
    assert (ups.version, ups.community) == ("2c", "a-long-enough-key")


def test_a_missing_secret_names_the_host_and_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_AUTH", "auth-key-12345")
    monkeypatch.delenv("TEST_PRIV", raising=False)
    folder = _write(tmp_path, "r1:\n  hostname: 127.0.0.1\n", defaults=DEFAULTS)
    with pytest.raises(ConfigError) as err:
        _plans(folder)
    assert str(err.value) == (
        "inventory host r1: snmp.priv.key: environment variable TEST_PRIV is not set"
    )


def test_host_snmp_settings_merge_key_by_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_AUTH", "auth-key-12345")
    monkeypatch.setenv("TEST_PRIV", "priv-key-12345")
    folder = _write(
        tmp_path,
        "r1:\n  hostname: 127.0.0.1\n  groups: [g]\n  data: {snmp: {port: 1161}}\n",
        groups="g:\n  data:\n    snmp: {timeout: 5s}\n    poll_interval: 30s\n",
        defaults=DEFAULTS,
    )
    (plan,) = _plans(folder)
    merged = snmp_settings(plan.host)
    assert (merged["port"], merged["timeout"], merged["user"]) == (1161, "5s", "netmon")
    assert plan.interval.total_seconds() == 30


def test_bad_yaml_names_the_file(tmp_path):
    folder = _write(tmp_path, "r1: [unclosed\n")
    with pytest.raises(ConfigError, match=r"hosts\.yaml: not valid YAML"):
        load_inventory(folder)


def test_a_bad_interval_names_host_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_AUTH", "auth-key-12345")
    monkeypatch.setenv("TEST_PRIV", "priv-key-12345")
    folder = _write(tmp_path, "r1:\n  data: {poll_interval: soon}\n", defaults=DEFAULTS)
    with pytest.raises(ConfigError, match=r"inventory host r1: poll_interval"):
        _plans(folder)


def test_a_missing_folder_or_hosts_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        load_inventory(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"hosts\.yaml: missing"):
        load_inventory(tmp_path)


def test_the_registry_finds_built_in_tasks_and_refuses_unknown_modules():
    registry = TaskRegistry.discover()
    assert {"system", "interfaces", "resources"} <= set(registry.names)
    with pytest.raises(ConfigError, match=r"cannot import no\.such\.module"):
        TaskRegistry.discover(["no.such.module"])
