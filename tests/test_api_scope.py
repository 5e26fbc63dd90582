"""Site scope on every route: each operation of the OpenAPI document, for each role, with a
token for every site, one limited to the site of the objects acted on (lon1), and one
limited to another site (par1).

- Below the route's role: 403, whatever the scope.
- A token for every site, and the lon1 token, succeed on lon1's objects; but routes that
  reach every site (``GLOBAL_ONLY``) refuse the lon1 token with 403.
- The par1 token: a lon1 object named in the path is not there (404, worded as for one
  that does not exist); a collection answers without lon1's items; a lon1 object it would
  make is refused (403 or 404) and not made.
- No answer to a scoped token carries anything of another site, of a device without a
  site, or of a global webhook, silence or token (names are chosen to be found: every
  object's name says where it lives). What the request itself named is not counted.

A route the document has but this table does not fails ``test_every_operation_has_a_case``:
a new route cannot escape the check.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from netmon.config import Settings
from netmon.records import DeviceEvent, Sample, SeriesKey
from netmon.store.configs import save_config
from netmon.store.devices import DeviceInfo, sync_devices
from netmon.store.tokens import create_token
from netmon.store.writer import SampleWriter
from tests.api_helpers import Api, api, api_database_url
from tests.test_api_alerts import ALLOWED, alert_settings, insert_alert, insert_outbox

__all__ = ["api", "api_database_url"]

ROLES = ("viewer", "operator", "admin")
SCOPES: tuple[str | None, ...] = (None, "lon1", "par1")
PUBLIC = "public"
# What no token limited to sites may do: it reaches every site.
GLOBAL_ONLY = {("POST", "/api/v1/inventory/reload")}

# Names that say where an object lives. A scoped token must never see another site's,
# a site-less device's or a global object's; global rules ("shared-") it may read.
FOREIGN = {
    "lon1": ("par-", "nosite-", "global-"),
    "par1": ("lon-", "nosite-", "global-"),
}


@pytest.fixture
def api_settings(api_database_url: str, tmp_path: Path) -> Settings:
    return alert_settings(api_database_url, tmp_path / "data")


@dataclass
class World:
    api: Api
    devices: dict[str, int] = field(default_factory=dict)
    tokens: dict[tuple[str, str | None], str] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def name(self, site: str | None = "lon1") -> str:
        prefix = {"lon1": "lon", "par1": "par", None: "global"}[site]
        return f"{prefix}-made-{next(self.counter)}"

    async def setup(self) -> World:
        db = self.api.db
        await sync_devices(
            db,
            [
                DeviceInfo("lon-inv", "127.0.0.1", "lon1", "core", "ios", ()),
                DeviceInfo("par-inv", "127.0.0.2", "par1", "core", "ios", ()),
            ],
        )
        async with self.api.client("admin") as c:
            for name, site in (("lon-dev", "lon1"), ("par-dev", "par1"), ("nosite-dev", None)):
                made = await c.post("/api/v1/devices", json={"name": name, "site": site})
                assert made.status_code == 201, made.text
        now = datetime.now(UTC)
        names = ("lon-inv", "par-inv", "lon-dev", "par-dev", "nosite-dev")
        samples = [
            Sample(SeriesKey.of(d, m, {"interface": "eth0"}), now - timedelta(minutes=k), k)
            for d in names
            for m in ("ifOperStatus", "ifHCInOctets:rate")
            for k in range(3)
        ]
        events = [DeviceEvent(d, now, "device.rebooted", f"{d} rebooted") for d in names]
        async with SampleWriter(db, self.api.ctx.settings) as writer:
            assert (await writer.write(samples, events)).stored == len(samples)
        async with db.pool.acquire() as conn:
            for r in await conn.fetch("SELECT id, name FROM devices"):
                self.devices[r["name"]] = r["id"]
            for device in ("lon-dev", "par-dev", "nosite-dev"):
                await save_config(conn, device, "running", "cli", "text", "hostname x\n", now)
        for site in ("lon1", "par1", None):
            if site is not None:  # a global rule is readable by all: "shared-" below
                await self.rule(site)
            await self.silence(site)
            await self.delivery(site)
            await self.scoped_token(site)
        await self.rule(None, prefix="shared")  # global: readable by every token
        async with self.api.client("admin") as c:  # audit entries of each site
            for device in ("lon-dev", "par-dev", "nosite-dev"):
                r = await c.patch(f"/api/v1/devices/{self.devices[device]}", json={"role": "x"})
                assert r.status_code == 200, r.text
        for role in ROLES:
            for scope in SCOPES:
                self.tokens[(role, scope)] = await self.token(role, scope)
        return self

    async def token(self, role: str, site: str | None) -> str:
        async with self.api.db.pool.acquire() as conn:
            _, token = await create_token(
                conn,
                # Who acts is shown with what they did: not a site's object.
                name=f"{self.name(site) if site else 'all'}-{role}-{next(self.counter)}",
                role=role,  # type: ignore[arg-type]
                created_by="test",
                pepper=self.api.ctx.settings.api.resolved_pepper(),
                sites=[site] if site else None,
            )
        return token

    async def scoped_token(self, site: str | None) -> int:
        async with self.api.db.pool.acquire() as conn:
            row, _ = await create_token(
                conn,
                name=self.name(site),
                role="viewer",
                created_by="test",
                pepper=self.api.ctx.settings.api.resolved_pepper(),
                sites=[site] if site else None,
            )
        return row.id

    @staticmethod
    def matchers(site: str | None) -> list[str]:
        return [f'site="{site}"'] if site else ['severity="critical"']

    async def rule(self, site: str | None, prefix: str | None = None) -> str:
        name = f"{prefix}-rule-{next(self.counter)}" if prefix else self.name(site)
        definition = {"name": name, "metric": "cpu", "value": 1, "matchers": self.matchers(site)}
        async with self.api.db.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO alert_rules (name, source, definition, created_by) "
                "VALUES ($1, 'api', $2::jsonb, 'test')",
                name,
                json.dumps(definition),
            )
        return name

    async def silence(self, site: str | None) -> int:
        now = datetime.now(UTC)
        async with self.api.db.pool.acquire() as conn:
            silence_id: int = await conn.fetchval(
                "INSERT INTO silences (matchers, starts_at, ends_at, comment, created_by) "
                "VALUES ($1::jsonb, $2, $3, $4, 'test') RETURNING id",
                json.dumps(self.matchers(site)),
                now - timedelta(minutes=1),
                now + timedelta(hours=1),
                self.name(site),
            )
        return silence_id

    async def webhook(self, site: str | None) -> int:
        async with self.api.db.pool.acquire() as conn:
            webhook_id: int = await conn.fetchval(
                """
                INSERT INTO webhooks (name, url, secret, format, matchers, group_wait,
                                      group_interval, repeat_interval, created_by)
                VALUES ($1, $2, 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0', 'netmon',
                        $3::jsonb, '30s', '5m', '4h', 'test')
                RETURNING id
                """,
                self.name(site),
                ALLOWED,
                json.dumps(self.matchers(site)),
            )
        return webhook_id

    async def alert(self, site: str | None = "lon1", state: str = "firing") -> int:
        device = {"lon1": "lon-dev", "par1": "par-dev", None: "nosite-dev"}[site]
        return await insert_alert(self.api.db, device=device, state=state, rule=self.name(site))

    async def delivery(self, site: str | None = "lon1") -> int:
        return await insert_outbox(self.api.db, await self.webhook(site), [await self.alert(site)])

    async def config_version(self) -> int:
        async with self.api.db.pool.acquire() as conn:
            saved = await save_config(
                conn,
                "lon-dev",
                "running",
                "cli",
                "text",
                f"hostname {self.name()}\n",
                datetime.now(UTC),
            )
        return saved.version_id

    async def fresh_device(self) -> int:
        async with self.api.client("admin") as c:
            made = await c.post("/api/v1/devices", json={"name": self.name(), "site": "lon1"})
            assert made.status_code == 201, made.text
            return int(made.json()["id"])


@dataclass
class Call:
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)


Maker = Callable[[World], Awaitable[Call]]


async def _const(call: Call) -> Call:
    return call


def fixed(path: str, **kwargs: Any) -> Maker:
    return lambda _w: _const(Call(path, kwargs))


def _with(path: str, key: str, make: Callable[[World], Awaitable[object]], **kw: Any) -> Maker:
    async def maker(w: World) -> Call:
        return Call(path.replace("{" + key + "}", str(await make(w))), kw)

    return maker


def _device(w: World) -> Awaitable[int]:
    return _const(w.devices["lon-dev"])  # type: ignore[return-value]


# Each operation: the least role, and a request on lon1's objects that succeeds for a
# token that may act on them.
CASES: dict[tuple[str, str], tuple[str, Maker]] = {
    ("GET", "/health/live"): (PUBLIC, fixed("/health/live")),
    ("GET", "/health/ready"): (PUBLIC, fixed("/health/ready")),
    ("GET", "/metrics"): ("viewer", fixed("/metrics")),
    ("GET", "/api/v1/devices"): ("viewer", fixed("/api/v1/devices")),
    ("POST", "/api/v1/devices"): (
        "operator",
        lambda w: _const(Call("/api/v1/devices", {"json": {"name": w.name(), "site": "lon1"}})),
    ),
    ("GET", "/api/v1/devices/{device_id}"): (
        "viewer",
        _with("/api/v1/devices/{device_id}", "device_id", _device),
    ),
    ("PATCH", "/api/v1/devices/{device_id}"): (
        "operator",
        _with("/api/v1/devices/{device_id}", "device_id", _device, json={"role": "edge"}),
    ),
    ("DELETE", "/api/v1/devices/{device_id}"): (
        "operator",
        _with("/api/v1/devices/{device_id}", "device_id", lambda w: w.fresh_device()),
    ),
    ("GET", "/api/v1/devices/{device_id}/series"): (
        "viewer",
        _with("/api/v1/devices/{device_id}/series", "device_id", _device),
    ),
    ("GET", "/api/v1/metrics/last"): (
        "viewer",
        fixed("/api/v1/metrics/last", params={"metric": "ifOperStatus"}),
    ),
    ("GET", "/api/v1/metrics/range"): (
        "viewer",
        fixed("/api/v1/metrics/range", params={"metric": "ifOperStatus"}),
    ),
    ("GET", "/api/v1/events"): ("viewer", fixed("/api/v1/events")),
    ("GET", "/api/v1/devices/{device_id}/configs"): (
        "viewer",
        _with("/api/v1/devices/{device_id}/configs", "device_id", _device),
    ),
    ("POST", "/api/v1/devices/{device_id}/configs/backup"): (
        "operator",
        _with("/api/v1/devices/{device_id}/configs/backup", "device_id", _device),
    ),
    ("GET", "/api/v1/configs/{version_id}"): (
        "viewer",
        _with("/api/v1/configs/{version_id}", "version_id", lambda w: w.config_version()),
    ),
    ("GET", "/api/v1/configs/{version_id}/diff"): (
        "viewer",
        _with("/api/v1/configs/{version_id}/diff", "version_id", lambda w: w.config_version()),
    ),
    ("POST", "/api/v1/inventory/reload"): ("operator", fixed("/api/v1/inventory/reload")),
    ("GET", "/api/v1/inventory/sync"): ("viewer", fixed("/api/v1/inventory/sync")),
    # Authorised by NetBox's signature, not a token (tests/test_netbox_sync.py).
    ("POST", "/api/v1/inventory/netbox/webhook"): (
        PUBLIC,
        fixed("/api/v1/inventory/netbox/webhook"),
    ),
    ("GET", "/api/v1/tokens"): ("admin", fixed("/api/v1/tokens")),
    ("POST", "/api/v1/tokens"): (
        "admin",
        lambda w: _const(
            Call(
                "/api/v1/tokens",
                {"json": {"name": w.name(), "role": "viewer", "sites": ["lon1"]}},
            )
        ),
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): (
        "admin",
        _with("/api/v1/tokens/{token_id}", "token_id", lambda w: w.scoped_token("lon1")),
    ),
    ("GET", "/api/v1/audit"): ("admin", fixed("/api/v1/audit")),
    ("GET", "/api/v1/alerts"): ("viewer", fixed("/api/v1/alerts")),
    ("GET", "/api/v1/alerts/{alert_id}"): (
        "viewer",
        _with("/api/v1/alerts/{alert_id}", "alert_id", lambda w: w.alert()),
    ),
    ("POST", "/api/v1/alerts/{alert_id}/ack"): (
        "operator",
        _with("/api/v1/alerts/{alert_id}/ack", "alert_id", lambda w: w.alert()),
    ),
    ("POST", "/api/v1/alerts/{alert_id}/unack"): (
        "operator",
        _with(
            "/api/v1/alerts/{alert_id}/unack",
            "alert_id",
            lambda w: w.alert(state="acknowledged"),
        ),
    ),
    ("GET", "/api/v1/rules"): ("viewer", fixed("/api/v1/rules")),
    ("POST", "/api/v1/rules"): (
        "admin",
        lambda w: _const(
            Call(
                "/api/v1/rules",
                {
                    "json": {
                        "name": w.name(),
                        "metric": "cpu",
                        "value": 1,
                        "matchers": ['site="lon1"'],
                    }
                },
            )
        ),
    ),
    ("GET", "/api/v1/rules/{name}"): (
        "viewer",
        _with("/api/v1/rules/{name}", "name", lambda w: w.rule("lon1")),
    ),
    ("PUT", "/api/v1/rules/{name}"): (
        "admin",
        _with(
            "/api/v1/rules/{name}",
            "name",
            lambda w: w.rule("lon1"),
            json={"metric": "cpu", "value": 2, "matchers": ['site="lon1"']},
        ),
    ),
    ("DELETE", "/api/v1/rules/{name}"): (
        "admin",
        _with("/api/v1/rules/{name}", "name", lambda w: w.rule("lon1")),
    ),
    ("GET", "/api/v1/silences"): ("viewer", fixed("/api/v1/silences")),
    ("POST", "/api/v1/silences"): (
        "operator",
        fixed("/api/v1/silences", json={"matchers": ['site="lon1"'], "duration": "1h"}),
    ),
    ("GET", "/api/v1/silences/{silence_id}"): (
        "viewer",
        _with("/api/v1/silences/{silence_id}", "silence_id", lambda w: w.silence("lon1")),
    ),
    ("POST", "/api/v1/silences/{silence_id}/expire"): (
        "operator",
        _with("/api/v1/silences/{silence_id}/expire", "silence_id", lambda w: w.silence("lon1")),
    ),
    ("GET", "/api/v1/webhooks"): ("admin", fixed("/api/v1/webhooks")),
    ("POST", "/api/v1/webhooks"): (
        "admin",
        lambda w: _const(
            Call(
                "/api/v1/webhooks",
                {"json": {"name": w.name(), "url": ALLOWED, "matchers": ['site="lon1"']}},
            )
        ),
    ),
    ("GET", "/api/v1/webhooks/{webhook_id}"): (
        "admin",
        _with("/api/v1/webhooks/{webhook_id}", "webhook_id", lambda w: w.webhook("lon1")),
    ),
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): (
        "admin",
        _with(
            "/api/v1/webhooks/{webhook_id}",
            "webhook_id",
            lambda w: w.webhook("lon1"),
            json={"send_resolved": False},
        ),
    ),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): (
        "admin",
        _with("/api/v1/webhooks/{webhook_id}", "webhook_id", lambda w: w.webhook("lon1")),
    ),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): (
        "admin",
        _with(
            "/api/v1/webhooks/{webhook_id}/deliveries",
            "webhook_id",
            lambda w: w.webhook("lon1"),
        ),
    ),
    ("POST", "/api/v1/webhooks/deliveries/{outbox_id}/redeliver"): (
        "operator",
        _with(
            "/api/v1/webhooks/deliveries/{outbox_id}/redeliver",
            "outbox_id",
            lambda w: w.delivery("lon1"),
        ),
    ),
}


def _echoed(call: Call) -> list[str]:
    """What the request named itself: an answer may say it back."""
    out = [s for s in call.path.split("/") if s]
    body = call.kwargs.get("json")
    if isinstance(body, dict):
        out += [v for v in body.values() if isinstance(v, str)]
    return sorted(out, key=len, reverse=True)


def foreign_in(text: str, scope: str, call: Call) -> list[str]:
    for said in _echoed(call):
        text = text.replace(said, "")
    return [m for m in FOREIGN[scope] if re.search(rf"(?<![A-Za-z]){re.escape(m)}", text)]


@pytest.fixture
async def world(api: Api) -> World:
    return await World(api).setup()


async def test_every_operation_has_a_case(api: Api) -> None:
    async with api.client(None) as c:
        document = (await c.get("/schema/openapi.json")).json()
    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert documented == set(CASES), (
        f"operations without a case: {sorted(documented - set(CASES))}; "
        f"cases of operations gone: {sorted(set(CASES) - documented)}"
    )


@pytest.mark.slow
async def test_every_route_by_role_and_scope(world: World) -> None:
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=world.api.url, timeout=20) as client:
        for (method, route), (least, make) in CASES.items():
            if least == PUBLIC:
                continue
            for role, scope in itertools.product(ROLES, SCOPES):
                call = await make(world)
                token = world.tokens[(role, scope)]
                r = await client.request(
                    method, call.path, headers={"Authorization": f"Bearer {token}"}, **call.kwargs
                )
                where = f"{method} {route} as {role}@{scope or 'all'}: {r.status_code}"
                problem = _judge(method, route, least, role, scope, r)
                if problem:
                    failures.append(f"{where}: {problem}: {r.text[:300]}")
                if scope is not None and (found := foreign_in(r.text, scope, call)):
                    failures.append(f"{where}: shows {found}: {r.text[:300]}")
    assert not failures, "\n".join(failures)


def _judge(
    method: str, route: str, least: str, role: str, scope: str | None, r: httpx.Response
) -> str | None:
    """What is wrong with the answer, if anything."""
    ok = 200 <= r.status_code < 300
    if ROLES.index(role) < ROLES.index(least):
        return None if r.status_code == 403 else "expected 403 (role)"
    if scope is None:
        return None if ok else "expected success"
    if (method, route) in GLOBAL_ONLY:
        return None if r.status_code == 403 else "expected 403 (reaches every site)"
    if scope == "lon1":
        return None if ok else "expected success (its own site)"
    # par1, on lon1's objects.
    if "{" in route:
        return None if r.status_code == 404 else "expected 404 (another site's object)"
    if method == "GET":
        return None if ok else "expected the collection (without lon1's)"
    return None if r.status_code in (403, 404) else "expected a refusal (403 or 404)"


# -- what the matrix does not spell out -------------------------------------------------


async def test_a_scoped_admin_mints_only_tokens_within_its_sites_and_role(world: World) -> None:
    lon_admin = world.tokens[("admin", "lon1")]
    lon_operator_headers = {"Authorization": f"Bearer {world.tokens[('operator', 'lon1')]}"}
    async with httpx.AsyncClient(
        base_url=world.api.url, headers={"Authorization": f"Bearer {lon_admin}"}
    ) as c:
        for body in (
            {"name": "x1", "role": "admin"},  # every site: the escalation once possible
            {"name": "x2", "role": "viewer", "sites": ["lon1", "par1"]},
            {"name": "x3", "role": "viewer", "sites": ["par1"]},
        ):
            r = await c.post("/api/v1/tokens", json=body)
            assert r.status_code == 403, (body, r.text)
            assert "limited to lon1" in r.json()["detail"]
        made = await c.post(
            "/api/v1/tokens", json={"name": "x4", "role": "admin", "sites": ["lon1"]}
        )
        assert made.status_code == 201, made.text
        assert made.json()["info"]["sites"] == ["lon1"]
        listed = (await c.get("/api/v1/tokens")).json()["items"]
        assert listed
        assert all(t["sites"] == ["lon1"] for t in listed), listed
    async with httpx.AsyncClient(base_url=world.api.url, headers=lon_operator_headers) as c:
        assert (
            await c.post("/api/v1/tokens", json={"name": "x5", "role": "viewer"})
        ).status_code == 403
    # An admin limited to lon1 cannot make a role above its own, either: roles are checked
    # before sites (an operator cannot mint at all: the route is the admin's).
    async with world.api.db.pool.acquire() as conn:
        tokens = await conn.fetch("SELECT name, sites FROM api_tokens WHERE name LIKE 'x%'")
    assert [(r["name"], r["sites"]) for r in tokens] == [("x4", ["lon1"])]


async def test_a_scoped_admin_cannot_touch_global_webhooks_rules_or_silences(world: World) -> None:
    hook = await world.webhook(None)
    silence = await world.silence(None)
    shared = await world.rule(None, prefix="shared")
    lon_admin = {"Authorization": f"Bearer {world.tokens[('admin', 'lon1')]}"}
    async with httpx.AsyncClient(base_url=world.api.url, headers=lon_admin) as c:
        for method, path, body in (
            ("GET", f"/api/v1/webhooks/{hook}", None),
            ("PATCH", f"/api/v1/webhooks/{hook}", {"url": ALLOWED + "2"}),
            ("DELETE", f"/api/v1/webhooks/{hook}", None),
            ("GET", f"/api/v1/webhooks/{hook}/deliveries", None),
            ("GET", f"/api/v1/silences/{silence}", None),
            ("POST", f"/api/v1/silences/{silence}/expire", None),
        ):
            r = await c.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
        # A global rule is read (it acts on lon1's devices too), never changed.
        assert (await c.get(f"/api/v1/rules/{shared}")).status_code == 200
        for method, body in (("PUT", {"metric": "cpu", "value": 5}), ("DELETE", None)):
            r = await c.request(method, f"/api/v1/rules/{shared}", json=body)
            assert r.status_code == 403, (method, r.text)
        # Nor make global ones, or widen its own to every site.
        mine = await world.webhook("lon1")
        for method, path, body in (
            ("POST", "/api/v1/webhooks", {"name": "w1", "url": ALLOWED}),
            (
                "POST",
                "/api/v1/webhooks",
                {"name": "w2", "url": ALLOWED, "matchers": ['site=~".*"']},
            ),
            (
                "POST",
                "/api/v1/webhooks",
                {"name": "w3", "url": ALLOWED, "matchers": ['site="lon1"', 'site!="par1"']},
            ),
            ("PATCH", f"/api/v1/webhooks/{mine}", {"matchers": ['severity="critical"']}),
            ("POST", "/api/v1/rules", {"name": "r1", "metric": "cpu", "value": 1}),
            ("POST", "/api/v1/silences", {"matchers": ['device=~".*"'], "duration": "1h"}),
        ):
            r = await c.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
    async with world.api.db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT url, matchers::text FROM webhooks WHERE id = $1", hook)
        assert row["url"] == ALLOWED
        assert await conn.fetchval("SELECT count(*) FROM webhooks WHERE name LIKE 'w_'") == 0
        assert (
            await conn.fetchval("SELECT matchers::text FROM webhooks WHERE id = $1", mine)
            == '["site=\\"lon1\\""]'
        )


async def test_no_answer_names_another_sites_device(world: World) -> None:
    lon_operator = {"Authorization": f"Bearer {world.tokens[('operator', 'lon1')]}"}
    async with httpx.AsyncClient(base_url=world.api.url, headers=lon_operator) as c:
        taken = await c.post("/api/v1/devices", json={"name": "par-dev", "site": "lon1"})
        free = await c.post("/api/v1/devices", json={"name": "lon-new", "site": "lon1"})
        mine = await c.post("/api/v1/devices", json={"name": "lon-new", "site": "lon1"})
    assert free.status_code == 201
    assert mine.status_code == 409  # its own site's name: it may know
    assert taken.status_code == 404, taken.text  # once a 409 "a device named 'par-dev' exists"
    assert "exists" not in taken.text
    assert "par1" not in taken.text


async def test_a_scoped_operator_may_not_reload_the_inventory(world: World) -> None:
    lon_operator = {"Authorization": f"Bearer {world.tokens[('operator', 'lon1')]}"}
    async with httpx.AsyncClient(base_url=world.api.url, headers=lon_operator) as c:
        r = await c.post("/api/v1/inventory/reload")
    assert r.status_code == 403, r.text
    assert "every site" in r.json()["detail"]
    async with world.api.db.pool.acquire() as conn:
        reloads = await conn.fetchval("SELECT count(*) FROM audit_log WHERE resource = 'inventory'")
    assert reloads == 0


async def test_audit_entries_carry_their_sites(world: World) -> None:
    async with world.api.db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT resource_id, sites FROM audit_log "
            "WHERE resource = 'device' AND action = 'update'"
        )
    by_device = {r["resource_id"]: r["sites"] for r in rows}
    assert by_device == {
        str(world.devices["lon-dev"]): ["lon1"],
        str(world.devices["par-dev"]): ["par1"],
        str(world.devices["nosite-dev"]): None,
    }
    async with world.api.client("admin") as c:
        moved = await c.patch(f"/api/v1/devices/{world.devices['lon-dev']}", json={"site": "par1"})
        assert moved.status_code == 200
    for scope in ("lon1", "par1"):
        headers = {"Authorization": f"Bearer {world.tokens[('admin', scope)]}"}
        async with httpx.AsyncClient(base_url=world.api.url, headers=headers) as c:
            entries = (await c.get("/api/v1/audit", params={"resource": "device"})).json()["items"]
        # The move touched both sites: neither site's admin alone may read it.
        assert entries
        assert {tuple(e["sites"]) for e in entries} == {(scope,)}
        assert not [
            e
            for e in entries
            if e["before"] and e["after"] and e["after"]["site"] != e["before"]["site"]
        ]
