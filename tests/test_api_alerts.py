"""Alerting through the API, against a real server and database: alerts (filters, paging,
site scope, history), acknowledgement and its live notification, rules, silences,
webhooks (secrets, the SSRF guard) and their deliveries.

Alert and outbox rows are written here with SQL, as the engine and the recorder write
them; control notifications are watched by a LISTEN connection of the test's own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema_rs
import msgspec
import pytest

from netmon.alerts.model import AlertChange, AlertView, encode_alert_change
from netmon.alerts.silences import site_matchers
from netmon.api.schemas import alerts as schemas
from netmon.config import Settings, load_settings
from netmon.store.devices import DeviceInfo, sync_devices
from netmon.store.notify import CONTROL_CHANNEL, PAYLOAD_LIMIT
from tests.api_helpers import Api, api, api_database_url
from tests.test_api_feeds import Feed, eventually, feed

__all__ = ["api", "api_database_url"]

ALLOWED = "http://127.0.0.1:9/hook"  # inside the allow list; nothing listens there


def alert_settings(database_url: str, data_dir: Path, **api: Any) -> Settings:
    return load_settings(
        None,
        data_dir=data_dir,
        database={"url": database_url, "pool_min": 2, "pool_max": 10},
        api={"port": 0, **api},
        alerts={"webhooks": {"allow": ["127.0.0.1/32"], "retry_for": "2h"}, "group_wait": "45s"},
    )


@pytest.fixture
def api_settings(api_database_url: str, tmp_path: Path) -> Settings:
    return alert_settings(api_database_url, tmp_path / "data")


# -- rows as the engine and the recorder write them ----------------------------------------


async def inventory(api: Api) -> None:
    await sync_devices(
        api.db,
        [
            DeviceInfo("a1", "127.0.0.1", "lon1", "core", "ios", ("lab", "core")),
            DeviceInfo("a2", "127.0.0.2", "lon1", "edge", "ios", ()),
            DeviceInfo("b1", "127.0.0.3", "par1", "core", "ios", ("lab",)),
            DeviceInfo("c1", "127.0.0.4", None, None, None, ()),
        ],
    )


async def insert_alert(
    db: Any,
    *,
    device: str = "a1",
    rule: str = "interface-down",
    state: str = "firing",
    severity: str = "major",
    labels: dict[str, str] | None = None,
    flapping: bool = False,
    updated_at: datetime | None = None,
    value: float | None = 2.0,
    description: str = "",
) -> int:
    """An alert row as the recorder writes it; returns its id."""
    now = updated_at or datetime.now(UTC)
    fired = now - timedelta(minutes=1) if state != "pending" else None
    async with db.pool.acquire() as conn:
        alert_id: int = await conn.fetchval(
            """
            INSERT INTO alerts (fingerprint, rule, device, labels, severity, state, flapping,
                                value, summary, description, pending_at, started_at,
                                acknowledged_at, acknowledged_by, resolved_at, updated_at)
            VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                    $16)
            RETURNING id
            """,
            uuid.uuid4().hex,
            rule,
            device,
            json.dumps(labels if labels is not None else {"interface": "eth0"}),
            severity,
            state,
            flapping,
            value,
            f"{device} {rule}",
            description,
            now - timedelta(minutes=2),
            fired,
            now if state == "acknowledged" else None,
            "someone" if state == "acknowledged" else None,
            now if state == "resolved" else None,
            now,
        )
    return alert_id


async def insert_history(db: Any, alert_id: int, *events: str) -> None:
    start = datetime.now(UTC) - timedelta(minutes=10)
    async with db.pool.acquire() as conn:
        for i, event in enumerate(events):
            await conn.execute(
                "INSERT INTO alert_history (alert_id, time, event, value, detail) "
                "VALUES ($1, $2, $3, $4, $5)",
                alert_id,
                start + timedelta(seconds=i),
                event,
                float(i),
                f"step {i}",
            )


async def insert_webhook(db: Any, name: str = "noc") -> int:
    async with db.pool.acquire() as conn:
        webhook_id: int = await conn.fetchval(
            """
            INSERT INTO webhooks (name, url, secret, format, group_wait, group_interval,
                                  repeat_interval, created_by)
            VALUES ($1, $2, 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0', 'netmon', '30s',
                    '5m', '4h', 'test')
            RETURNING id
            """,
            name,
            ALLOWED,
        )
    return webhook_id


async def insert_outbox(
    db: Any, webhook_id: int, alert_ids: list[int], state: str = "dead", payload: str = "{}"
) -> int:
    now = datetime.now(UTC)
    async with db.pool.acquire() as conn:
        outbox_id: int = await conn.fetchval(
            """
            INSERT INTO webhook_outbox (webhook_id, message_id, group_key, alert_ids, payload,
                                        state, attempts, expires_at, last_status, last_error,
                                        delivered_at, dead_at)
            VALUES ($1, $2, '{}', $3, $4, $5, $6, $7, $8, $9, $10, $11)
            RETURNING id
            """,
            webhook_id,
            f"msg_{uuid.uuid4().hex}",
            alert_ids,
            payload,
            state,
            0 if state == "pending" else 7,
            now + timedelta(hours=1) if state == "pending" else now - timedelta(minutes=1),
            None if state == "pending" else (200 if state == "delivered" else 503),
            "Service Unavailable" if state == "dead" else None,
            now if state == "delivered" else None,
            now if state == "dead" else None,
        )
    return outbox_id


@contextlib.asynccontextmanager
async def control_listener(api: Api) -> AsyncIterator[list[dict[str, Any]]]:
    """Every netmon_control message committed while inside, decoded."""
    assert api.ctx.settings.database.url is not None
    conn = await asyncpg.connect(api.ctx.settings.database.url)
    seen: list[dict[str, Any]] = []
    await conn.add_listener(CONTROL_CHANNEL, lambda *args: seen.append(json.loads(args[3])))
    try:
        yield seen
    finally:
        await conn.close()


def ops(seen: list[dict[str, Any]]) -> list[str]:
    return [m["op"] for m in seen]


def problem(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    for word in words:
        assert word in body["detail"], (word, body)
    return body


def field_of(r: httpx.Response) -> str:
    problem(r, 422)
    errors = r.json()["errors"]
    assert len(errors) == 1, errors
    field: str = errors[0]["field"]
    return field


async def audit(api: Api, resource: str) -> list[dict[str, Any]]:
    async with api.client("admin") as c:
        r = await c.get("/api/v1/audit", params={"resource": resource})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


# -- alerts ------------------------------------------------------------------------------


async def test_alerts_filter_and_page_newest_change_first(api: Api) -> None:
    await inventory(api)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    made = {}
    for i, (device, state, severity, rule, flapping) in enumerate(
        [
            ("a1", "firing", "critical", "device-unreachable", False),
            ("a2", "pending", "warning", "interface-down", False),
            ("b1", "acknowledged", "major", "interface-down", True),
            ("c1", "firing", "minor", "poll-failing", False),
            ("a1", "resolved", "major", "interface-down", False),
            ("b1", "resolved", "info", "poll-failing", True),
        ]
    ):
        made[i] = await insert_alert(
            api.db,
            device=device,
            state=state,
            severity=severity,
            rule=rule,
            flapping=flapping,
            updated_at=t0 + timedelta(minutes=i),
        )

    async def ids(c: httpx.AsyncClient, **params: Any) -> list[int]:
        r = await c.get("/api/v1/alerts", params=params)
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["items"]]

    async with api.client("viewer") as c:
        # Open ones by default, the most recently changed first.
        assert await ids(c) == [made[3], made[2], made[1], made[0]]
        assert await ids(c, state="all") == [made[i] for i in (5, 4, 3, 2, 1, 0)]
        assert await ids(c, state="resolved") == [made[5], made[4]]
        assert await ids(c, state=["pending", "resolved"]) == [made[5], made[4], made[1]]
        assert await ids(c, severity=["critical", "minor"]) == [made[3], made[0]]
        assert await ids(c, rule="interface-down", state="all") == [made[4], made[2], made[1]]
        assert await ids(c, device="a1", state="all") == [made[4], made[0]]
        assert await ids(c, site="par1", state="all") == [made[5], made[2]]
        assert await ids(c, flapping="true", state="all") == [made[5], made[2]]
        assert await ids(c, flapping="false") == [made[3], made[1], made[0]]

        first = (await c.get("/api/v1/alerts", params={"state": "all"})).json()["items"][0]
        assert first["site"] == "par1"
        assert first["role"] == "core"
        assert first["tags"] == ["lab"]
        assert first["labels"] == {"interface": "eth0"}
        assert first["resolved_at"] is not None

        paged: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"state": "all", "limit": 4}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/api/v1/alerts", params=params)).json()
            paged += [a["id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert paged == [made[i] for i in (5, 4, 3, 2, 1, 0)]

        problem(await c.get("/api/v1/alerts", params={"cursor": "xyz"}), 400, "cursor")
        problem(await c.get("/api/v1/alerts", params={"state": "open"}), 400)
        problem(await c.get("/api/v1/alerts", params={"severity": "fatal"}), 400)


async def test_a_site_token_sees_only_its_sites_alerts(api: Api) -> None:
    await inventory(api)
    lon = await insert_alert(api.db, device="a1")
    par = await insert_alert(api.db, device="b1")
    nosite = await insert_alert(api.db, device="c1")
    unknown = await insert_alert(api.db, device="gone")  # no device row at all
    async with api.client("lon1") as c:
        listed = (await c.get("/api/v1/alerts", params={"state": "all"})).json()["items"]
        assert [a["id"] for a in listed] == [lon]
        assert (await c.get("/api/v1/alerts", params={"site": "par1"})).json()["items"] == []
        assert (await c.get(f"/api/v1/alerts/{lon}")).status_code == 200
        for hidden in (par, nosite, unknown):
            problem(await c.get(f"/api/v1/alerts/{hidden}"), 404, f"alert {hidden} not found")
            problem(await c.post(f"/api/v1/alerts/{hidden}/ack"), 404, "not found")
        missing = unknown + 1000
        problem(await c.get(f"/api/v1/alerts/{missing}"), 404, f"alert {missing} not found")
    async with api.client("viewer") as c:
        everything = (await c.get("/api/v1/alerts")).json()["items"]
        assert {a["id"] for a in everything} == {lon, par, nosite, unknown}
        assert [a["site"] for a in everything if a["id"] == unknown] == [None]


async def test_an_alert_comes_with_its_history(api: Api) -> None:
    await inventory(api)
    alert_id = await insert_alert(api.db)
    other = await insert_alert(api.db, device="a2")
    await insert_history(api.db, alert_id, "pending", "firing", "flapping")
    await insert_history(api.db, other, "pending")
    async with api.client("viewer") as c:
        detail = (await c.get(f"/api/v1/alerts/{alert_id}")).json()
    assert detail["alert"]["id"] == alert_id
    assert detail["alert"]["state"] == "firing"
    history = detail["history"]
    assert [h["event"] for h in history] == ["pending", "firing", "flapping"]
    assert [h["actor"] for h in history] == ["engine"] * 3
    assert [h["value"] for h in history] == [0.0, 1.0, 2.0]
    assert history[0]["detail"] == "step 0"


async def test_ack_lifecycle_with_history_audit_and_live_change(api: Api) -> None:
    await inventory(api)
    firing = await insert_alert(api.db, device="a1", severity="critical")
    elsewhere = await insert_alert(api.db, device="b1", severity="critical")
    minor = await insert_alert(api.db, device="a2", severity="minor")
    resolved = await insert_alert(api.db, state="resolved")
    pending = await insert_alert(api.db, state="pending", device="a2")
    port = api.server.port
    async with (
        feed(port, "/ws/alerts", api.tokens["viewer"]) as everyone,
        feed(port, "/ws/alerts", api.tokens["lon1"]) as lon1,
        feed(port, "/ws/alerts", api.tokens["viewer"]) as majors,
        feed(port, "/ws/alerts", api.tokens["viewer"]) as paris,
    ):
        await everyone.subscribe()
        await lon1.subscribe()
        await majors.subscribe(min_severity="major")
        await paris.subscribe(matchers=['site="par1"'])
        bad = await paris.request({"subscribe": {"matchers": ['device=~"("']}})
        assert bad["type"] == "error"
        assert "matchers" in bad["detail"]
        assert (await paris.request({"subscribe": {"min_severity": "fatal"}}))["type"] == "error"
        await eventually(lambda: api.ctx.hub is not None and api.ctx.hub.listening, "listening")

        async with api.client("operator") as c:
            r = await c.post(f"/api/v1/alerts/{firing}/ack", json={"comment": "on it"})
            assert r.status_code == 200, r.text
            acked = r.json()
            assert acked["state"] == "acknowledged"
            assert acked["acknowledged_by"] == "test-operator"
            assert acked["acknowledged_at"] is not None
            assert acked["site"] == "lon1"

            again = await c.post(f"/api/v1/alerts/{firing}/ack")
            problem(again, 409, "acknowledged already", "test-operator")
            problem(await c.post(f"/api/v1/alerts/{resolved}/ack"), 409, "resolved")
            problem(await c.post(f"/api/v1/alerts/{pending}/ack"), 409, "pending")
            problem(await c.post(f"/api/v1/alerts/{pending}/unack"), 409, "pending")
            problem(await c.post("/api/v1/alerts/999999/ack"), 404, "alert 999999")
            unknown = await c.post(f"/api/v1/alerts/{minor}/ack", json={"why": "x"})
            problem(unknown, 400)
            # No body at all, and a JSON null, both mean no comment.
            assert (await c.post(f"/api/v1/alerts/{minor}/ack")).status_code == 200
            r = await c.post(
                f"/api/v1/alerts/{elsewhere}/ack",
                content=b"null",
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 200, r.text

            back = await c.post(f"/api/v1/alerts/{firing}/unack", json={"comment": "not mine"})
            assert back.status_code == 200, back.text
            assert back.json()["state"] == "firing"
            assert back.json()["acknowledged_by"] is None
            problem(await c.post(f"/api/v1/alerts/{firing}/unack"), 409, "not acknowledged")
        async with api.client("viewer") as c:
            problem(await c.post(f"/api/v1/alerts/{firing}/ack"), 403, "operator")

        def changes(client: Feed) -> list[tuple[int, str, str]]:
            return [
                (m["alert"]["id"], m["event"], m["alert"]["state"]) for m in client.of_type("alert")
            ]

        expected = [
            (firing, "acknowledged", "acknowledged"),
            (minor, "acknowledged", "acknowledged"),
            (elsewhere, "acknowledged", "acknowledged"),
            (firing, "firing", "firing"),
        ]
        await eventually(lambda: len(changes(everyone)) == 4, "four changes")
        assert changes(everyone) == expected
        # Each change arrives in commit order, so what a client did not want would have
        # come before the last change it did want.
        await eventually(lambda: len(changes(lon1)) == 3, "lon1's changes")
        assert changes(lon1) == [expected[0], expected[1], expected[3]]
        await eventually(lambda: len(changes(majors)) == 3, "major and above")
        assert changes(majors) == [expected[0], expected[2], expected[3]]
        await eventually(lambda: len(changes(paris)) == 1, "par1's change")
        assert changes(paris) == [expected[2]]
        message = everyone.of_type("alert")[0]
        assert message["alert"]["acknowledged_by"] == "test-operator"
        assert datetime.fromisoformat(message["time"]) == datetime.fromisoformat(
            acked["acknowledged_at"]
        )
        assert set(message) == {"type", "event", "time", "alert"}

    async with api.client("viewer") as c:
        history = (await c.get(f"/api/v1/alerts/{firing}")).json()["history"]
    assert [(h["event"], h["actor"], h["detail"]) for h in history] == [
        ("acknowledged", "test-operator", "on it"),
        ("firing", "test-operator", "unacknowledged: not mine"),
    ]
    entries = await audit(api, "alert")
    mine = [e for e in entries if e["resource_id"] == str(firing)]
    assert [(e["action"], e["actor"]) for e in mine] == [
        ("unacknowledge", "test-operator"),
        ("acknowledge", "test-operator"),
    ]
    assert mine[1]["before"] == {"state": "firing"}
    assert mine[1]["after"] == {"state": "acknowledged", "comment": "on it"}


def test_an_alert_change_fits_a_notification() -> None:
    now = datetime.now(UTC)
    view = AlertView(
        id=1,
        fingerprint="f" * 32,
        rule="r",
        device="d",
        labels={"interface": "eth0"},
        severity="major",
        state="firing",
        flapping=False,
        value=1.0,
        summary="s" * 500,
        description='"é\\' * 4000,
        pending_at=now,
        started_at=now,
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        updated_at=now,
    )
    payload = encode_alert_change(AlertChange(event="firing", time=now, alert=view))
    assert len(payload.encode()) <= PAYLOAD_LIMIT
    data = json.loads(payload)
    assert data["alert"]["summary"] == "s" * 500
    assert data["alert"]["description"].endswith("…")
    small = AlertChange(
        event="firing", time=now, alert=msgspec.structs.replace(view, description="x")
    )
    assert json.loads(encode_alert_change(small))["alert"]["description"] == "x"


@pytest.mark.parametrize(
    "pattern",
    [
        schemas.MATCHER_PATTERN,
        schemas.DURATION_PATTERN,
        schemas.LABEL_NAME,
        schemas.RULE_NAME,
        schemas.METRIC,
        schemas.URL_PATTERN,
        schemas.SECRET_PATTERN,
    ],
)
def test_patterns_mean_the_same_to_python_and_to_json_schema(pattern: str) -> None:
    """msgspec checks them with Python's re, clients and schemathesis with ECMA 262 (a
    URL with a \x1d in it was refused by the one and valid to the other)."""
    ecma = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    valid = ['site="lon1"', "5m", "rule", "http://127.0.0.1:9/x", "whsec_" + "A" * 32]
    for base in valid:
        for text in (
            base,
            base + "\n",
            base + "\x1d",
            "a=\x1c",
            base.replace("1", "\x85"),
            base + "\u2028",
            " " + base,
        ):
            assert (re.search(pattern, text) is not None) == ecma.is_valid(text), (pattern, text)


# -- rules -------------------------------------------------------------------------------

RULE = {
    "name": "cpu-high",
    "metric": "cpuUtilization",
    "op": ">",
    "value": 90,
    "clear": 80,
    "for": "5m",
    "matchers": ['role="core"'],
    "severity": "major",
    "summary": "{device}: CPU {value:.0f} %",
}


async def test_rules_are_added_replaced_and_deleted_and_engines_told(api: Api) -> None:
    async with api.db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO alert_rules (name, source, definition, created_by) VALUES "
            """('from-file', 'file', '{"name": "from-file", "kind": "state", """
            """"state": "device_unreachable", "severity": "critical"}', 'rules.yaml')"""
        )
    async with control_listener(api) as seen, api.client("admin") as c:
        made = await c.post("/api/v1/rules", json=RULE)
        assert made.status_code == 201, made.text
        row = made.json()
        assert row["source"] == "api"
        assert row["created_by"] == "test-admin"
        # As the rules file would hold it: defaults (op ">") left out.
        assert row["definition"] == {
            **{k: v for k, v in RULE.items() if k != "op"},
            "kind": "threshold",
        }

        listed = (await c.get("/api/v1/rules")).json()["items"]
        assert [r["name"] for r in listed] == ["cpu-high", "from-file"]
        assert (await c.get("/api/v1/rules/cpu-high")).json() == row

        replaced = await c.put("/api/v1/rules/cpu-high", json={**RULE, "value": 95})
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["definition"]["value"] == 95
        without_name = {k: v for k, v in RULE.items() if k != "name"}
        again = await c.put("/api/v1/rules/cpu-high", json={**without_name, "value": 97})
        assert again.json()["definition"]["value"] == 97

        assert (await c.delete("/api/v1/rules/cpu-high")).status_code == 204
        problem(await c.get("/api/v1/rules/cpu-high"), 404, "rule 'cpu-high' not found")
        problem(await c.delete("/api/v1/rules/cpu-high"), 404)
        problem(await c.put("/api/v1/rules/cpu-high", json=RULE), 404)
        await eventually(lambda: len(seen) >= 4, "a rules_reload per change")
        assert ops(seen) == ["rules_reload"] * 4

        # Read-only: the rules file's.
        problem(
            await c.put("/api/v1/rules/from-file", json={"state": "poll_failing", "kind": "state"}),
            409,
            "rules file",
        )
        problem(await c.delete("/api/v1/rules/from-file"), 409, "rules file")
        problem(await c.post("/api/v1/rules", json={**RULE, "name": "from-file"}), 409, "exists")
        assert (await c.get("/api/v1/rules/from-file")).json()["source"] == "file"
    assert ops(seen) == ["rules_reload"] * 4  # refusals tell nobody

    entries = await audit(api, "rule")
    assert [e["action"] for e in entries] == ["delete", "update", "update", "create"]
    assert entries[-1]["after"]["definition"]["value"] == 90

    async with api.client("operator") as c:
        problem(await c.post("/api/v1/rules", json=RULE), 403, "admin")
        assert (await c.get("/api/v1/rules")).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"value": None}, "value"),  # a threshold rule needs a value
        ({"summary": "{value:q}"}, "summary"),
        ({"for": "8d"}, "for"),
        ({"matchers": ['interface=~"("']}, "matchers"),
        ({"kind": "state", "state": "interface_down"}, "metric"),
        ({"kind": "absent", "value": None, "clear": None, "for": "0s"}, "for"),
        ({"scale": 0}, "scale"),
    ],
)
async def test_a_rule_that_cannot_work_is_a_422_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**RULE, **change}.items() if v is not None}
    async with api.client("admin") as c:
        r = await c.post("/api/v1/rules", json=body)
        assert field_of(r) == field, r.json()
        assert (await c.get("/api/v1/rules")).json()["items"] == []


