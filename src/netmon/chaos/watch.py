"""What netmon looked like from outside while an experiment ran.

A thread started with the experiment's window samples netmon's ``/metrics`` (database
up, spool size, queued samples, overruns) and times one API request after another (a
device list, as a NOC screen would ask), until the window is judged. Its figures go into
the report: spool peak, API p99 during the fault, recovery time (fault end to the
backlog written and netmon ready again).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx

from netmon.chaos.target import Target, metric

__all__ = ["Watch", "Watcher"]


@dataclass
class Watch:
    """One sample of netmon's state."""

    time: float
    database_up: float | None
    spool_bytes: float
    queued: float
    overruns: float
    ready: bool


@dataclass
class Watcher:
    target: Target
    period_s: float = 0.5
    samples: list[Watch] = field(default_factory=list)
    api: list[tuple[float, float | None]] = field(default_factory=list)  # (time, s or None)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for fn, name in ((self._metrics_loop, "chaos-watch"), (self._api_loop, "chaos-api")):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _metrics_loop(self) -> None:
        while not self._stop.is_set():
            m = self.target.metrics(timeout=2.0)
            ready = _ready(self.target)
            self.samples.append(
                Watch(
                    time.time(),
                    m.get("netmon_database_up"),
                    m.get("netmon_spool_bytes", 0.0),
                    m.get("netmon_batcher_queued_samples", 0.0),
                    metric(m, "netmon_poll_overruns_total"),
                    ready,
                )
            )
            self._stop.wait(self.period_s)

    def _api_loop(self) -> None:
        with self.target.client(timeout=10.0) as c:
            while not self._stop.is_set():
                started = time.perf_counter()
                took: float | None
                try:
                    r = c.get("/api/v1/devices", params={"limit": 50})
                    took = time.perf_counter() - started if r.status_code == 200 else None
                except httpx.HTTPError:
                    took = None
                self.api.append((time.time(), took))
                self._stop.wait(0.2)

    # -- figures ------------------------------------------------------------------------

    def spool_peak(self) -> float:
        return max((s.spool_bytes for s in self.samples), default=0.0)

    def recovered_at(self, after: float) -> float | None:
        """The first moment after ``after`` when netmon was ready, the database up and
        the spool and queue empty."""
        for s in self.samples:
            if s.time >= after and s.ready and s.database_up == 1 and s.spool_bytes == 0:
                return s.time
        return None

    def api_p99_ms(self, start: float, end: float) -> float | None:
        took = [t for when, t in self.api if start <= when <= end and t is not None]
        if len(took) < 2:
            return None
        return statistics.quantiles(took, n=100, method="inclusive")[98] * 1000

    def api_errors(self, start: float, end: float) -> int:
        return sum(1 for when, t in self.api if start <= when <= end and t is None)


def _ready(target: Target) -> bool:
    try:
        with httpx.Client(base_url=target.api_url, timeout=3.0) as c:
            return c.get("/health/ready").status_code == 200
    except httpx.HTTPError:
        return False
