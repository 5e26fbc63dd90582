"""The API against its own OpenAPI document: schemathesis, every phase (examples, coverage,
fuzzing, stateful) and every check, over real HTTP to a real server on loopback with a
real database holding devices, series, samples, events and alerting rows.

Run with a token of each role for every site (an admin's operations can each succeed, and
must for some input; a viewer's writes answer 403, as documented) and with an admin token
limited to lon1 (what lies within lon1 can succeed; what reaches every site answers 403),
each with two workers sending at once. The configuration and the hooks, with why each is
there, are tests/schemathesis.toml and tests/schemathesis_hooks.py; a failure prints the
seed and a curl command to replay it.

Not covered here, as an OpenAPI document cannot describe them: the WebSocket feeds
(/ws/*; tests/test_api_feeds.py, tests/test_api_access.py) and /schema itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from netmon.config import load_settings
from netmon.records import DeviceEvent, Sample, SeriesKey
from netmon.store.configs import save_config
from netmon.store.devices import DeviceInfo, sync_devices
from netmon.store.tokens import create_token
from netmon.store.writer import SampleWriter
from tests.api_helpers import Api, api_database_url, running_api
from tests.test_api_access import MATRIX
from tests.test_api_alerts import (
    insert_alert,
    insert_history,
    insert_outbox,
    insert_webhook,
)
from tests.test_api_scope import GLOBAL_ONLY as SCOPE_GLOBAL_ONLY

__all__ = ["api_database_url"]

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
PHASES = "examples,coverage,fuzzing,stateful"
# Cases per operation and phase: about a minute per run on two cores.
MAX_EXAMPLES = {"admin": 60, "operator": 25, "viewer": 25, "lon1-admin": 40}
WORKERS = "2"


# What a viewer may not do (operator and admin routes, from the access matrix): 403
# whatever the input.
def _below(role: str) -> set[str]:
    """What this role may not do (from the access matrix): 403 whatever the input."""
    over = {"viewer": ("operator", "admin"), "operator": ("admin",)}.get(role, ())
    return {
        f"{method} {path}"
        for (method, path), least in MATRIX.items()
        if least in over and method != "WS"
    }


# What a token limited to sites may never do: it reaches every site.
GLOBAL_ONLY = {f"{method} {path}" for method, path in SCOPE_GLOBAL_ONLY}
# Authorised by a signature of the body that only NetBox makes (tests/test_netbox_sync.py
# has NetBox call it): here it must refuse everything, with a 4xx, never a 5xx.
SIGNED = {"POST /api/v1/inventory/netbox/webhook"}
HOOK_ENV = "NETMON_TEST_SCHEMATHESIS_HOOK"


async def seed(api: Api) -> None:
    """Rows for the generated requests to find: inventory devices (which the API may not
    change: 409), devices of the API's own, series with samples, events, configuration
    versions."""
    now = datetime.now(UTC)
    await sync_devices(
        api.db,
        [
            DeviceInfo(
                f"r{i}", f"127.0.0.{i + 1}", ("lon1", "par1")[i % 2], "core", "ios", ("lab",)
            )
            for i in range(4)
        ],
    )
    samples = [
        Sample(SeriesKey.of(f"r{i}", metric, {"interface": iface}), now - timedelta(minutes=k), k)
        for i in range(4)
        for metric in ("ifOperStatus", "ifHCInOctets:rate")
        for iface in ("eth0", "eth1")
        for k in range(5)
    ]
    # Values JSON holds exactly (a 64-bit counter) or not at all (NaN, infinity: null).
    special = (2**64 - 1, 12.5, 0, float("nan"), float("inf"), float("-inf"))
    samples += [
        Sample(SeriesKey.of("r0", "cpu", {}), now - timedelta(seconds=k), value)
        for k, value in enumerate(special)
    ]
    events = [
        DeviceEvent(f"r{i}", now - timedelta(minutes=i), "device.rebooted", "uptime went back")
        for i in range(4)
    ]
    async with SampleWriter(api.db, api.ctx.settings) as writer:
        result = await writer.write(samples, events)
        assert result.stored == len(samples)
    async with api.client("operator") as c:
        for i in range(3):
            made = await c.post("/api/v1/devices", json={"name": f"ext{i}", "site": "lon1"})
            assert made.status_code == 201, made.text
    await seed_alerting(api)
    await seed_configs(api)


async def seed_configs(api: Api) -> None:
    """Configuration versions: two of r0's running configuration (a diff to take), one of
    r1's (a diff across devices: 409)."""
    now = datetime.now(UTC)
    async with api.db.pool.acquire() as conn:
        for device, text in (
            ("r0", "hostname r0\n"),
            ("r0", "hostname r0\nntp server 10.0.0.1\n"),
            ("r1", "hostname r1\n"),
        ):
            await save_config(conn, device, "running", "cli", "text", text, now)