async def test_malformed_rules_and_names_are_400_or_422(api: Api) -> None:
    async with api.client("admin") as c:
        problem(await c.post("/api/v1/rules", json={**RULE, "colour": "red"}), 400)
        problem(await c.post("/api/v1/rules", json={**RULE, "name": "has space"}), 400)
        problem(await c.post("/api/v1/rules", json={**RULE, "for": "soon"}), 400)
        made = await c.post("/api/v1/rules", json=RULE)
        assert made.status_code == 201
        renamed = await c.put("/api/v1/rules/cpu-high", json={**RULE, "name": "other"})
        assert field_of(renamed) == "name"


# -- silences ----------------------------------------------------------------------------


async def test_silences_are_made_listed_and_expired(api: Api) -> None:
    now = datetime.now(UTC)
    async with api.client("operator") as c:
        made = await c.post(
            "/api/v1/silences",
            json={
                "matchers": ["site = lon1", 'device=~"core-.*"'],
                "duration": "2h",
                "comment": "maintenance",
            },
        )
        assert made.status_code == 201, made.text
        active = made.json()
        assert active["state"] == "active"
        assert active["matchers"] == ['site="lon1"', 'device=~"core-.*"']
        assert active["created_by"] == "test-operator"
        assert active["source"] == "api"
        length = datetime.fromisoformat(active["ends_at"]) - datetime.fromisoformat(
            active["starts_at"]
        )
        assert length == timedelta(hours=2)
        assert abs(datetime.fromisoformat(active["starts_at"]) - now) < timedelta(minutes=1)

        later = await c.post(
            "/api/v1/silences",
            json={
                "matchers": ['rule="poll-failing"'],
                "starts_at": (now + timedelta(days=1)).isoformat(),
                "ends_at": (now + timedelta(days=2)).isoformat(),
            },
        )
        assert later.status_code == 201, later.text
        pending = later.json()
        assert pending["state"] == "pending"

        async def listed(**params: Any) -> list[int]:
            r = await c.get("/api/v1/silences", params=params)
            assert r.status_code == 200, r.text
            return [s["id"] for s in r.json()["items"]]

        assert await listed() == [active["id"]]
        assert await listed(state="pending") == [pending["id"]]
        assert await listed(state="all") == [pending["id"], active["id"]]
        assert await listed(state="expired") == []
        page = (await c.get("/api/v1/silences", params={"state": "all", "limit": 1})).json()
        assert [s["id"] for s in page["items"]] == [pending["id"]]
        rest = await c.get(
            "/api/v1/silences", params={"state": "all", "cursor": page["next_cursor"]}
        )
        assert [s["id"] for s in rest.json()["items"]] == [active["id"]]

        for silence in (active, pending):
            answer = await c.post(f"/api/v1/silences/{silence['id']}/expire")
            assert answer.status_code == 200, answer.text
            expired = (await c.get(f"/api/v1/silences/{silence['id']}")).json()
            assert answer.json() == expired
            assert expired["state"] == "expired"
            assert expired["ends_at"] > expired["starts_at"]
            assert datetime.fromisoformat(expired["ends_at"]) <= datetime.now(UTC)
        assert await listed(state="expired") == [pending["id"], active["id"]]
        assert await listed() == []
        again = await c.post(f"/api/v1/silences/{active['id']}/expire")
        assert again.status_code == 200
        assert again.json() == (await c.get(f"/api/v1/silences/{active['id']}")).json()
        problem(await c.get("/api/v1/silences/999999"), 404, "silence 999999 not found")
        problem(await c.post("/api/v1/silences/999999/expire"), 404)

    entries = await audit(api, "silence")
    assert [e["action"] for e in entries] == ["expire", "expire", "create", "create"]
    async with api.client("viewer") as c:
        assert (await c.get("/api/v1/silences")).status_code == 200
        problem(await c.post("/api/v1/silences", json={"matchers": ["a=b"], "duration": "1h"}), 403)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"matchers": ['device=~"("'], "duration": "1h"}, 422, "matchers"),
        ({"matchers": ["site=lon1"]}, 422, "ends_at"),
        (
            {"matchers": ["site=lon1"], "duration": "1h", "ends_at": "2100-01-01T00:00:00Z"},
            422,
            "ends_at",
        ),
        ({"matchers": ["site=lon1"], "ends_at": "2000-01-01T00:00:00Z"}, 422, "ends_at"),
        (
            {
                "matchers": ["site=lon1"],
                "starts_at": "2100-01-02T00:00:00Z",
                "ends_at": "2100-01-01T00:00:00Z",
            },
            422,
            "ends_at",
        ),
        ({"matchers": ["site=lon1"], "duration": "3661d"}, 422, "duration"),
        ({"matchers": [], "duration": "1h"}, 400, "matchers"),
        ({"matchers": ["not a matcher"], "duration": "1h"}, 400, "matchers"),
        ({"matchers": ["site=lon1"], "ends_at": "2100-01-01T00:00:00"}, 400, "ends_at"),
    ],
)
async def test_a_silence_that_cannot_be_is_refused_naming_the_field(
    api: Api, body: dict[str, Any], status: int, field: str
) -> None:
    async with api.client("operator") as c:
        r = await c.post("/api/v1/silences", json=body)
        problem(r, status)
        assert [e["field"].split("[")[0] for e in r.json()["errors"]] == [field], r.json()


