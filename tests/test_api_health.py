"""Health: live always answers; ready says why it is not, and never hangs on a database
that went away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from netmon.api.controllers import health
from netmon.api.controllers.health import READY_TTL
from netmon.config import Settings
from tests.api_helpers import (
    Api,
    api,
    api_database_url,
    api_settings,
    make_api_settings,
    running_api,
)
from tests.tcp_proxy import TcpProxy
from tests.test_outage import proxy_for, through

__all__ = ["api", "api_database_url", "api_settings"]


async def test_live_and_ready_without_a_token(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        assert (await c.get("/health/live")).json() == {"status": "ok"}
        ready = (await c.get("/health/ready")).json()
    assert ready["status"] == "ready"
    assert ready["checks"]["database"]["ok"]
    assert ready["checks"]["migrations"]["ok"]
    assert ready["checks"]["poller"]["detail"] == "no polls recorded yet"


async def test_a_flood_of_ready_probes_costs_one_round_of_checks_a_second(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/health/ready is public: without a cache every probe was three database round
    trips. Counted in the checks themselves: the database's own transaction count also
    moves with the API's background work (listener keepalives, connection resets), and
    a CI run once saw 18 where the bound allowed 13."""
    rounds = 0
    queries = 0
    checks, query = health._checks, health._query

    async def counted_checks(ctx: Any) -> Any:
        nonlocal rounds
        rounds += 1
        return await checks(ctx)

    async def counted_query(*args: Any, **kwargs: Any) -> Any:
        nonlocal queries
        queries += 1
        return await query(*args, **kwargs)

    monkeypatch.setattr(health, "_checks", counted_checks)
    monkeypatch.setattr(health, "_query", counted_query)
    await asyncio.sleep(READY_TTL)  # what an earlier request cached has expired
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=api.url) as c:
        answers = await asyncio.gather(*(c.get("/health/ready") for _ in range(300)))
    seconds = time.monotonic() - started
    assert {a.status_code for a in answers} == {200}
    assert 1 <= rounds <= seconds / READY_TTL + 2, (rounds, seconds)
    assert len({a.json()["checked_at"] for a in answers}) <= rounds
    # A round asks the database at most twice (the connection and the poller's last
    # poll; the migrations check stops asking once the schema is current).
    assert queries <= 2 * rounds, (queries, rounds)


async def test_a_lagging_poller_makes_ready_fail(api: Api) -> None:
    async with api.db.pool.acquire() as conn:
        await conn.execute("INSERT INTO devices (name) VALUES ('r1')")
        await conn.execute(
            "INSERT INTO poll_health (device_id, last_poll, duration_ms, reachable) "
            "SELECT id, $1, 1, true FROM devices",
            datetime.now(UTC) - timedelta(minutes=10),
        )
    async with httpx.AsyncClient(base_url=api.url) as c:
        r = await c.get("/health/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["poller"]["ok"] is False
    assert "s old" in r.json()["checks"]["poller"]["detail"]


@pytest.fixture
async def proxied(
    api_database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[TcpProxy, Settings]]:
    proxy = proxy_for(api_database_url)
    await proxy.start()
    try:
        yield proxy, make_api_settings(through(proxy, api_database_url), tmp_path / "data")
    finally:
        await proxy.close()


async def test_ready_answers_promptly_when_the_database_is_gone(proxied) -> None:
    proxy, settings = proxied
    async with running_api(settings) as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as c:
            assert (await c.get("/health/ready")).status_code == 200
            await proxy.cut()
            await asyncio.sleep(READY_TTL)  # the answer before the cut is served a second
            started = time.monotonic()
            r = await c.get("/health/ready")
            took = time.monotonic() - started
            assert r.status_code == 503
            assert r.json()["checks"]["database"]["ok"] is False
            assert took < 5, took  # bounded by the checks' own deadline, not by TCP
            assert (await c.get("/health/live")).status_code == 200
        async with api.client("viewer") as c:
            # A token checked before the outage is cached; the query then fails cleanly.
            down = await c.get("/api/v1/devices")
            assert down.status_code == 503
            assert down.headers["content-type"].startswith("application/problem+json")
            assert down.headers["retry-after"]
            await proxy.restore()
            deadline = time.monotonic() + 15
            while (await c.get("/api/v1/devices")).status_code != 200:
                assert time.monotonic() < deadline
            await asyncio.sleep(READY_TTL)
            assert (await c.get("/health/ready")).status_code == 200
