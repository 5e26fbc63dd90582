"""What the poller is doing, for people: a live view on a terminal, a log line otherwise.

A newcomer running ``./dev run`` sees devices come up and samples arrive within a minute,
which devices fail and why, and what just happened (reboots, configuration changes,
alerts); a service manager's journal gets the figures as one JSON line every interval.
The figures are read from the poller in this process (``snapshot``), the recent events
are collected as they pass (``RecentEvents``); ``netmon.poller.screen`` draws them.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from netmon.logs import get_logger
from netmon.poller.service import PollerService
from netmon.records import DeviceEvent, Sample
from netmon.store.health import UNREACHABLE

if TYPE_CHECKING:
    from netmon.alerts.engine import Transition
    from netmon.ingest.processor import Observe
    from netmon.store.writer import SampleWriter

__all__ = [
    "Event",
    "Failure",
    "RecentEvents",
    "Snapshot",
    "plain_error",
    "show_summary",
    "snapshot",
]

log = get_logger(__name__)

EVENTS_KEPT = 50

# Short words for a poll's error class; the message after them says the rest.
_PROBLEMS = {
    "timeout": "no answer",
    "netconf_timeout": "no answer",
    "cli_timeout": "no answer",
    "overload": "netmon overloaded",
    "slow": "answers late",
    "unknown_user": "unknown user",
    "wrong_digest": "authentication failed",
    "decryption": "decryption failed",
    "netconf_auth": "login refused",
    "cli_auth": "login refused",
    "netconf_refused": "connection refused",
    "netconf_connection": "connection failed",
    "cli_connection": "connection failed",
    "netconf_host_key": "host key mismatch",
    "malformed": "garbled answer",
    "netconf_malformed": "garbled answer",
    "netconf_unsafe_xml": "unsafe XML refused",
    "netconf_too_large": "answer too large",
    "no_such": "object missing",
    "task": "task failed",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """A device whose last poll failed, in words."""

    device: str
    problem: str  # a few words: "no answer", "authentication failed"
    message: str  # the error's own message, without the device name it starts with
    since: datetime
    polls: int  # failed polls in a row
    reachable: bool  # it answered, wrongly; False: it did not answer at all


@dataclass(frozen=True, slots=True)
class Event:
    time: datetime
    device: str
    text: str
    severity: str  # info, warning, critical


@dataclass(frozen=True)
class Snapshot:
    devices: int
    up: int  # last poll succeeded
    failing: int  # answered, but the poll failed
    down: int  # no answer
    waiting: int  # not polled yet by this process
    polls: int
    failed: int
    overruns: int
    late: int  # polls started more than 2 s after their slot
    lag_ms: float  # mean time from a poll's slot to its start
    samples: int
    samples_per_s: float
    in_flight: int
    spool_batches: int  # written to disk while the database is away, not yet replayed
    database_up: bool
    failures: list[Failure]  # every failing device, longest failing first
    events: list[Event]  # newest first
    last_errors: list[tuple[str, str, str]]


def plain_error(device: str, error_class: str, message: str) -> tuple[str, str]:
    """(a few words for the class, the message without its ``device:`` prefix): error
    messages name their device, which the view shows in a column of its own."""
    problem = _PROBLEMS.get(error_class, error_class.replace("_", " "))
    text = message.removeprefix(f"{device}: ").strip()
    return problem, re.sub(r"\s+", " ", text)


class RecentEvents:
    """The last ``EVENTS_KEPT`` things that happened, as they pass through this process:
    device events (reboots, configuration changes, reachability) and alert changes
    (firing, resolved), plus devices the inventory added or retired (from the poller's
    device list between two snapshots)."""

    def __init__(self, kept: int = EVENTS_KEPT) -> None:
        self.events: deque[Event] = deque(maxlen=kept)
        self._devices: set[str] | None = None

    def observer(self, inner: Observe | None) -> Observe:
        """A hook for the poller's processor: notes device events, then calls ``inner``
        (alert evaluation) with the same batch."""

        def observe(samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()) -> None:
            for event in events:
                self.device_event(event)
            if inner is not None:
                inner(samples, events)

        return observe

    def device_event(self, event: DeviceEvent) -> None:
        text = event.kind.removeprefix("device.").replace("_", " ")
        # Messages often start with the device's name, which has a column of its own.
        message = event.message.removeprefix(f"{event.device}: ")
        if message:
            text = f"{text}: {message}"
        self.add(Event(event.time, event.device, text, event.severity))

    def alerts(self, transitions: Sequence[Transition]) -> None:
        for t in transitions:
            if t.event not in ("firing", "resolved", "flapping"):
                continue  # pending, notified, ...: steps a person does not act on
            severity = t.rule.severity if t.event != "resolved" else "info"
            where = ", ".join(f"{k}={v}" for k, v in t.labels)
            text = f"alert {t.rule.name} {t.event}" + (f" ({where})" if where else "")
            self.add(Event(t.time, t.device, text, _severity(severity)))

    def inventory(self, names: Sequence[str]) -> None:
        now = datetime.now(UTC)
        current = set(names)
        if self._devices is not None:
            for name in sorted(current - self._devices):
                self.add(Event(now, name, "added to the inventory", "info"))
            for name in sorted(self._devices - current):
                self.add(Event(now, name, "left the inventory", "warning"))
        self._devices = current

    def add(self, event: Event) -> None:
        self.events.append(event)

    def newest(self) -> list[Event]:
        return sorted(self.events, key=lambda e: e.time, reverse=True)


def _severity(severity: str) -> str:
    if severity == "critical":
        return "critical"
    return "warning" if severity in ("major", "minor", "warning") else "info"


def snapshot(
    service: PollerService,
    previous: tuple[float, int] | None,
    *,
    events: RecentEvents | None = None,
    writer: SampleWriter | None = None,
) -> Snapshot:
    poller = service.poller
    assert poller is not None
    stats = poller.stats
    names = poller.device_names
    polled = poller.last_polls
    failing = dict(stats.failing)
    failures = []
    for name, f in failing.items():
        problem, message = plain_error(name, f.error_class, f.message)
        reachable = f.error_class not in UNREACHABLE
        failures.append(Failure(name, problem, message, f.since, f.polls, reachable))
    failures.sort(key=lambda f: (f.reachable, f.since, f.device))
    down = sum(1 for f in failures if not f.reachable)
    rate = 0.0
    if previous is not None:
        elapsed = time.monotonic() - previous[0]
        rate = (stats.samples - previous[1]) / elapsed if elapsed > 0 else 0.0
    if events is not None:
        events.inventory(names)
    lag = stats.start_lag
    return Snapshot(
        devices=len(names),
        up=sum(1 for n in names if n in polled and n not in failing),
        failing=len(failures) - down,
        down=down,
        waiting=sum(1 for n in names if n not in polled),
        polls=stats.polls,
        failed=stats.failed,
        overruns=stats.overruns,
        late=stats.late,
        lag_ms=lag.sum / lag.count * 1000 if lag.count else 0.0,
        samples=stats.samples,
        samples_per_s=rate,
        in_flight=poller.in_flight,
        spool_batches=len(writer.spool) if writer is not None else 0,
        database_up=writer.database_up if writer is not None else True,
        failures=failures,
        events=events.newest() if events is not None else [],
        last_errors=list(stats.last_errors)[-5:],
    )


async def show_summary(
    service: PollerService,
    every: float = 10.0,
    *,
    events: RecentEvents | None = None,
    writer: SampleWriter | None = None,
) -> None:
    """Until cancelled: a live view on a terminal, else one log line per ``every``."""
    if sys.stdout.isatty():
        from netmon.poller.screen import LiveView

        async with LiveView() as view:
            await _loop(service, 2.0, events, writer, view.show)
    else:
        await _loop(service, every, events, writer, _log_line)


async def _loop(
    service: PollerService,
    every: float,
    events: RecentEvents | None,
    writer: SampleWriter | None,
    show: Callable[[Snapshot], None],
) -> None:
    previous: tuple[float, int] | None = None
    while True:
        await asyncio.sleep(every)
        if service.poller is None:
            continue
        try:
            snap = snapshot(service, previous, events=events, writer=writer)
            previous = (time.monotonic(), snap.samples)
            show(snap)
        except Exception:  # a fault in the display must not end it for the whole run
            log.exception("poller summary failed; trying again")


def _log_line(snap: Snapshot) -> None:
    log.info(
        "poller summary",
        devices=snap.devices, up=snap.up, failing=snap.failing, down=snap.down,
        waiting=snap.waiting, polls=snap.polls, failed=snap.failed, overruns=snap.overruns,
        late=snap.late, samples_per_s=round(snap.samples_per_s, 1), in_flight=snap.in_flight,
        spooled=snap.spool_batches,
        last_error=snap.last_errors[-1][2] if snap.last_errors else None,
    )  # fmt: skip