async def test_site_tokens_silence_their_sites_only_and_file_silences_stay(api: Api) -> None:
    now = datetime.now(UTC)
    async with api.db.pool.acquire() as conn:
        file_id = await conn.fetchval(
            "INSERT INTO silences (name, source, matchers, starts_at, ends_at, created_by) "
            """VALUES ('window', 'file', '["site=\\"lon1\\""]', $1, $2, 'rules.yaml') """
            "RETURNING id",
            now - timedelta(hours=1),
            now + timedelta(hours=1),
        )
    async with api.client("operator") as c:
        paris = await c.post("/api/v1/silences", json={"matchers": ["site=par1"], "duration": "1h"})
        assert paris.status_code == 201
        problem(await c.post(f"/api/v1/silences/{file_id}/expire"), 409, "rules file")
    async with api.client("lon1") as c:
        problem(
            await c.post("/api/v1/silences", json={"matchers": ["rule=x"], "duration": "1h"}),
            403,
            'site="<site>"',
        )
        problem(
            await c.post("/api/v1/silences", json={"matchers": ["site=~lon.*"], "duration": "1h"}),
            403,
        )
        mine = await c.post(
            "/api/v1/silences", json={"matchers": ["site=lon1", "rule=x"], "duration": "1h"}
        )
        assert mine.status_code == 201, mine.text
        listed = [s["id"] for s in (await c.get("/api/v1/silences")).json()["items"]]
        assert listed == [mine.json()["id"], file_id]
        problem(await c.get(f"/api/v1/silences/{paris.json()['id']}"), 404)
        problem(await c.post(f"/api/v1/silences/{paris.json()['id']}/expire"), 404)
    assert site_matchers(["lon1", 'we"ird']) == ['site="lon1"', 'site="we\\"ird"']