async def seed_alerting(api: Api) -> None:
    """Alerts in every state (firing ones first, so that the small ids the run tries most
    can be acknowledged), rules of the file and the API, a silence, a webhook with
    messages in every state."""
    states = ["firing"] * 4 + ["acknowledged"] * 4 + ["pending", "resolved"]
    ids = [await insert_alert(api.db, device=f"r{i % 4}", state=s) for i, s in enumerate(states)]
    await insert_history(api.db, ids[0], "pending", "firing")
    async with api.client("admin") as c:
        for rule in (
            {"name": "cpu-high", "metric": "cpuUtilization", "value": 90},
            {"name": "poll-slow", "metric": "poll_duration", "value": 30, "for": "5m"},
        ):
            made = await c.post("/api/v1/rules", json=rule)
            assert made.status_code == 201, made.text
        silence = await c.post(
            "/api/v1/silences", json={"matchers": ["site=lon1"], "duration": "1d"}
        )
        assert silence.status_code == 201, silence.text
        # Within lon1, for the run with a token limited to it.
        lon1 = {"name": "lon1-cpu", "metric": "cpuUtilization", "value": 95}
        made = await c.post("/api/v1/rules", json={**lon1, "matchers": ['site="lon1"']})
        assert made.status_code == 201, made.text
    async with api.db.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO alert_rules (name, source, definition, created_by) VALUES "
            """('device-unreachable', 'file', '{"name": "device-unreachable", "kind": "state", """
            """"state": "device_unreachable", "severity": "critical"}', 'builtin')"""
        )
    # A webhook confined to lon1, with messages about lon1's alerts only (r0 and r2): the
    # first ids, which generated requests try most, so that the run limited to lon1 can
    # redeliver one.
    confined = await insert_webhook(api.db, "lon1-noc")
    async with api.db.pool.acquire() as conn:
        await conn.execute(
            """UPDATE webhooks SET matchers = '["site=\\"lon1\\""]' WHERE id = $1""", confined
        )
    lon1_alerts = [a for i, a in enumerate(ids) if i % 2 == 0][:2]
    for state in ("dead", "delivered", "dead", "dead"):
        await insert_outbox(api.db, confined, lon1_alerts, state)
    hook = await insert_webhook(api.db)
    for state in ("dead", "delivered", "pending", "dead", "dead"):
        await insert_outbox(api.db, hook, ids[:2], state)


async def run_schemathesis(api: Api, role: str, report_dir: Path) -> tuple[int, str]:
    scoped = role == "lon1-admin"
    if scoped:
        api.tokens[role] = await scoped_admin(api)
    async with api.db.pool.acquire() as conn:
        ours = [str(r["id"]) for r in await conn.fetch("SELECT id FROM api_tokens")]
        hooks = [str(r["id"]) for r in await conn.fetch("SELECT id FROM webhooks")]
    env = {
        **os.environ,
        "NETMON_API_TOKEN": api.tokens[role],
        "NETMON_PROTECTED_TOKEN_IDS": ",".join(ours),  # the run must not revoke them
        "NETMON_PROTECTED_WEBHOOK_IDS": ",".join(hooks),  # nor delete the seeded webhooks
        "NETMON_SCOPE_SITE": "lon1" if scoped else "",  # bodies made within the token's site
        "PYTHONPATH": str(ROOT),  # for the hooks module
    }
    proc = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{api.url}/schema/openapi.json",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES[role]),
        "--workers",
        WORKERS,
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "ndjson",
        "--report-dir",
        str(report_dir),
        cwd=report_dir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    # The server runs in this event loop: awaiting the process keeps it serving.
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


_STATUS_LINE = re.compile(r"\d{3} [^:]* \(\d+ operations?\):$")


