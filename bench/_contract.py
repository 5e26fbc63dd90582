"""The benchmark contract, shared by every bench/*.py.

A benchmark measures ``runs`` times and prints, as the LAST line of stdout, exactly one
JSON object::

    {"bench": NAME, "figures": {...}, "baseline": {...}, "ratio": {...}, "runs": N}

``figures`` and ``baseline`` hold the medians over the runs; ``ratio`` maps each figure
that has a baseline of the same name to figure / baseline. Anything else (progress bars,
logs) goes to stderr, so ``python bench/NAME.py | tail -n 1`` is always the result.

This module also owns the throw-away database every benchmark runs in:
``fresh_database`` creates ``netmon_bench_<random>`` on the server and drops it on the
way out, failure or not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = [
    "DEFAULT_SERVER_URL",
    "Figures",
    "emit",
    "fresh_database",
    "median_figures",
    "parse_args",
    "percentile",
    "progress",
    "repeat",
    "stderr",
]

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
URL_ENV = "NETMON_BENCH_DATABASE_URL"

Figures = dict[str, float]

stderr = Console(stderr=True)


def progress() -> Progress:
    """A rich progress display on stderr (stdout is kept for the JSON line)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    )


def parse_args(
    description: str,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """The options every benchmark takes; ``extra`` may add a benchmark's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small run, for CI and smoke")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(URL_ENV, DEFAULT_SERVER_URL),
        help=f"a server to create the throw-away database on (default: ${URL_ENV} or "
        f"{DEFAULT_SERVER_URL})",
    )
    parser.add_argument("--runs", type=int, default=None, help="measurement runs (median)")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 500 values is the 495th smallest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median_figures(runs: Sequence[Mapping[str, float]]) -> Figures:
    """Key by key median over runs (a key missing from some runs: median of the others)."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run if k not in keys]
    return {k: statistics.median([run[k] for run in runs if k in run]) for k in keys}


def _round(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    digits = max(0, 4 - math.floor(math.log10(abs(value))))
    return round(value, digits)


def emit(
    bench: str,
    figures: Mapping[str, float],
    baseline: Mapping[str, float],
    runs: int,
    **extra: Any,
) -> dict[str, Any]:
    """Print the contract's JSON object as the last line of stdout and return it."""
    ratio = {name: value / baseline[name] for name, value in figures.items() if baseline.get(name)}
    result: dict[str, Any] = {
        "bench": bench,
        "figures": {k: _round(v) for k, v in figures.items()},
        "baseline": {k: _round(v) for k, v in baseline.items()},
        "ratio": {k: _round(v) for k, v in ratio.items()},
        "runs": runs,
    }
    result.update(extra)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return result


async def repeat(
    bench: str,
    runs: int,
    once: Callable[[int], Awaitable[tuple[Mapping[str, float], Mapping[str, float]]]],
    **extra: Any,
) -> dict[str, Any]:
    """Call ``once(run_index)`` ``runs`` times; it returns (figures, baseline) of one run.
    Emits the medians; each run's raw numbers are also shown on stderr."""
    figure_runs: list[Mapping[str, float]] = []
    baseline_runs: list[Mapping[str, float]] = []
    for index in range(runs):
        figures, baseline = await once(index)
        stderr.print(
            f"[bold]run {index + 1}/{runs}[/bold] figures={dict(figures)} baseline={dict(baseline)}"
        )
        figure_runs.append(figures)
        baseline_runs.append(baseline)
    return emit(
        bench,
        median_figures(figure_runs),
        median_figures(baseline_runs),
        runs,
        **extra,
    )


def _source_version() -> str:
    """The commit the measured code is at, "+dirty" when src/ has local changes."""
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Where the numbers were taken: worth keeping next to them."""
    return {
        "netmon_commit": _source_version(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "asyncpg": asyncpg.__version__,
    }


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """Create ``netmon_bench_<random>`` on the server of ``server_url``; yield its URL;
    drop it (WITH FORCE) on the way out, whatever happened."""
    name = f"netmon_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


BenchFn = Callable[[argparse.Namespace, str, Path], Awaitable[Any]]
OptionsFn = Callable[[argparse.ArgumentParser], None]


def main(doc: str, options: OptionsFn, bench: BenchFn, argv: Sequence[str] | None = None) -> int:
    """The whole life of a benchmark script: parse its arguments, quiet netmon's logs, run
    ``bench(args, database_url, scratch_dir)`` in a throw-away database."""
    import asyncio
    import tempfile

    from netmon.logs import configure_logging

    args = parse_args(doc.split("\n\n")[0], options, argv)
    configure_logging("warning")

    async def go() -> None:
        async with fresh_database(args.database_url) as url:
            with tempfile.TemporaryDirectory(prefix="netmon-bench-") as tmp:
                await bench(args, url, Path(tmp))

    asyncio.run(go())
    return 0