# -- webhooks ----------------------------------------------------------------------------


async def test_a_webhook_secret_is_shown_once_and_never_again(api: Api) -> None:
    async with api.client("admin") as c:
        made = await c.post(
            "/api/v1/webhooks",
            json={"name": "noc", "url": ALLOWED, "matchers": ["severity=~critical|major"]},
        )
        assert made.status_code == 201, made.text
        created = made.json()
        secret = created["secret"]
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        assert created["format"] == "netmon"
        assert created["matchers"] == ['severity=~"critical|major"']
        assert created["group_by"] == ["rule", "device"]
        # Defaults from settings.alerts (group_wait set to 45s in these tests).
        assert (created["group_wait"], created["group_interval"], created["repeat_interval"]) == (
            "45s",
            "5m",
            "4h",
        )
        webhook_id = created["id"]

        given = "whsec_" + base64.b64encode(b"k" * 24).decode()
        mine = await c.post(
            "/api/v1/webhooks",
            json={"name": "mine", "url": ALLOWED, "secret": given, "group_wait": "0s"},
        )
        assert mine.status_code == 201, mine.text
        assert mine.json()["secret"] is None
        assert mine.json()["group_wait"] == "0s"

        patched = await c.patch(
            f"/api/v1/webhooks/{webhook_id}", json={"secret": given, "format": "alertmanager"}
        )
        assert patched.status_code == 200, patched.text
        answers = [
            patched,
            await c.get("/api/v1/webhooks"),
            await c.get(f"/api/v1/webhooks/{webhook_id}"),
            await c.get("/api/v1/audit"),
            await c.get("/api/v1/audit", params={"resource": "webhook"}),
        ]
    async with api.db.pool.acquire() as conn:
        stored = dict(await conn.fetch("SELECT name, secret FROM webhooks"))
    assert stored == {"noc": given, "mine": given}
    for r in answers:
        assert r.status_code == 200, r.text
        for text in (secret, given, secret.removeprefix("whsec_"), given.removeprefix("whsec_")):
            assert text not in r.text, r.url
        assert '"secret":' not in r.text, r.url
    updates = [e for e in answers[4].json()["items"] if e["action"] == "update"]
    assert updates[0]["after"]["secret_changed"] is True


