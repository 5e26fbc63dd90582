"""The web UI over plain HTTP, against a real server and database: logging in turns a
token into an HttpOnly, SameSite=Strict cookie; the cookie authenticates pages, the JSON
API and the feeds with the same roles and site scope; cookie-borne writes need the CSRF
header and a same-origin Origin; pages escape what they show and carry a strict
Content-Security-Policy; /schema and every asset come from this host; the vendored files
match their manifest and ship in the wheel."""

from __future__ import annotations

import contextlib
import json
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from litestar import Request
from websockets.asyncio.client import connect

from netmon.store.devices import DeviceInfo, sync_devices
from netmon.store.tokens import create_token
from netmon.ui import vendor
from netmon.ui.session import _cookie
from tests.api_helpers import Api, api, api_database_url, api_settings

__all__ = ["api", "api_database_url", "api_settings"]

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "src" / "netmon" / "ui"


def client(api: Api, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.url, timeout=10, **kwargs)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def login(api: Api, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client(api) as c:
        r = await c.post("/login", data={"token": token})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/"
        yield c


async def test_pages_send_a_browser_without_a_cookie_to_the_login_form(api: Api) -> None:
    async with client(api) as c:
        for path in ("/", "/devices", "/devices/1", "/alerts", "/configs"):
            r = await c.get(path)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["location"] == "/login"
        form = await c.get("/login")
        assert form.status_code == 200
        assert '<form method="post" action="/login">' in form.text
        # The API itself still answers 401 problems, not redirects.
        assert (await c.get("/api/v1/devices")).status_code == 401


async def test_login_sets_an_httponly_strict_cookie_and_never_puts_the_token_in_a_url(
    api: Api,
) -> None:
    token = api.tokens["viewer"]
    async with client(api) as c:
        bad = await c.post("/login", data={"token": "nmt_nope"})
        assert bad.status_code == 401
        assert "This token is refused" in bad.text
        assert "set-cookie" not in bad.headers
        r = await c.post("/login", data={"token": token})
        assert r.status_code == 303
        assert token not in r.headers["location"]
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"netmon_token={token};")
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes
        assert "secure" not in attributes  # plain http here; https requests get Secure
        page = await c.get("/")
        assert page.status_code == 200
        assert "test-viewer · viewer" in page.text
        out = await c.post("/logout", headers={"Origin": api.url})
        assert out.status_code == 303
        assert 'netmon_token=""' in out.headers["set-cookie"] or "max-age=0" in (
            out.headers["set-cookie"].lower()
        )
    async with client(api, cookies={"netmon_token": token}) as c:
        assert (
            await c.post("/logout", headers={"Origin": "https://evil.example"})
        ).status_code == 403


async def test_a_revoked_token_in_the_cookie_leads_back_to_the_login_form(api: Api) -> None:
    async with client(api, cookies={"netmon_token": "nmt_000000000000_" + "x" * 43}) as c:
        r = await c.get("/devices")
        assert r.status_code == 303
        assert r.headers["location"] == "/login"
        assert (await c.get("/api/v1/devices")).status_code == 401


async def test_pages_carry_a_csp_without_inline_scripts(api: Api) -> None:
    async with login(api, api.tokens["viewer"]) as c:
        for path in ("/", "/devices", "/devices/1", "/alerts", "/configs", "/login"):
            r = await c.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            script_src = re.search(r"script-src ([^;]*)", csp)
            assert script_src is not None
            assert script_src.group(1).split() == ["'self'"]
            assert "frame-ancestors 'none'" in csp
            assert r.headers["cache-control"] == "no-store"
            # No inline script: every <script> has a src on this host.
            for tag in re.findall(r"<script[^>]*>", r.text):
                assert re.search(r'src="/static/', tag), (path, tag)


async def test_cookie_writes_need_the_csrf_header_and_a_same_origin(api: Api) -> None:
    body = {"matchers": ['device="sw1"'], "duration": "1h"}
    async with login(api, api.tokens["operator"]) as c:
        # An attacker's page can send the cookie (were it not SameSite) but not this header.
        forged = await c.post("/api/v1/silences", json=body)
        assert forged.status_code == 403
        assert "X-Requested-With" in forged.json()["detail"]
        other = await c.post(
            "/api/v1/silences",
            json=body,
            headers={"X-Requested-With": "netmon", "Origin": "https://evil.example"},
        )
        assert other.status_code == 403
        assert "Origin" in other.json()["detail"]
        ok = await c.post(
            "/api/v1/silences", json=body, headers={"X-Requested-With": "netmon", "Origin": api.url}
        )
        assert ok.status_code == 201, ok.text
        # Reads need neither.
        assert (await c.get("/api/v1/silences")).status_code == 200
    # Bearer tokens are not ambient: no CSRF header needed.
    async with api.client("operator") as bearer:
        assert (await bearer.post("/api/v1/silences", json=body)).status_code == 201


