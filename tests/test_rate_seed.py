"""A restarted poller's first poll gives rates: the rate state is seeded from the last
raw values stored (one query at start), and a device that rebooted while no poller ran
is still a reboot, not a spike.

Before, the state lived in memory only and the first poll after a restart dropped every
rate (``first``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from netmon.config import Settings
from netmon.ingest.processor import StoreProcessor
from netmon.ingest.seed import load_rate_seeds
from netmon.poller.service import PollerService
from netmon.records import DeviceEvent, Record, Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.writer import SampleWriter

# Set per test (the autouse fixture below): the seed query looks back from the real
# clock, and a module-level time taken at collection is minutes old when a long suite
# reaches these tests.
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _now() -> None:
    global NOW
    NOW = datetime.now(UTC).replace(microsecond=0)


IN = SeriesKey.of("r1", "ifHCInOctets", {"ifName": "eth0"}, kind="counter", unit="bytes")
IN32 = SeriesKey.of("r1", "ifInOctets", {"ifName": "eth0"}, kind="counter", unit="bytes", bits=32)
UPTIME = SeriesKey.of("r1", "sysUpTime", unit="s")
OTHER = SeriesKey.of("r2", "ifHCInOctets", {"ifName": "eth0"}, kind="counter", unit="bytes")


class Queue:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.events: list[DeviceEvent] = []

    def put(self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()) -> None:
        self.samples.extend(samples)
        self.events.extend(events)

    def rates(self) -> list[Sample]:
        return [s for s in self.samples if s.series.metric.endswith(":rate")]


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def poll(t: float, uptime: float, value: int) -> tuple[list[Record], list[Record]]:
    """A poll as the poller hands it over: the system task's records, then interfaces'."""
    return (
        [Sample(UPTIME, at(t), uptime)],
        [Sample(IN, at(t + 2), value), Sample(IN32, at(t + 2), value % 2**32)],
    )


def feed(processor: StoreProcessor, records: tuple[list[Record], list[Record]]) -> None:
    for batch in records:
        processor.store("r1", batch)


async def _stored_first_poll(settings: Settings, db: Database) -> None:
    """The first process: one poll of r1 stored (and one of r2, a device not polled)."""
    queue = Queue()
    first = StoreProcessor(queue)
    feed(first, poll(-60, 5_000.0, 10_000))
    feed(first, poll(-30, 5_030.0, 40_000))
    first.store("r2", [Sample(OTHER, at(-30), 7)])
    first.put([Sample(SeriesKey("r1", "up"), at(-29), 1)])  # the poll's outcome
    async with SampleWriter(db, settings) as writer:
        result = await writer.write(queue.samples, queue.events)
        assert result.stored == len(queue.samples)


def _service(settings: Settings, db: Database, queue: Queue) -> PollerService:
    return PollerService(settings, db, queue)  # type: ignore[arg-type]


def _plans(*names: str) -> list[Any]:
    return [SimpleNamespace(name=n, interval=timedelta(seconds=30)) for n in names]


async def test_the_first_poll_after_a_restart_gives_rates(settings: Settings, db: Database) -> None:
    await _stored_first_poll(settings, db)
    # The restarted process: a new service and processor, seeded at start.
    queue = Queue()
    service = _service(settings, db, queue)
    await service._seed_rates(_plans("r1"))
    feed(service.processor, poll(0, 5_060.0, 100_000))
    rates = {r.series.metric: r.value for r in queue.rates()}
    assert rates == {"ifHCInOctets:rate": 60_000 / 30, "ifInOctets:rate": 60_000 / 30}
    assert queue.events == []


async def test_a_reboot_during_the_restart_is_a_reboot(settings: Settings, db: Database) -> None:
    await _stored_first_poll(settings, db)
    queue = Queue()
    service = _service(settings, db, queue)
    await service._seed_rates(_plans("r1"))
    # Rebooted while no poller ran: sysUpTime 20 s, counters from zero.
    feed(service.processor, poll(0, 20.0, 3_000))
    assert queue.rates() == []
    assert [e.kind for e in queue.events] == ["device.rebooted"]
    # And the next interval is measured from the new start.
    feed(service.processor, poll(30, 50.0, 6_000))
    assert {r.series.metric: r.value for r in queue.rates()} == {
        "ifHCInOctets:rate": 100.0,
        "ifInOctets:rate": 100.0,
    }


async def test_one_query_reads_only_the_inventorys_recent_counters(
    settings: Settings, db: Database
) -> None:
    await _stored_first_poll(settings, db)
    async with db.pool.acquire() as conn:
        seeds = await load_rate_seeds(conn, ["r1"], timedelta(minutes=2), at(1))
        assert {(s.metric, s.value, s.time) for s in seeds.counters} == {
            ("ifHCInOctets", 40_000, at(-28)),
            ("ifInOctets", 40_000, at(-28)),
        }
        assert seeds.uptimes == {"r1": (5_030.0, at(-30))}
        assert seeds.last_polls == {"r1": at(-29).timestamp()}
        (seed,) = [s for s in seeds.counters if s.metric == "ifHCInOctets"]
        assert seed.labels == (("ifName", "eth0"),)
        assert (seed.uptime_ticks, seed.uptime_at) == (503_000, at(-30))
        # Values older than the window are no state to start from.
        old = await load_rate_seeds(conn, ["r1"], timedelta(seconds=20), at(1))
        assert (old.counters, old.uptimes, old.last_polls) == ([], {}, {})


async def test_without_the_database_the_poller_starts_without_seeds(settings: Settings) -> None:
    away = Database(settings.database, settings.data_dir)  # never started
    queue = Queue()
    service = _service(settings, away, queue)
    await service._seed_rates(_plans("r1"))
    feed(service.processor, poll(0, 5_060.0, 100_000))
    assert queue.rates() == []


async def test_the_last_polls_of_a_crashed_process_count_once_its_spool_is_replayed(
    settings: Settings, db: Database
) -> None:
    """A process killed during an outage left its last poll in the spool. The next one
    must not read when r1 was last polled before that spool is replayed: it would poll
    the same slot again (a cycle stored twice; the chaos suite's
    poller-sigkill-during-outage saw it)."""
    from tests.test_writer import unreachable_database, unreachable_settings

    away = unreachable_settings(settings)
    async with SampleWriter(await unreachable_database(away), away) as dead:
        result = await dead.write([Sample(SeriesKey("r1", "up"), at(-5), 1)])
        assert result.spooled == 1
    writer = SampleWriter(db, settings)
    await writer.start()
    try:
        assert await writer.spool_replayed(30.0)
        async with db.pool.acquire() as conn:
            seeds = await load_rate_seeds(conn, ["r1"], timedelta(minutes=2))
        assert seeds.last_polls == {"r1": at(-5).timestamp()}
    finally:
        await writer.close()
