"""The experiment in progress, as the actions and probes of one process share it.

Chaos Toolkit runs an experiment's activities one after another in one process; the
window (its start, the watcher, the faults' marks) lives here between them. Marks also go
to the target's ``marks.jsonl``, so a probe in another process, or a later reader of the
work folder, sees the same spans.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from netmon.chaos.counting import Span
from netmon.chaos.target import Mark, Target
from netmon.chaos.watch import Watcher

__all__ = ["Window", "close_window", "current", "open_window"]

# Slack for a cycle to be complete in the database: the poll's own time (its `up` sample
# lands inside the cycle) plus the writer's flush and a margin for a loaded machine.
SETTLE_MARGIN_S = 3.0
# Before a SIGKILL, what netmon may hold that no process survives: a poll in flight (up to
# the SNMP timeout and one retry, 2 x 2 s), then its records in the batcher (one flush).
KILL_REACH_S = 5.0


@dataclass
class Window:
    name: str
    target: Target
    start: float
    watcher: Watcher
    faults: list[tuple[float, float | None]] = field(default_factory=list)
    really_down: set[str] = field(default_factory=set)
    extra: dict[str, object] = field(default_factory=dict)  # a fault's own figures

    def marks(self) -> list[Mark]:
        return self.target.marks(self.start)

    def excluded(self) -> list[Span]:
        """Spans when netmon was not running (killed or restarting): nothing was due."""
        spans: list[Span] = []
        opened: float | None = None
        for m in self.marks():
            if m.kind == "down_start":
                opened = m.time
            elif m.kind == "down_end" and opened is not None:
                spans.append((opened, m.time))
                opened = None
        if opened is not None:
            spans.append((opened, time.time()))
        return spans

    def killed(self) -> list[Span]:
        reach = self.target.jitter_s + self.target.flush_s + KILL_REACH_S
        return [(m.time - reach, m.time) for m in self.marks() if m.kind == "kill"]

    def fault_end(self) -> float | None:
        ends = [m.time for m in self.marks() if m.kind == "fault_end"]
        return ends[-1] if ends else None

    def fault_span(self) -> Span | None:
        starts = [m.time for m in self.marks() if m.kind == "fault_start"]
        end = self.fault_end()
        if not starts:
            return None
        return (starts[0], end if end is not None else time.time())


_current: Window | None = None


def current() -> Window | None:
    return _current


def open_window(name: str, target: Target) -> Window:
    global _current
    close_window()
    watcher = Watcher(target)
    watcher.start()
    start = time.time()
    target.mark("begin", start, experiment=name)
    _current = Window(name, target, start, watcher)
    return _current


def close_window() -> None:
    global _current
    if _current is not None:
        _current.watcher.stop()
        _current.target.mark("close", experiment=_current.name)
        _current = None


def longest_interval(target: Target) -> float:
    return max(target.devices.values(), default=60.0)