async def test_webhook_urls_outside_the_allow_list_are_refused(api: Api) -> None:
    async with api.client("admin") as c:
        for url in (
            "http://10.1.2.3/hook",
            "http://[::1]:9/hook",
            "http://user:pw@127.0.0.1:9/hook",
            "http://127.0.0.2:9/hook",
        ):
            r = await c.post("/api/v1/webhooks", json={"name": "x", "url": url})
            assert field_of(r) == "url", url
        problem(
            await c.post("/api/v1/webhooks", json={"name": "x", "url": "ftp://127.0.0.1/"}), 400
        )
        made = await c.post("/api/v1/webhooks", json={"name": "x", "url": ALLOWED})
        assert made.status_code == 201
        moved = await c.patch(
            f"/api/v1/webhooks/{made.json()['id']}", json={"url": "http://10.1.2.3/hook"}
        )
        assert field_of(moved) == "url"
        assert "10.1.2.3" in moved.json()["detail"]
        assert (await c.get(f"/api/v1/webhooks/{made.json()['id']}")).json()["url"] == ALLOWED
    async with api.db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM webhooks") == 1


async def test_no_webhook_goes_anywhere_without_an_allow_list(
    api_database_url: str, tmp_path: Path
) -> None:
    from tests.api_helpers import make_api_settings, running_api

    settings = make_api_settings(api_database_url, tmp_path / "data")
    async with running_api(settings) as bare, bare.client("admin") as c:
        r = await c.post("/api/v1/webhooks", json={"name": "x", "url": ALLOWED})
        assert field_of(r) == "url"
        assert "alerts.webhooks.allow" in r.json()["detail"]