async def test_cookie_roles_hold_on_the_api(api: Api) -> None:
    async with login(api, api.tokens["viewer"]) as c:
        r = await c.post(
            "/api/v1/silences",
            json={"matchers": ['device="sw1"'], "duration": "1h"},
            headers={"X-Requested-With": "netmon"},
        )
        assert r.status_code == 403
        assert "needs the operator role" in r.json()["detail"]


async def test_a_site_token_in_the_cookie_sees_only_its_sites(api: Api) -> None:
    await sync_devices(
        api.db,
        [
            DeviceInfo("lon-sw", "10.0.0.1", "lon1", None, None, ()),
            DeviceInfo("par-sw", "10.0.0.2", "par1", None, None, ()),
        ],
    )
    async with login(api, api.tokens["lon1"]) as c:
        names = [d["name"] for d in (await c.get("/api/v1/devices")).json()["items"]]
        assert names == ["lon-sw"]
        page = await c.get("/")
        assert "test-lon1 · operator · lon1" in page.text


async def test_pages_escape_what_they_show(api: Api) -> None:
    async with api.db.pool.acquire() as conn:
        _, token = await create_token(
            conn,
            name="<script>alert(1)</script>",
            role="viewer",
            created_by="test",
            pepper=api.ctx.settings.api.resolved_pepper(),
        )
    async with login(api, token) as c:
        page = await c.get("/")
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_the_feeds_take_the_cookie_from_this_origin_only(api: Api) -> None:
    port = api.server.port
    cookie = {"Cookie": f"netmon_token={api.tokens['viewer']}"}
    async with connect(
        f"ws://127.0.0.1:{port}/ws/events",
        additional_headers={**cookie, "Origin": f"http://127.0.0.1:{port}"},
        open_timeout=10,
    ) as ws:
        await ws.send(json.dumps({"subscribe": {}}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
    # Cross-site WebSocket hijacking: another page opening the feed with the cookie.
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(
            f"ws://127.0.0.1:{port}/ws/events",
            additional_headers={**cookie, "Origin": "https://evil.example"},
            open_timeout=10,
        ):
            pass
    assert refused.value.response.status_code == 403


def _local_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)


async def test_schema_and_all_its_assets_come_from_this_host(api: Api) -> None:
    async with client(api) as c:
        page = await c.get("/schema")
        assert page.status_code == 200
        urls = _local_urls(page.text)
        assert any(u.endswith("swagger-ui-bundle.js") for u in urls), urls
        for url in urls:
            assert url.startswith("/"), f"{url} is not on this host"
            assert not url.startswith("//"), url
            assert (await c.get(url)).status_code == 200, url
        assert "cdn" not in page.text.lower()
        assert (await c.get("/schema/openapi.json")).status_code == 200


async def test_every_asset_a_page_loads_is_served(api: Api) -> None:
    async with login(api, api.tokens["viewer"]) as c:
        for path in ("/", "/devices", "/devices/1", "/alerts", "/configs"):
            for url in _local_urls((await c.get(path)).text):
                if url.startswith("/static/"):
                    assert (await c.get(url)).status_code == 200, url


def test_the_vendored_files_match_their_manifest() -> None:
    assert vendor.check() == []
    packages = {e.package for e in vendor.manifest()}
    for package in packages:
        files = {Path(e.dest).name for e in vendor.manifest() if e.package == package}
        assert "LICENSE" in files, f"{package} ships without its licence"


def test_the_wheel_takes_every_ui_file() -> None:
    """package-data's globs cover every template and static file (a file they miss would
    be absent from an installed netmon and its page broken)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "netmon.ui" in config["packages"]
    patterns = config["package-data"]["netmon.ui"]
    covered = {p for pattern in patterns for p in UI.glob(pattern) if p.is_file()}
    shipped = {
        p for folder in ("templates", "static") for p in (UI / folder).rglob("*") if p.is_file()
    }
    assert shipped - covered == set()


def test_the_cookie_is_secure_when_the_request_came_over_https() -> None:
    def cookie(scheme: str) -> str:
        request: Request[Any, Any, Any] = Request(
            scope={  # type: ignore[typeddict-item]
                "type": "http",
                "scheme": scheme,
                "server": ("netmon.example", 443),
                "path": "/login",
                "query_string": b"",
                "headers": [(b"host", b"netmon.example")],
                "method": "POST",
                "root_path": "",
            }
        )
        return _cookie(request, "nmt_x").to_header().lower()

    assert "; secure" in cookie("https")
    assert "; secure" not in cookie("http")
