"""The path after collection: a poll's records from its tasks to PostgreSQL, CPU per poll.

    python bench/store_path.py [--quick] [--runs N] [--polls N] [--per-batch N]

Set-up (not measured): the built-in lab in this process, one device of 8 interfaces; one
real poll (system, interfaces, resources) gives the records, the poll's shape repeated
with later times and growing counters; a fresh database with the series created.

Measured: ``--polls`` polls (400; --quick 100) through what the poller runs after its
tasks: ``StoreProcessor`` (check, ingest pipeline: rates and reboots; sorting), poll
health and ``up`` / ``poll_success``, the batcher, the writer (COPY, the live-feed
NOTIFY). ``--per-batch`` polls (20) are handed over between flushes, as a busy poller's
polls share a batch. Figures: ``cpu_ms_per_poll`` (this process's CPU; PostgreSQL is
another), ``samples_per_poll`` (stored, derived rates and poll health included), and the
parts alone on the same records: ``pipeline_ms``, ``copy_text_ms``, ``feed_ms``
(live-feed payloads), ``check_ms`` per poll.

Baseline, same run, same rows: a bare asyncpg ``copy_records_to_table`` of the samples
(series ids resolved beforehand, values as Python ints and floats), ``--per-batch`` polls
per COPY, nothing else: how netmon's whole path compares with only getting the rows into
PostgreSQL the plain way. Target: ``cpu_ms_per_poll`` at most 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from _contract import environment, main, repeat, stderr
from nornir.core.task import Result

from netmon.config import Settings, load_settings
from netmon.ingest.pipeline import IngestPipeline
from netmon.ingest.processor import StoreProcessor, check_result
from netmon.lab import Lab, use_lab_secrets, write_inventory
from netmon.poller.inventory import load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import Poller, PollResult, run_poll
from netmon.records import Record, Sample
from netmon.store.batcher import Batcher
from netmon.store.database import Database
from netmon.store.health import PollHealthStore
from netmon.store.maintenance import maintain
from netmon.store.notify import pack_fragments, sample_fragments
from netmon.store.schema import upgrade
from netmon.store.writer import SampleWriter

INTERFACES = 8
POLL_SPACING = timedelta(seconds=60)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--polls", type=int, default=None, help="polls measured per run")
    parser.add_argument("--per-batch", type=int, default=20, help="polls between flushes")


def poll_records(records: list[Record], index: int, base: datetime) -> list[Record]:
    """The poll's records as poll ``index`` would return them: later, counters grown."""
    at = base + POLL_SPACING * index
    out: list[Record] = []
    for r in records:
        if isinstance(r, Sample):
            value = r.value
            if r.series.kind == "counter":
                value = (int(value) + index * 1_000_000) % 2**r.series.bits
            elif r.series.metric == "sysUpTime":
                value = float(value) + index * POLL_SPACING.total_seconds()
            out.append(Sample(r.series, at, value))
        else:
            out.append(msgspec.structs.replace(r, time=at))
    return out


async def collect(data_dir: Path) -> tuple[list[Record], Any, Any]:
    use_lab_secrets()
    async with Lab(devices=1, base_port=0, interfaces=INTERFACES, ssh=False) as lab:
        folder = data_dir / "inventory"
        folder.mkdir(parents=True)
        write_inventory(lab, folder)
        nr = load_inventory(folder)
        plans = plan_polls(nr, load_settings(None).poller, TaskRegistry.discover([]))
        result = await asyncio.to_thread(run_poll, nr, plans[0])
        if result.error is not None:
            raise RuntimeError(f"the lab poll failed: {result.error}")
        return result.records, nr, plans


async def netmon_run(
    settings: Settings,
    db: Database,
    polls: list[list[Record]],
    per_batch: int,
    nr: Any,
    plans: Any,
) -> dict[str, float]:
    writer = SampleWriter(db, settings)
    await writer.start()
    batcher = Batcher(writer, settings.writer)
    batcher.start()
    processor = StoreProcessor(batcher)
    health = PollHealthStore(db)
    poller = Poller(nr, plans, settings.poller, processor, health)
    device = plans[0].name

    def one(records: list[Record]) -> None:
        # What run_poll's Nornir task and the scheduler do with a poll's records.
        checked = check_result("interfaces", device, Result(host=None, result=records))
        assert checked is not None
        processor.accept(device, checked)
        poller._ingest(PollResult(device, records, None, 0.05))

    try:
        # Warm-up: series created, rate state primed.
        for records in polls[:per_batch]:
            one(records)
        await batcher.drained()
        stored = writer.stats.stored
        measured = polls[per_batch:]
        started = time.process_time()
        for i, records in enumerate(measured, 1):
            one(records)
            if i % per_batch == 0:
                # The next polls finish while this batch is written.
                await asyncio.sleep(settings.writer.flush_interval.total_seconds() * 1.5)
        await batcher.drained()
        cpu = time.process_time() - started
        samples = writer.stats.stored - stored
    finally:
        await batcher.close()
        await writer.close()
    return {
        "cpu_ms_per_poll": cpu / len(measured) * 1000,
        "samples_per_poll": samples / len(measured),
    }


