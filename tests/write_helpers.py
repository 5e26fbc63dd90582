"""Helpers shared by the write-path tests: unreachable URLs, exact read-back, polling."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from netmon.records import Sample

# (device, metric, labels, time): what identifies a sample independently of series ids.
Ident = tuple[str, str, tuple[tuple[str, str], ...], datetime]


def closed_port() -> int:
    """A loopback port that nothing listens on: bound, then closed, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def closed_url(database: str = "netmon") -> str:
    return f"postgresql://postgres@127.0.0.1:{closed_port()}/{database}"


def ident(sample: Sample) -> Ident:
    key = sample.series
    return (key.device, key.metric, key.labels, sample.time)


def expected(samples: Iterable[Sample]) -> dict[Ident, int | float]:
    return {ident(s): s.value for s in samples}


async def stored(conn: asyncpg.Connection) -> dict[Ident, Decimal]:
    """Every row in ``samples``, keyed by its series identity and time. Fails on a duplicate
    (which the primary key should make impossible anyway)."""
    rows = await conn.fetch(
        """
        SELECT d.name, s.metric, s.labels::text AS labels, sm.time, sm.value
        FROM samples sm
        JOIN series s ON s.id = sm.series_id
        JOIN devices d ON d.id = s.device_id
        """
    )
    result: dict[Ident, Decimal] = {}
    for row in rows:
        labels = tuple(sorted(json.loads(row["labels"]).items()))
        key = (row["name"], row["metric"], labels, row["time"])
        assert key not in result, f"sample stored twice: {key}"
        result[key] = row["value"]
    total = await conn.fetchval("SELECT count(*) FROM samples")
    assert total == len(rows) == len(result)
    return result


async def sample_ids(conn: asyncpg.Connection) -> set[tuple[int, datetime]]:
    rows = await conn.fetch("SELECT series_id, time FROM samples")
    return {(row["series_id"], row["time"]) for row in rows}


async def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01
) -> None:
    """Poll ``predicate`` (sync or async) until true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(interval)


def spool_files(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*.batch"))