async def test_webhooks_are_changed_reenabled_and_deleted(api: Api) -> None:
    async with control_listener(api) as seen, api.client("admin") as c:
        made = (await c.post("/api/v1/webhooks", json={"name": "noc", "url": ALLOWED})).json()
        other = (await c.post("/api/v1/webhooks", json={"name": "ops", "url": ALLOWED})).json()
        path = f"/api/v1/webhooks/{made['id']}"
        problem(await c.post("/api/v1/webhooks", json={"name": "noc", "url": ALLOWED}), 409, "noc")

        changed = await c.patch(
            path,
            json={
                "group_by": ["site"],
                "repeat_interval": "1d",
                "send_resolved": False,
                "matchers": ["site=lon1"],
            },
        )
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert (body["group_by"], body["repeat_interval"], body["send_resolved"]) == (
            ["site"],
            "1d",
            False,
        )
        assert body["matchers"] == ['site="lon1"']
        assert field_of(await c.patch(path, json={"group_wait": "2h"})) == "group_wait"
        assert field_of(await c.patch(path, json={"repeat_interval": "10s"})) == "repeat_interval"
        assert field_of(await c.patch(path, json={"matchers": ["a=~("]})) == "matchers"
        problem(await c.patch(path, json={"name": "ops"}), 409, "ops")
        problem(await c.patch(path, json={"secret": "whsec_short"}), 400)
        problem(await c.patch("/api/v1/webhooks/999999", json={"enabled": False}), 404)

        # The deliverer disables a webhook that answers 410; enabling it clears that.
        async with api.db.pool.acquire() as conn:
            await conn.execute(
                "UPDATE webhooks SET enabled = false, disabled_reason = '410 Gone' WHERE id = $1",
                made["id"],
            )
        kept = (await c.patch(path, json={"enabled": False})).json()
        assert kept["disabled_reason"] == "410 Gone"
        enabled = (await c.patch(path, json={"enabled": True})).json()
        assert (enabled["enabled"], enabled["disabled_reason"]) == (True, None)
        await eventually(lambda: "outbox_wake" in ops(seen), "outbox_wake")
        disabled = (await c.patch(path, json={"enabled": False})).json()
        assert disabled["disabled_reason"] == "disabled through the API by test-admin"

        outbox = await insert_outbox(api.db, made["id"], [], "pending")
        assert (await c.delete(path)).status_code == 204
        problem(await c.get(path), 404, f"webhook {made['id']} not found")
        problem(await c.delete(path), 404)
        listed = (await c.get("/api/v1/webhooks")).json()["items"]
        assert [w["id"] for w in listed] == [other["id"]]
    async with api.db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM webhook_outbox WHERE id = $1", outbox) == 0
    entries = await audit(api, "webhook")
    assert [e["action"] for e in entries][:1] == ["delete"]
    assert entries[0]["before"]["name"] == "noc"
    async with api.client("operator") as c:
        problem(await c.get("/api/v1/webhooks"), 403, "admin")


