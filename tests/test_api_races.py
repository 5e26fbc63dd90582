"""Concurrent writers on every resource the API changes: never a 5xx, exactly one of two
conflicting changes wins, and the audit log records what happened, once.

Each round sends its requests at once, on connections of their own, to a real server
whose handlers run concurrently against a real PostgreSQL; rounds repeat, as a race shows
only in some interleavings (a PATCH racing a DELETE answered 500 in 24 of 40).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from netmon.config import Settings
from netmon.store.devices import DeviceInfo, sync_devices
from tests.api_helpers import Api, api, api_database_url
from tests.test_api_alerts import ALLOWED, alert_settings, insert_alert, insert_outbox
from tests.test_api_scope import World

__all__ = ["api", "api_database_url"]

ROUNDS = 12
_names = itertools.count()


@pytest.fixture
def api_settings(api_database_url: str, tmp_path: Path) -> Settings:
    return alert_settings(api_database_url, tmp_path / "data")


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


async def at_once(api: Api, *requests: tuple[str, str, dict[str, Any] | None]) -> list[int]:
    """The requests sent together, each on a connection of its own; their statuses."""

    async def one(method: str, path: str, body: dict[str, Any] | None) -> int:
        async with api.client("admin") as c:
            return (await c.request(method, path, json=body)).status_code

    return list(await asyncio.gather(*(one(*r) for r in requests)))


async def audit_count(api: Api, action: str, resource: str, resource_id: object) -> int:
    async with api.db.pool.acquire() as conn:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = $1 AND resource = $2 "
            "AND resource_id = $3",
            action,
            resource,
            str(resource_id),
        )
    return n


async def rounds(make: Callable[[], Awaitable[list[int]]]) -> Counter[tuple[int, ...]]:
    seen: Counter[tuple[int, ...]] = Counter()
    for _ in range(ROUNDS):
        statuses = await make()
        assert not [s for s in statuses if s >= 500], statuses
        seen[tuple(statuses)] += 1
    return seen


async def _device(api: Api) -> int:
    async with api.client("admin") as c:
        made = await c.post("/api/v1/devices", json={"name": _name("dev"), "site": "lon1"})
        assert made.status_code == 201, made.text
        return int(made.json()["id"])


async def test_a_device_changed_and_deleted_at_once(api: Api) -> None:
    async def round_() -> list[int]:
        device = await _device(api)
        path = f"/api/v1/devices/{device}"
        statuses = await at_once(
            api, ("PATCH", path, {"role": "edge"}), ("DELETE", path, None), ("DELETE", path, None)
        )
        patched, *deleted = statuses
        assert sorted(deleted) == [204, 404], statuses
        assert patched in (200, 404), statuses
        assert await audit_count(api, "delete", "device", device) == 1
        assert await audit_count(api, "update", "device", device) == (patched == 200)
        return statuses

    seen = await rounds(round_)
    assert sum(seen.values()) == ROUNDS


async def test_two_devices_made_under_one_name(api: Api) -> None:
    async def round_() -> list[int]:
        body = {"name": _name("twin"), "site": "lon1"}
        statuses = await at_once(
            api, ("POST", "/api/v1/devices", body), ("POST", "/api/v1/devices", body)
        )
        assert sorted(statuses) == [201, 409], statuses
        return statuses

    await rounds(round_)


async def test_a_rule_replaced_and_deleted_at_once(api: Api) -> None:
    async def round_() -> list[int]:
        name = _name("rule")
        async with api.client("admin") as c:
            made = await c.post("/api/v1/rules", json={"name": name, "metric": "cpu", "value": 1})
            assert made.status_code == 201, made.text
        path = f"/api/v1/rules/{name}"
        statuses = await at_once(
            api,
            ("PUT", path, {"metric": "cpu", "value": 2}),
            ("DELETE", path, None),
            ("DELETE", path, None),
            ("POST", "/api/v1/rules", {"name": name, "metric": "cpu", "value": 3}),
        )
        replaced, first, second, again = statuses
        assert sorted([first, second]) == [204, 404], statuses
        assert replaced in (200, 404), statuses
        assert again in (201, 409), statuses
        assert await audit_count(api, "delete", "rule", name) == 1
        return statuses

    await rounds(round_)


async def test_a_webhook_changed_renamed_and_deleted_at_once(api: Api) -> None:
    async def round_() -> list[int]:
        taken = _name("hook")
        async with api.client("admin") as c:
            ids = []
            for name in (_name("hook"), _name("hook")):
                made = await c.post("/api/v1/webhooks", json={"name": name, "url": ALLOWED})
                assert made.status_code == 201, made.text
                ids.append(made.json()["id"])
        a, b = (f"/api/v1/webhooks/{i}" for i in ids)
        statuses = await at_once(
            api,
            ("PATCH", a, {"name": taken}),  # two renames to one name: one wins
            ("PATCH", b, {"name": taken}),
            ("DELETE", a, None),
            ("DELETE", a, None),
            ("POST", "/api/v1/webhooks", {"name": taken, "url": ALLOWED}),
        )
        rename_a, rename_b, del1, del2, made_ = statuses
        assert sorted([del1, del2]) == [204, 404], statuses
        assert rename_a in (200, 404, 409), statuses
        assert rename_b in (200, 409), statuses
        assert made_ in (201, 409), statuses
        winners = [s for s in (rename_a, rename_b, made_) if s in (200, 201)]
        async with api.db.pool.acquire() as conn:
            holders = await conn.fetchval("SELECT count(*) FROM webhooks WHERE name = $1", taken)
        assert holders <= 1
        assert len(winners) >= holders
        assert await audit_count(api, "delete", "webhook", ids[0]) == 1
        return statuses

    await rounds(round_)


async def test_a_token_revoked_twice_at_once(api: Api) -> None:
    async def round_() -> list[int]:
        async with api.client("admin") as c:
            made = await c.post("/api/v1/tokens", json={"name": _name("tok"), "role": "viewer"})
            assert made.status_code == 201, made.text
            token_id = made.json()["info"]["id"]
        path = f"/api/v1/tokens/{token_id}"
        statuses = await at_once(api, ("DELETE", path, None), ("DELETE", path, None))
        assert sorted(statuses) == [204, 404], statuses
        assert await audit_count(api, "revoke", "token", token_id) == 1
        return statuses

    await rounds(round_)


async def test_an_alert_acknowledged_and_taken_back_at_once(api: Api) -> None:
    await sync_devices(api.db, [DeviceInfo("a1", "127.0.0.1", "lon1", "core", "ios", ())])

    async def round_() -> list[int]:
        alert = await insert_alert(api.db, device="a1")
        base = f"/api/v1/alerts/{alert}"
        statuses = await at_once(api, ("POST", f"{base}/ack", None), ("POST", f"{base}/ack", None))
        assert sorted(statuses) == [200, 409], statuses
        assert await audit_count(api, "acknowledge", "alert", alert) == 1
        back = await at_once(api, ("POST", f"{base}/unack", None), ("POST", f"{base}/unack", None))
        assert sorted(back) == [200, 409], back
        return statuses + back

    await rounds(round_)


async def test_a_silence_expired_twice_at_once(api: Api) -> None:
    async def round_() -> list[int]:
        async with api.client("admin") as c:
            made = await c.post(
                "/api/v1/silences", json={"matchers": ['site="lon1"'], "duration": "1h"}
            )
            assert made.status_code == 201, made.text
            silence = made.json()["id"]
        path = f"/api/v1/silences/{silence}/expire"
        statuses = await at_once(api, ("POST", path, None), ("POST", path, None))
        assert statuses == [200, 200], statuses  # expiring an expired one changes nothing
        assert await audit_count(api, "expire", "silence", silence) == 1
        return statuses

    await rounds(round_)


async def test_a_message_redelivered_twice_at_once(api: Api) -> None:
    world = World(api)
    await sync_devices(api.db, [DeviceInfo("lon-dev", "127.0.0.1", "lon1", "core", "ios", ())])

    async def round_() -> list[int]:
        outbox = await insert_outbox(api.db, await world.webhook(None), [await world.alert()])
        path = f"/api/v1/webhooks/deliveries/{outbox}/redeliver"
        statuses = await at_once(api, ("POST", path, None), ("POST", path, None))
        assert sorted(statuses) == [200, 409], statuses
        assert await audit_count(api, "redeliver", "webhook_delivery", outbox) == 1
        return statuses

    await rounds(round_)


async def test_a_silence_expired_by_a_transaction_that_began_earlier_is_expired_once(
    api: Api,
) -> None:
    # The interleaving CI met: B begins, A begins later but takes the row first, expires
    # it and commits; B then finds, by its own start (now()), a silence still running,
    # and expired it a second time (two audit entries).
    from netmon.alerts.silences import expire_silence, get_silence

    async with api.client("admin") as c:
        made = await c.post("/api/v1/silences", json={"matchers": ['site="x"'], "duration": "1h"})
        silence = made.json()["id"]
    async with api.db.pool.acquire() as b, api.db.pool.acquire() as a, b.transaction():
        await b.execute("SELECT 1")  # B's transaction, and its now(), begin here
        await asyncio.sleep(0.05)
        async with a.transaction():
            assert await get_silence(a, silence, lock=True) is not None
            assert await expire_silence(a, silence) is not None
        seen = await get_silence(b, silence, lock=True)
        assert seen is not None
        assert seen.state == "expired"
        assert await expire_silence(b, silence) is None
