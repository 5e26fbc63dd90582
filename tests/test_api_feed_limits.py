"""Live feeds end with their token, are capped, and close with the codes docs/api.md
lists.

Real PostgreSQL, the real API on loopback (in this process), real WebSocket clients
(``websockets``), a real writer streaming while tokens are revoked: through the API, by
``netmon token revoke`` in a process of its own, and by a bare UPDATE (another process
that sends no notification). Waits poll for their condition; the deadlines asserted are
the ones the feeds promise (``api.token_cache``, a token's ``expires_at``) plus a margin
for a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from netmon.records import SeriesKey
from netmon.store.database import Database
from netmon.store.tokens import create_token
from netmon.store.writer import SampleWriter
from tests.test_api_feeds import (
    PROBE,
    Feed,
    Writes,
    eventually,
    feed,
    feed_settings,
    hub_of,
    in_process_api,
    primed,
    url,
    writer,
)

__all__ = ["url", "writer"]

REPO = Path(__file__).resolve().parent.parent
# What a loaded machine may add to a deadline the feeds promise.
MARGIN = 4.0


async def make_token(
    url: str, name: str, role: str = "viewer", expires_at: datetime | None = None
) -> tuple[int, str]:
    conn = await asyncpg.connect(url)
    try:
        row, token = await create_token(
            conn,
            name=name,
            role=role,  # type: ignore[arg-type]
            created_by="test",
            pepper=b"",
            expires_at=expires_at,
        )
    finally:
        await conn.close()
    return row.id, token


@contextlib.asynccontextmanager
async def streaming(writes: Writes) -> AsyncIterator[None]:
    """PROBE written every 50 ms meanwhile: the feeds are busy when their token ends."""

    async def loop() -> None:
        while True:
            await writes.write(PROBE)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def closed(client: Feed, within: float, what: str) -> float:
    """Seconds until the server closed ``client``; fails after ``within``."""
    started = time.monotonic()
    await eventually(lambda: client.reader is not None and client.reader.done(), what, within)
    return time.monotonic() - started


def close_of(client: Feed) -> tuple[int | None, str | None]:
    return client.ws.close_code, client.ws.close_reason


async def subscribed(port: int, path: str, token: str, stack: contextlib.AsyncExitStack) -> Feed:
    client = await stack.enter_async_context(feed(port, path, token))
    await client.subscribe()
    return client


# -- revocation and expiry ---------------------------------------------------------------


@pytest.mark.slow
async def test_feeds_close_within_the_token_cache_when_the_database_says_revoked_or_expired(
    url: str, writer: SampleWriter, tmp_path: Path
) -> None:
    """No notification: only the hub's periodic check can see what another process (here a
    bare UPDATE) did to the token."""
    settings = feed_settings(url, tmp_path / "api", token_cache="1s")
    cache = settings.api.token_cache.total_seconds()
    doomed_id, doomed = await make_token(url, "doomed")
    shortened_id, shortened = await make_token(url, "shortened")
    _, kept = await make_token(url, "kept")
    db = Database(settings.database, settings.data_dir)
    await db.start()
    conn = await asyncpg.connect(url)
    writes = Writes(writer)
    try:
        async with in_process_api(settings, db) as server, contextlib.AsyncExitStack() as stack:
            port = server.port
            doomed_feeds = [
                await subscribed(port, path, doomed, stack)
                for path in ("/ws/metrics", "/ws/events", "/ws/alerts")
            ]
            shortened_feed = await subscribed(port, "/ws/metrics", shortened, stack)
            kept_feed = await subscribed(port, "/ws/metrics", kept, stack)
            await primed(writes, [doomed_feeds[0], shortened_feed, kept_feed], PROBE)
            async with streaming(writes):
                await conn.execute(
                    "UPDATE api_tokens SET revoked_at = now() WHERE id = $1", doomed_id
                )
                await conn.execute(
                    "UPDATE api_tokens SET expires_at = now() + interval '1 second' WHERE id = $1",
                    shortened_id,
                )
                for client in doomed_feeds:
                    took = await closed(client, cache + MARGIN, "the revoked token's feed closed")
                    assert took <= cache + MARGIN
                    assert close_of(client) == (1008, "token revoked")
                await closed(shortened_feed, cache + 1 + MARGIN, "the expired token's feed closed")
                assert close_of(shortened_feed) == (1008, "token expired")
                # The other token's feed goes on.
                await primed(writes, [kept_feed], PROBE)
                assert not kept_feed.reader.done()  # type: ignore[union-attr]
            hub = hub_of(server)
            await eventually(lambda: hub.clients == 1, "the closed clients gone from the hub")
            assert hub.tokens.closed_revoked == 3
            assert hub.tokens.closed_expired == 1
    finally:
        await conn.close()
        await db.stop()


def netmon_cli(*args: str, url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_") or k == "NETMON_TEST"}
    env.update(NETMON_DATABASE__URL=url, NETMON_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "netmon", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
async def test_a_revocation_through_the_api_or_the_cli_closes_feeds_at_once(
    url: str, writer: SampleWriter, tmp_path: Path
) -> None:
    """With a token cache far longer than the wait, only the notification a revocation
    sends on netmon_control can close the feeds in time."""
    settings = feed_settings(url, tmp_path / "api", token_cache="5m")
    by_api_id, by_api = await make_token(url, "by-api")
    by_cli_id, by_cli = await make_token(url, "by-cli")
    _, admin = await make_token(url, "admin", role="admin")
    db = Database(settings.database, settings.data_dir)
    await db.start()
    writes = Writes(writer)
    try:
        async with in_process_api(settings, db) as server, contextlib.AsyncExitStack() as stack:
            port = server.port
            api_feed = await subscribed(port, "/ws/metrics", by_api, stack)
            cli_feed = await subscribed(port, "/ws/alerts", by_cli, stack)
            await primed(writes, [api_feed], PROBE)
            async with streaming(writes):
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {admin}"},
                    timeout=10,
                ) as http:
                    answer = await http.delete(f"/api/v1/tokens/{by_api_id}")
                    assert answer.status_code == 204, answer.text
                await closed(api_feed, MARGIN, "the feed of the token revoked through the API")
                assert close_of(api_feed) == (1008, "token revoked")

                # `netmon token revoke` in a process of its own, of a token this process
                # has just checked (and so trusts for api.token_cache).
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {by_cli}"},
                    timeout=10,
                ) as http:
                    assert (await http.get("/api/v1/devices")).status_code == 200
                done = await asyncio.to_thread(
                    netmon_cli, "token", "revoke", str(by_cli_id), url=url, data_dir=tmp_path
                )
                assert done.returncode == 0, done.stderr
                await closed(cli_feed, MARGIN, "the feed of the token revoked by the CLI")
                assert close_of(cli_feed) == (1008, "token revoked")
                # Its requests stop as soon, though the token was checked and cached.
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {by_cli}"},
                    timeout=10,
                ) as http:
                    refused = await http.get("/api/v1/devices")
                assert refused.status_code == 401, refused.text
                assert "revoked" in refused.json()["detail"]
    finally:
        await db.stop()


@pytest.mark.slow
async def test_a_feed_closes_when_its_token_expires(
    url: str, writer: SampleWriter, tmp_path: Path
) -> None:
    """The expiry is a timer: it closes the feed on time even with a token cache of
    minutes (nothing asks the database meanwhile)."""
    settings = feed_settings(url, tmp_path / "api", token_cache="5m")
    expires_at = datetime.now(UTC) + timedelta(seconds=5)
    _, brief = await make_token(url, "brief", expires_at=expires_at)
    _, lasting = await make_token(url, "lasting", expires_at=expires_at + timedelta(days=1))
    db = Database(settings.database, settings.data_dir)
    await db.start()
    writes = Writes(writer)
    try:
        async with in_process_api(settings, db) as server, contextlib.AsyncExitStack() as stack:
            port = server.port
            brief_feed = await subscribed(port, "/ws/metrics", brief, stack)
            lasting_feed = await subscribed(port, "/ws/metrics", lasting, stack)
            await primed(writes, [brief_feed, lasting_feed], PROBE)
            async with streaming(writes):
                left = (expires_at - datetime.now(UTC)).total_seconds()
                await closed(brief_feed, left + MARGIN, "the feed of the expired token")
                assert datetime.now(UTC) >= expires_at
                assert close_of(brief_feed) == (1008, "token expired")
                assert brief_feed.samples  # it was streaming until then
                await primed(writes, [lasting_feed], PROBE)
                assert not lasting_feed.reader.done()  # type: ignore[union-attr]
            # An expired token is refused at the handshake, as for any request.
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with feed(port, "/ws/metrics", brief):
                    pass
            assert refused.value.response.status_code in (401, 403)
    finally:
        await db.stop()


# -- caps --------------------------------------------------------------------------------


async def refusal(port: int, path: str, token: str) -> tuple[dict[str, Any], int | None]:
    """The error message and close code of a connection the server refuses."""
    async with feed(port, path, token) as client:
        await closed(client, 10, "the refused connection closed")
        assert client.messages, "no error message before the close"
        return client.messages[0], client.ws.close_code


@pytest.mark.slow
async def test_feeds_per_token_and_per_process_are_capped_with_1013(
    url: str, tmp_path: Path
) -> None:
    settings = feed_settings(url, tmp_path / "api", ws_max_clients_per_token=2, ws_max_clients=4)
    _, a = await make_token(url, "a")
    _, b = await make_token(url, "b")
    _, c = await make_token(url, "c")
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        async with in_process_api(settings, db) as server, contextlib.AsyncExitStack() as stack:
            port = server.port
            hub = hub_of(server)
            first = await subscribed(port, "/ws/metrics", a, stack)
            await subscribed(port, "/ws/events", a, stack)  # any feed counts
            message, code = await refusal(port, "/ws/alerts", a)
            assert code == 1013
            assert message["type"] == "error"
            assert "ws_max_clients_per_token" in message["detail"]
            # Another token is not held back by this one.
            await subscribed(port, "/ws/metrics", b, stack)
            # A place freed is a place again.
            await first.close()
            await eventually(lambda: hub.clients == 2, "the closed client gone")
            await subscribed(port, "/ws/metrics", a, stack)
            # The process' own cap: 4 in all.
            await subscribed(port, "/ws/metrics", c, stack)
            message, code = await refusal(port, "/ws/metrics", c)
            assert code == 1013
            assert "ws_max_clients" in message["detail"]
            assert hub.refused == 2
    finally:
        await db.stop()


# -- the other close codes ---------------------------------------------------------------


@pytest.mark.slow
async def test_a_message_too_big_closes_with_1009_and_a_stopping_server_with_1012(
    url: str, tmp_path: Path
) -> None:
    settings = feed_settings(url, tmp_path / "api")
    _, token = await make_token(url, "codes")
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        async with in_process_api(settings, db) as server, contextlib.AsyncExitStack() as stack:
            port = server.port
            # The server takes messages of up to 64 KiB (subscriptions, not data).
            big = await stack.enter_async_context(feed(port, "/ws/metrics", token))
            await big.ws.send(json.dumps({"subscribe": {"devices": ["x" * (64 * 1024)]}}))
            await closed(big, 10, "the connection that sent too much closed")
            assert big.ws.close_code == 1009

            watching = [
                await subscribed(port, path, token, stack)
                for path in ("/ws/metrics", "/ws/events", "/ws/alerts")
            ]
            await server.stop()
            for client in watching:
                await closed(client, 10, "the feed closed by the stopping server")
                assert client.ws.close_code == 1012
    finally:
        await db.stop()


# -- groups ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_clients_with_the_same_subscriptions_share_a_group_and_new_ones_see_at_once(
    url: str, writer: SampleWriter, tmp_path: Path
) -> None:
    """Matching is per group of equal subscriptions, and what the hub remembers of which
    groups want a series is dropped when a group comes or goes."""
    settings = feed_settings(url, tmp_path / "api")
    _, token = await make_token(url, "groups")
    cpu = SeriesKey.of("grp-a", "cpuUtilization")
    octets = SeriesKey.of("grp-a", "ifHCInOctets", {"ifName": "eth0"})
    db = Database(settings.database, settings.data_dir)
    await db.start()
    writes = Writes(writer)
    try:
        async with in_process_api(settings, db) as server, contextlib.AsyncExitStack() as stack:
            port = server.port
            hub = hub_of(server)
            clients = [
                await stack.enter_async_context(feed(port, "/ws/metrics", token)) for _ in range(4)
            ]
            x, y, z, w = clients
            for client in (x, y, z, w):
                await client.subscribe(devices=[PROBE.device])
            await w.request({"unsubscribe": 1})  # w: nothing until it asks again
            await x.subscribe(devices=["grp-a"], metrics=["cpuUtilization"])
            await y.subscribe(metrics=["cpuUtilization"], devices=["grp-a"])
            await primed(writes, [x, y, z], PROBE)
            assert hub.groups == 2  # {probe}: z; {probe, grp-a cpu}: x and y
            await writes.write(cpu)
            await writes.write(octets)
            await primed(writes, [x, y, z], PROBE)

            # w asks for all of grp-a after the series' groups were remembered.
            await w.subscribe(devices=["grp-a"])
            assert hub.groups == 3
            await writes.write(octets)
            await writes.write(cpu)
            await primed(writes, [x, y, z], PROBE)

            def grp(client: Feed) -> list[str]:
                return [s["metric"] for s in client.samples if s["device"] == "grp-a"]

            await eventually(lambda: len(grp(w)) == 2, "both series at w")
            assert grp(w) == ["ifHCInOctets", "cpuUtilization"]
            assert grp(x) == grp(y) == ["cpuUtilization", "cpuUtilization"]
            assert grp(z) == []

            # y leaves its group for z's: x stays alone in its own.
            await y.request({"unsubscribe": 2})
            assert hub.groups == 3
            await w.close()
            await eventually(lambda: hub.groups == 2, "w's group gone with it")
            await writes.write(cpu)
            await primed(writes, [x, y, z], PROBE)
            assert grp(x) == ["cpuUtilization"] * 3
            assert grp(y) == ["cpuUtilization"] * 2
    finally:
        await db.stop()


# -- what a client sends ----------------------------------------------------------------


@pytest.mark.slow
async def test_a_message_nested_too_deeply_or_too_many_expressions_is_an_error(
    url: str, tmp_path: Path
) -> None:
    # 10,000 '[' in a subscription (within the 64 KiB bound) broke the reader: it was
    # closed with 4500. And one connection could hold 100 subscriptions of a regular
    # expression each at RE2's bound: one alert change cost them all, on the event loop.
    settings = feed_settings(url, tmp_path / "api")
    _, token = await make_token(url, "hostile")
    heavy = 'rule=~"(a*){900}b"'  # about 1,800 RE2 instructions: within one list's bound
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        async with (
            in_process_api(settings, db) as server,
            feed(server.port, "/ws/alerts", token) as client,
        ):
            await client.ws.send('{"subscribe": {"matchers": ' + "[" * 10_000)
            await client.ws.send(json.dumps({"subscribe": {"matchers": [heavy]}}))
            await client.ws.send(json.dumps({"subscribe": {"matchers": [heavy]}}))
            await client.ws.send(json.dumps({"subscribe": {}}))
            await eventually(lambda: len(client.messages) == 4, "four answers")
            deep, first, second, plain = client.messages
            assert deep == {"type": "error", "detail": "the message is nested too deeply"}
            assert first["type"] == "subscribed"
            assert second["type"] == "error"
            assert "RE2 instructions" in second["detail"]
            assert plain["type"] == "subscribed"
            assert client.ws.close_code is None
    finally:
        await db.stop()
