"""/health/ready keeps its deadline: a database 1 s away is slow, not down; a frozen one
fails the database check within the deadline, saying it timed out; and after an outage
readiness comes back as soon as polls are on time again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from netmon.api.controllers.health import READY_TTL
from netmon.chaos.relay import TcpRelay
from netmon.config import Settings
from netmon.core_control import LagWindow, LocalCore, PollLag
from netmon.poller.scheduler import PollerStats
from tests.api_helpers import api_database_url, make_api_settings, running_api
from tests.tcp_proxy import proxy_for, through

__all__ = ["api_database_url"]

MARGIN = 0.5  # scheduling noise on a shared machine


@pytest.fixture
async def relayed(
    api_database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[TcpRelay, Settings]]:
    parts = urlsplit(api_database_url)
    relay = TcpRelay(("127.0.0.1", 0), (parts.hostname or "127.0.0.1", parts.port or 5432))
    await relay.start()
    url = parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{relay.port}")).geturl()
    try:
        yield relay, make_api_settings(url, tmp_path / "data")
    finally:
        await relay.close()


async def _timed_ready(c: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = await c.get("/health/ready")
    return r, time.monotonic() - started


async def test_a_database_one_second_away_is_ready_within_the_deadline(relayed) -> None:
    relay, settings = relayed
    async with running_api(settings) as api, httpx.AsyncClient(base_url=api.url, timeout=20) as c:
        # Rounds at full speed: migrations known current, the poller's query prepared on
        # the pool's connections (a prepared statement's first use is two round trips).
        for _ in range(3):
            assert (await c.get("/health/ready")).status_code == 200
            await asyncio.sleep(READY_TTL)
        relay.control.set_delay(0.5)  # each way: a round trip of 1 s
        r, took = await _timed_ready(c)
    assert took < 2 + MARGIN, took
    assert r.status_code == 200, r.json()
    assert r.json()["checks"]["database"]["value"] >= 900  # it was slow, and counted ready


async def test_a_frozen_database_fails_within_the_deadline_naming_the_check(relayed) -> None:
    relay, settings = relayed
    async with running_api(settings) as api, httpx.AsyncClient(base_url=api.url, timeout=20) as c:
        assert (await c.get("/health/ready")).status_code == 200
        relay.control.freeze()
        await asyncio.sleep(READY_TTL)
        r, took = await _timed_ready(c)
        relay.control.restore()
    assert took < 2 + MARGIN, took
    assert r.status_code == 503
    database = r.json()["checks"]["database"]
    assert database["ok"] is False
    assert database["detail"].startswith("database: timed out"), database


async def test_ready_again_at_once_after_an_outage_when_polls_are_on_time(
    api_database_url: str, tmp_path: Path
) -> None:
    proxy = proxy_for(api_database_url)
    await proxy.start()
    try:
        settings = make_api_settings(through(proxy, api_database_url), tmp_path / "data")
        async with running_api(settings) as api, httpx.AsyncClient(base_url=api.url) as c:
            conn = await asyncpg.connect(api_database_url)
            try:
                await conn.execute("INSERT INTO devices (name) VALUES ('r1')")
                await conn.execute(
                    "INSERT INTO poll_health (device_id, last_poll, duration_ms, reachable) "
                    "SELECT id, now(), 1, true FROM devices"
                )
                assert (await c.get("/health/ready")).status_code == 200
                await proxy.cut()  # the outage: the API's pooled connections die with it
                await asyncio.sleep(READY_TTL)
                assert (await c.get("/health/ready")).status_code == 503
                await asyncio.sleep(3)
                # The polls that were late during it are behind us: the newest is on time.
                await conn.execute("UPDATE poll_health SET last_poll = now()")
                await proxy.restore()
                await asyncio.sleep(READY_TTL)
                r = await c.get("/health/ready")
            finally:
                await conn.close()
    finally:
        await proxy.close()
    assert r.status_code == 200, r.json()


class _Poller:
    def __init__(self) -> None:
        self.stats = PollerStats()

    def polls(self, n: int, *, late: bool) -> None:
        for _ in range(n):
            self.stats.start_lag.observe(30.0 if late else 0.01)
            self.stats.late += late


class _PollerService:
    def __init__(self) -> None:
        self.poller = _Poller()


async def test_polls_late_during_an_outage_stop_counting_once_polls_are_on_time(
    api_database_url: str, tmp_path: Path
) -> None:
    service = _PollerService()
    core = LocalCore(poller=service)  # type: ignore[arg-type]
    now = [0.0]
    core._lag = LagWindow(clock=lambda: now[0])
    settings = make_api_settings(api_database_url, tmp_path / "data")
    async with running_api(settings, core) as api, httpx.AsyncClient(base_url=api.url) as c:
        service.poller.polls(10, late=False)
        assert (await c.get("/health/ready")).status_code == 200
        now[0] += 60
        service.poller.polls(30, late=True)  # the outage: polls start late
        await asyncio.sleep(READY_TTL)
        r = await c.get("/health/ready")
        assert r.status_code == 503
        assert "30 of 30 polls late" in r.json()["checks"]["poller"]["detail"]
        now[0] += 60
        service.poller.polls(10, late=False)  # on time again
        await asyncio.sleep(READY_TTL)
        r = await c.get("/health/ready")
    assert r.status_code == 200, r.json()
    assert r.json()["checks"]["poller"]["detail"].startswith("0 of 10 polls late")


def test_the_lag_window_forgets_what_is_older_than_a_window() -> None:
    now = [0.0]
    window = LagWindow(60, clock=lambda: now[0])
    assert window.observe(0, 0) == PollLag(0, 0, 0.0)
    now[0] = 30
    assert window.observe(30, 30) == PollLag(30, 30, 30.0)
    now[0] = 95
    assert window.observe(40, 30) == PollLag(10, 0, 65.0)
