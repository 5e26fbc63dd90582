"""Ingest throughput: netmon's write path against raw asyncpg COPY, in the same run.

    python bench/ingest.py [--quick] [--database-url URL] [--runs N] [--profile FILE]

What is measured (full run; --quick is 200k samples over 2,000 series):

* figures.samples_per_s: 2,000,000 samples over 10,000 series written with
  ``SampleWriter.write`` in batches of ``writer.batch_size`` (50,000 by default) into the
  partitioned ``samples`` table of a freshly migrated database. SeriesKey objects are built
  once and reused across timestamps, as a poller does, and one warm-up write creates every
  series before the clock starts: the timed part is the steady state (cache hits, COPY).
* baseline.samples_per_s: the FASTEST raw COPY of the run. The same rows, already as
  (series_id, time, value) tuples holding the values netmon stores (a float as
  Decimal(repr(value)), as the writer sends it), with plain ``copy_records_to_table`` in
  the same batches into ``raw_samples``: ``LIKE samples INCLUDING ALL`` (same types, same
  primary key (series_id, time) INCLUDE (value), same BRIN), partitioned by day like
  ``samples``; streamed over 1, 2 and 4 connections in parallel (batches dealt
  round-robin), each measured: ``baseline.samples_per_s_<n>conn``. The writer spreads a
  batch over ``writer.connections`` (2) streams, so a one-connection COPY would flatter
  it: the ratio is taken against the best of the three, and ``baseline.connections``
  says how many connections that was.
* the same at a large batch (``_batch<N>`` keys: ``samples_per_s_batch<N>``,
  ``connections_batch<N>``, ``samples_per_s_<n>conn_batch<N>``).
* figures.bytes_per_sample: pg_total_relation_size (heap + indexes) summed over the
  partitions, divided by the rows, right after the load (no VACUUM).

Every section starts from an empty table after a CHECKPOINT. The database is
netmon_bench_<random>, created here and dropped at the end, failure or not.
Progress goes to stderr; the last line of stdout is the JSON result (bench/_contract.py).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from _contract import environment, main, progress, repeat, stderr
from rich.progress import Progress

from netmon.config import Settings, load_settings
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.maintenance import maintain
from netmon.store.partitions import list_partitions
from netmon.store.schema import upgrade
from netmon.store.writer import SampleWriter

COLUMNS = ("series_id", "time", "value")
LARGE_BATCH = 100_000
RAW_CONNECTIONS = (1, 2, 4)  # raw COPY is measured at each; the fastest is the baseline
Row = tuple[int, datetime, int | float | Decimal]


# -- the data ------------------------------------------------------------------------------


def make_keys(n_series: int) -> list[SeriesKey]:
    """Ten series per device, as a switch would have: in/out octet counters of four
    interfaces, a CPU gauge (float) and a memory gauge (integer)."""
    keys: list[SeriesKey] = []
    for d in range(n_series // 10):
        device = f"bench-sw{d:05d}"
        for port in range(4):
            for metric in ("ifHCInOctets", "ifHCOutOctets"):
                keys.append(
                    SeriesKey.of(
                        device, metric, {"ifName": f"Ethernet{port}"}, kind="counter", unit="B"
                    )
                )
        keys.append(SeriesKey.of(device, "cpuUtilization", kind="gauge", unit="%"))
        keys.append(SeriesKey.of(device, "memoryUsed", kind="gauge", unit="B"))
    return keys


def make_values(keys: Sequence[SeriesKey], steps: int, seed: int = 1) -> list[list[int | float]]:
    """values[step][series]: growing 64-bit counters, float and integer gauges."""
    rng = random.Random(seed)
    current: list[int | float] = []
    for key in keys:
        if key.kind == "counter":
            current.append(rng.randrange(2**40, 2**62))
        elif key.metric == "cpuUtilization":
            current.append(0.0)
        else:
            current.append(rng.randrange(2**28, 2**33))
    table: list[list[int | float]] = []
    for _ in range(steps):
        row: list[int | float] = []
        for i, key in enumerate(keys):
            if key.kind == "counter":
                current[i] = int(current[i]) + rng.randrange(0, 10**9)
            elif key.metric == "cpuUtilization":
                current[i] = round(rng.uniform(0, 100), 2)
            else:
                current[i] = int(current[i]) + rng.randrange(-(2**20), 2**20)
            row.append(current[i])
        table.append(row)
    return table


def stored_value(value: int | float) -> int | Decimal:
    """What netmon's writer hands to COPY for a value: a float by its shortest repr."""
    return Decimal(repr(value)) if type(value) is float else value


