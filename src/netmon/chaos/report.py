"""The chaos run's answer, for a person (a table, Markdown) and for a program (JSON)."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.table import Table

from netmon import __version__
from netmon.chaos.runner import Outcome

__all__ = ["line", "markdown", "table"]


def _n(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def line(o: Outcome) -> str:
    """``produced N, stored once N, missing 0, duplicated 0, false unreachable 0,
    recovery T s``: one experiment in one line."""
    f = o.figures
    return (
        f"produced {_n(f.get('produced'))}, stored once {_n(f.get('stored_once'))}, "
        f"missing {_n(f.get('missing'))}, duplicated {_n(f.get('duplicated'))}, "
        f"false unreachable {_n(f.get('false_unreachable'))}, "
        f"recovery {_n(f.get('recovery_s'))} s"
    )


_COLUMNS = (
    ("experiment", None),
    ("result", None),
    ("produced", "produced"),
    ("stored once", "stored_once"),
    ("missing", "missing"),
    ("dup", "duplicated"),
    ("partial", "partial"),
    ("false unreach.", "false_unreachable"),
    ("recovery s", "recovery_s"),
    ("spool peak", "spool_peak_bytes"),
    ("API p99 ms", "api_p99_ms"),
)


def _cells(o: Outcome) -> list[str]:
    out = [o.name, "passed" if o.passed else ("skipped" if o.status == "skipped" else "FAILED")]
    for _title, key in _COLUMNS[2:]:
        assert key is not None
        value = o.figures.get(key)
        if key == "spool_peak_bytes" and isinstance(value, int):
            out.append(_bytes(value))
        else:
            out.append(_n(value))
    return out


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    return str(n)


def table(outcomes: Sequence[Outcome]) -> Table:
    t = Table(title="netmon chaos", title_justify="left")
    for title, key in _COLUMNS:
        t.add_column(title, justify="left" if key is None else "right")
    for o in outcomes:
        style = None if o.passed else "red"
        t.add_row(*_cells(o), style=style)
    return t


def markdown(
    outcomes: Sequence[Outcome],
    *,
    quick: bool,
    devices: int,
    interval_s: float,
    interfaces: int | None = None,
) -> str:
    passed = sum(o.passed for o in outcomes)
    ports = "8-48" if interfaces is None else str(interfaces)
    head = [
        "# netmon chaos report",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, netmon {__version__}, "
        f"{platform.node()} ({platform.machine()}), {devices} lab devices ({ports} "
        f"interfaces each) every {interval_s:g} s, {'quick' if quick else 'full-length'} faults. "
        f"**{passed} of {len(outcomes)} passed.**",
        "",
        "| " + " | ".join(title for title, _ in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    rows = ["| " + " | ".join(_cells(o)) + " |" for o in outcomes]
    notes = ["", "## Per experiment", ""]
    for o in outcomes:
        notes.append(f"- **{o.name}** ({o.title}): {line(o)}.")
        if o.reasons:
            notes.append(f"  Failed: {'; '.join(o.reasons)}.")
        if o.journal is not None:
            notes.append(f"  Journal: `{o.journal.name}`.")
    return "\n".join(head + rows + notes) + "\n"
