"""The inventory sync against the real database: retire (no ghosts), ownership per source
and poller, the mass-retirement guard, renames by identity, silences, cables, dry runs,
and two pollers sharing one database.

The NetBox source itself is tested against a real NetBox (tests/test_netbox_sync.py);
here the hosts are given directly, as any source gives them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from netmon.alerts.engine import AlertEngine, DeviceAttrs
from netmon.alerts.rules import BUILTIN_RULES, Rule
from netmon.cli.main import app
from netmon.config import Settings
from netmon.inventory.model import Cable, Fetched, InventoryHost, MaintenanceWindow, Skipped
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.inventory import SourceKey, apply_sync
from tests.api_helpers import api_database_url
from tests.poller_helpers import poller_settings, running_poller

__all__ = ["api_database_url"]

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def hosts(*names: str, **kw: object) -> list[InventoryHost]:
    return [InventoryHost(name=n, external_id=f"ext:{n}", address="192.0.2.1", **kw) for n in names]  # type: ignore[arg-type]


async def sync(conn: asyncpg.Connection, key: SourceKey, fetched: Fetched, **kw: object) -> object:
    async with conn.transaction():
        return await apply_sync(conn, key, fetched, now=NOW, **kw)  # type: ignore[arg-type]


async def devices(conn: asyncpg.Connection) -> dict[str, tuple[str | None, str | None, str]]:
    rows = await conn.fetch("SELECT name, owner, poller, lifecycle FROM devices ORDER BY name")
    return {r["name"]: (r["owner"], r["poller"], r["lifecycle"]) for r in rows}


NB = SourceKey("netbox", "p1")


async def test_hosts_that_leave_are_retired_never_released_and_come_back(conn) -> None:
    await sync(conn, NB, Fetched(hosts("a", "b", "c")))
    result = await sync(conn, NB, Fetched(hosts("a", "b")))
    assert [r.name for r in result.diff.retired] == ["c"]
    assert (await devices(conn))["c"] == ("netbox", "p1", "retired")
    row = await conn.fetchrow("SELECT retired_at, retired_reason FROM devices WHERE name = 'c'")
    assert row["retired_at"] == NOW
    assert row["retired_reason"] == "left the netbox inventory"
    again = await sync(conn, NB, Fetched(hosts("a", "b", "c")))
    assert [c.host.name for c in again.diff.changed] == ["c"]
    assert (await devices(conn))["c"] == ("netbox", "p1", "active")
    assert await conn.fetchval("SELECT retired_at FROM devices WHERE name = 'c'") is None


async def test_a_rename_at_the_source_keeps_the_row_and_its_history(conn) -> None:
    await sync(conn, NB, Fetched(hosts("old")))
    device_id = await conn.fetchval("SELECT id FROM devices WHERE name = 'old'")
    renamed = InventoryHost(name="new", external_id="ext:old", address="192.0.2.1")
    result = await sync(conn, NB, Fetched([renamed]))
    assert [c.fields for c in result.diff.changed] == [("name",)]
    assert await conn.fetchval("SELECT id FROM devices WHERE name = 'new'") == device_id
    assert await conn.fetchval("SELECT count(*) FROM devices") == 1


async def test_two_renames_may_swap_names(conn) -> None:
    await sync(conn, NB, Fetched(hosts("x", "y")))
    ids = dict(await conn.fetch("SELECT name, id FROM devices"))
    swapped = [
        InventoryHost(name="y", external_id="ext:x", address="192.0.2.1"),
        InventoryHost(name="x", external_id="ext:y", address="192.0.2.1"),
    ]
    await sync(conn, NB, Fetched(swapped))
    assert dict(await conn.fetch("SELECT name, id FROM devices")) == {
        "x": ids["y"],
        "y": ids["x"],
    }


async def test_the_guard_retires_nothing_when_far_fewer_come_back(conn) -> None:
    names = [f"d{i}" for i in range(10)]
    await sync(conn, NB, Fetched(hosts(*names)))
    held = await sync(conn, NB, Fetched(hosts(*names[:6])), guard=0.3)
    assert held.held
    assert "4 of 10" in held.held_reason
    assert [r.name for r in held.held_back] == names[6:]
    assert {v[2] for v in (await devices(conn)).values()} == {"active"}
    # Within the guard: three of ten.
    ok = await sync(conn, NB, Fetched(hosts(*names[:7])), guard=0.3)
    assert not ok.held
    assert sorted(r.name for r in ok.diff.retired) == names[7:]
    # An incremental read is not a count of what the source holds: no guard.
    partial = await sync(
        conn, NB, Fetched([], complete=False), requested=["ext:d0", "ext:d1"], guard=0.3
    )
    assert sorted(r.name for r in partial.diff.retired) == ["d0", "d1"]


async def test_a_skipped_host_keeps_its_row_as_it_was(conn) -> None:
    await sync(conn, NB, Fetched(hosts("good", "bad")))
    bad = Skipped("bad", "ext:bad", "secret_value", "bad: netmon.snmp.auth.key: inline")
    result = await sync(conn, NB, Fetched(hosts("good"), skipped=[bad]))
    assert result.diff.retired == []
    assert [s.reason for s in result.skipped] == ["secret_value"]
    assert (await devices(conn))["bad"] == ("netbox", "p1", "active")


async def test_two_sources_and_two_pollers_keep_their_own_devices(conn) -> None:
    p2 = SourceKey("netbox", "p2")
    yaml1 = SourceKey("yaml", "p1")
    await sync(conn, NB, Fetched(hosts("a1", "a2")))
    await sync(conn, p2, Fetched(hosts("b1")))
    await sync(conn, yaml1, Fetched(hosts("y1")))
    # Each sync again with only its own hosts: nobody releases or retires another's.
    await sync(conn, NB, Fetched(hosts("a1", "a2")))
    await sync(conn, p2, Fetched(hosts("b1")))
    assert await devices(conn) == {
        "a1": ("netbox", "p1", "active"),
        "a2": ("netbox", "p1", "active"),
        "b1": ("netbox", "p2", "active"),
        "y1": ("yaml", "p1", "active"),
    }
    # A name another poller holds is skipped, saying whose it is.
    taken = await sync(conn, p2, Fetched(hosts("b1", "a1")))
    [skipped] = taken.skipped
    assert skipped.reason == "owned"
    assert "netbox inventory of poller p1" in skipped.message
    assert (await devices(conn))["a1"] == ("netbox", "p1", "active")
    # Once retired by its poller, the name is free to take.
    await sync(conn, NB, Fetched(hosts("a2")))
    took = await sync(conn, p2, Fetched(hosts("b1", "a1")))
    assert [c.host.name for c in took.diff.changed] == ["a1"]
    assert (await devices(conn))["a1"] == ("netbox", "p2", "active")


async def test_concurrent_syncs_of_two_pollers_neither_fail_nor_mix(db: Database) -> None:
    async def one(poller: str, prefix: str) -> None:
        for round_ in range(5):
            names = [f"{prefix}{i}" for i in range(20 - round_)]
            async with db.pool.acquire() as conn, conn.transaction():
                await apply_sync(conn, SourceKey("yaml", poller), Fetched(hosts(*names)))

    await asyncio.gather(one("p1", "a"), one("p2", "b"), one("p1", "a"))
    async with db.pool.acquire() as conn:
        rows = await devices(conn)
    assert {n for n, v in rows.items() if v[2] == "active"} == {
        *(f"a{i}" for i in range(16)),
        *(f"b{i}" for i in range(16)),
    }
    assert all(v[1] == ("p1" if n.startswith("a") else "p2") for n, v in rows.items())


async def test_api_rows_and_the_old_inventorys_rows_are_taken_up_by_name(conn) -> None:
    await conn.execute(
        "INSERT INTO devices (name, owner) VALUES ('api-made', NULL), ('legacy', 'yaml')"
    )
    result = await sync(conn, SourceKey("yaml", "p1"), Fetched(hosts("api-made", "legacy")))
    assert sorted(c.host.name for c in result.diff.changed) == ["api-made", "legacy"]
    assert await devices(conn) == {
        "api-made": ("yaml", "p1", "active"),
        "legacy": ("yaml", "p1", "active"),
    }


async def test_a_dry_run_writes_nothing(conn) -> None:
    await sync(conn, NB, Fetched(hosts("a", "b")))
    before = await devices(conn)
    audit = await conn.fetchval("SELECT count(*) FROM audit_log")
    result = await sync(conn, NB, Fetched(hosts("b", "c")), dry_run=True)
    assert result.diff.summary() == {
        "added": ["c"],
        "changed": [],
        "retired": ["a"],
        "unchanged": 1,
    }
    assert await devices(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == audit


async def test_every_change_is_audited_under_the_source(conn) -> None:
    await sync(conn, NB, Fetched(hosts("a", "b")))
    await sync(conn, NB, Fetched(hosts("a", site="ams")))
    rows = await conn.fetch("SELECT actor, action, before, after, sites FROM audit_log ORDER BY id")
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("inventory:netbox@p1", "create"),
        ("inventory:netbox@p1", "create"),
        ("inventory:netbox@p1", "update"),
        ("inventory:netbox@p1", "retire"),
    ]
    assert json.loads(rows[2]["after"])["site"] == "ams"
    assert rows[2]["sites"] == ["ams"]


async def test_muted_and_maintenance_become_silences_and_end_with_them(conn) -> None:
    window = MaintenanceWindow(NOW + timedelta(hours=1), NOW + timedelta(hours=3), "change 42")
    await sync(
        conn,
        NB,
        Fetched(
            [
                InventoryHost(
                    "m1", "ext:m1", "192.0.2.1", lifecycle="muted", note="status offline"
                ),
                InventoryHost("w1", "ext:w1", "192.0.2.1", maintenance=(window,)),
            ]
        ),
    )
    rows = await conn.fetch(
        "SELECT name, source, matchers, starts_at, ends_at, comment FROM silences ORDER BY name"
    )
    assert [r["source"] for r in rows] == ["inventory", "inventory"]
    muted, maintenance = rows
    assert json.loads(muted["matchers"]) == ['device="m1"']
    assert "status offline" in muted["comment"]
    assert json.loads(maintenance["matchers"]) == ['device="w1"']
    assert (maintenance["starts_at"], maintenance["ends_at"]) == (window.starts_at, window.ends_at)
    assert maintenance["comment"] == "change 42"
    # Active again, window gone: the silences go; a retired device's go too.
    await sync(conn, NB, Fetched(hosts("m1", "w1")))
    assert await conn.fetchval("SELECT count(*) FROM silences") == 0


async def test_cables_between_synced_devices_are_stored_by_identity(conn) -> None:
    cables = [
        Cable("dcim.cable:1", "ext:a", "eth0", "ext:b", "eth0"),
        Cable("dcim.cable:2", "ext:a", "eth1", "ext:elsewhere", "eth9"),  # not synced: left out
    ]
    await sync(conn, NB, Fetched(hosts("a", "b"), cables=cables))
    rows = await conn.fetch(
        """
        SELECT c.external_id, a.name AS a, c.a_port, b.name AS b, c.b_port
        FROM inventory_cables c JOIN devices a ON a.id = c.a_device_id
        JOIN devices b ON b.id = c.b_device_id
        """
    )
    assert [tuple(r) for r in rows] == [("dcim.cable:1", "a", "eth0", "b", "eth0")]
    await sync(conn, NB, Fetched(hosts("a", "b"), cables=[]))
    assert await conn.fetchval("SELECT count(*) FROM inventory_cables") == 0


def test_alerts_of_a_retired_device_resolve_saying_why() -> None:
    rule = Rule.from_spec(next(s for s in BUILTIN_RULES if s.name == "device-unreachable"), "x")
    engine = AlertEngine([rule], devices={"r1": DeviceAttrs(), "r2": DeviceAttrs()})
    key = SeriesKey.of("r1", "up", {})
    fired = engine.observe([Sample(key, NOW, 0)])
    assert [t.event for t in fired] == ["firing"]
    resolved = engine.set_devices(
        {"r2": DeviceAttrs()}, {"r1": "device retired: left the netbox inventory"}
    )
    assert [(t.event, t.device, t.detail) for t in resolved] == [
        ("resolved", "r1", "device retired: left the netbox inventory")
    ]
    # The sync's own alerts (inventory/<source>) are not a device's, and stay.
    assert engine.set_devices({"r2": DeviceAttrs()}) == []


# -- the YAML folder, through the poller and the CLI -------------------------------------


def write_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    hosts_yaml = "".join(
        f"{n}:\n  hostname: 127.0.0.1\n  port: 9\n  data: {{tasks: [system], site: s1}}\n"
        for n in names
    )
    (folder / "hosts.yaml").write_text(hosts_yaml)
    (folder / "defaults.yaml").write_text(
        "data:\n  snmp:\n    version: 2c\n    community: {env: NETMON_TEST_COMMUNITY}\n"
    )
    return folder


@pytest.fixture
def community(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETMON_TEST_COMMUNITY", "public")


async def test_shrinking_the_yaml_inventory_leaves_no_ghosts_and_two_pollers_share(
    db: Database, settings: Settings, tmp_path: Path, community: None
) -> None:
    big = write_folder(tmp_path / "a", [f"lab-{i:03d}" for i in range(30)])
    other = write_folder(tmp_path / "b", ["other-1", "other-2"])
    s1 = poller_settings(settings, interval="1h")
    s1 = s1.model_copy(update={"inventory": s1.inventory.model_copy(update={"poller_id": "p1"})})
    s2 = s1.model_copy(
        update={
            "inventory": s1.inventory.model_copy(update={"poller_id": "p2"}),
            "data_dir": tmp_path / "p2",
        }
    )
    async with running_poller(s1, db, big) as first, running_poller(s2, db, other) as second:
        assert first.poller is not None
        assert second.poller is not None
        assert first.poller.devices == 30
        write_folder(big, [f"lab-{i:03d}" for i in range(3)])
        outcome = await first.reload()
        assert outcome.ok
        assert outcome.devices == 3
        await second.reload()
        async with db.pool.acquire() as conn:
            rows = await devices(conn)
        assert sum(1 for v in rows.values() if v[2] == "retired") == 27
        assert {n for n, v in rows.items() if v[2] == "active"} == {
            "lab-000",
            "lab-001",
            "lab-002",
            "other-1",
            "other-2",
        }
        assert rows["other-1"] == ("yaml", "p2", "active")
        assert sorted(first.poller.device_names) == ["lab-000", "lab-001", "lab-002"]
        runs = await db.pool.fetch(
            "SELECT poller, kind, ok, retired FROM inventory_sync_runs ORDER BY id"
        )
        assert [tuple(r) for r in runs][-2:] == [("p1", "full", True, 27), ("p2", "full", True, 0)]


def test_cli_dry_run_json_then_sync_then_purge(
    api_database_url: str, tmp_path: Path, community: None, restore_logging: None
) -> None:
    folder = write_folder(tmp_path / "inv", ["r1", "r2"])
    config = tmp_path / "netmon.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"database: {{url: '{api_database_url}'}}\n"
        f"poller: {{inventory: {folder}}}\n"
        "inventory: {poller_id: cli}\n"
        "log: {level: error}\n"
    )
    runner = CliRunner()
    dry = runner.invoke(app, ["-c", str(config), "inventory", "sync", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == {
        "added": ["r1", "r2"],
        "changed": [],
        "retired": [],
        "unchanged": 0,
    }
    done = runner.invoke(app, ["-c", str(config), "inventory", "sync"])
    assert done.exit_code == 0, done.output
    assert "2 were added" in done.stdout
    write_folder(folder, ["r1"])
    table = runner.invoke(app, ["-c", str(config), "inventory", "sync", "--dry-run"])
    assert "retire" in table.stdout
    assert "r2" in table.stdout
    assert runner.invoke(app, ["-c", str(config), "inventory", "sync"]).exit_code == 0
    kept = runner.invoke(app, ["-c", str(config), "devices", "purge", "--dry-run"])
    assert kept.exit_code == 0
    assert kept.stdout == ""  # retired just now: within the grace
    purged = runner.invoke(app, ["-c", str(config), "devices", "purge", "--older-than", "0s"])
    assert purged.exit_code == 0, purged.output
    assert purged.stdout.split() == ["r2"]
    again = runner.invoke(app, ["-c", str(config), "inventory", "sync", "--dry-run", "--json"])
    assert json.loads(again.stdout)["unchanged"] == 1
    # A poller gone for good: its devices retire, for another poller to take over.
    gone = runner.invoke(app, ["-c", str(config), "inventory", "retire-poller", "cli"])
    assert gone.exit_code == 0, gone.output
    assert gone.stdout.split() == ["r1"]
    back = runner.invoke(app, ["-c", str(config), "inventory", "sync", "--dry-run", "--json"])
    assert json.loads(back.stdout)["changed"] == ["r1"]
    broken = tmp_path / "inv" / "hosts.yaml"
    broken.write_text("r1: [not, a, host\n")
    failed = runner.invoke(app, ["-c", str(config), "inventory", "sync"])
    assert failed.exit_code != 0
    assert "hosts.yaml" in failed.output
