"""Alerts leave netmon while its database is away: the on-disk alert outbox, direct
delivery to the cached webhooks, the reconciliation when the database is back, and the
"cannot reach the database" meta notification.

The database is the real PostgreSQL behind an in-process TCP relay (tests/tcp_proxy.py:
``cut`` resets every connection and refuses new ones), so the outage touches nothing
but this test's connections; the receiver is a real HTTP server that checks signatures.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from netmon.alerts.direct import META_RULE
from tests.api_helpers import api_database_url  # noqa: F401  (fixture)
from tests.poller_helpers import eventually
from tests.tcp_proxy import TcpProxy, proxy_for, through
from tests.test_alerts_flow import (
    add_webhook,
    alert_rows,
    alert_settings,
    bodies,
    new_secret,
    running,
    sample,
)
from tests.test_alerts_flow import conn as conn
from tests.test_alerts_flow import receiver as receiver
from tests.test_alerts_flow import url as url
from tests.webhook_receiver import Reply, WebhookReceiver


@pytest.fixture
async def proxy(url: str) -> AsyncIterator[TcpProxy]:
    p = proxy_for(url)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


def _statuses(receiver: WebhookReceiver, path: str) -> list[str]:
    return [b["status"] for b in bodies(receiver, path)]


async def _history(conn: asyncpg.Connection, alert_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT event FROM alert_history WHERE alert_id = $1 ORDER BY id", alert_id
    )
    return [r["event"] for r in rows]


def _spool(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data" / "alert-spool").glob("*.alerts"))


async def test_an_alert_fires_and_resolves_to_the_receiver_while_the_database_is_away(
    url, conn, receiver, proxy, tmp_path
):
    settings = alert_settings(through(proxy, url), tmp_path)
    secret = new_secret()
    path = "/am"
    await add_webhook(conn, receiver.add(path, secret), secret, fmt="alertmanager")
    async with running(settings) as svc:
        await proxy.cut()
        svc.observe([sample("r1", "cpu", 95)])
        await eventually(
            lambda: _has(receiver, path, ["firing"]), timeout=5, what="firing during the outage"
        )
        assert not proxy.is_up
        firing = bodies(receiver, path)[0]
        assert firing["version"] == "4"
        assert firing["alerts"][0]["labels"]["alertname"] == "cpu-high"
        assert firing["alerts"][0]["labels"]["device"] == "r1"
        assert _spool(tmp_path), "the change waits on disk for the database"
        svc.observe([sample("r1", "cpu", 10)])
        await eventually(
            lambda: _has(receiver, path, ["firing", "resolved"]),
            timeout=5,
            what="resolved during the outage",
        )
        assert svc.direct is not None
        assert svc.direct.stats.delivered == 2
        assert svc.direct.stats.spool_bytes > 0
        delivered_ids = list(receiver.accepted[path])

        await proxy.restore()
        await eventually(lambda: _no_spool(tmp_path), what="the outbox taken into the database")
        (row,) = await alert_rows(conn)
        assert (row["rule"], row["device"], row["state"]) == ("cpu-high", "r1", "resolved")
        history = await _history(conn, row["id"])
        assert history[:2] == ["firing", "resolved"]
        outbox = await conn.fetch("SELECT message_id, state, alert_ids FROM webhook_outbox")
        assert sorted(r["message_id"] for r in outbox) == sorted(delivered_ids)
        assert {r["state"] for r in outbox} == {"delivered"}
        assert all(r["alert_ids"] == [row["id"]] for r in outbox)
        # The deliverer sends none of them again.
        await asyncio.sleep(2.5)
        assert len(receiver.to(path)) == 2
        assert receiver.duplicates == 0
        assert svc.direct.stats.spool_bytes == 0
        # After the outage the engine and the normal path carry on.
        svc.observe([sample("r1", "cpu", 96)])
        await eventually(
            lambda: _has(receiver, path, ["firing", "resolved", "firing"]),
            what="a firing through the outbox",
        )
    assert len(await alert_rows(conn)) == 2


async def test_the_database_away_too_long_is_a_notification_of_its_own(
    url, conn, receiver, proxy, tmp_path
):
    settings = alert_settings(through(proxy, url), tmp_path, database_down_notify_after="1s")
    secret = new_secret()
    path = "/meta"
    await add_webhook(conn, receiver.add(path, secret), secret)
    async with running(settings) as svc:
        await asyncio.sleep(1.5)
        assert bodies(receiver, path) == []
        await proxy.cut()
        await eventually(
            lambda: _has(receiver, path, ["firing"]), timeout=8, what="the meta firing"
        )
        (body,) = bodies(receiver, path)
        assert body["alerts"][0]["rule"] == META_RULE
        assert body["alerts"][0]["summary"] == "netmon: cannot reach the database"
        await proxy.restore()
        await eventually(
            lambda: _has(receiver, path, ["firing", "resolved"]),
            timeout=10,
            what="the meta resolved",
        )
        assert svc.direct is not None
    # Never stored: there was no database to store it in.
    assert await alert_rows(conn) == []


async def test_the_meta_notification_can_be_disabled(url, conn, receiver, proxy, tmp_path):
    settings = alert_settings(through(proxy, url), tmp_path, database_down_notify_after="0s")
    secret = new_secret()
    path = "/quiet"
    await add_webhook(conn, receiver.add(path, secret), secret)
    async with running(settings):
        await proxy.cut()
        await asyncio.sleep(3)
        await proxy.restore()
    assert receiver.to(path) == []


async def test_a_restart_with_a_non_empty_outbox_on_disk_reconciles(
    url, conn, receiver, proxy, tmp_path
):
    settings = alert_settings(through(proxy, url), tmp_path)
    ok, down = new_secret(), new_secret()
    await add_webhook(conn, receiver.add("/ok", ok), ok)
    await add_webhook(conn, receiver.add("/down", down), down)
    receiver.default("/down", Reply(503, "busy"))
    # A netmon of its own, killed (SIGKILL) with the change only on disk.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        through(proxy, url),
        str(tmp_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        await asyncio.wait_for(_ready(proc.stdout), 60)
        await proxy.cut()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        await eventually(lambda: _has(receiver, "/ok", ["firing"]), timeout=5, what="/ok")
        await eventually(lambda: _tried(receiver, "/down"), timeout=5, what="/down tried")
        await eventually(lambda: _marked(tmp_path), timeout=5, what="/ok marked delivered")
    finally:
        proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (spooled,) = _spool(tmp_path)
    entry = json.loads(spooled.read_text())
    by_path = {m["webhook_id"]: m for m in entry["messages"]}
    assert sorted(m["delivered"] for m in by_path.values()) == [False, True]
    assert await alert_rows(conn) == []

    receiver.default("/down", Reply(200))
    await proxy.restore()
    async with running(settings) as svc:
        assert _spool(tmp_path) == []
        (row,) = await alert_rows(conn)
        assert row["state"] == "firing"
        await eventually(lambda: _has(receiver, "/down", ["firing"]), what="the pending one")
        # The message undelivered before the stop goes out under the id it was given then.
        assert receiver.accepted["/down"] == [
            m["message_id"] for m in entry["messages"] if not m["delivered"]
        ]
        # The engine took up the alert from the reconciled row: it resolves, once.
        svc.observe([sample("r1", "cpu", 10)])
        await eventually(
            lambda: _has(receiver, "/ok", ["firing", "resolved"]), what="resolved to /ok"
        )
        await asyncio.sleep(1.5)
    assert _statuses(receiver, "/ok") == ["firing", "resolved"]
    assert receiver.duplicates == 0
    (row,) = await alert_rows(conn)
    assert (await _history(conn, row["id"]))[0] == "firing"
    assert row["state"] == "resolved"


# The child: alerting against the relayed database, a sample once told to, then it waits
# for its SIGKILL.
_CHILD = """
import asyncio, sys
from pathlib import Path
from netmon.alerts.service import AlertService
from netmon.store.database import Database
from tests.test_alerts_flow import alert_settings, sample

