"""The terminal view of ``netmon run``: one screen, redrawn in place.

Three parts in one renderable: the figures (devices up, failing, not answering; polls,
samples per second, overruns, lag, spool), the failing devices with their last error in
words, and the recent events. Each list is bounded, so the view keeps its height and
rich redraws it over itself. Log lines print above it: rich's ``Live`` swaps
``sys.stderr`` for a proxy while it runs, and netmon's logging writes to whatever
``sys.stderr`` is at each line (``netmon.logs``), as do the API processes through their
relay (``netmon.api.processes``).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from netmon.poller.summary import Event, Failure, Snapshot

__all__ = ["EVENTS_SHOWN", "FAILURES_SHOWN", "TITLE", "LiveView", "render"]

TITLE = "netmon poller"
FAILURES_SHOWN = 10
EVENTS_SHOWN = 8
_STYLES = {"critical": "red", "warning": "yellow", "info": ""}


def render(snap: Snapshot, now: datetime | None = None) -> RenderableType:
    """The whole view for one snapshot."""
    now = now or datetime.now(UTC)
    return Group(
        Panel(_figures(snap), title=f"[bold]{TITLE}", title_align="left"),
        _failures(snap.failures, now),
        _events(snap.events),
    )


def _figures(s: Snapshot) -> Text:
    text = Text()
    text.append(f"{s.devices:,} devices: ")
    text.append(f"{s.up:,} up", style="green")
    text.append(", ")
    text.append(f"{s.failing:,} failing", style="yellow" if s.failing else "")
    text.append(", ")
    text.append(f"{s.down:,} not answering", style="red" if s.down else "")
    if s.waiting:
        text.append(f", {s.waiting:,} not polled yet", style="dim")
    text.append("\n")
    text.append(f"polls {s.polls:,} ({s.failed:,} failed, {s.in_flight:,} running)")
    text.append(f"   samples {s.samples:,} ({s.samples_per_s:,.0f}/s)")
    text.append("   overruns ")
    text.append(f"{s.overruns:,}", style="yellow" if s.overruns else "")
    text.append(f"   lag {s.lag_ms:,.0f} ms ({s.late:,} late)")
    text.append("   spool ")
    if not s.database_up:
        text.append(f"{s.spool_batches:,} batches, database away", style="red")
    elif s.spool_batches:
        text.append(f"{s.spool_batches:,} batches, replaying", style="yellow")
    else:
        text.append("empty")
    return text


def _failures(failures: list[Failure], now: datetime) -> RenderableType:
    heading = Text("failing devices", style="bold")
    if not failures:
        return Group(heading, Text("none", style="dim"))
    table = Table(expand=True, box=None, header_style="dim", pad_edge=False)
    table.add_column("device", no_wrap=True)
    table.add_column("problem", no_wrap=True)
    table.add_column("for", justify="right", no_wrap=True)
    table.add_column("polls", justify="right", no_wrap=True)
    table.add_column("last error", ratio=1, no_wrap=True, overflow="ellipsis")
    for f in failures[:FAILURES_SHOWN]:
        style = "yellow" if f.reachable else "red"
        table.add_row(
            f.device, Text(f.problem, style=style), _age(now - f.since), str(f.polls), f.message
        )
    more = len(failures) - FAILURES_SHOWN
    if more > 0:
        table.caption = f"and {more:,} more"
        table.caption_justify = "left"
    return Group(heading, table)


def _events(events: list[Event]) -> RenderableType:
    heading = Text("recent events", style="bold")
    if not events:
        return Group(heading, Text("none yet", style="dim"))
    table = Table(expand=True, box=None, show_header=False, pad_edge=False)
    table.add_column("time", no_wrap=True, style="dim")
    table.add_column("device", no_wrap=True)
    table.add_column("what", ratio=1, no_wrap=True, overflow="ellipsis")
    for e in events[:EVENTS_SHOWN]:
        when = e.time.astimezone(UTC).strftime("%H:%M:%S")
        table.add_row(when, e.device, Text(e.text, style=_STYLES.get(e.severity, "")))
    return Group(heading, table)


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LiveView:
    """The view on this process's terminal while the context is open. Output written to
    ``sys.stdout`` / ``sys.stderr`` meanwhile prints above it (stderr only when it is
    the terminal too: logs sent to a file stay there)."""

    def __init__(self, console: Console | None = None) -> None:
        self.live = Live(
            Panel(
                Text("starting: the first polls come within the interval"),
                title=f"[bold]{TITLE}",
                title_align="left",
            ),
            console=console or Console(),
            auto_refresh=False,
            redirect_stdout=True,
            redirect_stderr=sys.stderr.isatty(),
        )

    async def __aenter__(self) -> LiveView:
        self.live.start(refresh=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.live.stop()

    def show(self, snap: Snapshot) -> None:
        self.live.update(render(snap), refresh=True)
