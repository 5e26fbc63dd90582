"""How late netmon's own SNMP engine runs: the evidence that a timeout was ours.

A timeout means "the device did not answer" only if netmon was there to hear the answer.
When the process (or the engine's event-loop thread) is starved of CPU, the request timer
fires before the answer already waiting in the socket is read. A heartbeat that should
wake every ``period`` seconds measures that: the sum of how late it woke is the time the
engine could not run.
"""

from __future__ import annotations

import asyncio
import threading
import time

__all__ = ["OVERLOAD_SHARE", "LagMonitor", "is_overload"]

# A timeout is ours when the engine was unable to run for at least this share of it.
OVERLOAD_SHARE = 0.5


class LagMonitor:
    """Heartbeat lateness, summed. Run it on a thread of its own (:meth:`start_thread`)
    or as a task on an engine's loop (:meth:`run`)."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self._lag = 0.0
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def beat(self, woke: float, due: float) -> None:
        with self._lock:
            self._lag += max(0.0, woke - due)
            self._last = woke

    def mark(self) -> float:
        """A point to measure lateness from (:meth:`lag_since`)."""
        return self.total()

    def total(self) -> float:
        """Lateness so far, counting a heartbeat that is overdue right now."""
        with self._lock:
            overdue = time.monotonic() - self._last - self.period
            return self._lag + max(0.0, overdue)

    def lag_since(self, mark: float) -> float:
        return max(0.0, self.total() - mark)

    def start_thread(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._last = time.monotonic()
            self._thread = threading.Thread(target=self._beat_forever, name="netmon-snmp-lag")
            self._thread.daemon = True
            self._thread.start()

    def _beat_forever(self) -> None:
        while True:
            due = time.monotonic() + self.period
            time.sleep(self.period)
            self.beat(time.monotonic(), due)

    async def run(self) -> None:
        self._last = time.monotonic()
        while True:
            due = time.monotonic() + self.period
            await asyncio.sleep(self.period)
            self.beat(time.monotonic(), due)


def is_overload(lag: float, timeout: float) -> bool:
    return lag >= timeout * OVERLOAD_SHARE