def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- the database --------------------------------------------------------------------------


async def make_raw_table(conn: asyncpg.Connection) -> None:
    """``raw_samples``: the same columns, key, BRIN and daily partitions as ``samples``."""
    await conn.execute(
        "CREATE TABLE raw_samples (LIKE samples INCLUDING ALL) PARTITION BY RANGE (time)"
    )
    for part in await list_partitions(conn, "samples"):
        name = part.name.replace("samples_", "raw_samples_", 1)
        await conn.execute(
            f"CREATE TABLE {name} PARTITION OF raw_samples "
            f"FOR VALUES FROM ('{part.start.isoformat()}') TO ('{part.end.isoformat()}')"
        )
    indexes = await conn.fetch(
        """
        SELECT c.relname AS tab, replace(pg_get_indexdef(i.indexrelid), c.relname, 'T') AS def
        FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        WHERE c.relname IN ('samples', 'raw_samples')
        """
    )
    defs: dict[str, set[str]] = {"samples": set(), "raw_samples": set()}
    for row in indexes:
        defs[row["tab"]].add(row["def"].split(" USING ", 1)[1])
    if defs["samples"] != defs["raw_samples"]:
        raise RuntimeError(f"raw_samples is not identical to samples: {defs}")


async def table_bytes(conn: asyncpg.Connection, table: str) -> dict[str, int]:
    row = await conn.fetchrow(
        """
        SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint AS total,
               coalesce(sum(pg_relation_size(i.inhrelid)), 0)::bigint AS heap,
               coalesce(sum(pg_indexes_size(i.inhrelid)), 0)::bigint AS indexes
        FROM pg_inherits i WHERE i.inhparent = $1::regclass
        """,
        table,
    )
    return dict(row)


