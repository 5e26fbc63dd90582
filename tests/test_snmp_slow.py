"""A device whose round trip is just over the timeout answers: it is slow, not down.

A UDP relay between the engine and a real snmpd (tests/snmpd_agent.py) holds every answer
back for 1.3 times the timeout. Each engine asks once more with a longer timeout after a
timeout, counts the answer that comes then as a late answer, and a device whose late
answers were seen lately but that times out even so is ``slow``: reachable.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from netmon import core_metrics
from netmon.errors import SnmpError, SnmpSlowError, SnmpTimeoutError
from netmon.snmp.client import SnmpClient
from netmon.snmp.credentials import snmp_credentials
from netmon.snmp.engines import SnmpEngine
from netmon.snmp.gufo_engine import GufoEngine
from netmon.snmp.oids import SYSTEM
from netmon.snmp.target import SnmpTarget
from netmon.store.database import Database
from netmon.store.health import PollHealthStore, PollOutcome
from tests.delay_relay import DelayRelay
from tests.snmpd_agent import Snmpd, require_net_snmp

COMMUNITY = f"ro-{secrets.token_hex(6)}"
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    require_net_snmp()
    with Snmpd(tmp_path_factory.mktemp("snmpd-slow"), communities=(COMMUNITY,)) as snmpd:
        yield snmpd


@pytest.fixture(params=["gufo", "pysnmp"])
def engine(request: pytest.FixtureRequest) -> Iterator[SnmpEngine]:
    if request.param == "gufo":
        gufo = GufoEngine()
        yield gufo
        gufo.close()
    else:
        client = SnmpClient()
        client.start()
        yield client
        client.close()


def _target(
    monkeypatch: pytest.MonkeyPatch, engine: SnmpEngine, port: int, device: str, **more: Any
) -> SnmpTarget:
    monkeypatch.setenv("T_SLOW_COMMUNITY", COMMUNITY)
    data: dict[str, Any] = {
        "port": port,
        "timeout": f"{TIMEOUT:g}s",
        "retries": 0,
        "engine": engine.name,
        "version": "2c",
        "community": {"env": "T_SLOW_COMMUNITY"},
    }
    data.update(more)
    return SnmpTarget(device, "127.0.0.1", snmp_credentials(device, data))


def _exposed(engine: SnmpEngine, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """The engine's counters as /metrics shows them: {family: sum of its samples}."""
    monkeypatch.setattr(core_metrics, "engines_in_use", lambda: [engine])
    collector = core_metrics.CoreCollector.__new__(core_metrics.CoreCollector)
    return {m.name: sum(s.value for s in m.samples) for m in collector._snmp()}


def _health() -> PollHealthStore:
    return PollHealthStore(cast(Database, None))  # record() keeps reachability in memory


def _outcome(health: PollHealthStore, device: str, exc: SnmpError | None) -> list[Any]:
    error_class = exc.error_class if exc is not None else None
    now = datetime.now(UTC)
    return health.record(PollOutcome(device, now, 10.0, error_class, str(exc) if exc else None))


def test_answers_just_past_the_timeout_are_late_answers_not_unreachable(
    agent: Snmpd, engine: SnmpEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = _health()
    device = f"slow-{engine.name}"
    with DelayRelay(agent.port, TIMEOUT * 1.3) as relay:
        t = _target(monkeypatch, engine, relay.port, device)
        _outcome(health, device, None)  # it answered before
        # The timeout passes, the longer wait that follows it gets the answer.
        (vb,) = engine.get(t, [SYSTEM.sysName])
        assert vb.value == agent.sys_name.encode()
        assert engine.stats["late_answers"] == 1
        assert _outcome(health, device, None) == []
        assert _exposed(engine, monkeypatch)["netmon_snmp_late_answers"] == 1
        assert health.is_reachable(device) is True
        # The device keeps working polls: the next request is answered as well.
        (vb,) = engine.get(t, [SYSTEM.sysName])
        assert vb.value == agent.sys_name.encode()


def test_slow_device_that_times_out_even_with_the_longer_wait_is_slow(
    agent: Snmpd, engine: SnmpEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = _health()
    device = f"slower-{engine.name}"
    with DelayRelay(agent.port, TIMEOUT * 1.3) as relay:
        t = _target(monkeypatch, engine, relay.port, device)
        _outcome(health, device, None)
        engine.get(t, [SYSTEM.sysName])  # a late answer, seen
        assert engine.stats["late_answers"] >= 1
        relay.delay = TIMEOUT * 6  # slower than even the longer wait
        with pytest.raises(SnmpSlowError, match=r"after the timeout of 1 s .*snmp.timeout") as e:
            engine.get(t, [SYSTEM.sysName])
        assert e.value.error_class == "slow"
        assert _outcome(health, device, e.value) == []
        assert health.is_reachable(device) is True
        # The next poll, without the longer wait (it failed just now), is slow as well.
        with pytest.raises(SnmpSlowError):
            engine.get(t, [SYSTEM.sysName])


def test_a_silent_device_is_still_a_timeout_and_unreachable(
    agent: Snmpd, engine: SnmpEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = _health()
    device = f"silent-{engine.name}"
    with DelayRelay(agent.port, 3600.0) as relay:  # never answers in the test's time
        t = _target(monkeypatch, engine, relay.port, device)
        _outcome(health, device, None)
        with pytest.raises(SnmpTimeoutError) as e:
            engine.get(t, [SYSTEM.sysName])
        assert e.value.error_class == "timeout"
        (event,) = _outcome(health, device, e.value)
        assert event.kind == "device.unreachable"
        assert engine.stats["late_answers"] == 0