async def main():
    settings = alert_settings(sys.argv[1], Path(sys.argv[2]))
    db = Database(settings.database, settings.data_dir)
    await db.start()
    svc = AlertService(db, settings)
    await svc.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    svc.observe([sample("r1", "cpu", 95)])
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def _ready(out: asyncio.StreamReader) -> None:
    # Its log lines come first, on the same stdout.
    while (line := await out.readline()).strip() != b"ready":
        assert line, "the child ended before it was ready"
    # Keep reading, so its logging never blocks on a full pipe.
    task = asyncio.create_task(_drain(out))
    _DRAINS.add(task)
    task.add_done_callback(_DRAINS.discard)


_DRAINS: set[asyncio.Task[None]] = set()


async def _drain(out: asyncio.StreamReader) -> None:
    while await out.read(65536):
        pass


async def _marked(tmp_path: Path) -> bool:
    files = _spool(tmp_path)
    if not files:
        return False
    entry = json.loads(files[0].read_text())
    return any(m["delivered"] for m in entry["messages"])


async def _has(receiver: WebhookReceiver, path: str, statuses: list[str]) -> bool:
    return _statuses(receiver, path) == statuses


async def _tried(receiver: WebhookReceiver, path: str) -> bool:
    return bool(receiver.to(path))


async def _no_spool(tmp_path: Path) -> bool:
    return not _spool(tmp_path)
