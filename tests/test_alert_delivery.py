"""Webhook delivery against real parts: a fresh migrated PostgreSQL database and a real
HTTP receiver on loopback that verifies Standard Webhooks signatures
(tests/webhook_receiver.py). Webhooks and outbox rows are written with SQL, as the
recorder writes them; the deliverer's retries are short (50 ms doubling to 200 ms).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from netmon.alerts import delivery
from netmon.alerts.delivery import Deliverer
from netmon.alerts.destinations import DestinationError, check_destination, parse_allow
from netmon.config import WebhookSettings, load_settings
from netmon.store.database import Database
from tests.api_helpers import api_database_url
from tests.webhook_receiver import Reply, WebhookReceiver, make_tls
from tests.write_helpers import wait_until

__all__ = ["api_database_url"]  # the fixture, imported for pytest

WAIT = 30.0  # for eventual outcomes; a pass takes a fraction of it


def webhook_settings(**overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "allow": ["127.0.0.1/32"],
        "timeout": timedelta(seconds=5),
        "retry_initial": timedelta(milliseconds=50),
        "retry_max": timedelta(milliseconds=200),
        "retry_for": timedelta(hours=1),
        "concurrency": 4,
    }
    values.update(overrides)
    return WebhookSettings(**values)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


async def open_database(url: str, tmp_path: Path) -> Database:
    settings = load_settings(
        None, data_dir=tmp_path / "data", database={"url": url, "pool_min": 1, "pool_max": 10}
    )
    db = Database(settings.database, settings.data_dir)
    await db.start()
    return db


@pytest.fixture
async def db(api_database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(api_database_url, tmp_path)
    try:
        yield database
    finally:
        await database.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as running:
        yield running


@asynccontextmanager
async def delivering(db: Database, settings: WebhookSettings) -> AsyncIterator[Deliverer]:
    deliverer = Deliverer(db, settings)
    await deliverer.start()
    try:
        yield deliverer
    finally:
        await deliverer.close()


async def add_webhook(db: Database, name: str, url: str, secret: str) -> int:
    return int(
        await db.pool.fetchval(
            """
            INSERT INTO webhooks (name, url, secret, format, group_wait, group_interval,
                                  repeat_interval, created_by)
            VALUES ($1, $2, $3, 'netmon', '0s', '5m', '4h', 'test') RETURNING id
            """,
            name,
            url,
            secret,
        )
    )


async def hook(db: Database, receiver: WebhookReceiver, name: str) -> tuple[int, str, str]:
    """A webhook to ``/hook/<name>`` on the receiver: (id, path, secret)."""
    path, secret = f"/hook/{name}", new_secret()
    return await add_webhook(db, name, receiver.add(path, secret), secret), path, secret


async def add_messages(
    db: Database, webhook_id: int, count: int, *, expires_in: timedelta = timedelta(hours=1)
) -> list[str]:
    """``count`` outbox rows; their message ids in id order."""
    ids = []
    for seq in range(count):
        message_id = f"msg_{uuid.uuid4().hex}"
        payload = json.dumps({"webhook_id": webhook_id, "seq": seq})
        await db.pool.execute(
            """
            INSERT INTO webhook_outbox (webhook_id, message_id, group_key, alert_ids, payload,
                                        expires_at)
            VALUES ($1, $2, 'g', '{1}', $3, now() + $4::interval)
            """,
            webhook_id,
            message_id,
            payload,
            expires_in,
        )
        ids.append(message_id)
    return ids


async def outbox(db: Database, webhook_id: int) -> list[asyncpg.Record]:
    return list(
        await db.pool.fetch(
            "SELECT * FROM webhook_outbox WHERE webhook_id = $1 ORDER BY id", webhook_id
        )
    )


async def states(db: Database, webhook_id: int) -> list[str]:
    return [r["state"] for r in await outbox(db, webhook_id)]


def all_in(db: Database, webhook_id: int, state: str) -> Any:
    async def check() -> bool:
        return set(await states(db, webhook_id)) == {state}

    return check


# --- delivery, order, signatures --------------------------------------------------------


async def test_receiver_down_then_up_delivers_everything_once_in_order(
    db: Database, receiver: WebhookReceiver
) -> None:
    hooks = [await hook(db, receiver, name) for name in ("noc", "oss")]
    messages = {wid: await add_messages(db, wid, 15) for wid, _, _ in hooks}
    await receiver.stop()  # connection refused from now on, same port later
    async with delivering(db, webhook_settings()) as deliverer:

        async def heads_retried() -> bool:
            heads = [(await outbox(db, wid))[0] for wid, _, _ in hooks]
            return all(h["attempts"] >= 3 for h in heads)

        await wait_until(heads_retried, WAIT, "retries while the receiver is down")
        for wid, _, _ in hooks:
            rows = await outbox(db, wid)
            assert rows[0]["last_status"] is None
            assert rows[0]["last_error"].startswith("cannot connect")
            # The head blocks the rest while it waits.
            assert all(r["attempts"] == 0 for r in rows[1:])
        await receiver.start()
        for wid, _, _ in hooks:
            await wait_until(all_in(db, wid, "delivered"), WAIT, "delivery after recovery")
    for wid, path, _ in hooks:
        assert receiver.accepted[path] == messages[wid]  # all of them, in id order
        seqs = [json.loads(r.body)["seq"] for r in receiver.to(path)]
        assert seqs == sorted(seqs)
    assert receiver.duplicates == 0
    assert all(r.verified for r in receiver.requests)
    assert deliverer.stats.delivered == 30
    assert deliverer.stats.failures == deliverer.stats.retried >= 6


async def test_webhook_id_is_stable_across_retries(db: Database, receiver: WebhookReceiver) -> None:
    wid, path, _ = await hook(db, receiver, "noc")
    [message_id] = await add_messages(db, wid, 1)
    receiver.script(path, Reply(500, "try later"), Reply(503), Reply(200))
    async with delivering(db, webhook_settings()) as deliverer:
        await wait_until(all_in(db, wid, "delivered"), WAIT, "delivery after two 5xx")
    seen = receiver.to(path)
    assert [r.status for r in seen] == [500, 503, 200]
    assert {r.message_id for r in seen} == {message_id}
    assert all(r.verified for r in seen)
    assert all(r.body == seen[0].body for r in seen)  # the stored bytes, every time
    [row] = await outbox(db, wid)
    assert row["attempts"] == 3
    assert row["last_status"] == 200
    assert row["last_error"] is None
    assert row["delivered_at"] is not None
    assert deliverer.stats.attempts == 3
    assert deliverer.stats.retried == 2


async def test_headers_and_signature(db: Database, receiver: WebhookReceiver) -> None:
    wid, path, secret = await hook(db, receiver, "noc")
    [message_id] = await add_messages(db, wid, 1)
    before = int(time.time())
    async with delivering(db, webhook_settings()):
        await wait_until(all_in(db, wid, "delivered"), WAIT, "delivery")
    [request] = receiver.to(path)
    assert request.headers["webhook-id"] == message_id
    assert before <= int(request.headers["webhook-timestamp"]) <= int(time.time())
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("netmon/")
    assert Webhook(secret).verify(request.body, request.headers) == json.loads(request.body)


async def test_tampered_or_replayed_messages_fail_verification(
    db: Database, receiver: WebhookReceiver
) -> None:
    wid, path, secret = await hook(db, receiver, "noc")
    await add_messages(db, wid, 1)
    async with delivering(db, webhook_settings()):
        await wait_until(all_in(db, wid, "delivered"), WAIT, "delivery")
    [captured] = receiver.to(path)
    receiver_side = Webhook(secret)
    receiver_side.verify(captured.body, captured.headers)  # the real one passes

    tampered = captured.body.replace('"seq": 0', '"seq": 1')
    assert tampered != captured.body
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        receiver_side.verify(tampered, captured.headers)

    old = int(time.time()) - 6 * 60
    replayed = {**captured.headers, "webhook-timestamp": str(old)}
    with pytest.raises(WebhookVerificationError, match="too old"):
        receiver_side.verify(captured.body, replayed)
    # Even correctly signed for that old time, it is refused as a replay.
    resigned = receiver_side.sign(
        captured.message_id, datetime.fromtimestamp(old, UTC), captured.body
    )
    with pytest.raises(WebhookVerificationError, match="too old"):
        receiver_side.verify(captured.body, {**replayed, "webhook-signature": resigned})

    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(captured.body, captured.headers)


# --- the answers ------------------------------------------------------------------------


async def test_410_disables_the_webhook_and_stops_delivery(
    db: Database, receiver: WebhookReceiver
) -> None:
    wid, path, _ = await hook(db, receiver, "noc")
    messages = await add_messages(db, wid, 2)
    receiver.script(path, Reply(410, "unsubscribed"))
    async with delivering(db, webhook_settings()) as deliverer:

        async def disabled() -> bool:
            return not await db.pool.fetchval("SELECT enabled FROM webhooks WHERE id = $1", wid)

        await wait_until(disabled, WAIT, "the webhook disabled")
        reason = await db.pool.fetchval("SELECT disabled_reason FROM webhooks WHERE id = $1", wid)
        assert "410" in reason
        first, second = await outbox(db, wid)
        assert first["state"] == "pending"  # kept for a re-enable
        assert (first["attempts"], first["last_status"]) == (1, 410)
        assert first["last_error"] == "HTTP 410: unsubscribed"
        assert (second["state"], second["attempts"]) == ("pending", 0)
        assert deliverer.stats.disabled == 1
        deliverer.wake()
        await asyncio.sleep(0.5)  # a disabled webhook is left alone
        assert len(receiver.to(path)) == 1

        await db.pool.execute(
            "UPDATE webhooks SET enabled = true, disabled_reason = NULL WHERE id = $1", wid
        )
        deliverer.wake()
        await wait_until(all_in(db, wid, "delivered"), WAIT, "delivery once re-enabled")
    assert receiver.accepted[path] == messages


async def test_other_4xx_dead_letters_at_once_and_the_next_goes(
    db: Database, receiver: WebhookReceiver
) -> None:
    wid, path, _ = await hook(db, receiver, "noc")
    messages = await add_messages(db, wid, 2)
    refusal = "payload not understood; " * 20
    receiver.script(path, Reply(400, refusal))
    async with delivering(db, webhook_settings()) as deliverer:

        async def settled() -> bool:
            return await states(db, wid) == ["dead", "delivered"]

        await wait_until(settled, WAIT, "first dead, second delivered")
    first, _ = await outbox(db, wid)
    assert first["attempts"] == 1
    assert first["last_status"] == 400
    assert first["last_error"] == "HTTP 400: " + refusal.strip()[:200]
    assert first["dead_at"] is not None
    assert receiver.accepted[path] == messages[1:]
    assert deliverer.stats.dead == 1


async def test_redirects_are_not_followed(db: Database, receiver: WebhookReceiver) -> None:
    wid, path, _ = await hook(db, receiver, "noc")
    await add_messages(db, wid, 1)
    elsewhere = receiver.add("/elsewhere", new_secret())
    receiver.script(path, Reply(307, "moved", {"location": elsewhere}))
    async with delivering(db, webhook_settings()):
        await wait_until(all_in(db, wid, "dead"), WAIT, "dead letter on a redirect")
    [row] = await outbox(db, wid)
    assert "redirects are not followed" in row["last_error"]
    assert receiver.to("/elsewhere") == []


async def test_expiry_dead_letters_with_the_last_error(
    db: Database, receiver: WebhookReceiver
) -> None:
    wid, path, _ = await hook(db, receiver, "noc")
    # Retries come every 50-200 ms here: 3 s leaves room for several even when the
    # deliverer is slow to make its first attempt.
    await add_messages(db, wid, 1, expires_in=timedelta(seconds=3))
    receiver.default(path, Reply(503, "maintenance"))
    async with delivering(db, webhook_settings()) as deliverer:
        await wait_until(all_in(db, wid, "dead"), WAIT, "dead letter at expiry")
    [row] = await outbox(db, wid)
    assert row["last_error"] == "HTTP 503: maintenance"
    assert row["last_status"] == 503
    assert row["attempts"] == len(receiver.to(path)) >= 2
    assert row["dead_at"] is not None
    assert row["next_attempt_at"] <= row["expires_at"]
    assert deliverer.stats.dead == 1


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured(db: Database, receiver: WebhookReceiver, form: str) -> None:
    wid, path, _ = await hook(db, receiver, "noc")
    await add_messages(db, wid, 1)
    if form == "seconds":
        retry_after, least = "2", 2.0
    else:  # an HTTP-date is whole seconds: 3 to 4 s ahead of now once truncated, so a
        # deliverer slow to start (up to 1.5 s on a loaded machine) still waits >= 1.5 s
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
        retry_after = format_datetime(at, usegmt=True)
        least = 1.5
    receiver.script(path, Reply(429, "slow down", {"retry-after": retry_after}))
    async with delivering(db, webhook_settings()):
        await wait_until(all_in(db, wid, "delivered"), WAIT, "delivery after the 429")
    first, second = receiver.to(path)
    assert first.status == 429
    assert second.status == 200
    # Without Retry-After the pause would be 50 ms.
    assert second.at - first.at >= least


async def test_redelivery_of_a_dead_message_keeps_its_id(
    db: Database, receiver: WebhookReceiver
) -> None:
    wid, path, _ = await hook(db, receiver, "noc")
    [message_id] = await add_messages(db, wid, 1)
    receiver.script(path, Reply(422, "not now"))
    async with delivering(db, webhook_settings()) as deliverer:
        await wait_until(all_in(db, wid, "dead"), WAIT, "dead letter")
        await db.pool.execute(
            """
            UPDATE webhook_outbox SET state = 'pending', attempts = 0, dead_at = NULL,
                next_attempt_at = now(), expires_at = now() + interval '1 hour'
            WHERE webhook_id = $1
            """,
            wid,
        )
        deliverer.wake()
        await wait_until(all_in(db, wid, "delivered"), WAIT, "redelivery")
    assert [r.message_id for r in receiver.to(path)] == [message_id, message_id]
    assert receiver.accepted[path] == [message_id]
    [row] = await outbox(db, wid)
    assert row["attempts"] == 1


async def test_two_deliverers_never_deliver_one_webhook_at_once(
    api_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short batches: claims change hands often between the two.
    monkeypatch.setattr(delivery, "BATCH_ROWS", 4)
    first_db = await open_database(api_database_url, tmp_path / "a")
    second_db = await open_database(api_database_url, tmp_path / "b")
    settings = webhook_settings(concurrency=2)
    one, two = Deliverer(first_db, settings), Deliverer(second_db, settings)
    try:
        async with WebhookReceiver(delay=0.01) as receiver:
            hooks = [await hook(first_db, receiver, f"h{i}") for i in range(3)]
            messages = {wid: await add_messages(first_db, wid, 25) for wid, _, _ in hooks}
            for _, path, _ in hooks:  # a few retries, so heads block now and then
                receiver.script(path, Reply(200), Reply(500), Reply(200), Reply(503))
            await one.start()
            await two.start()
            await wait_until(
                lambda: one.stats.delivered + two.stats.delivered >= 20, WAIT, "some delivered"
            )
            # One stops mid-stream, inside a batch: the other takes its webhooks over.
            busier, other = (one, two) if one.stats.delivered >= two.stats.delivered else (two, one)
            await busier.close()
            taken_over = other.stats.delivered
            for wid, _, _ in hooks:
                await wait_until(all_in(first_db, wid, "delivered"), WAIT, "all delivered")
            assert other.stats.delivered > taken_over
            for wid, path, _ in hooks:
                assert receiver.max_inflight[path] == 1
                assert receiver.accepted[path] == messages[wid]
            assert receiver.duplicates == 0
            assert one.stats.delivered + two.stats.delivered == 75
            assert one.stats.attempts + two.stats.attempts == len(receiver.requests)
    finally:
        await one.close()
        await two.close()
        await first_db.stop()
        await second_db.stop()


async def test_a_claimed_webhook_still_takes_new_messages(db: Database) -> None:
    # The claim must not hold back the alert path: outbox inserts take KEY SHARE on the
    # webhook's row through the foreign key, which FOR UPDATE would block.
    async with WebhookReceiver(delay=1.5) as receiver:
        wid, _, _ = await hook(db, receiver, "slow")
        await add_messages(db, wid, 1)
        async with delivering(db, webhook_settings()):
            await wait_until(lambda: len(receiver.requests) == 1, WAIT, "an attempt in flight")
            async with db.pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '500ms'")
                await conn.execute(
                    """
                    INSERT INTO webhook_outbox (webhook_id, message_id, group_key, alert_ids,
                                                payload, expires_at)
                    VALUES ($1, 'msg_during_claim', 'g', '{1}', '{}', now() + interval '1h')
                    """,
                    wid,
                )
            await wait_until(all_in(db, wid, "delivered"), WAIT, "both delivered")


# --- the SSRF guard ---------------------------------------------------------------------


async def test_a_destination_not_allowed_is_not_sent_to(
    db: Database, receiver: WebhookReceiver
) -> None:
    wid, _, _ = await hook(db, receiver, "noc")
    await add_messages(db, wid, 1)
    async with delivering(db, webhook_settings(allow=["10.0.0.0/8"])) as deliverer:

        async def attempted() -> bool:
            return (await outbox(db, wid))[0]["attempts"] >= 2

        await wait_until(attempted, WAIT, "refused attempts recorded")
    [row] = await outbox(db, wid)
    assert row["state"] == "pending"  # retried: the allow list may be fixed
    assert row["last_error"].startswith("destination refused: 127.0.0.1 ")
    assert row["last_status"] is None
    assert receiver.requests == []
    assert deliverer.stats.failures >= 2


async def test_a_host_name_is_sent_to_an_address_checked(
    db: Database, receiver: WebhookReceiver
) -> None:
    path, secret = "/hook/by-name", new_secret()
    receiver.add(path, secret)
    url = f"http://localhost:{receiver.port}{path}"
    wid = await add_webhook(db, "by-name", url, secret)
    await add_messages(db, wid, 1)
    settings = webhook_settings(allow=["127.0.0.0/8", "::1/128"])
    async with delivering(db, settings):
        await wait_until(all_in(db, wid, "delivered"), WAIT, "delivery by name")
    [request] = receiver.to(path)
    assert request.headers["host"] == f"localhost:{receiver.port}"
    assert request.verified


async def test_https_checks_the_certificate_against_the_name(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_tls(tmp_path, ["localhost"])
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))  # the trust store, for this test
    async with WebhookReceiver(ssl=tls.server_context()) as receiver:
        good, bad = new_secret(), new_secret()
        good_id = await add_webhook(db, "good", receiver.add("/good", good, "localhost"), good)
        # The same server by address: its certificate does not hold that name.
        bad_id = await add_webhook(db, "bad", receiver.add("/bad", bad, "127.0.0.1"), bad)
        await add_messages(db, good_id, 1)
        await add_messages(db, bad_id, 1)
        settings = webhook_settings(allow=["localhost", "127.0.0.1/32"])
        async with delivering(db, settings):
            await wait_until(all_in(db, good_id, "delivered"), WAIT, "https delivery")

            async def refused() -> bool:
                return (await outbox(db, bad_id))[0]["attempts"] >= 1

            await wait_until(refused, WAIT, "the certificate refused")
        [request] = receiver.to("/good")
        assert request.verified
        [row] = await outbox(db, bad_id)
        assert row["state"] == "pending"
        assert "CERTIFICATE_VERIFY_FAILED" in row["last_error"]
        assert receiver.to("/bad") == []


async def test_check_destination_addresses_and_networks() -> None:
    assert await check_destination("http://127.0.0.1:9/x", ["127.0.0.1/32"]) == ["127.0.0.1"]
    assert await check_destination("https://[::1]/x", ["::1/128"]) == ["::1"]
    with pytest.raises(DestinationError, match=r"127\.0\.0\.2 is not inside"):
        await check_destination("http://127.0.0.2/", ["127.0.0.1/32"])
    with pytest.raises(DestinationError, match="::ffff:"):  # mapped IPv4: judged as IPv4
        await check_destination("http://[::ffff:127.0.0.1]/", ["10.0.0.0/8"])
    assert await check_destination("http://[::ffff:10.1.2.3]/", ["10.0.0.0/8"])


async def test_check_destination_names() -> None:
    loopback = await check_destination("http://localhost/", ["127.0.0.0/8", "::1/128"])
    assert loopback
    assert await check_destination("http://LOCALHOST./", ["localhost"])
    # Every address must be allowed: localhost may also resolve to ::1.
    if any(":" in a for a in loopback):
        with pytest.raises(DestinationError, match="::1"):
            await check_destination("http://localhost/", ["127.0.0.0/8"])
    with pytest.raises(DestinationError, match="not a host name listed"):
        await check_destination("https://metadata.internal/", ["*.example.net"])
    with pytest.raises(DestinationError, match="not a host name listed"):
        await check_destination("https://example.net/", ["*.example.net"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http://user:pw@127.0.0.1/", "user info"),
        ("http:///path", "no host"),
        ("http://127.0.0.1:99999/", "not a usable URL"),
    ],
)
async def test_check_destination_refuses_urls(url: str, message: str) -> None:
    with pytest.raises(DestinationError, match=message):
        await check_destination(url, ["0.0.0.0/0", "::/0"])


async def test_an_empty_allow_list_refuses_everything() -> None:
    with pytest.raises(DestinationError, match=r"alerts\.webhooks\.allow"):
        await check_destination("http://127.0.0.1/", [])


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "300.1.1.1", "*.", "a b", "*.*.x", ""])
def test_parse_allow_names_the_bad_entry(entry: str) -> None:
    with pytest.raises(DestinationError, match=r"alerts\.webhooks\.allow"):
        parse_allow([entry])
