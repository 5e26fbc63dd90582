"""Fixed-bucket histograms for the running totals that /metrics exports.

The poller and the writer observe a duration on every poll and every batch, so an
observation has to cost next to nothing and take no lock: one bisect over a handful of
bounds and two additions on the event loop that owns the histogram. Counts are kept per
bucket (not cumulative) so an observation touches one slot; the exporter adds them up.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["POLL_SECONDS_BUCKETS", "WRITE_SECONDS_BUCKETS", "Histogram"]

# A poll runs a device's tasks over SNMP: milliseconds on a LAN, seconds behind a slow
# link or a timeout and its retries.
POLL_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A batch is one COPY of up to writer.batch_size samples: about a millisecond for a few
# hundred, a few hundred milliseconds for 50,000, seconds when PostgreSQL is struggling.
WRITE_SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    """Observations counted into buckets with upper bounds ``bounds`` (inclusive, as
    Prometheus' ``le``) plus one for everything above the last bound."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not all(math.isfinite(b) for b in bounds):
            raise ValueError("bucket bounds must be finite, distinct and ascending")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, the last at +inf: the
        shape of a Prometheus histogram."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out
