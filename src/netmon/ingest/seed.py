"""Rate state from the store, so that a restarted poller's first poll gives rates.

The rate calculator keeps each counter's last raw value in memory; a new process would
otherwise answer its first poll with no rate at all (``first``). At start, one query reads,
for the devices of the inventory, the newest raw value of every counter series and the
newest ``sysUpTime`` and ``up`` samples, within a recent window only (``lookback``: a
value older than a couple of intervals says nothing about the interval to come, and the
window bounds the partitions the query touches). Each series costs one probe of the
``(series_id, time)`` index in the window's partitions.

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

_SEEDS = """
SELECT d.name, s.metric, s.labels::text, s.kind, l.time, l.value::text
FROM devices d
JOIN series s ON s.device_id = d.id
CROSS JOIN LATERAL (
    SELECT time, value FROM samples
    WHERE series_id = s.id AND time >= $2 AND time <= $3
    ORDER BY time DESC LIMIT 1
) l
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
    counters: list[tuple[str, str, str, datetime, str]] = []
    for device, metric, labels, kind, time, value in rows:
        if kind == "counter":
            counters.append((device, metric, labels, time, value))
        elif metric == "up":
            seeds.last_polls[device] = time.timestamp()
        elif metric == "sysUpTime":
            try:
                seeds.uptimes[device] = (float(value), time)
            except ValueError:
                continue
    for device, metric, labels, time, value in counters:
        if "." in value or "e" in value.lower():
            continue  # a counter is an integer; anything else is no state to start from
        reading = seeds.uptimes.get(device)
        ticks = int(reading[0] * 100) % UPTIME_MODULUS if reading else None
        pairs = tuple(sorted((str(k), str(v)) for k, v in json.loads(labels).items()))
        seeds.counters.append(
            RateSeed(
                device,
                metric,
                pairs,
                int(value),
                time,
                ticks,
                reading[1] if reading else None,
            )
        )
    return seeds
