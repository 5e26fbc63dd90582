"""Scheduling rules: overruns skipped never stacked, reload keeps the schedule, a graceful
stop stores what polls in flight return; users' own tasks stored like built-in ones."""

from __future__ import annotations

import asyncio
import threading

import pytest
import structlog

from netmon.lab import Lab
from netmon.poller.inventory import load_inventory, plan_polls
from tests.poller_helpers import (
    eventually,
    fast_inventory,
    poller_settings,
    running_poller,
)
from tests.user_tasks import slow

pytestmark = [pytest.mark.slow, pytest.mark.lab(interfaces=2)]


async def count(conn, metric: str, device: str | None = None) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM samples v JOIN series s ON s.id = v.series_id "
        "JOIN devices d ON d.id = s.device_id "
        "WHERE s.metric = $1 AND ($2::text IS NULL OR d.name = $2)",
        metric,
        device,
    )


async def test_an_overrun_is_recorded_and_skipped_never_stacked(lab, db, settings, conn, tmp_path):
    slow.reset(delay=2.5)
    inventory = fast_inventory(lab, tmp_path / "inv", interval="1s", tasks=["slow_probe"])
    config = poller_settings(settings, task_modules=["tests.user_tasks.slow"])
    async with running_poller(config, db, inventory) as service:
        await eventually(lambda: _done(service, 6), timeout=30, what="six polls")
        assert service.poller is not None
        assert service.poller.stats.overruns >= 3
    assert slow.max_concurrent_per_device() == 1
    rows = await conn.fetch("SELECT overruns FROM poll_health")
    assert len(rows) == 3
    assert all(r["overruns"] >= 1 for r in rows)


async def test_polls_past_max_in_flight_wait_and_say_so(lab, db, settings, conn, tmp_path, caplog):
    """The limit is the operator's: polls beyond it wait (counted, with a warning that
    names the setting), and never more than that many run."""
    slow.reset(delay=1.0)
    inventory = fast_inventory(lab, tmp_path / "inv", interval="2s", tasks=["slow_probe"])
    config = poller_settings(settings, task_modules=["tests.user_tasks.slow"], max_in_flight=1)
    with structlog.testing.capture_logs() as logs:
        async with running_poller(config, db, inventory) as service:
            await eventually(lambda: _done(service, 4), timeout=30, what="four polls")
            assert service.poller is not None
            assert service.poller.stats.waited >= 2
    assert slow.max_concurrent() == 1
    warned = [e for e in logs if "poller.max_in_flight polls are running" in e["event"]]
    assert len(warned) == 1, warned  # once per 5 minutes, not once per poll
    assert warned[0]["max_in_flight"] == 1


async def _done(service, polls: int) -> bool:
    return service.poller is not None and service.poller.stats.polls >= polls


async def test_a_graceful_stop_stores_what_polls_in_flight_return(
    lab, db, settings, conn, tmp_path
):
    slow.reset(delay=1.5)
    inventory = fast_inventory(lab, tmp_path / "inv", interval="60s", tasks=["slow_probe"])
    config = poller_settings(settings, task_modules=["tests.user_tasks.slow"])
    async with running_poller(config, db, inventory) as service:
        # Phases spread the first polls over the interval; start all three now.
        assert service.poller is not None
        now = service.poller._clock()
        for slot in list(service.poller._slots.values()):
            service.poller._due(slot, now, now)
        await eventually(_started(3), what="three polls in flight")
        assert await count(conn, "slow_probe") == 0
    # The context's exit stopped the poller while the polls were still sleeping.
    assert await count(conn, "slow_probe") == 3


def _started(n: int):
    async def check() -> bool:
        return slow.started() >= n

    return check


