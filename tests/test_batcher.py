"""Small submissions are coalesced into big batches and each is durable on return."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from netmon.config import WriterSettings
from netmon.records import Sample, SeriesKey
from netmon.store.batcher import Batcher
from netmon.store.writer import SampleWriter


def _poll(device: int, t: datetime) -> list[Sample]:
    return [
        Sample(
            SeriesKey.of(f"d{device}", "ifHCInOctets", {"ifName": f"e{i}"}, kind="counter"), t, i
        )
        for i in range(10)
    ]


async def test_many_small_submissions_become_few_batches(db, settings, conn):
    t = datetime.now(UTC).replace(microsecond=0)
    async with SampleWriter(db, settings) as writer:
        batcher = Batcher(
            writer, WriterSettings(batch_size=200, flush_interval=timedelta(seconds=5))
        )
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(_poll(d, t)) for d in range(100)))
        await batcher.close()
        # 100 submissions x 10 samples, flushed as full 200-sample batches.
        assert writer.stats.batches == 5
    assert all(r.accepted == 200 for r in results)
    assert await conn.fetchval("SELECT count(*) FROM samples") == 1000


async def test_a_lone_submission_is_flushed_after_the_interval(db, settings, conn):
    t = datetime.now(UTC).replace(microsecond=0)
    async with SampleWriter(db, settings) as writer:
        batcher = Batcher(
            writer, WriterSettings(batch_size=10_000, flush_interval=timedelta(milliseconds=50))
        )
        batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await batcher.submit(_poll(1, t))
        assert loop.time() - started < 2
        assert result.stored == 10
        await batcher.close()
    assert await conn.fetchval("SELECT count(*) FROM samples") == 10


async def test_close_flushes_what_is_queued(db, settings, conn):
    t = datetime.now(UTC).replace(microsecond=0)
    async with SampleWriter(db, settings) as writer:
        batcher = Batcher(
            writer, WriterSettings(batch_size=10_000, flush_interval=timedelta(hours=1))
        )
        batcher.start()
        pending = [asyncio.create_task(batcher.submit(_poll(d, t))) for d in range(3)]
        await asyncio.sleep(0)
        await batcher.close()
        results = await asyncio.gather(*pending)
        assert [r.stored for r in results] == [30, 30, 30]
    assert await conn.fetchval("SELECT count(*) FROM samples") == 30
