"""Rate state from the store, so that a restarted poller's first poll gives rates.

The rate calculator keeps each counter's last raw value in memory; a new process would
otherwise answer its first poll with no rate at all (``first``). At start, one query reads,
for the devices of the inventory, the newest raw value of every counter series and the
newest ``sysUpTime`` and ``up`` samples, within a recent window only (``lookback``: a
value older than a couple of intervals says nothing about the interval to come, and the
window bounds the partitions the query touches).

A counter is seeded with the device's last sysUpTime reading, so a device that rebooted
while no poller ran is still judged a reboot (sysUpTime behind its own clock), not a spike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from netmon.ingest.rates import UPTIME_MODULUS, RateSeed

__all__ = ["RateSeeds", "load_rate_seeds"]

# One pass over the window's rows (the BRIN index on time finds them, the window bounds the
# partitions), newest per series by DISTINCT ON: a million series cost one sort, where an
# index probe per series (LATERAL ... LIMIT 1) took several times as long.
_SEEDS = """
SELECT d.name, s.metric, s.labels::text, s.kind, l.time, l.value::text
FROM (
    SELECT DISTINCT ON (series_id) series_id, time, value FROM samples
    WHERE time >= $2 AND time <= $3
    ORDER BY series_id, time DESC
) l
JOIN series s ON s.id = l.series_id
JOIN devices d ON d.id = s.device_id
WHERE d.name = ANY($1::text[])
  AND (s.kind = 'counter' OR (s.labels = '{}' AND s.metric IN ('sysUpTime', 'up')))
"""


@dataclass
class RateSeeds:
    counters: list[RateSeed] = field(default_factory=list)
    # device -> (sysUpTime in seconds, the time it was read)
    uptimes: dict[str, tuple[float, datetime]] = field(default_factory=dict)
    # device -> when its last poll ended (its last ``up`` sample), UNIX time: the
    # scheduler polls at start a slot the previous process missed (see netmon.poller).
    last_polls: dict[str, float] = field(default_factory=dict)


async def load_rate_seeds(
    conn: asyncpg.Connection,
    devices: Sequence[str],
    lookback: timedelta,
    now: datetime | None = None,
) -> RateSeeds:
    """The newest counter values and sysUpTime of ``devices`` within ``lookback`` of
    ``now``, in one query."""
    now = now or datetime.now(UTC)
    rows = await conn.fetch(_SEEDS, list(devices), now - lookback, now)
    seeds = RateSeeds()
    counters = []
    for row in rows:  # a million rows for 5,000 devices: kept to the essentials
        if row[3] == "counter":
            counters.append(row)
        elif row[1] == "up":
            seeds.last_polls[row[0]] = row[4].timestamp()
        else:  # sysUpTime
            try:
                seeds.uptimes[row[0]] = (float(row[5]), row[4])
            except ValueError:
                continue
    readings: dict[str, tuple[int | None, datetime | None]] = {
        device: (int(seconds * 100) % UPTIME_MODULUS, at)
        for device, (seconds, at) in seeds.uptimes.items()
    }
    parsed: dict[str, tuple[tuple[str, str], ...]] = {}  # label sets repeat across devices
    out = seeds.counters
    for device, metric, labels, _kind, time, value in counters:
        if not value.isdigit():
            continue  # a counter is an integer; anything else is no state to start from
        pairs = parsed.get(labels)
        if pairs is None:
            pairs = parsed[labels] = tuple(
                sorted((str(k), str(v)) for k, v in json.loads(labels).items())
            )
        ticks, at = readings.get(device, (None, None))
        out.append(RateSeed(device, metric, pairs, int(value), time, ticks, at))
    return seeds