async def reset(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(f"TRUNCATE {table}")
    await conn.execute("CHECKPOINT")


# -- the timed sections --------------------------------------------------------------------


async def time_writer(
    writer: SampleWriter,
    batches: Sequence[Sequence[Sample]],
    bar: Progress,
    label: str,
    profile: cProfile.Profile | None = None,
) -> float:
    task = bar.add_task(label, total=len(batches))
    stored = 0
    if profile is not None:
        profile.enable()
    started = time.perf_counter()
    for batch in batches:
        result = await writer.write(batch)
        if result.stored != len(batch):
            raise RuntimeError(f"writer did not store a clean batch: {result}")
        stored += result.stored
        bar.advance(task)
    elapsed = time.perf_counter() - started
    if profile is not None:
        profile.disable()
    bar.remove_task(task)
    return stored / elapsed


async def time_raw_copy(
    conns: Sequence[asyncpg.Connection],
    batches: Sequence[Sequence[Row]],
    bar: Progress,
    label: str,
) -> float:
    """Batches dealt round-robin to the connections, each streaming its share."""
    task = bar.add_task(label, total=len(batches))

    async def stream(conn: asyncpg.Connection, share: Sequence[Sequence[Row]]) -> None:
        for batch in share:
            await conn.copy_records_to_table("raw_samples", records=batch, columns=COLUMNS)
            bar.advance(task)

    n = len(conns)
    started = time.perf_counter()
    await asyncio.gather(*(stream(c, batches[i::n]) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    bar.remove_task(task)
    return sum(len(b) for b in batches) / elapsed


# -- the benchmark -------------------------------------------------------------------------


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=None, help="samples per section")
    parser.add_argument("--series", type=int, default=None, help="series (a multiple of 10)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="samples per write (default writer.batch_size)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="after the runs, cProfile one more writer section (not in the figures) into FILE",
    )


@dataclass
class Harness:
    """What the timed sections share: the writer, the rows, the connections."""

    writer: SampleWriter
    admin: asyncpg.Connection
    raw_conns: list[asyncpg.Connection]
    samples: list[Sample]
    rows: list[Row]
    batch_size: int

    def sections(self) -> list[tuple[str, list[Sequence[Sample]], list[Sequence[Row]]]]:
        """(key suffix, sample batches, row batches): the configured size, then a large one."""
        return [
            (
                "" if size == self.batch_size else f"_batch{size}",
                batched(self.samples, size),
                batched(self.rows, size),
            )
            for size in (self.batch_size, LARGE_BATCH)
        ]

    async def netmon(
        self, suffix: str, batches: Sequence[Sequence[Sample]], bar: Progress
    ) -> dict[str, float]:
        await reset(self.admin, "samples")
        size = len(batches[0])
        rate = await time_writer(self.writer, batches, bar, f"netmon write, batch {size:,}")
        out = {"samples_per_s" + suffix: rate}
        count = await self.admin.fetchval("SELECT count(*) FROM samples")
        if count != len(self.samples):
            raise RuntimeError(f"samples holds {count} rows, not {len(self.samples)}")
        if not suffix:
            out.update(await bytes_per_sample(self.admin, "samples", count))
        return out

    async def raw(
        self, suffix: str, batches: Sequence[Sequence[Row]], bar: Progress
    ) -> dict[str, float]:
        """Raw COPY at each of RAW_CONNECTIONS; ``samples_per_s`` is the fastest and
        ``connections`` how many it used."""
        size = len(batches[0])
        out: dict[str, float] = {}
        for n in RAW_CONNECTIONS:
            await reset(self.admin, "raw_samples")
            label = f"raw COPY, {n} conn{'s' if n > 1 else ''}, batch {size:,}"
            rate = await time_raw_copy(self.raw_conns[:n], batches, bar, label)
            out[f"samples_per_s_{n}conn{suffix}"] = rate
            count = await self.admin.fetchval("SELECT count(*) FROM raw_samples")
            if count != len(self.rows):
                raise RuntimeError(f"raw_samples holds {count} rows, not {len(self.rows)}")
            if n == 1 and not suffix:
                out.update(await bytes_per_sample(self.admin, "raw_samples", count))
        best = max(RAW_CONNECTIONS, key=lambda n: out[f"samples_per_s_{n}conn{suffix}"])
        out["samples_per_s" + suffix] = out[f"samples_per_s_{best}conn{suffix}"]
        out["connections" + suffix] = float(best)
        return out

    async def once(self, index: int) -> tuple[dict[str, float], dict[str, float]]:
        figures: dict[str, float] = {}
        baseline: dict[str, float] = {}
        with progress() as bar:
            for suffix, sample_batches, row_batches in self.sections():
                # Alternate which side goes first, so neither always inherits the other's
                # leftovers (dirty buffers, WAL segments to recycle).
                if index % 2 == 0:
                    figures.update(await self.netmon(suffix, sample_batches, bar))
                    baseline.update(await self.raw(suffix, row_batches, bar))
                else:
                    baseline.update(await self.raw(suffix, row_batches, bar))
                    figures.update(await self.netmon(suffix, sample_batches, bar))
        await reset(self.admin, "samples")
        await reset(self.admin, "raw_samples")
        return figures, baseline


async def bytes_per_sample(conn: asyncpg.Connection, table: str, rows: int) -> dict[str, float]:
    size_of = await table_bytes(conn, table)
    return {
        "bytes_per_sample": size_of["total"] / rows,
        "bytes_per_sample_heap": size_of["heap"] / rows,
        "bytes_per_sample_indexes": size_of["indexes"] / rows,
    }


NOTES = {
    "values": "per device: 8 counters (ints up to 2^62), 1 float gauge, 1 int gauge",
    "timed": "steady state: SeriesKey objects reused, every series created by a warm-up "
    "write before the clock starts; each section starts from an empty table after a "
    "CHECKPOINT; writes are awaited one after the other",
    "baseline": "copy_records_to_table of prebuilt (series_id, time, value) tuples holding "
    "the values netmon stores (floats as Decimal(repr)) into "
    "raw_samples (LIKE samples INCLUDING ALL, the same daily partitions), same batches, "
    "over 1, 2 and 4 connections streaming batches dealt round-robin in parallel "
    "(_<n>conn keys); samples_per_s is the fastest of them, connections how many it used",
    "bytes_per_sample": "pg_total_relation_size summed over the partitions / rows, right "
    "after the load (no VACUUM)",
}


async def bench(args: argparse.Namespace, url: str, data_dir: Path) -> dict[str, Any]:
    n_samples = args.samples or (200_000 if args.quick else 2_000_000)
    n_series = args.series or (2_000 if args.quick else 10_000)
    runs = args.runs or (1 if args.quick else 3)
    settings: Settings = load_settings(
        None, data_dir=data_dir, database={"url": url, "pool_min": 4, "pool_max": 10}
    )
    batch_size = args.batch_size or settings.writer.batch_size
    steps = n_samples // n_series

    stderr.print(f"building {n_series:,} series keys and {steps * n_series:,} samples")
    keys = make_keys(n_series)
    values = make_values(keys, steps)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - timedelta(minutes=steps)
    times = [first + timedelta(minutes=j) for j in range(steps)]
    samples = [
        Sample(key, t, v)
        for t, row in zip(times, values, strict=True)
        for key, v in zip(keys, row, strict=True)
    ]
    del values

    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        await upgrade(db)
        await maintain(db, settings.storage)
        admin = await db.connect()
        raw_conns = [await db.connect() for _ in range(max(RAW_CONNECTIONS))]
        try:
            await make_raw_table(admin)
            server = await admin.fetchval("SHOW server_version")
            async with SampleWriter(db, settings) as writer:
                # Warm-up: creates every device and series and fills the writer's cache.
                warm = [Sample(key, first - timedelta(minutes=1), 0) for key in keys]
                warmed = await writer.write(warm)
                if warmed.stored != len(keys):
                    raise RuntimeError(f"warm-up write: {warmed}")
                ids = writer.series._ids
                # The very values netmon stores (floats by their shortest repr, as the
                # writer sends them), so both tables end up byte for byte alike.
                rows: list[Row] = [(ids[s.series], s.time, stored_value(s.value)) for s in samples]
                harness = Harness(writer, admin, raw_conns, samples, rows, batch_size)
                result = await repeat(
                    "ingest",
                    runs,
                    harness.once,
                    notes={
                        "samples": len(samples),
                        "series": n_series,
                        "timestamps": steps,
                        "batch_size": batch_size,
                        "large_batch_size": LARGE_BATCH,
                        "writer_connections": settings.writer.connections,
                        **NOTES,
                        "server_version": server,
                        **environment(),
                    },
                )
                if args.profile:
                    # One more writer section, under cProfile and outside the figures.
                    profile = cProfile.Profile()
                    await reset(admin, "samples")
                    with progress() as bar:
                        label = "netmon write under cProfile"
                        batches = batched(samples, batch_size)
                        await time_writer(writer, batches, bar, label, profile)
                    profile.dump_stats(str(args.profile))
                    stderr.print(f"cProfile of one writer section (not timed): {args.profile}")
                return result
        finally:
            for conn in (admin, *raw_conns):
                await conn.close()
    finally:
        await db.stop()


if __name__ == "__main__":
    sys.exit(main(__doc__, options, bench))