def warnings(out: str) -> set[tuple[str, str]]:
    """(warning, operation) pairs of a run's WARNINGS section (a warning naming no
    operation gives ``(warning, "")``)."""
    found: set[tuple[str, str]] = set()
    section = out.split(" WARNINGS ", 1)[1].split(" SUMMARY ", 1)[0] if " WARNINGS " in out else ""
    title = ""
    for line in section.splitlines()[1:]:
        text = line.strip()
        if not text or text.startswith(("=", "💡")):
            continue
        if text.startswith("- "):
            found.discard((title, ""))
            found.add((title, text[2:].strip()))
        elif title and (line.startswith(("  ", "\t")) or _STATUS_LINE.match(text)):
            # A status line under the warning ("401 Unauthorized (1 operation):"), which
            # schemathesis prints indented or not.
            continue
        else:
            title = text.split(":", 1)[0]
            found.add((title, ""))
    return found


def statuses(report_dir: Path) -> dict[str, Counter[int]]:
    """Status codes answered per documented operation ("GET /api/v1/devices")."""
    (report,) = report_dir.glob("*.ndjson")
    seen: dict[str, Counter[int]] = defaultdict(Counter)
    for line in report.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished is None:
            continue
        recorder = finished["recorder"]
        for case_id, interaction in (recorder.get("interactions") or {}).items():
            case = recorder["cases"][case_id]["value"]
            if interaction.get("response") is not None:
                label = f"{case['method']} {case['path']}"
                seen[label][interaction["response"]["status_code"]] += 1
    return seen


async def scoped_admin(api: Api) -> str:
    async with api.db.pool.acquire() as conn:
        _, token = await create_token(
            conn,
            name="schemathesis-lon1",
            role="admin",
            created_by="test",
            pepper=api.ctx.settings.api.resolved_pepper(),
            sites=["lon1"],
        )
    return token


@pytest.mark.slow
@pytest.mark.parametrize("role", ["viewer", "operator", "admin", "lon1-admin"])
async def test_schemathesis_finds_nothing(
    role: str, api_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOOK_ENV, "schemathesis-never-knows-it")
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        database={"url": api_database_url, "pool_min": 2, "pool_max": 10},
        api={"port": 0, "rate_limit": 0},
        alerts={"webhooks": {"allow": ["127.0.0.1/32"], "retry_for": "2h"}, "group_wait": "45s"},
        inventory={
            "netbox": {
                "url": "http://127.0.0.1:9",  # never called by the API
                "token": {"env": HOOK_ENV},
                "webhook_secret": {"env": HOOK_ENV},
            }
        },
    )
    report_dir = tmp_path / "schemathesis"
    report_dir.mkdir()
    async with running_api(settings) as api:
        await seed(api)
        async with api.client("admin") as c:
            document = (await c.get("/schema/openapi.json")).json()
        documented = {
            f"{method.upper()} {path}"
            for path, item in document["paths"].items()
            for method in item
        }
        code, out = await run_schemathesis(api, role, report_dir)
        assert code == 0, out
        summary = out.strip().splitlines()[-1]  # "== No issues found in 9s ==", "== 1 warning ..."
        assert "failure" not in summary, out
        assert "error" not in summary, out
        if role in ("admin", "lon1-admin"):
            # e.g. operations that only ever saw a 401, or only a 404 (no data to act on);
            # but a token limited to a site is refused what reaches every site, rightly.
            allowed = (GLOBAL_ONLY if role == "lon1-admin" else set()) | SIGNED
            assert warnings(out) <= {("Authentication failed", op) for op in allowed}, out
        # The run kept its credentials: nothing it did revoked them.
        async with api.client(role) as c:
            assert (await c.get("/api/v1/devices")).status_code == 200

    seen = statuses(report_dir)
    assert documented <= set(seen), f"never requested: {documented - set(seen)}"
    assert sum(sum(c.values()) for c in seen.values()) > 1000
    for operation in sorted(documented):
        answered = seen[operation]
        succeeded = sum(n for status, n in answered.items() if 200 <= status < 300)
        refused = _below(role) | (GLOBAL_ONLY if role == "lon1-admin" else set())
        if operation in SIGNED:
            assert succeeded == 0, (operation, answered)
            assert set(answered) <= {400, 401, 413, 415, 429}, (operation, answered)
        elif operation in refused:
            assert succeeded == 0, (operation, answered)
            assert answered[403] > 0, (operation, answered)
        else:
            assert succeeded > 0, f"{operation} never succeeded: {dict(answered)}"
        assert not any(status >= 500 for status in answered), (operation, answered)
