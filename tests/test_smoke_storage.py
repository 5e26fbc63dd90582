from datetime import UTC, datetime

from netmon.records import Sample, SeriesKey
from netmon.store.maintenance import maintain
from netmon.store.writer import SampleWriter


async def test_write_and_read_back(db, settings, conn):
    await maintain(db, settings.storage)
    key = SeriesKey.of("r1", "ifHCInOctets", {"ifName": "eth0"}, kind="counter")
    async with SampleWriter(db, settings) as writer:
        result = await writer.write([Sample(key, datetime.now(UTC), 2**64 - 1)])
    assert result.stored == 1
    assert await conn.fetchval("SELECT value FROM samples") == 2**64 - 1
