"""A writer process for the crash tests: the parent kills it with SIGKILL.

    python tests/writer_child.py --data-dir D --url URL --series N --base EPOCH [--batches B]
    python tests/writer_child.py --data-dir D --url URL --replay-only

Batch ``i`` holds ``batch_samples(i, series, base)``. After each ``write`` returns, one JSON
line goes to stdout (flushed) with the batch number and what became of it; the parent
treats a reported batch as accepted. ``--replay-only`` writes nothing: it starts the writer
(which replays the spool) and waits to be killed. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from netmon.config import load_settings
from netmon.errors import DatabaseUnavailableError
from netmon.logs import configure_logging
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.writer import SampleWriter


def series_key(j: int) -> SeriesKey:
    return SeriesKey.of(f"child-r{j % 4}", "ifHCInOctets", {"ifName": f"eth{j}"}, kind="counter")


def batch_samples(i: int, series: int, base: datetime) -> list[Sample]:
    """Batch ``i``: one sample per series at ``base + i`` seconds; counter-sized values."""
    time = base + timedelta(seconds=i)
    return [Sample(series_key(j), time, 2**63 + i * 1000 + j) for j in range(series)]


async def main(args: argparse.Namespace) -> None:
    settings = load_settings(
        None,
        data_dir=args.data_dir,
        database={"url": args.url, "pool_min": 1, "pool_max": 4, "connect_timeout": "1s"},
        writer={"retry_interval": "100ms", "batch_size": args.batch_size},
    )
    db = Database(settings.database, settings.data_dir)
    with contextlib.suppress(DatabaseUnavailableError):
        await db.start()  # if unreachable, the writer spools until it comes back
    writer = SampleWriter(db, settings)
    await writer.start()
    print(json.dumps({"started": True, "spool": len(writer.spool)}), flush=True)
    if args.replay_only:
        await asyncio.Event().wait()
    base = datetime.fromtimestamp(args.base, UTC)
    for i in range(args.batches):
        result = await writer.write(batch_samples(i, args.series, base))
        line = {
            "i": i,
            "stored": result.stored,
            "duplicates": result.duplicates,
            "spooled": result.spooled,
            "rejected": result.rejected,
            "dropped": result.dropped,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        if args.pause:
            await asyncio.sleep(args.pause)
    await writer.close(drain_timeout=0)
    await db.stop()
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--base", type=float, default=0.0)
    parser.add_argument("--batches", type=int, default=1_000_000)
    # Replay groups spool files up to this many samples per COPY.
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--replay-only", action="store_true")
    configure_logging("info", "json")
    asyncio.run(main(parser.parse_args()))
