"""Regular expressions that users write, through every path that takes them: the
/ws/alerts feed, silences, webhooks and rules through the real API, and the rows the
engine's side reads back. What RE2 cannot run in linear time is refused (422 naming the
field, or an error message on the feed); what it can, however catastrophic for a
backtracking engine, is taken and evaluated at once while the API keeps answering.

The unit side (syntax, limits, the rules file) is in test_matchers.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from netmon.alerts.engine import AlertEngine
from netmon.alerts.model import AlertChange, AlertView, encode_alert_change
from netmon.alerts.rules import Rule, parse_rule
from netmon.alerts.silences import load_silences
from netmon.alerts.webhooks import load_webhooks
from netmon.config import Settings
from netmon.records import Sample, SeriesKey
from netmon.store.notify import ALERTS_CHANNEL
from tests.api_helpers import Api, api, api_database_url
from tests.test_api_alerts import ALLOWED, RULE, alert_settings, field_of
from tests.test_api_feeds import ApiProcess, eventually, feed, make_token, url
from tests.test_matchers import finishes_within

__all__ = ["api", "api_database_url", "url"]

# Taken by Python's re and refused by RE2: each with the word its refusal must say.
REFUSED = [
    ('rule=~"(?=device-reb)(.*.*)*X"', "lookahead"),  # stalled the API 4.6 s before
    ('device=~"(?<!edge)-sw"', "lookbehind"),
    ('device=~"(core)-\\\\1"', "backreference"),
    ('device=~"(a{1000}){1000}"', "repetition"),
    ('device=~".{1000}"', "too complex"),
]
# Valid in both engines; exponential in Python's re on the labels below, linear in RE2.
CATASTROPHIC = 'device=~"(.*.*)*X"'
LONG_DEVICE = "core-sw1-" + "x" * 31
LONG_RULE = "device-rebooted-core-sw1-lon1"


@pytest.fixture
def api_settings(api_database_url: str, tmp_path: Path) -> Settings:
    return alert_settings(api_database_url, tmp_path / "data")


def view(alert_id: int = 1, **fields: Any) -> AlertView:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": alert_id,
        "fingerprint": f"{alert_id:032x}",
        "rule": LONG_RULE,
        "device": LONG_DEVICE,
        "labels": {"interface": "a" * 40},
        "severity": "major",
        "state": "firing",
        "flapping": False,
        "value": 1.0,
        "summary": "s",
        "description": "",
        "pending_at": now,
        "started_at": now,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "updated_at": now,
        **fields,
    }
    return AlertView(**values)


def unprocessable(r: httpx.Response, word: str) -> None:
    assert field_of(r) == "matchers", r.json()
    detail = r.json()["detail"]
    assert word in detail, detail
    assert "not supported" in detail or "allowed" in detail, detail


# -- the feed ----------------------------------------------------------------------------


async def test_the_feed_refuses_what_re2_cannot_run_with_a_message(api: Api) -> None:
    async with feed(api.server.port, "/ws/alerts", api.tokens["viewer"]) as viewer:
        for text, word in REFUSED:
            answer = await viewer.request({"subscribe": {"matchers": [text]}})
            assert answer["type"] == "error", (text, answer)
            assert answer["detail"].startswith("subscribe: matchers: "), answer
            assert word in answer["detail"], answer
        too_many = [f'l{i}="v"' for i in range(51)]
        answer = await viewer.request({"subscribe": {"matchers": too_many}})
        assert answer["type"] == "error"
        assert "at most 50 matchers" in answer["detail"]
        too_long = f'device=~"{"a" * 1001}"'
        answer = await viewer.request({"subscribe": {"matchers": [too_long]}})
        assert answer["type"] == "error"
        assert "1,000" in answer["detail"]
        # The connection stays usable.
        await viewer.subscribe(matchers=[CATASTROPHIC])


async def notify(database_url: str, *changes: AlertChange) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for change in changes:
            payload = encode_alert_change(change)
            await conn.execute("SELECT pg_notify($1, $2)", ALERTS_CHANNEL, payload)
    finally:
        await conn.close()


def change(alert: AlertView) -> AlertChange:
    return AlertChange(event="firing", time=datetime.now(UTC), alert=alert)


@pytest.mark.slow
async def test_a_catastrophic_subscription_does_not_stall_the_api(url: str, tmp_path: Path) -> None:
    """``netmon api`` in a process of its own, so that a stalled server cannot stall the
    test too: the old engine spent hours in one alert's matchers, and /health/live with
    it."""
    token = await make_token(url)
    server = await ApiProcess(url, tmp_path / "api").start()
    try:
        port = server.port
        async with (
            feed(port, "/ws/alerts", token) as slow,
            feed(port, "/ws/alerts", token) as everyone,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
        ):
            await everyone.subscribe()
            await slow.subscribe(matchers=['rule=~"(.*.*)*X"'])
            await slow.subscribe(matchers=['device=~"(x+x+)+y"', 'interface=~"(a|aa)*b"'])

            # The hub listens once a probe gets through (a NOTIFY before LISTEN is lost).
            probes = iter(range(1_000_000, 2_000_000))

            async def probed() -> bool:
                await notify(url, change(view(next(probes), rule="probe", device="p")))
                await asyncio.sleep(0.05)
                return bool(everyone.of_type("alert"))

            await eventually(probed, "the feed hub listening", interval=0)

            await notify(url, change(view(1)), change(view(2, rule="core-linkX")))
            for _ in range(5):
                start = time.perf_counter()
                r = await http.get("/health/live")
                assert r.status_code == 200
                assert time.perf_counter() - start < 1.0
            await eventually(
                lambda: {1, 2} <= {m["alert"]["id"] for m in everyone.of_type("alert")},
                "both changes to the client that wants everything",
            )
            # And the matchers were evaluated, not skipped: the second change matches.
            await eventually(lambda: slow.of_type("alert"), "the matching change")
            assert [m["alert"]["id"] for m in slow.of_type("alert")] == [2]
    finally:
        await server.stop()


# -- silences ----------------------------------------------------------------------------


async def test_silences_refuse_what_re2_cannot_run_and_apply_the_rest_at_once(api: Api) -> None:
    async with api.client("operator") as c:
        for text, word in REFUSED:
            r = await c.post("/api/v1/silences", json={"matchers": [text], "duration": "1h"})
            unprocessable(r, word)
        made = await c.post("/api/v1/silences", json={"matchers": [CATASTROPHIC], "duration": "1h"})
        assert made.status_code == 201, made.text
    async with api.db.pool.acquire() as conn:
        (silence,) = await load_silences(conn, datetime.now(UTC))
    with finishes_within(1.0):
        assert not silence.silences(view())
        assert silence.silences(view(device="core-X"))


async def test_a_stored_silence_re2_refuses_is_skipped_not_fatal(api: Api) -> None:
    """A row an older netmon wrote (its engine took lookahead): notifying carries on
    without it rather than failing on every alert."""
    async with api.client("operator") as c:
        for text in ('device="a"', 'device="b"'):
            r = await c.post("/api/v1/silences", json={"matchers": [text], "duration": "1h"})
            assert r.status_code == 201, r.text
    async with api.db.pool.acquire() as conn:
        await conn.execute(
            """UPDATE silences SET matchers = '["device=~\\"(?=a)a\\""]'::jsonb
               WHERE matchers = '["device=\\"a\\""]'::jsonb"""
        )
        silences = await load_silences(conn, datetime.now(UTC))
    assert [s.silences(view(device="b")) for s in silences] == [True]


# -- webhooks ----------------------------------------------------------------------------


async def test_webhooks_refuse_what_re2_cannot_run_and_filter_the_rest_at_once(
    api: Api,
) -> None:
    async with api.client("admin") as c:
        for i, (text, word) in enumerate(REFUSED):
            body = {"name": f"w{i}", "url": ALLOWED, "matchers": [text]}
            unprocessable(await c.post("/api/v1/webhooks", json=body), word)
        made = await c.post(
            "/api/v1/webhooks", json={"name": "noc", "url": ALLOWED, "matchers": [CATASTROPHIC]}
        )
        assert made.status_code == 201, made.text
        path = f"/api/v1/webhooks/{made.json()['id']}"
        for text, word in REFUSED:
            unprocessable(await c.patch(path, json={"matchers": [text]}), word)
    async with api.db.pool.acquire() as conn:
        (hook,) = await load_webhooks(conn)
    with finishes_within(1.0):
        assert not hook.wants(view())
        assert hook.wants(view(device="core-X"))


async def test_a_stored_webhook_re2_refuses_is_skipped_not_fatal(api: Api) -> None:
    async with api.client("admin") as c:
        for name in ("old", "new"):
            body = {"name": name, "url": ALLOWED, "matchers": [f'device="{name}"']}
            assert (await c.post("/api/v1/webhooks", json=body)).status_code == 201
    async with api.db.pool.acquire() as conn:
        await conn.execute(
            """UPDATE webhooks SET matchers = '["device=~\\"(?!x)old\\""]'::jsonb
               WHERE name = 'old'"""
        )
        hooks = await load_webhooks(conn)
    assert [h.name for h in hooks] == ["new"]


# -- rules -------------------------------------------------------------------------------


async def test_rules_refuse_what_re2_cannot_run_and_bind_the_rest_at_once(api: Api) -> None:
    async with api.client("admin") as c:
        for text, word in REFUSED:
            r = await c.post("/api/v1/rules", json={**RULE, "matchers": [text]})
            unprocessable(r, word)
        made = await c.post("/api/v1/rules", json={**RULE, "matchers": [CATASTROPHIC]})
        assert made.status_code == 201, made.text
        for text, word in REFUSED:
            r = await c.put("/api/v1/rules/cpu-high", json={**RULE, "matchers": [text]})
            unprocessable(r, word)
        stored = (await c.get("/api/v1/rules/cpu-high")).json()
    rule = Rule.from_spec(parse_rule(stored["definition"]), "api")
    engine = AlertEngine([rule])
    now = datetime.now(UTC)
    with finishes_within(1.0):
        out = engine.observe(
            [
                Sample(SeriesKey.of(LONG_DEVICE, RULE["metric"], {"if": "a" * 40}), now, 99.0),
                Sample(SeriesKey.of("core-X", RULE["metric"]), now, 99.0),
            ]
        )
    assert [t.device for t in out] == ["core-X"]
