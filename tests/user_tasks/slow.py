"""A task that takes its time, and counts how many polls of a device ran at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime

from nornir.core.task import Result, Task

from netmon.records import Sample, SeriesKey

__all__ = ["slow_probe"]

_lock = threading.Lock()
_running: Counter[str] = Counter()
_peak: Counter[str] = Counter()
_peak_all = 0
_started = 0
_delay = 1.0


def reset(delay: float) -> None:
    global _started, _delay, _peak_all
    with _lock:
        _running.clear()
        _peak.clear()
        _peak_all = 0
        _started = 0
        _delay = delay


def started() -> int:
    return _started


def max_concurrent_per_device() -> int:
    return max(_peak.values(), default=0)


def max_concurrent() -> int:
    """The most polls of any devices that ran at once."""
    return _peak_all


def enter_and_leave(device: str) -> None:
    global _started, _peak_all
    with _lock:
        _started += 1
        _running[device] += 1
        _peak[device] = max(_peak[device], _running[device])
        _peak_all = max(_peak_all, sum(_running.values()))
    time.sleep(_delay)
    with _lock:
        _running[device] -= 1


def slow_probe(task: Task) -> Result:
    enter_and_leave(task.host.name)
    sample = Sample(SeriesKey.of(task.host.name, "slow_probe"), datetime.now(UTC), 1)
    return Result(host=task.host, result=[sample])