async def test_reload_keeps_the_schedule_adds_and_removes(lab, db, settings, conn, tmp_path):
    inventory = fast_inventory(lab, tmp_path / "inv", interval="1s", tasks=["system"])
    async with running_poller(poller_settings(settings), db, inventory) as service:
        assert service.poller is not None
        kept = service.poller._slots["lab-0001"]
        await eventually(
            lambda: _polled(conn, "lab-0003"), what="lab-0003 polled before the reload"
        )
        hosts = (inventory / "hosts.yaml").read_text()
        renamed = hosts.replace("lab-0003:", "lab-new:")
        (inventory / "hosts.yaml").write_text(renamed)
        await service.reload()
        assert service.poller._slots["lab-0001"] is kept  # same slot: same phase, not restarted
        assert set(service.poller.device_names) == {"lab-0001", "lab-0002", "lab-new"}
        await eventually(lambda: _polled(conn, "lab-new"), what="the new host polled")
        before = await count(conn, "sysUpTime", "lab-0003")
        await asyncio.sleep(2.5)
        assert await count(conn, "sysUpTime", "lab-0003") <= before + 1  # one in flight at most
        (inventory / "hosts.yaml").write_text("lab-0001: [not, a, mapping\n")
        await service.reload()  # broken: logged, the running inventory is kept
        assert len(service.poller.device_names) == 3


async def _polled(conn, device: str) -> bool:
    return await count(conn, "sysUpTime", device) >= 1


async def test_a_users_task_from_the_docs_is_stored_like_built_in_ones(
    lab, db, settings, conn, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(_docs_examples()))
    inventory = fast_inventory(lab, tmp_path / "inv", tasks=["system", "uptime_days"])
    config = poller_settings(settings, task_modules=["my_checks"])
    async with running_poller(config, db, inventory):
        await eventually(lambda: _has(conn, "uptime_days", 3), what="uptime_days of each device")
    days, seconds = await conn.fetchrow(
        "SELECT max(v.value) FILTER (WHERE s.metric = 'uptime_days'), "
        "       max(v.value) FILTER (WHERE s.metric = 'sysUpTime') "
        "FROM samples v JOIN series s ON s.id = v.series_id "
        "JOIN devices d ON d.id = s.device_id WHERE d.name = 'lab-0001'"
    )
    assert abs(float(days) * 86400 - float(seconds)) < 10


async def _has(conn, metric: str, n: int) -> bool:
    return await count(conn, metric) >= n


def _docs_examples():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_the_docs_example_runs_from_a_plain_nornir_script(tmp_path, monkeypatch, lab_keys):
    monkeypatch.syspath_prepend(str(_docs_examples()))
    from my_checks import uptime_days

    async def scenario() -> None:
        async with Lab(devices=2, base_port=0, interfaces=2, ssh=False) as lab:
            inventory = fast_inventory(lab, tmp_path / "inv")
            nr = load_inventory(inventory)
            results = await asyncio.to_thread(nr.run, task=uptime_days)
            for host, multi in results.items():
                assert not multi.failed, multi[0].result
                (sample,) = multi[0].result
                assert sample.series.device == host
                assert sample.series.metric == "uptime_days"

    asyncio.run(scenario())


def test_task_threads_do_not_share_state_unsafely():
    # The slow probe's bookkeeping is itself thread-safe (used above to prove no stacking).
    slow.reset(delay=0.0)
    threads = [threading.Thread(target=slow.enter_and_leave, args=("d",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slow.started() == 8


def test_plans_need_known_tasks(tmp_path, lab_keys):
    from netmon.config import PollerSettings
    from netmon.errors import ConfigError
    from netmon.poller.registry import TaskRegistry

    async def scenario() -> None:
        async with Lab(devices=1, base_port=0, interfaces=1, ssh=False) as lab:
            inventory = fast_inventory(lab, tmp_path / "inv", tasks=["system", "nosuch"])
            nr = load_inventory(inventory)
            with pytest.raises(ConfigError, match=r"lab-0001: tasks: unknown task 'nosuch'"):
                plan_polls(nr, PollerSettings(), TaskRegistry.discover())

    asyncio.run(scenario())
