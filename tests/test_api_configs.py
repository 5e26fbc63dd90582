"""/api/v1/devices/{id}/configs and /api/v1/configs: listing and paging, the text, diffs
(JSON and text/plain), errors, and site scope, against a real server and database."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from netmon.store.configs import save_config
from netmon.store.devices import DeviceInfo, sync_devices
from tests.api_helpers import Api, api, api_database_url, api_settings
from tests.test_api_access import assert_problem

__all__ = ["api", "api_database_url", "api_settings"]

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CONFIGS = [
    "hostname r0\nsnmp-server community s3cr3t RO\n",
    "hostname r0\nsnmp-server community s3cr3t RO\nntp server 10.0.0.1\n",
    "hostname r0\nntp server 10.0.0.2\n",
]


@dataclass
class Seeded:
    api: Api
    lon: int  # device r0, lon1
    par: int  # device r1, par1
    versions: list[int]  # r0's running versions, oldest first
    startup: int  # r0's startup version
    other: int  # r1's running version


@pytest.fixture
async def seeded(api: Api) -> Seeded:
    await sync_devices(
        api.db,
        [
            DeviceInfo("r0", "127.0.0.1", "lon1", "core", "ios", ()),
            DeviceInfo("r1", "127.0.0.2", "par1", "core", "ios", ()),
        ],
    )
    versions = []
    async with api.db.pool.acquire() as conn:
        for i, text in enumerate(CONFIGS):
            saved = await save_config(
                conn, "r0", "running", "cli", "text", text, T0 + timedelta(minutes=i)
            )
            versions.append(saved.version_id)
        startup = await save_config(conn, "r0", "startup", "cli", "text", CONFIGS[0], T0)
        other = await save_config(conn, "r1", "running", "cli", "text", CONFIGS[0], T0)
    return Seeded(
        api, saved.device_id, other.device_id, versions, startup.version_id, other.version_id
    )


async def test_list_newest_first_without_content_a_page_at_a_time(seeded: Seeded) -> None:
    async with seeded.api.client("viewer") as c:
        r = await c.get(f"/api/v1/devices/{seeded.lon}/configs")
        assert r.status_code == 200, r.text
        body = r.json()
        assert [v["id"] for v in body["items"]] == [seeded.startup, *reversed(seeded.versions)]
        assert body["next_cursor"] is None
        assert all("content" not in v for v in body["items"])
        newest = body["items"][1]
        assert newest["device"] == "r0"
        assert newest["source"] == "running"
        assert newest["previous_id"] == seeded.versions[1]
        assert (newest["lines_added"], newest["lines_removed"]) == (1, 2)

        seen: list[int] = []
        params: dict[str, str | int] = {"limit": 1, "source": "running"}
        while True:
            page = (await c.get(f"/api/v1/devices/{seeded.lon}/configs", params=params)).json()
            seen += [v["id"] for v in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == list(reversed(seeded.versions))


async def test_one_version_with_its_redacted_content(seeded: Seeded) -> None:
    async with seeded.api.client("viewer") as c:
        r = await c.get(f"/api/v1/configs/{seeded.versions[0]}")
        assert r.status_code == 200, r.text
        version = r.json()
        assert version["content"] == "hostname r0\nsnmp-server community <redacted> RO\n"
        assert version["previous_id"] is None
        assert version["format"] == "text"
        assert len(version["sha256"]) == 64


async def test_diff_against_the_previous_version_by_default(seeded: Seeded) -> None:
    first, second, third = seeded.versions
    async with seeded.api.client("viewer") as c:
        r = await c.get(f"/api/v1/configs/{third}/diff")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["from_id"], body["to_id"]) == (second, third)
        assert (body["lines_added"], body["lines_removed"]) == (1, 2)
        assert "-ntp server 10.0.0.1\n" in body["diff"]
        assert "+ntp server 10.0.0.2\n" in body["diff"]

        against = await c.get(f"/api/v1/configs/{third}/diff", params={"against": first})
        assert against.json()["from_id"] == first
        assert against.json()["lines_removed"] == 1

        # The first version: against the empty configuration.
        initial = (await c.get(f"/api/v1/configs/{first}/diff")).json()
        assert initial["from_id"] is None
        assert initial["lines_added"] == 2
        assert initial["diff"].startswith("--- /dev/null\n")

        text = await c.get(f"/api/v1/configs/{third}/diff", headers={"Accept": "text/plain"})
        assert text.status_code == 200
        assert text.headers["content-type"].startswith("text/plain")
        assert text.text == body["diff"]


async def test_diff_errors(seeded: Seeded) -> None:
    third = seeded.versions[2]
    async with seeded.api.client("viewer") as c:
        assert_problem(
            await c.get(f"/api/v1/configs/{third}/diff", params={"against": seeded.other}),
            409,
            "only versions of one device",
        )
        assert_problem(
            await c.get(f"/api/v1/configs/{third}/diff", params={"against": seeded.startup}),
            409,
            "one source",
        )
        assert_problem(
            await c.get(f"/api/v1/configs/{third}/diff", params={"against": 999999}),
            404,
            "configuration version 999999 not found",
        )
        assert_problem(
            await c.get("/api/v1/configs/999999/diff"), 404, "configuration version 999999"
        )
        assert_problem(await c.get("/api/v1/configs/999999"), 404, "configuration version")
        assert_problem(await c.get("/api/v1/devices/999999/configs"), 404, "device 999999")
        assert_problem(
            await c.get(f"/api/v1/devices/{seeded.lon}/configs", params={"cursor": "!"}),
            400,
            "cursor",
        )
        assert_problem(
            await c.get(f"/api/v1/devices/{seeded.lon}/configs", params={"source": "x"}), 400
        )


async def test_another_sites_versions_do_not_exist_for_a_site_token(seeded: Seeded) -> None:
    third = seeded.versions[2]
    async with seeded.api.client("lon1") as c:
        assert (await c.get(f"/api/v1/devices/{seeded.lon}/configs")).status_code == 200
        assert (await c.get(f"/api/v1/configs/{third}")).status_code == 200
        hidden = await c.get(f"/api/v1/devices/{seeded.par}/configs")
        assert_problem(hidden, 404, f"device {seeded.par} not found")
        assert_problem(
            await c.get(f"/api/v1/configs/{seeded.other}"),
            404,
            f"configuration version {seeded.other} not found",
        )
        assert_problem(await c.get(f"/api/v1/configs/{seeded.other}/diff"), 404)
        # Not a 409 naming the other device: it does not exist for this token.
        across = await c.get(f"/api/v1/configs/{third}/diff", params={"against": seeded.other})
        assert_problem(across, 404, f"configuration version {seeded.other} not found")
        assert "r1" not in across.text


async def test_backup_on_demand_asks_the_pollers_and_is_audited(seeded: Seeded) -> None:
    """No poller runs in this API's process: the request is broadcast on netmon_control
    for the poller that polls the device, and the answer lists its newest versions."""
    heard: list[str] = []
    listener = await seeded.api.db.connect()
    await listener.add_listener("netmon_control", lambda *a: heard.append(a[-1]))
    try:
        async with seeded.api.client("operator") as c:
            r = await c.post(f"/api/v1/devices/{seeded.lon}/configs/backup")
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["device"] == "r0"
        assert (body["here"], body["broadcast"], body["ok"]) == (False, True, True)
        newest = {v["source"]: v["id"] for v in body["versions"]}
        assert newest == {"running": seeded.versions[-1], "startup": seeded.startup}
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.05)
        assert any('"config_backup"' in p and '"r0"' in p for p in heard), heard
    finally:
        await listener.close()
    async with seeded.api.db.pool.acquire() as conn:
        audit = await conn.fetchrow(
            "SELECT action, resource, resource_id FROM audit_log ORDER BY id DESC LIMIT 1"
        )
    assert tuple(audit) == ("backup", "device_config", str(seeded.lon))


async def test_backup_on_demand_errors(seeded: Seeded) -> None:
    async with seeded.api.client("viewer") as c:
        r = await c.post(f"/api/v1/devices/{seeded.lon}/configs/backup")
        assert_problem(r, 403)
    async with seeded.api.client("operator") as c:
        r = await c.post("/api/v1/devices/999999/configs/backup")
        assert_problem(r, 404)
    async with seeded.api.client("lon1") as c:  # an operator of lon1 only
        r = await c.post(f"/api/v1/devices/{seeded.par}/configs/backup")
        assert_problem(r, 404)
