"""What the poller is doing, for people: a live table on a terminal, a log line otherwise.

A newcomer running ``./dev run`` sees devices come up and samples arrive within a minute;
a service manager's journal gets the same figures as one JSON line every interval.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from netmon.logs import get_logger
from netmon.poller.service import PollerService

__all__ = ["Snapshot", "show_summary", "snapshot"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Snapshot:
    devices: int
    up: int
    down: int
    polls: int
    failed: int
    overruns: int
    samples: int
    samples_per_s: float
    in_flight: int
    last_errors: list[tuple[str, str, str]]


def snapshot(service: PollerService, previous: tuple[float, int] | None) -> Snapshot:
    poller = service.poller
    assert poller is not None
    states = [service.health.is_reachable(name) for name in poller.device_names]
    rate = 0.0
    if previous is not None:
        elapsed = time.monotonic() - previous[0]
        rate = (poller.stats.samples - previous[1]) / elapsed if elapsed > 0 else 0.0
    return Snapshot(
        devices=poller.devices,
        up=sum(1 for s in states if s),
        down=sum(1 for s in states if s is False),
        polls=poller.stats.polls,
        failed=poller.stats.failed,
        overruns=poller.stats.overruns,
        samples=poller.stats.samples,
        samples_per_s=rate,
        in_flight=poller.in_flight,
        last_errors=list(poller.stats.last_errors)[-5:],
    )


def _table(s: Snapshot) -> Table:
    table = Table(title="netmon poller", show_header=True, header_style="bold")
    columns = ("devices", "up", "down", "polls", "failed", "overruns", "samples", "samples/s")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(
        str(s.devices), f"[green]{s.up}", f"[red]{s.down}" if s.down else "0", str(s.polls),
        str(s.failed), str(s.overruns), f"{s.samples:,}", f"{s.samples_per_s:,.0f}",
    )  # fmt: skip
    if s.last_errors:
        lines = [f"{when[11:19]} {device}: {error[:90]}" for when, device, error in s.last_errors]
        table.caption = "last errors:\n" + "\n".join(lines)
    return table


async def show_summary(service: PollerService, every: float = 10.0) -> None:
    """Until cancelled: a live table on a terminal, else one log line per ``every``."""
    previous: tuple[float, int] | None = None
    interactive = sys.stdout.isatty()
    live = Live(console=Console(), auto_refresh=False) if interactive else None
    if live is not None:
        live.start()
    try:
        while True:
            await asyncio.sleep(2.0 if interactive else every)
            if service.poller is None:
                continue
            snap = snapshot(service, previous)
            previous = (time.monotonic(), snap.samples)
            if live is not None:
                live.update(_table(snap), refresh=True)
            else:
                log.info(
                    "poller summary",
                    devices=snap.devices, up=snap.up, down=snap.down, polls=snap.polls,
                    failed=snap.failed, overruns=snap.overruns,
                    samples_per_s=round(snap.samples_per_s, 1), in_flight=snap.in_flight,
                    last_error=snap.last_errors[-1][2] if snap.last_errors else None,
                )  # fmt: skip
    finally:
        if live is not None:
            live.stop()