async def test_deliveries_are_listed_and_dead_ones_redelivered(api: Api) -> None:
    await inventory(api)
    lon = await insert_alert(api.db, device="a1")
    par = await insert_alert(api.db, device="b1")
    hook = await insert_webhook(api.db)
    other = await insert_webhook(api.db, "other")
    delivered = await insert_outbox(api.db, hook, [lon], "delivered", payload='{"n": 1}')
    dead = await insert_outbox(api.db, hook, [lon], "dead", payload='{"n": 2}')
    pending = await insert_outbox(api.db, hook, [lon, par], "pending", payload='{"n": 3}')
    about_par = await insert_outbox(api.db, other, [par], "dead")
    path = f"/api/v1/webhooks/{hook}/deliveries"
    async with api.client("admin") as c:
        listed = (await c.get(path)).json()
        assert [d["id"] for d in listed["items"]] == [pending, dead, delivered]
        assert {d["payload"] for d in listed["items"]} == {None}
        full = (await c.get(path, params={"payload": "true"})).json()["items"]
        assert [d["payload"] for d in full] == ['{"n": 3}', '{"n": 2}', '{"n": 1}']
        assert [d["id"] for d in (await c.get(path, params={"state": "dead"})).json()["items"]] == [
            dead
        ]
        first = (await c.get(path, params={"limit": 2})).json()
        rest = (await c.get(path, params={"limit": 2, "cursor": first["next_cursor"]})).json()
        assert [d["id"] for d in first["items"] + rest["items"]] == [pending, dead, delivered]
        assert rest["next_cursor"] is None
        problem(await c.get("/api/v1/webhooks/999999/deliveries"), 404, "webhook 999999")
        before = listed["items"][1]

    async with control_listener(api) as seen, api.client("operator") as c:
        r = await c.post(f"/api/v1/webhooks/deliveries/{dead}/redeliver")
        assert r.status_code == 200, r.text
        again = r.json()
        assert again["state"] == "pending"
        assert again["attempts"] == 0
        assert again["dead_at"] is None
        assert again["message_id"] == before["message_id"]
        expires = datetime.fromisoformat(again["expires_at"])
        assert abs(expires - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=1)
        assert datetime.fromisoformat(again["next_attempt_at"]) <= datetime.now(UTC)
        problem(await c.post(f"/api/v1/webhooks/deliveries/{dead}/redeliver"), 409, "pending")
        problem(await c.post(f"/api/v1/webhooks/deliveries/{pending}/redeliver"), 409, "pending")
        sent = await c.post(f"/api/v1/webhooks/deliveries/{delivered}/redeliver")
        assert sent.status_code == 200
        assert sent.json()["delivered_at"] is None
        problem(await c.post("/api/v1/webhooks/deliveries/999999/redeliver"), 404)
        await eventually(lambda: ops(seen).count("outbox_wake") == 2, "outbox_wake twice")
    async with api.db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT payload, state FROM webhook_outbox WHERE id = $1", dead)
    assert (row["payload"], row["state"]) == ('{"n": 2}', "pending")

    async with api.client("lon1") as c:
        problem(await c.post(f"/api/v1/webhooks/deliveries/{about_par}/redeliver"), 404)
    async with api.client("viewer") as c:
        problem(await c.post(f"/api/v1/webhooks/deliveries/{about_par}/redeliver"), 403)
    async with api.client("admin") as c:
        assert (
            await c.post(f"/api/v1/webhooks/deliveries/{about_par}/redeliver")
        ).status_code == 200
    entries = await audit(api, "webhook_delivery")
    assert [e["resource_id"] for e in entries] == [str(about_par), str(delivered), str(dead)]
    assert entries[-1]["before"]["state"] == "dead"
    assert entries[-1]["after"]["state"] == "pending"
    assert all(e["after"]["payload"] is None for e in entries)


async def test_webhook_routes_need_admin_and_redelivery_operator(api: Api) -> None:
    hook = await insert_webhook(api.db)
    async with api.client("operator") as c:
        for method, path in (
            ("GET", f"/api/v1/webhooks/{hook}"),
            ("PATCH", f"/api/v1/webhooks/{hook}"),
            ("DELETE", f"/api/v1/webhooks/{hook}"),
            ("GET", f"/api/v1/webhooks/{hook}/deliveries"),
            ("POST", "/api/v1/webhooks"),
        ):
            r = await c.request(method, path, json={} if method in ("PATCH", "POST") else None)
            problem(r, 403, "admin")
