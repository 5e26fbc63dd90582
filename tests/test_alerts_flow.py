"""Alerting end to end against a real PostgreSQL and a real HTTP receiver: samples in,
alert rows, history, groups, silences, signed webhooks; restarts and a database outage.

The samples go straight to ``AlertService.observe`` (what the batcher calls); the lab
test at the end runs the real poller against simulated SNMP devices.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from netmon.alerts.rules import RuleError
from netmon.alerts.service import AlertService, sync_rules_file
from netmon.config import Settings, load_settings
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from tests.api_helpers import api_database_url  # noqa: F401  (fixture)
from tests.poller_helpers import eventually
from tests.tcp_proxy import proxy_for, through
from tests.webhook_receiver import WebhookReceiver

RULES = """
rules:
  - name: cpu-high
    metric: cpu
    op: ">"
    value: 90
    clear: 80
    severity: major
    summary: "{device} cpu {value:.0f} %"
  - name: temp-high
    metric: temp
    value: 70
    for: 2m
    severity: critical
"""


def alert_settings(url: str, tmp_path: Path, rules: str = RULES, **alerts: Any) -> Settings:
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    return load_settings(
        None,
        data_dir=tmp_path / "data",
        database={"url": url, "pool_min": 2, "pool_max": 10, "connect_timeout": "2s"},
        writer={"retry_interval": "100ms"},
        alerts={
            "rules_file": str(path),
            "webhooks": {
                "allow": ["127.0.0.1/32"],
                "retry_initial": "50ms",
                "retry_max": "200ms",
                "timeout": "2s",
            },
            **alerts,
        },
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[AlertService]:
    db = Database(settings.database, settings.data_dir)
    await db.start()
    service = AlertService(db, settings)
    await service.start()
    try:
        yield service
    finally:
        await service.close()
        await db.stop()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


async def add_webhook(
    conn: asyncpg.Connection,
    url: str,
    secret: str,
    *,
    fmt: str = "netmon",
    matchers: list[str] | None = None,
    group_by: list[str] | None = None,
    group_wait: str = "0s",
    group_interval: str = "0s",
    repeat_interval: str = "4h",
) -> int:
    hook_id: int = await conn.fetchval(
        """
        INSERT INTO webhooks (name, url, secret, format, matchers, group_by, group_wait,
                              group_interval, repeat_interval, created_by)
        VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::text::interval, $8::text::interval,
                $9::text::interval, 'test')
        RETURNING id
        """,
        f"hook-{url.rsplit('/', 1)[-1]}",
        url,
        secret,
        fmt,
        json.dumps(matchers or []),
        group_by or ["rule", "device"],
        group_wait,
        group_interval,
        repeat_interval,
    )
    return hook_id


def sample(device: str, metric: str, value: float, at: datetime | None = None) -> Sample:
    return Sample(SeriesKey.of(device, metric), at or datetime.now(UTC), value)


async def alert_rows(conn: asyncpg.Connection, **where: str) -> list[asyncpg.Record]:
    sql = "SELECT * FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(f"{k} = ${i + 1}" for i, k in enumerate(where))
    return await conn.fetch(sql + " ORDER BY id", *where.values())


def bodies(receiver: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    """Each accepted message once (the receiver's dedup on webhook-id), in arrival order."""
    seen: set[str] = set()
    out = []
    for r in receiver.to(path):
        if r.verified and 200 <= r.status < 300 and r.message_id not in seen:
            seen.add(r.message_id)
            out.append(json.loads(r.body))
    return out


@pytest.fixture
def url(api_database_url: str) -> str:  # noqa: F811
    """A fresh migrated database of its own."""
    return api_database_url


@pytest.fixture
async def conn(url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as r:
        yield r


# -- the lifecycle ------------------------------------------------------------------------


async def test_a_sample_raises_an_alert_that_is_delivered_signed_and_resolved(
    url, conn, receiver, tmp_path
):
    settings = alert_settings(url, tmp_path)
    secret = new_secret()
    await add_webhook(conn, receiver.add("/am", secret), secret, fmt="alertmanager")
    async with running(settings) as svc:
        svc.observe([sample("r1", "cpu", 95), sample("r2", "cpu", 10)])
        await eventually(lambda: _count(receiver, "/am", 1), what="the firing message")
        (row,) = await alert_rows(conn)
        assert (row["rule"], row["device"], row["state"], row["severity"]) == (
            "cpu-high",
            "r1",
            "firing",
            "major",
        )
        assert row["summary"] == "r1 cpu 95 %"
        assert (row["kind"], row["metric"]) == ("threshold", "cpu")
        (firing,) = bodies(receiver, "/am")
        assert firing["version"] == "4"
        assert firing["status"] == "firing"
        assert firing["alerts"][0]["labels"]["alertname"] == "cpu-high"
        # Inside the hysteresis band: nothing; below the clear edge: resolved, once.
        svc.observe([sample("r1", "cpu", 85)])
        svc.observe([sample("r1", "cpu", 50)])
        await eventually(lambda: _count(receiver, "/am", 2), what="the resolved message")
        resolved = bodies(receiver, "/am")[1]
        assert resolved["status"] == "resolved"
        (row,) = await alert_rows(conn)
        assert row["state"] == "resolved"
        assert row["resolved_at"] is not None
        history = await conn.fetch(
            "SELECT event FROM alert_history WHERE alert_id = $1 ORDER BY id", row["id"]
        )
        assert [h["event"] for h in history] == ["firing", "notified", "resolved", "notified"]
    assert all(r.verified for r in receiver.requests)


async def test_for_duration_keeps_an_alert_pending_and_it_is_never_notified_if_it_clears(
    url, conn, receiver, tmp_path
):
    settings = alert_settings(url, tmp_path)
    secret = new_secret()
    await add_webhook(conn, receiver.add("/n", secret), secret)
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    async with running(settings) as svc:
        svc.observe([sample("r1", "temp", 75, t0)])
        svc.observe([sample("r1", "temp", 20, t0 + timedelta(minutes=1))])
        svc.observe([sample("r2", "temp", 75, t0)])
        svc.observe([sample("r2", "temp", 80, t0 + timedelta(minutes=2))])
        await eventually(lambda: _count(receiver, "/n", 1), what="r2's message")
        assert await svc.recorder.drain()
        rows = {r["device"]: r for r in await alert_rows(conn)}
        assert rows["r1"]["state"] == "resolved"
        assert rows["r1"]["started_at"] is None  # never fired
        assert rows["r2"]["state"] == "firing"
        assert rows["r2"]["pending_at"] == t0
        await asyncio.sleep(0.5)
    (only,) = bodies(receiver, "/n")
    assert [a["device"] for a in only["alerts"]] == ["r2"]


async def test_one_incident_is_one_alert_however_often_it_fires(url, conn, tmp_path):
    settings = alert_settings(url, tmp_path)
    async with running(settings) as svc:
        for value in (95, 96, 99, 93):
            svc.observe([sample("r1", "cpu", value)])
        assert await svc.recorder.drain()
        rows = await alert_rows(conn)
        assert len(rows) == 1
        assert rows[0]["state"] == "firing"


# -- groups ------------------------------------------------------------------------------


async def test_group_wait_collects_alerts_into_one_message_and_repeat_sends_it_again(
    url, conn, receiver, tmp_path
):
    settings = alert_settings(url, tmp_path)
    secret = new_secret()
    await add_webhook(
        conn,
        receiver.add("/g", secret),
        secret,
        group_by=["rule"],
        group_wait="1s",
        group_interval="1s",
        repeat_interval="3s",
    )
    async with running(settings) as svc:
        svc.observe([sample("r1", "cpu", 95)])
        svc.observe([sample("r2", "cpu", 97)])
        await eventually(lambda: _count(receiver, "/g", 1), what="the group's first message")
        first = bodies(receiver, "/g")[0]
        assert sorted(a["device"] for a in first["alerts"]) == ["r1", "r2"]
        assert first["group_labels"] == {"rule": "cpu-high"}
        # Unchanged and still firing: sent again after repeat_interval, not before.
        await asyncio.sleep(1.5)
        assert len(bodies(receiver, "/g")) == 1
        await eventually(lambda: _count(receiver, "/g", 2), 10, what="the repeat")
        # A change waits for group_interval after the last message, then goes out.
        svc.observe([sample("r1", "cpu", 10)])
        await eventually(lambda: _count(receiver, "/g", 3), 10, what="the change")
        third = bodies(receiver, "/g")[2]
        states = {a["device"]: a["state"] for a in third["alerts"]}
        assert states == {"r1": "resolved", "r2": "firing"}


async def test_a_silence_holds_back_notifications_but_not_the_alert(url, conn, receiver, tmp_path):
    settings = alert_settings(url, tmp_path)
    secret = new_secret()
    await add_webhook(conn, receiver.add("/s", secret), secret)
    silence = await conn.fetchval(
        """
        INSERT INTO silences (matchers, starts_at, ends_at, comment, created_by)
        VALUES ('["device=\\"r1\\""]', now() - interval '1 minute', now() + interval '1 hour',
                'maintenance', 'test')
        RETURNING id
        """
    )
    async with running(settings) as svc:
        svc.observe([sample("r1", "cpu", 95), sample("r2", "cpu", 95)])
        await eventually(lambda: _count(receiver, "/s", 1), what="r2's message")
        assert await svc.recorder.drain()
        rows = {r["device"]: r for r in await alert_rows(conn)}
        assert rows["r1"]["state"] == "firing"  # the alert is there
        assert list(rows["r1"]["silenced_by"]) == [silence]
        assert list(rows["r2"]["silenced_by"]) == []
        events = await conn.fetch(
            "SELECT event, detail FROM alert_history WHERE alert_id = $1 ORDER BY id",
            rows["r1"]["id"],
        )
        assert [e["event"] for e in events] == ["firing", "silenced"]
        await asyncio.sleep(0.5)
    assert [a["device"] for b in bodies(receiver, "/s") for a in b["alerts"]] == ["r2"]


async def test_flapping_is_one_notification_not_a_page_per_flip(url, conn, receiver, tmp_path):
    settings = alert_settings(url, tmp_path, flap_threshold=4)
    secret = new_secret()
    await add_webhook(conn, receiver.add("/f", secret), secret)
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    async with running(settings) as svc:
        for i in range(16):
            svc.observe(
                [sample("r1", "cpu", 95 if i % 2 == 0 else 10, t0 + timedelta(seconds=30 * i))]
            )
            assert await svc.recorder.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        rows = await alert_rows(conn)
        open_rows = [r for r in rows if r["state"] != "resolved"]
        assert len(open_rows) == 1
        assert open_rows[0]["flapping"] is True
    messages = bodies(receiver, "/f")
    # fire, resolve, fire (then it flaps): three, plus the one that says it flaps.
    assert len(messages) <= 4
    assert messages[-1]["alerts"][0]["flapping"] is True


# -- restarts and outages -------------------------------------------------------------------


async def test_a_restart_in_the_middle_of_a_firing_alert_sends_nothing_twice(
    url, conn, receiver, tmp_path
):
    settings = alert_settings(url, tmp_path)
    secret = new_secret()
    path = "/r"
    await add_webhook(conn, receiver.add(path, secret), secret)
    await receiver.stop()  # down: the first message waits in the outbox across the restart
    async with running(settings) as svc:
        svc.observe([sample("r1", "cpu", 95)])
        assert await svc.recorder.drain()
        await eventually(lambda: _outbox_attempted(conn), what="a failed attempt")
    await receiver.start()
    async with running(settings) as svc:
        # Still above the threshold after the restart: the same alert, no new firing.
        svc.observe([sample("r1", "cpu", 97)])
        await eventually(lambda: _count(receiver, path, 1), what="the queued message")
        assert await svc.recorder.drain()
        await asyncio.sleep(0.5)
        assert len(await alert_rows(conn)) == 1
        assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 1
        svc.observe([sample("r1", "cpu", 10)])
        await eventually(lambda: _count(receiver, path, 2), what="the resolved message")
    statuses = [b["status"] for b in bodies(receiver, path)]
    assert statuses == ["firing", "resolved"]
    assert receiver.duplicates == 0


async def test_changes_wait_for_the_database_and_are_committed_in_order(url, conn, tmp_path):
    proxy = proxy_for(url)
    await proxy.start()
    try:
        settings = alert_settings(through(proxy, url), tmp_path)
        async with running(settings) as svc:
            await proxy.cut()
            svc.observe([sample("r1", "cpu", 95)])
            svc.observe([sample("r1", "cpu", 10)])
            svc.observe([sample("r1", "cpu", 99)])
            await asyncio.sleep(1.0)
            # In memory, or handed to the on-disk alert outbox (test_alerts_outage.py).
            assert svc.direct is not None
            assert svc.recorder.pending + svc.direct.stats.spooled == 3
            await proxy.restore()
            assert await svc.recorder.drain(30)
        rows = await alert_rows(conn)
        assert [r["state"] for r in rows] == ["resolved", "firing"]
    finally:
        await proxy.close()


# -- the rules file ------------------------------------------------------------------------


async def test_the_rules_file_is_synced_and_an_api_rule_of_the_same_name_is_left_alone(
    url, conn, tmp_path
):
    await conn.execute(
        """INSERT INTO alert_rules (name, source, definition, created_by)
           VALUES ('temp-high', 'api', '{"name": "temp-high", "metric": "t", "value": 1}', 'op')"""
    )
    settings = alert_settings(url, tmp_path)
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        await sync_rules_file(db, settings)
        rows = {r["name"]: r["source"] for r in await conn.fetch("SELECT * FROM alert_rules")}
        assert rows == {"cpu-high": "file", "temp-high": "api"}
        bad = alert_settings(url, tmp_path, rules="rules: [{name: x, metric: m}]")
        with pytest.raises(
            RuleError, match=r"rules.yaml: rules\[0\] 'x': a threshold rule needs 'value'"
        ):
            await sync_rules_file(db, bad)
        assert await conn.fetchval("SELECT count(*) FROM alert_rules") == 2  # unchanged
    finally:
        await db.stop()


# -- helpers --------------------------------------------------------------------------------


async def _count(receiver: WebhookReceiver, path: str, n: int) -> bool:
    return len(bodies(receiver, path)) >= n


async def _outbox_attempted(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM webhook_outbox WHERE attempts > 0"))


# -- the real poller against the lab ---------------------------------------------------------


async def test_the_lab_polled_for_real_raises_and_resolves_the_builtin_alerts(
    url, conn, receiver, lab, tmp_path
):
    from tests.poller_helpers import fast_inventory, poller_settings, running_poller

    base = alert_settings(url, tmp_path)
    settings = poller_settings(base)
    settings = settings.model_copy(
        update={"alerts": base.alerts.model_copy(update={"rules_file": None})}
    )
    secret = new_secret()
    await add_webhook(conn, receiver.add("/lab", secret), secret)
    inventory = fast_inventory(lab, tmp_path / "inventory")
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        async with running_poller(settings, db, inventory) as poller:
            alerts = AlertService(db, settings)
            await alerts.start()
            poller.batcher.observe = alerts.observe
            await alerts.reload_devices()
            try:
                # Three polls in, a reboot sets sysUpTime back below what was seen.
                await eventually(lambda: _polled(conn, "lab-0001", 3), what="three polls")
                # Administratively down interfaces are down too, and must not alert.
                device = lab.device("lab-0002")
                assert any(not i.admin_up for i in device.interfaces)
                index = next(n for n, i in enumerate(device.interfaces, 1) if i.admin_up)
                device.set_oper(index, False)
                lab.device("lab-0003").silence(True)
                lab.device("lab-0001").reboot()
                expected = {
                    ("interface-down", "lab-0002"),
                    ("device-unreachable", "lab-0003"),
                    ("device-rebooted", "lab-0001"),
                }
                await eventually(
                    lambda: _firing(conn, expected), 30, what="down, unreachable, rebooted firing"
                )
                (down,) = await alert_rows(conn, rule="interface-down")
                assert (down["kind"], down["metric"]) == ("state", "ifOperStatus")
                assert json.loads(down["labels"]) == {"interface": device.interface(index).name}
                device.set_oper(index, True)
                lab.device("lab-0003").silence(False)
                # The reboot alert holds for 15 minutes after the event; the others clear.
                await eventually(
                    lambda: _firing(conn, {("device-rebooted", "lab-0001")}),
                    30,
                    what="down and unreachable resolved",
                )
                await eventually(lambda: _count(receiver, "/lab", 5), 20, what="five messages")
            finally:
                await alerts.close()
    finally:
        await db.stop()
    sent = [
        (a["rule"], a["device"], a["state"]) for b in bodies(receiver, "/lab") for a in b["alerts"]
    ]
    assert sorted(sent) == [
        ("device-rebooted", "lab-0001", "firing"),
        ("device-unreachable", "lab-0003", "firing"),
        ("device-unreachable", "lab-0003", "resolved"),
        ("interface-down", "lab-0002", "firing"),
        ("interface-down", "lab-0002", "resolved"),
    ]


async def _polled(conn: asyncpg.Connection, device: str, polls: int) -> bool:
    done: int = await conn.fetchval(
        "SELECT count(*) FROM samples x JOIN series s ON s.id = x.series_id"
        " JOIN devices d ON d.id = s.device_id WHERE d.name = $1 AND s.metric = 'up'",
        device,
    )
    return done >= polls


async def _firing(conn: asyncpg.Connection, expected: set[tuple[str, str]]) -> bool:
    rows = await conn.fetch("SELECT rule, device FROM alerts WHERE state = 'firing'")
    return {(r["rule"], r["device"]) for r in rows} == expected


# -- sample in, alert out on the WebSocket --------------------------------------------------


async def test_a_sample_in_is_an_alert_on_the_websocket(url, tmp_path):
    from websockets.asyncio.client import connect

    from netmon.core_control import LocalCore
    from tests.api_helpers import make_api_settings, running_api

    base = alert_settings(url, tmp_path)
    settings = make_api_settings(url, tmp_path / "api").model_copy(update={"alerts": base.alerts})
    async with running(settings) as svc, running_api(settings, LocalCore(alerts=svc)) as api:
        port = api.server.port
        headers = {"Authorization": f"Bearer {api.tokens['viewer']}"}
        async with connect(f"ws://127.0.0.1:{port}/ws/alerts", additional_headers=headers) as ws:
            await ws.send(json.dumps({"subscribe": {"min_severity": "major"}}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            svc.observe([sample("r9", "cpu", 97.0)])
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["type"] == "alert"
            assert message["event"] == "firing"
            assert message["alert"]["device"] == "r9"
            assert message["alert"]["rule"] == "cpu-high"
            assert message["alert"]["state"] == "firing"
            svc.observe([sample("r9", "cpu", 10.0)])
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (message["event"], message["alert"]["state"]) == ("resolved", "resolved")
