"""netmon end to end against a real Net-SNMP snmpd (tests/snmpd_agent.py).

The real-peer requirement: a snmpd started by the test on a loopback port, with its own
SNMPv3 users (SHA/AES-128, SHA-256/AES-256, SHA-512/AES-256), polled by the real tasks
through a Nornir SimpleInventory written here, end to end into PostgreSQL; and a wrong
key, an unknown user, a silent agent and a reboot each give the right outcome while the
other devices of the same poller keep being polled.

Nothing is mocked: keys come from ``{env: NAME}`` / ``{file: PATH}`` references, the
tasks are ``netmon.tasks.*``, the poller is :class:`PollerService` with a real
``SampleWriter`` and ``Batcher``, and the assertions read the database with SQL.

Device names are unique per test (a random suffix): the SNMP client, the target cache and
the interfaces task keep per-device state for the life of the process.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from nornir import InitNornir
from nornir.core import Nornir

from netmon.config import Settings
from netmon.errors import (
    CollectionError,
    SnmpTimeoutError,
    SnmpUnknownUserError,
    SnmpWrongDigestError,
)
from netmon.ingest.rates import octet_rate_cap
from netmon.poller.inventory import PollPlan, load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import run_poll
from netmon.poller.service import PollerService
from netmon.records import DeviceEvent, DeviceFacts, Sample
from netmon.store.database import Database
from netmon.tasks.interfaces import interfaces
from netmon.tasks.resources import resources
from netmon.tasks.system import system
from tests.poller_helpers import eventually, poller_settings, running_poller
from tests.snmpd_agent import (
    DEFAULT_ENGINE_ID,
    Snmpd,
    SnmpUser,
    require_net_snmp,
)

pytestmark = pytest.mark.slow

# The spec's three users (tests/snmpd_agent.py creates them on every snmpd).
REQUIRED_USERS = ["sha1-aes128", "sha256-aes256", "sha512-aes256"]
ALL_TASKS = ["system", "interfaces", "resources"]
# Healthy devices get the defaults (2 s, one retry: no false alarm on a busy machine); the
# device whose agent is silenced or rebooted fails fast.
FAST_FAIL: dict[str, Any] = {"timeout": "1s", "retries": 0}


@pytest.fixture
def second_snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    """A snmpd of the test's own (to pause or reboot) that is a second SNMP engine.

    ``fresh_snmpd`` has the same engine ID as the module's ``snmpd``; two real devices do
    not, and netmon's client cannot tell two agents with one engine ID apart (see
    test_two_agents_with_one_engine_id_and_user_name_are_kept_apart).
    """
    require_net_snmp()
    engine_id = DEFAULT_ENGINE_ID + b"-" + secrets.token_hex(3).encode()
    with Snmpd(tmp_path / "snmpd-2", engine_id=engine_id) as agent:
        yield agent


# -- a Nornir SimpleInventory for snmpd users -----------------------------------------


@dataclass(frozen=True)
class InventoryHost:
    """One inventory host: ``user`` is the name sent on the wire, ``creds`` the
    protocols and keys it uses (usually that user's own, changed for failure cases)."""

    name: str
    agent: Snmpd
    user: str
    creds: SnmpUser
    keys_from_file: tuple[str, ...] = ()  # "auth", "priv": {file: PATH}, else {env: NAME}
    snmp: dict[str, Any] = field(default_factory=dict)  # host-level overrides (timeout)


def snmpd_host(name: str, agent: Snmpd, user: str, **changes: Any) -> InventoryHost:
    """A host for ``agent``'s ``user``; ``changes`` replace SnmpUser fields (a wrong key),
    ``keys_from_file=("priv",)`` references that key by ``{file: PATH}``, ``snmp={...}``
    adds host-level SNMP settings. A user the agent does not have borrows the protocols
    and keys of ``sha256-aes256``."""
    from_file = tuple(changes.pop("keys_from_file", ()))
    snmp = dict(changes.pop("snmp", {}))
    creds = agent.users.get(user, agent.users["sha256-aes256"])._replace(**changes)
    return InventoryHost(name, agent, user, creds, from_file, snmp)


def write_inventory(
    folder: Path,
    hosts: Sequence[InventoryHost],
    monkeypatch: pytest.MonkeyPatch,
    *,
    timeout: str = "2s",
    retries: int = 1,
    tasks: Sequence[str] = ALL_TASKS,
) -> Path:
    """hosts.yaml / groups.yaml / defaults.yaml for ``hosts`` in ``folder``.

    SNMP settings are spread over the three layers as an operator would write them, which
    also exercises netmon's key-by-key merge: timeout, retries and tasks in defaults; the
    agent's port in a group per snmpd; user and protocols with key references on the
    host. Keys are set as environment variables (unique names) through ``monkeypatch``,
    or written to a 0600 file next to the folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(3).upper()

    def key_ref(host: InventoryHost, kind: str, value: str) -> dict[str, str]:
        if kind in host.keys_from_file:
            path = key_file(folder, host.name, kind)
            path.write_text(value + "\n")  # trailing newline: stripped by netmon
            path.chmod(0o600)
            return {"file": str(path)}
        env = f"NETMON_E2E_{token}_{host.name.upper().replace('-', '_')}_{kind.upper()}"
        monkeypatch.setenv(env, value)
        return {"env": env}

    groups: dict[str, Any] = {}
    hosts_yaml: dict[str, Any] = {}
    for h in hosts:
        group = f"snmpd-{h.agent.port}"
        groups[group] = {"data": {"snmp": {"port": h.agent.port}}}
        snmp: dict[str, Any] = {
            "user": h.user,
            "auth": {
                "protocol": h.creds.auth_protocol,
                "key": key_ref(h, "auth", h.creds.auth_key),
            },
        }
        if h.creds.priv_protocol is not None:
            assert h.creds.priv_key is not None
            snmp["priv"] = {
                "protocol": h.creds.priv_protocol,
                "key": key_ref(h, "priv", h.creds.priv_key),
            }
        hosts_yaml[h.name] = {
            "hostname": h.agent.address[0],
            "groups": [group],
            "data": {"snmp": {**snmp, **h.snmp}, "site": "e2e"},
        }
    defaults = {"data": {"snmp": {"timeout": timeout, "retries": retries}, "tasks": list(tasks)}}
    for file, content in (
        ("hosts.yaml", hosts_yaml),
        ("groups.yaml", groups),
        ("defaults.yaml", defaults),
    ):
        (folder / file).write_text(yaml.safe_dump(content, sort_keys=False))
    return folder


def key_file(folder: Path, host: str, kind: str) -> Path:
    """Where :func:`write_inventory` keeps ``host``'s ``kind`` key when it is a file."""
    directory = folder.parent / f"{folder.name}-secrets"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / f"{host}.{kind}"


def plain_nornir(folder: Path) -> Nornir:
    """Nornir as a user's own script starts it: InitNornir, SimpleInventory, threads."""
    return InitNornir(
        runner={"plugin": "threaded", "options": {"num_workers": 10}},
        inventory={
            "plugin": "SimpleInventory",
            "options": {
                "host_file": str(folder / "hosts.yaml"),
                "group_file": str(folder / "groups.yaml"),
                "defaults_file": str(folder / "defaults.yaml"),
            },
        },
        logging={"enabled": False},
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# -- SQL ------------------------------------------------------------------------------

_SAMPLES = """
SELECT x.time, x.value, s.labels->>'interface' AS interface
FROM samples x
JOIN series s ON s.id = x.series_id
JOIN devices d ON d.id = s.device_id
WHERE d.name = $1 AND s.metric = $2
ORDER BY x.time
"""


async def samples(conn: asyncpg.Connection, device: str, metric: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(_SAMPLES, device, metric))


async def polls(conn: asyncpg.Connection, device: str) -> int:
    """Stored sysUpTime samples: one per poll whose system task answered."""
    return len(await samples(conn, device, "sysUpTime"))


async def events(conn: asyncpg.Connection, device: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT e.time, e.kind, e.severity, e.message, e.attributes "
            "FROM device_events e JOIN devices d ON d.id = e.device_id "
            "WHERE d.name = $1 ORDER BY e.time, e.id",
            device,
        )
    )


async def health(conn: asyncpg.Connection, device: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT h.* FROM poll_health h JOIN devices d ON d.id = h.device_id WHERE d.name = $1",
        device,
    )


def at_least(conn: asyncpg.Connection, device: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await polls(conn, device) >= n

    return check


def plan_for(folder: Path, settings: Settings, device: str) -> tuple[Nornir, PollPlan]:
    """The Nornir and the PollPlan of ``device``, as the poller builds them."""
    nr = load_inventory(folder)
    plans = plan_polls(nr, settings.poller, TaskRegistry.discover())
    return nr, next(p for p in plans if p.name == device)


def assert_healthy(row: asyncpg.Record | None, device: str) -> None:
    assert row is not None, f"{device}: no poll_health row"
    assert row["last_success"] is not None, f"{device}: never succeeded"
    assert row["consecutive_failures"] == 0, f"{device}: {row['last_error']}"
    assert row["last_error_class"] is None, f"{device}: {row['last_error']}"
    assert row["reachable"] is True


def failed_devices(service: PollerService) -> set[str]:
    """Devices with a failed poll among the poller's last errors (the last 20)."""
    assert service.poller is not None
    return {device for _when, device, _error in service.poller.stats.last_errors}


def last_errors(service: PollerService) -> list[str]:
    assert service.poller is not None
    return [f"{device}: {error}" for _when, device, error in service.poller.stats.last_errors]


# -- 1. the tasks from a user's own Nornir script -------------------------------------


def test_tasks_from_a_plain_nornir_script_return_netmon_records(
    snmpd: Snmpd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DESIGN: the tasks work from a user's own script with Nornir's own InitNornir and
    SimpleInventory (threaded runner, several hosts at once), no netmon service around."""
    users = [name for name, u in snmpd.users.items() if u.priv_protocol is not None]
    assert set(REQUIRED_USERS) <= set(users)
    hosts = [
        snmpd_host(unique(f"std-{user}"), snmpd, user, keys_from_file=("priv",) if i == 0 else ())
        for i, user in enumerate(users)
    ]
    folder = write_inventory(tmp_path / "inventory", hosts, monkeypatch)
    nr = plain_nornir(folder)
    by_task = {t.__name__: nr.run(task=t) for t in (system, interfaces, resources)}
    for name, results in by_task.items():
        assert not results.failed, {h: r.exception for h, r in results.failed_hosts.items()}
        assert set(results) == {h.name for h in hosts}, name

    for h in hosts:
        sys_records = by_task["system"][h.name][0].result
        assert all(isinstance(r, Sample | DeviceFacts | DeviceEvent) for r in sys_records)
        (uptime,) = [r for r in sys_records if isinstance(r, Sample)]
        assert uptime.series.metric == "sysUpTime"
        assert uptime.series.kind == "gauge"
        assert uptime.value > 0
        (facts,) = [r for r in sys_records if isinstance(r, DeviceFacts)]
        assert facts.device == h.name
        assert facts.facts["sysName"] == snmpd.sys_name
        assert facts.facts["sysObjectID"].startswith("1.3.6.1.4.1.8072.")  # Net-SNMP

        if_records = by_task["interfaces"][h.name][0].result
        assert all(isinstance(r, Sample | DeviceFacts) for r in if_records)
        lo = [
            r
            for r in if_records
            if isinstance(r, Sample)
            and r.series.metric == "ifHCInOctets"
            and r.series.label_map == {"interface": "lo"}
        ]
        assert len(lo) == 1, f"{h.name}: no ifHCInOctets sample for lo"
        key = lo[0].series
        assert (key.device, key.kind, key.bits, key.unit) == (h.name, "counter", 64, "bytes")
        assert isinstance(lo[0].value, int)
        assert lo[0].value > 0  # the test's own SNMP traffic goes through lo
        (if_facts,) = [r for r in if_records if isinstance(r, DeviceFacts)]
        assert "lo" in if_facts.facts["interfaces"]

        hr_records = by_task["resources"][h.name][0].result
        assert all(isinstance(r, Sample) for r in hr_records)
        storage = {
            r.series.label_map["storage"]: r.value
            for r in hr_records
            if r.series.metric == "hrStorageSize"
        }
        assert storage.get("Physical memory", 0) > 0, storage
        assert all(isinstance(v, int) and v >= 0 for v in storage.values())


def test_two_agents_with_one_engine_id_and_user_name_are_kept_apart(
    snmpd: Snmpd,
    fresh_snmpd: Snmpd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Engine IDs should be unique but are not always (cloned VM images with
    exactEngineID, vendor defaults); each device's own keys must still be used for it."""
    user = "sha512-aes256"
    assert fresh_snmpd.engine_id == snmpd.engine_id
    assert fresh_snmpd.users[user].auth_key != snmpd.users[user].auth_key
    hosts = [
        snmpd_host(unique("twin-a"), snmpd, user),
        snmpd_host(unique("twin-b"), fresh_snmpd, user),
    ]
    folder = write_inventory(tmp_path / "inventory", hosts, monkeypatch, **FAST_FAIL)
    nr = plain_nornir(folder)
    failures = []
    for _round in range(2):
        for task in (system, interfaces):
            result = nr.run(task=task, on_failed=True)
            failures += [f"{h}: {r.exception!r}" for h, r in result.failed_hosts.items()]
    assert failures == []


# -- 2. the three required users, polled into PostgreSQL ------------------------------


async def test_required_users_are_polled_end_to_end_into_postgres(
    snmpd: Snmpd,
    db: Database,
    settings: Settings,
    conn: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts = [
        snmpd_host(
            unique(f"pg-{user}"),
            snmpd,
            user,
            keys_from_file=("priv",) if user == "sha512-aes256" else (),
        )
        for user in REQUIRED_USERS
    ]
    names = [h.name for h in hosts]
    folder = write_inventory(tmp_path / "inventory", hosts, monkeypatch)
    config = poller_settings(settings, interval="1s")

    async with running_poller(config, db, folder) as service:

        async def rates_for_all() -> bool:
            for name in names:
                if await polls(conn, name) < 2:
                    return False
                if not await samples(conn, name, "ifHCInOctets:rate"):
                    return False
            return True

        await eventually(rates_for_all, timeout=20, what="two polls and a rate per device")
        assert service.poller is not None
        assert service.poller.stats.failed == 0, last_errors(service)

    for name in names:
        uptimes = await samples(conn, name, "sysUpTime")
        assert len(uptimes) >= 2
        assert all(r["value"] > 0 for r in uptimes)
        assert [r["value"] for r in uptimes] == sorted(r["value"] for r in uptimes)
        octets = await samples(conn, name, "ifHCInOctets")
        assert "lo" in {r["interface"] for r in octets}
        lo_values = [r["value"] for r in octets if r["interface"] == "lo"]
        assert len(lo_values) >= 2
        assert lo_values == sorted(lo_values)  # a 64-bit counter, stored exactly
        rates = await samples(conn, name, "ifHCInOctets:rate")
        assert rates, f"{name}: no ifHCInOctets:rate"
        assert all(r["value"] >= 0 for r in rates)
        assert_healthy(await health(conn, name), name)
        assert await events(conn, name) == []
        row = await conn.fetchrow(
            "SELECT facts->>'sysName' AS sys_name, facts->'interfaces' ? 'lo' AS has_lo, "
            "site FROM devices WHERE name = $1",
            name,
        )
        assert row is not None
        assert (row["sys_name"], row["has_lo"], row["site"]) == (snmpd.sys_name, True, "e2e")

    kinds = {
        (r["metric"], r["kind"], r["unit"])
        for r in await conn.fetch(
            "SELECT DISTINCT metric, kind, unit FROM series "
            "WHERE metric IN ('ifHCInOctets', 'ifHCInOctets:rate', 'sysUpTime', "
            "'hrStorageSize')"
        )
    }
    assert kinds == {
        ("ifHCInOctets", "counter", "bytes"),
        ("ifHCInOctets:rate", "gauge", "bytes/s"),
        ("sysUpTime", "gauge", "s"),
        ("hrStorageSize", "gauge", "bytes"),
    }


# -- 3. wrong key, unknown user: typed errors, the others go on -----------------------


async def test_wrong_key_and_unknown_user_are_typed_and_fail_only_their_device(
    snmpd: Snmpd,
    db: Database,
    settings: Settings,
    conn: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = [snmpd_host(unique(f"ok-{user}"), snmpd, user) for user in REQUIRED_USERS]
    # A user the agent has, with a wrong auth key. (Not a user name that another device
    # of this poller uses on the same agent: see
    # test_two_agents_with_one_engine_id_and_user_name_are_kept_apart.)
    wrong_key = snmpd_host(unique("bad-key"), snmpd, "sha1-aes256", auth_key="not-the-right-key")
    unknown_user = snmpd_host(unique("bad-user"), snmpd, "no-such-user")
    expected: dict[str, tuple[type[CollectionError], str]] = {
        wrong_key.name: (SnmpWrongDigestError, "wrong_digest"),
        unknown_user.name: (SnmpUnknownUserError, "unknown_user"),
    }
    folder = write_inventory(tmp_path / "inventory", [*good, wrong_key, unknown_user], monkeypatch)
    config = poller_settings(settings, interval="1s")

    # The poll itself: run_poll gives the typed error, and no records.
    for name, (error_type, error_class) in expected.items():
        nr, plan = plan_for(folder, config, name)
        result = await asyncio.to_thread(run_poll, nr, plan)
        assert isinstance(result.error, error_type), repr(result.error)
        assert result.error.error_class == error_class
        assert name in str(result.error)
        assert result.records == []

    async with running_poller(config, db, folder) as service:

        async def bad_failed_twice_good_polled_thrice() -> bool:
            for name in expected:
                row = await health(conn, name)
                if row is None or row["consecutive_failures"] < 2:
                    return False
            return all([await polls(conn, h.name) >= 3 for h in good])

        await eventually(bad_failed_twice_good_polled_thrice, timeout=20, what="every device")
        # Every failure the poller saw was one of the two bad devices'.
        assert failed_devices(service) == set(expected), last_errors(service)

    for name, (_error_type, error_class) in expected.items():
        row = await health(conn, name)
        assert row is not None
        assert row["last_error_class"] == error_class, row["last_error"]
        assert row["last_success"] is None
        assert row["consecutive_failures"] >= 2
        assert row["reachable"] is True  # it answered: refused, not silent
        assert await events(conn, name) == []  # so no device.unreachable either
        assert await polls(conn, name) == 0
    for h in good:
        assert_healthy(await health(conn, h.name), h.name)
        assert await samples(conn, h.name, "ifHCInOctets:rate"), h.name


@pytest.mark.parametrize("pg_server", ["embedded"], indirect=True)  # not about storage
async def test_a_key_fixed_in_its_file_is_used_after_a_reload(
    snmpd: Snmpd,
    db: Database,
    settings: Settings,
    conn: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator mistyped the auth key in its secret file, fixes the file and reloads
    the inventory (SIGHUP): the device must then be polled with the fixed key."""
    right_key = snmpd.users["sha256-aes256"].auth_key
    host = snmpd_host(
        unique("rekey"),
        snmpd,
        "sha256-aes256",
        auth_key="a-typo-in-the-auth-key",
        keys_from_file=("auth",),
    )
    folder = write_inventory(tmp_path / "inventory", [host], monkeypatch)
    async with running_poller(poller_settings(settings, interval="1s"), db, folder) as service:

        async def refused() -> bool:
            row = await health(conn, host.name)
            return row is not None and row["last_error_class"] == "wrong_digest"

        await eventually(refused, timeout=10, what="wrong_digest with the mistyped key")
        key_file(folder, host.name, "auth").write_text(right_key + "\n")
        await service.reload()
        await eventually(
            at_least(conn, host.name, 1), timeout=20, what="a poll with the fixed key after reload"
        )
    row = await health(conn, host.name)
    assert row is not None
    assert row["consecutive_failures"] == 0


# -- 4. a silent agent ----------------------------------------------------------------


async def test_silent_agent_is_unreachable_then_reachable_and_others_go_on(
    snmpd: Snmpd,
    second_snmpd: Snmpd,
    db: Database,
    settings: Settings,
    conn: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quiet = snmpd_host(unique("quiet"), second_snmpd, "sha512-aes256", snmp=FAST_FAIL)
    others = [snmpd_host(unique(f"chatty-{user}"), snmpd, user) for user in REQUIRED_USERS]
    folder = write_inventory(tmp_path / "inventory", [quiet, *others], monkeypatch)
    config = poller_settings(settings, interval="1s")
    nr, plan = plan_for(folder, config, quiet.name)

    async with running_poller(config, db, folder) as service:
        await eventually(at_least(conn, quiet.name, 1), what="a first poll of the quiet agent")
        with second_snmpd.silenced():
            counts = {h.name: await polls(conn, h.name) for h in others}
            # The poll itself, while the agent is silent: a timeout after 1 s x (0 + 1).
            started = time.monotonic()
            result = await asyncio.to_thread(run_poll, nr, plan)
            elapsed = time.monotonic() - started
            assert isinstance(result.error, SnmpTimeoutError), repr(result.error)
            assert result.error.error_class == "timeout"
            assert result.records == []
            assert 0.9 <= elapsed < 5.0

            async def unreachable() -> bool:
                return "device.unreachable" in [e["kind"] for e in await events(conn, quiet.name)]

            async def health_says_down() -> bool:
                row = await health(conn, quiet.name)  # flushed about once a second
                return row is not None and row["reachable"] is False

            await eventually(unreachable, timeout=10, what="device.unreachable")
            await eventually(health_says_down, timeout=5, what="poll_health reachable = false")
            row = await health(conn, quiet.name)
            assert row is not None
            assert row["last_error_class"] == "timeout"
            assert row["consecutive_failures"] >= 1
            for h in others:
                await eventually(
                    at_least(conn, h.name, counts[h.name] + 2),
                    timeout=10,
                    what=f"{h.name} polled while the other agent is silent",
                )
            silent_polls = await polls(conn, quiet.name)
        assert not second_snmpd.paused

        async def reachable_again() -> bool:
            kinds = [e["kind"] for e in await events(conn, quiet.name)]
            return kinds[-1:] == ["device.reachable"]

        await eventually(reachable_again, timeout=10, what="device.reachable")
        await eventually(at_least(conn, quiet.name, silent_polls + 1), what="a poll after")
        assert failed_devices(service) == {quiet.name}, last_errors(service)

    quiet_events = await events(conn, quiet.name)
    assert [e["kind"] for e in quiet_events] == ["device.unreachable", "device.reachable"]
    down, up = quiet_events
    assert down["severity"] == "critical"
    assert '"error_class": "timeout"' in down["attributes"]
    assert down["time"] < up["time"]
    row = await health(conn, quiet.name)
    assert row is not None
    assert row["reachable"] is True
    assert row["consecutive_failures"] == 0
    assert row["last_success"] is not None
    assert row["last_success"] > down["time"]
    assert row["last_error_class"] == "timeout"  # the last error is kept for the operator
    for h in others:
        assert_healthy(await health(conn, h.name), h.name)
        assert await events(conn, h.name) == []


# -- 5. a reboot ----------------------------------------------------------------------


async def test_reboot_is_an_event_and_no_rate_spans_it(
    snmpd: Snmpd,
    second_snmpd: Snmpd,
    db: Database,
    settings: Settings,
    conn: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rebooting = snmpd_host(unique("reboot"), second_snmpd, "sha256-aes256", snmp=FAST_FAIL)
    steady = snmpd_host(unique("steady"), snmpd, "sha1-aes128")
    folder = write_inventory(tmp_path / "inventory", [rebooting, steady], monkeypatch)
    config = poller_settings(settings, interval="1s")
    name = rebooting.name

    async with running_poller(config, db, folder):

        async def rates_before() -> bool:
            return bool(await samples(conn, name, "ifHCInOctets:rate"))

        await eventually(rates_before, timeout=15, what="rates before the reboot")
        steady_before = await polls(conn, steady.name)
        # Blocking (it waits for snmpd and checks the reboot with snmpget): in a thread,
        # so the poller's loop keeps polling meanwhile.
        await asyncio.to_thread(second_snmpd.restart)

        async def rebooted_and_rates_again() -> bool:
            reboot_times = [
                e["time"] for e in await events(conn, name) if e["kind"] == "device.rebooted"
            ]
            if not reboot_times:
                return False
            rates = await samples(conn, name, "ifHCInOctets:rate")
            return any(r["time"] > reboot_times[0] for r in rates)

        await eventually(rebooted_and_rates_again, timeout=15, what="reboot event, then rates")
        await eventually(at_least(conn, steady.name, steady_before + 3), what="steady polled")

    reboots = [e for e in await events(conn, name) if e["kind"] == "device.rebooted"]
    assert len(reboots) == 1, reboots
    event = reboots[0]
    assert event["severity"] == "warning"

    # The poll that saw the reboot: the first sysUpTime lower than the one before it.
    uptimes = await samples(conn, name, "sysUpTime")
    drops = [i for i in range(1, len(uptimes)) if uptimes[i]["value"] < uptimes[i - 1]["value"]]
    assert len(drops) == 1, [(r["time"], r["value"]) for r in uptimes]
    first_after = uptimes[drops[0]]
    assert event["time"] == first_after["time"]
    assert first_after["value"] < uptimes[drops[0] - 1]["value"]
    window_end: datetime | None = (
        uptimes[drops[0] + 1]["time"] if drops[0] + 1 < len(uptimes) else None
    )

    def in_reboot_poll(t: datetime) -> bool:
        return t >= first_after["time"] and (window_end is None or t < window_end)

    # That poll did read the counters (Net-SNMP's come from the kernel and did not reset,
    # so a naive rate would look plausible) ...
    octets = await samples(conn, name, "ifHCInOctets")
    assert any(in_reboot_poll(r["time"]) and r["interface"] == "lo" for r in octets)
    # ... and no rate was computed across the reboot, for any counter.
    spanning = await conn.fetch(
        "SELECT s.metric, x.time, x.value FROM samples x JOIN series s ON s.id = x.series_id "
        "JOIN devices d ON d.id = s.device_id WHERE d.name = $1 AND s.metric LIKE '%:rate'",
        name,
    )
    assert [r for r in spanning if in_reboot_poll(r["time"])] == []
    # Rates before and after it, and none above lo's cap (ifSpeed 10 Mb/s on Linux).
    rates = await samples(conn, name, "ifHCInOctets:rate")
    assert any(r["time"] < first_after["time"] for r in rates)
    assert any(window_end is not None and r["time"] >= window_end for r in rates)
    speeds = {r["value"] for r in await samples(conn, name, "ifSpeed") if r["interface"] == "lo"}
    (lo_speed,) = speeds
    cap = octet_rate_cap(int(lo_speed))
    assert cap is not None
    assert all(r["value"] <= cap for r in rates if r["interface"] == "lo")

    assert [e["kind"] for e in await events(conn, steady.name)] == []
    assert_healthy(await health(conn, steady.name), steady.name)
