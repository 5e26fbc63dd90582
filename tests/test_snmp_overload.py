"""netmon's own SNMP engine starved of CPU: an overload, never an unreachable device.

The starvation is made deterministic: the pysnmp client's event loop is blocked by a
callback that sleeps past the timeout, and for gufo-snmp (which runs on the callers'
threads) the whole process is starved by a thread that holds the GIL. The agent's answer
comes through a relay 0.3 s late, so it is still on the way when the starvation begins.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from netmon import core_metrics
from netmon.errors import SnmpError, SnmpOverloadError
from netmon.snmp.client import SnmpClient
from netmon.snmp.credentials import snmp_credentials
from netmon.snmp.gufo_engine import GufoEngine
from netmon.snmp.lateness import LagMonitor
from netmon.snmp.oids import SYSTEM
from netmon.snmp.target import SnmpTarget
from netmon.store.database import Database
from netmon.store.health import UNREACHABLE, PollHealthStore, PollOutcome
from tests.delay_relay import DelayRelay
from tests.snmpd_agent import Snmpd, require_net_snmp

COMMUNITY = f"ro-{secrets.token_hex(6)}"
STARVED = 3.0  # seconds the engine cannot run; the timeout is 1 s


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    require_net_snmp()
    with Snmpd(tmp_path_factory.mktemp("snmpd-overload"), communities=(COMMUNITY,)) as snmpd:
        yield snmpd


def _target(monkeypatch: pytest.MonkeyPatch, engine: str, port: int) -> SnmpTarget:
    monkeypatch.setenv("T_OVERLOAD_COMMUNITY", COMMUNITY)
    data: dict[str, Any] = {
        "port": port,
        "timeout": "1s",
        "retries": 0,
        "engine": engine,
        "version": "2c",
        "community": {"env": "T_OVERLOAD_COMMUNITY"},
    }
    device = f"starved-{engine}"
    return SnmpTarget(device, "127.0.0.1", snmp_credentials(device, data))


def _poll_and_record(
    get: Any, t: SnmpTarget, starve: Any, wait: float = 0.1
) -> tuple[Any, PollHealthStore]:
    """``get`` while ``starve`` runs; the outcome recorded in a health store where the
    device was reachable."""
    health = PollHealthStore(cast(Database, None))  # record() keeps reachability in memory
    health.record(PollOutcome(t.device, datetime.now(UTC), 5.0))
    result: dict[str, Any] = {}

    def poll() -> None:
        try:
            result["value"] = get(t, [SYSTEM.sysName])
        except SnmpError as exc:
            result["error"] = exc

    poller = threading.Thread(target=poll)
    if not wait:
        starve()
    poller.start()
    if wait:
        time.sleep(wait)  # the request is on its way; the answer is held 0.3 s by the relay
        starve()
    poller.join(timeout=30)
    error = result.get("error")
    events = health.record(
        PollOutcome(
            t.device,
            datetime.now(UTC),
            5.0,
            error.error_class if error else None,
            str(error) if error else None,
        )
    )
    assert events == [], events
    assert health.is_reachable(t.device) is True
    return result.get("value", error), health


def test_pysnmp_loop_blocked_past_the_deadline_is_not_a_timeout(
    agent: Snmpd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's loop cannot run for longer than a worker thread waits for a request
    (timeout, tries and the longer wait, plus 5 s): the request was never even sent."""
    client = SnmpClient()
    client.start()
    try:
        t = _target(monkeypatch, "pysnmp", agent.port)
        client.get(t, [SYSTEM.sysName])  # the agent answers
        loop = client._loop
        assert loop is not None
        blocked = t.request_deadline + 3 * t.credentials.timeout.total_seconds() + 1
        got, _ = _poll_and_record(
            client.get, t, lambda: loop.call_soon_threadsafe(time.sleep, blocked), wait=0.0
        )
        if isinstance(got, SnmpError):
            assert isinstance(got, SnmpOverloadError), got
            assert "starved (CPU)" in str(got)
        else:
            (vb,) = got
            assert vb.value == agent.sys_name.encode()
    finally:
        client.close()


def test_gufo_process_starved_past_the_timeout_is_not_a_timeout(
    agent: Snmpd, monkeypatch: pytest.MonkeyPatch
) -> None:
    lag = LagMonitor()
    lag.start_thread()
    engine = GufoEngine(lag=lag)

    def hog_the_gil() -> None:
        # No other Python thread runs (the relay, the heartbeat, the poller's return
        # from gufo-snmp) until this one is done: the process is starved.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(STARVED + 1)
        try:
            end = time.monotonic() + STARVED
            while time.monotonic() < end:
                pass
        finally:
            sys.setswitchinterval(interval)

    try:
        with DelayRelay(agent.port, 0.3) as relay:
            t = _target(monkeypatch, "gufo", relay.port)
            got, _ = _poll_and_record(engine.get, t, hog_the_gil)
        if isinstance(got, SnmpError):
            assert isinstance(got, SnmpOverloadError), got
        else:
            (vb,) = got
            assert vb.value == agent.sys_name.encode()
        assert engine.stats["overload"] + engine.stats["overload_retries"] >= 1
        monkeypatch.setattr(core_metrics, "engines_in_use", lambda: [engine])
        collector = core_metrics.CoreCollector.__new__(core_metrics.CoreCollector)
        exposed = {m.name: m for m in collector._snmp()}
        assert sum(s.value for s in exposed["netmon_snmp_overload"].samples) >= 1
    finally:
        engine.close()


def test_overload_and_slow_never_make_a_device_unreachable() -> None:
    assert {"timeout"} == UNREACHABLE
    for error_class in ("overload", "slow"):
        outcome = PollOutcome("d", datetime.now(UTC), 1.0, error_class, "x")
        assert outcome.reachable


def test_the_overload_message_says_it_was_netmon(monkeypatch: pytest.MonkeyPatch) -> None:
    from netmon.snmp.failures import overload

    t = _target(monkeypatch, "gufo", 161)
    exc = overload(t, 2.5)
    assert isinstance(exc, SnmpOverloadError)
    assert exc.error_class == "overload"
    assert "netmon's SNMP engine was starved (CPU)" in str(exc)
    assert "2.50 s of the 1 s timeout" in str(exc)