async def parts(db: Database, polls: list[list[Record]], writer: SampleWriter) -> dict[str, float]:
    """The main parts alone, on the same records, ms per poll."""
    device = "lab-0001"
    async with db.pool.acquire() as conn:
        warm = IngestPipeline()
        keys = {s.series for p in polls[:2] for s in warm.process(device, p) if type(s) is Sample}
        await writer.series.resolve(conn, keys)
    pipeline = IngestPipeline()
    started = time.process_time()
    for p in polls:  # nothing kept: the poller holds one poll's records, not hundreds
        pipeline.process(device, p)
    pipeline_ms = (time.process_time() - started) / len(polls) * 1000
    again = IngestPipeline()
    derived = [again.process(device, p) for p in polls]
    started = time.process_time()
    for p in polls:
        check_result("interfaces", device, Result(host=None, result=p))
    check_ms = (time.process_time() - started) / len(polls) * 1000
    samples = [s for d in derived for s in d if type(s) is Sample]
    times = {s.time for s in samples}
    started = time.process_time()
    writer._encode(samples, times, False)
    copy_ms = (time.process_time() - started) / len(polls) * 1000
    started = time.process_time()
    pack_fragments(sample_fragments(samples, writer.series.ids, times))
    feed_ms = (time.process_time() - started) / len(polls) * 1000
    return {
        "pipeline_ms": pipeline_ms,
        "check_ms": check_ms,
        "copy_text_ms": copy_ms,
        "feed_ms": feed_ms,
    }


async def baseline_run(
    db: Database, writer: SampleWriter, polls: list[list[Record]], per_batch: int
) -> dict[str, float]:
    """A bare binary COPY of each batch's samples, ids resolved beforehand."""
    pipeline = IngestPipeline()
    derived = [[s for s in pipeline.process("lab-0001", p) if type(s) is Sample] for p in polls]
    async with db.pool.acquire() as conn:
        await writer.series.resolve(conn, {s.series for d in derived for s in d})
        await conn.execute("TRUNCATE samples")
    ids = writer.series.ids
    batches = [
        [(ids[s.series], s.time, s.value) for d in derived[i : i + per_batch] for s in d]
        for i in range(0, len(derived), per_batch)
    ]
    started = time.process_time()
    for rows in batches:
        async with db.pool.acquire() as conn:
            await conn.copy_records_to_table(
                "samples", records=rows, columns=("series_id", "time", "value")
            )
    cpu = time.process_time() - started
    return {"cpu_ms_per_poll": cpu / len(polls) * 1000}


async def bench(args: argparse.Namespace, url: str, data_dir: Path) -> dict[str, Any]:
    n_polls = args.polls or (100 if args.quick else 400)
    per_batch = args.per_batch
    runs = args.runs or (1 if args.quick else 3)
    records, nr, plans = await collect(data_dir)
    settings = load_settings(
        None,
        data_dir=data_dir / "data",
        database={"url": url, "pool_min": 2, "pool_max": 10},
        writer={"flush_interval": "20ms"},
    )
    db = Database(settings.database, settings.data_dir)
    await db.start()
    await upgrade(db)
    await maintain(db, settings.storage)  # partitions for the days the polls cover
    stderr.print(f"{len(records)} records a poll, {n_polls} polls, {per_batch} a batch")

    async def once(run: int) -> tuple[dict[str, float], dict[str, float]]:
        # Each run its own stretch of time (runs must not collide on (series, time)).
        base = datetime.now(UTC) + timedelta(minutes=1) + POLL_SPACING * (n_polls + 100) * run
        polls = [poll_records(records, i, base) for i in range(n_polls + per_batch)]
        figures = await netmon_run(settings, db, polls, per_batch, nr, plans)
        writer = SampleWriter(db, settings)
        figures.update(await parts(db, polls[per_batch:], writer))
        later = base + POLL_SPACING * (n_polls + per_batch + 10)
        polls_b = [poll_records(records, i, later) for i in range(n_polls)]
        baseline = await baseline_run(db, writer, polls_b, per_batch)
        async with db.pool.acquire() as conn:
            await conn.execute("TRUNCATE samples")
        return figures, baseline

    try:
        return await repeat(
            "store_path",
            runs,
            once,
            notes={
                "records_per_poll": len(records),
                "interfaces": INTERFACES,
                "polls": n_polls,
                "per_batch": per_batch,
                "targets": {"cpu_ms_per_poll_max": 1.0},
                "loadavg": os.getloadavg()[0],
                **environment(),
            },
        )
    finally:
        await db.stop()


if __name__ == "__main__":
    sys.exit(main(__doc__ or "", options, bench))
