"""A cancelled caller stays cancelled, however its bounded wait ends.

On Python 3.11 ``asyncio.wait_for`` returns the result, and drops the cancellation, when
the cancel arrives in the loop iterations between the awaited thing finishing and the
caller resuming. A loop that writes and is stopped by cancelling it (the feed tests'
streaming writer) then ran on, and its stop waited for ever: a CI run hung for its whole
time limit in ``test_a_revocation_through_the_api_or_the_cli_closes_feeds_at_once``.

Each case cancels its caller after the awaited work has finished, at every number of loop
iterations until the caller has returned: the caller must end cancelled or have finished,
never finish after being cancelled. With ``wait_for`` the writer's case ended "swallowed"
one to three iterations after the work.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from netmon.api.controllers.health import Check
from netmon.api.controllers.health import _bounded as bounded_check
from netmon.config import load_settings
from netmon.store.database import Database
from netmon.store.writer import SampleWriter

# Wraps one awaitable that finishes when its event is set.
Wrapper = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def outcome(wrap: Wrapper, iterations: int) -> str:
    finish = asyncio.Event()

    async def work() -> Check:
        await finish.wait()
        return Check(ok=True)

    caller = asyncio.create_task(wrap(work))
    for _ in range(3):  # the caller is waiting on the work
        await asyncio.sleep(0)
    finish.set()
    for _ in range(iterations):
        await asyncio.sleep(0)
    if caller.done():
        return "finished"
    caller.cancel()
    try:
        async with asyncio.timeout(5):
            await caller
    except asyncio.CancelledError:
        return "cancelled"
    return "swallowed"


async def sweep(wrap: Wrapper) -> list[str]:
    seen: list[str] = []
    for iterations in range(12):
        seen.append(await outcome(wrap, iterations))
        if seen[-1] == "finished":
            break
    return seen


def assert_never_swallowed(seen: list[str]) -> None:
    assert "swallowed" not in seen, seen
    # The sweep reached the end, where the caller finished on its own.
    assert seen[-1] == "finished", seen
    assert seen[0] == "cancelled", seen


async def test_a_write_cancelled_as_its_database_work_finishes_stays_cancelled(
    tmp_path: Path,
) -> None:
    # The work here needs no database: the writer is not started.
    settings = load_settings(None, data_dir=tmp_path)
    writer = SampleWriter(Database(settings.database, settings.data_dir), settings)

    async def wrap(work: Callable[[], Awaitable[Any]]) -> Any:
        async def on(_held: list[Any]) -> Any:
            return await work()

        return await writer._bounded(on, deadline=30)

    assert_never_swallowed(await sweep(wrap))


async def test_a_health_check_cancelled_as_its_check_finishes_stays_cancelled() -> None:
    async def wrap(work: Callable[[], Awaitable[Any]]) -> Any:
        return await bounded_check(work(), "probe", 30)  # type: ignore[arg-type]

    assert_never_swallowed(await sweep(wrap))


@pytest.mark.parametrize("awaited", ["wait_for", "timeout"])
async def test_the_sweep_tells_the_two_apart(awaited: str) -> None:
    """The check above can fail: ``wait_for`` on this Python drops the cancellation."""

    async def wrap(work: Callable[[], Awaitable[Any]]) -> Any:
        if awaited == "wait_for":
            return await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(work())), 30)
        async with asyncio.timeout(30):
            return await asyncio.shield(asyncio.ensure_future(work()))

    seen = await sweep(wrap)
    if awaited == "wait_for" and sys.version_info < (3, 12):
        assert "swallowed" in seen, seen
    else:
        assert_never_swallowed(seen)
