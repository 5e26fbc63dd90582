"""StoreProcessor, the seam between collection and storage, as a user's own Nornir script
uses it (``nr.with_processors([store]).run(task=...)``) and as the poller does: records
stored with their rates, and a task that returns something else fails, alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nornir import InitNornir
from nornir.core.task import AggregatedResult, Result, Task

from netmon.config import Settings, load_settings
from netmon.errors import TaskError
from netmon.ingest.processor import open_store
from netmon.tasks.interfaces import interfaces
from tests.poller_helpers import eventually, fast_inventory, poller_settings, running_poller

pytestmark = [pytest.mark.slow, pytest.mark.lab(interfaces=2)]


def not_records(task: Task) -> Result:
    return Result(host=task.host, result=[*_one_sample(task), "not a record"])


def _one_sample(task: Task) -> list[object]:
    from datetime import UTC, datetime

    from netmon.records import Sample, SeriesKey

    return [Sample(SeriesKey(task.host.name, "made_up"), datetime.now(UTC), 1)]


async def count(conn, metric: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM samples v JOIN series s ON s.id = v.series_id WHERE s.metric = $1",
        metric,
    )


def _store_settings(settings: Settings, tmp_path: Path) -> Settings:
    assert settings.database.url is not None
    return load_settings(
        None, data_dir=tmp_path / "script", database={"url": settings.database.url}
    )


async def test_a_users_nornir_script_stores_into_netmons_database(
    lab, db, settings, conn, tmp_path
):
    folder = fast_inventory(lab, tmp_path / "inventory")

    def script() -> list[AggregatedResult]:
        # What docs/tasks.md shows: a plain Nornir script, netmon's processor.
        nr = InitNornir(
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
        with open_store(_store_settings(settings, tmp_path)) as store:
            first = nr.with_processors([store]).run(task=interfaces)
            time.sleep(1.1)  # a second poll: rates need an interval
            second = nr.with_processors([store]).run(task=interfaces)
            bad = nr.with_processors([store]).run(task=not_records)
        return [first, second, bad]

    first, second, bad = await asyncio.to_thread(script)
    assert not first.failed
    assert not second.failed
    hosts = len(first)
    # Every interface counter twice, and its rate once, for every host.
    in_octets = await count(conn, "ifHCInOctets")
    assert in_octets == hosts * 2 * 2
    assert await count(conn, "ifHCInOctets:rate") == hosts * 2
    # The task that returned a string among its records failed, naming it and the task;
    # nothing of it was stored, and the earlier runs' records stayed.
    assert set(bad.failed_hosts) == set(first)
    for multi in bad.values():
        assert isinstance(multi[0].exception, TaskError)
        assert "task not_records returned element 1 of type str" in str(multi[0].exception)
    assert await count(conn, "made_up") == 0
    names = {r["name"] for r in await conn.fetch("SELECT name FROM devices")}
    assert set(first) <= names


async def test_a_task_returning_something_else_fails_that_task_and_keeps_the_poll(
    lab, db, settings, conn, tmp_path, monkeypatch
):
    module = tmp_path / "modules" / "odd_tasks.py"
    module.parent.mkdir()
    module.write_text(
        "from tests.test_store_processor import not_records\n__all__ = ['not_records']\n"
    )
    monkeypatch.syspath_prepend(str(module.parent))
    inventory = fast_inventory(lab, tmp_path / "inv", tasks=["system", "not_records", "interfaces"])
    config = poller_settings(settings, task_modules=["odd_tasks"])
    async with running_poller(config, db, inventory) as service:

        async def failed_and_stored() -> bool:
            health = await conn.fetchrow(
                "SELECT h.last_error_class, h.last_error FROM poll_health h "
                "JOIN devices d ON d.id = h.device_id WHERE d.name = 'lab-0001'"
            )
            return (
                health is not None
                and health["last_error_class"] == "task"
                and await count(conn, "sysUpTime") > 0
            )

        await eventually(failed_and_stored, what="a failed task, the system task stored")
        assert service.poller is not None
        error = service.poller.stats.last_errors[-1][2]
        assert "task not_records returned element 1 of type str" in error
    # The system task before it is stored, and poll health too; the poll ended at the
    # failed task, so interfaces never ran, and the bad task's good sample is not stored.
    assert await count(conn, "sysUpTime") > 0
    assert await count(conn, "poll_success") > 0
    assert await count(conn, "ifHCInOctets") == 0
    assert await count(conn, "made_up") == 0
