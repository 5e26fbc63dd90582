"""Configuration backups in PostgreSQL (both servers): versions only when the text changes,
last_seen otherwise, the change event stored and published at commit, diffs, redaction."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from netmon.store.configs import (
    CONFIG_CHANGED,
    REDACTED,
    XML_PATTERNS,
    DifferentDevicesError,
    VersionNotFoundError,
    config_diff,
    diff,
    get_version,
    list_versions,
    redact,
    save_config,
)
from netmon.store.database import Database
from netmon.store.notify import EVENTS_CHANNEL, decode_events

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
V1 = "hostname r1\ninterface eth0\n description uplink\n!\nend\n"
V2 = "hostname r1\ninterface eth0\n description core uplink\n mtu 9000\n!\nend\n"


async def events(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT kind, severity, message, attributes::text AS attributes FROM device_events "
        "ORDER BY id"
    )


async def test_first_version_is_stored_without_an_event(conn: asyncpg.Connection) -> None:
    result = await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    assert result.changed
    assert result.first
    assert result.event is None
    assert (result.lines_added, result.lines_removed) == (0, 0)
    version = await get_version(conn, result.version_id)
    assert version is not None
    assert version.content == V1
    assert version.previous_id is None
    assert version.size == len(V1.encode())
    assert version.collected_at == version.last_seen_at == T0
    assert version.device == "r1"
    assert await events(conn) == []


async def test_unchanged_is_not_stored_again_but_last_seen_moves(
    conn: asyncpg.Connection,
) -> None:
    first = await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    again = await save_config(conn, "r1", "running", "cli", "text", V1, T0 + timedelta(hours=1))
    assert not again.changed
    assert again.version_id == first.version_id
    assert await conn.fetchval("SELECT count(*) FROM config_versions") == 1
    version = await get_version(conn, first.version_id)
    assert version is not None
    assert version.collected_at == T0
    assert version.last_seen_at == T0 + timedelta(hours=1)
    # Another source of the same text is a version of its own.
    startup = await save_config(conn, "r1", "startup", "cli", "text", V1, T0)
    assert startup.changed
    assert startup.first
    assert await events(conn) == []


async def test_a_change_is_a_new_version_with_an_event_published_at_commit(
    db: Database, conn: asyncpg.Connection
) -> None:
    first = await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await db.connect()
    try:
        await listener.add_listener(EVENTS_CHANNEL, lambda *args: heard.put_nowait(args[3]))
        async with conn.transaction():
            second = await save_config(conn, "r1", "running", "cli", "text", V2, T0)
            await asyncio.sleep(0.2)
            assert heard.empty(), "sent before the commit"
        payload = await asyncio.wait_for(heard.get(), timeout=5)
    finally:
        await listener.close()

    assert second.changed
    assert not second.first
    assert (second.lines_added, second.lines_removed) == (2, 1)
    version = await get_version(conn, second.version_id)
    assert version is not None
    assert version.previous_id == first.version_id
    assert (version.lines_added, version.lines_removed) == (2, 1)

    (event,) = decode_events(payload)
    assert event == second.event
    assert event.kind == CONFIG_CHANGED
    assert event.device == "r1"
    assert event.attributes["version_id"] == str(second.version_id)
    assert event.attributes["previous_id"] == str(first.version_id)
    (stored,) = await events(conn)
    assert stored["kind"] == CONFIG_CHANGED
    assert stored["severity"] == "info"
    assert stored["message"] == (
        f"running configuration changed: version {second.version_id} (+2/-1 lines)"
    )
    assert json.loads(stored["attributes"]) == event.attributes


async def test_a_rolled_back_change_is_neither_stored_nor_published(
    db: Database, conn: asyncpg.Connection
) -> None:
    await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await db.connect()
    try:
        await listener.add_listener(EVENTS_CHANNEL, lambda *args: heard.put_nowait(args[3]))
        with pytest.raises(RuntimeError):
            await save_and_fail(conn)
        await asyncio.sleep(0.3)
        assert heard.empty()
    finally:
        await listener.close()
    assert await conn.fetchval("SELECT count(*) FROM config_versions") == 1
    assert await events(conn) == []


async def save_and_fail(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await save_config(conn, "r1", "running", "cli", "text", V2, T0)
        raise RuntimeError("roll back")


async def test_going_back_to_an_earlier_config_is_a_new_version(
    conn: asyncpg.Connection,
) -> None:
    a = await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    b = await save_config(conn, "r1", "running", "cli", "text", V2, T0 + timedelta(minutes=1))
    c = await save_config(conn, "r1", "running", "cli", "text", V1, T0 + timedelta(minutes=2))
    assert c.changed
    assert len({a.version_id, b.version_id, c.version_id}) == 3
    assert c.sha256 == a.sha256
    assert (c.lines_added, c.lines_removed) == (1, 2)
    listed = await list_versions(conn, a.device_id, limit=10)
    assert [v.id for v in listed] == [c.version_id, b.version_id, a.version_id]
    assert all(v.content is None for v in listed)
    assert [v.previous_id for v in listed] == [b.version_id, a.version_id, None]
    # Keyset paging: the page after the newest.
    page = await list_versions(conn, a.device_id, limit=1, before=c.version_id)
    assert [v.id for v in page] == [b.version_id]
    assert await list_versions(conn, a.device_id, limit=10, source="startup") == []
    assert len(await events(conn)) == 2


async def test_diff_between_versions(conn: asyncpg.Connection) -> None:
    a = await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    b = await save_config(conn, "r1", "running", "cli", "text", V2, T0)
    text = await diff(conn, a.version_id, b.version_id)
    assert text.startswith(f"--- r1 running version {a.version_id}\n")
    assert f"+++ r1 running version {b.version_id}\n" in text
    assert "- description uplink\n" in text
    assert "+ description core uplink\n" in text
    assert "+ mtu 9000\n" in text
    back = await diff(conn, b.version_id, a.version_id)
    assert "+ description uplink\n" in back
    assert await diff(conn, a.version_id, a.version_id) == ""
    assert config_diff("x\n", "x\ny").lines_added == 1


async def test_a_diff_across_devices_or_of_a_missing_version_is_refused(
    conn: asyncpg.Connection,
) -> None:
    a = await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    other = await save_config(conn, "r2", "running", "cli", "text", V1, T0)
    startup = await save_config(conn, "r1", "startup", "cli", "text", V1, T0)
    with pytest.raises(DifferentDevicesError, match="only versions of one device"):
        await diff(conn, a.version_id, other.version_id)
    with pytest.raises(DifferentDevicesError, match="one source"):
        await diff(conn, a.version_id, startup.version_id)
    with pytest.raises(VersionNotFoundError, match="999999"):
        await diff(conn, a.version_id, 999999)
    assert await get_version(conn, 999999) is None


async def test_versions_go_with_their_device(conn: asyncpg.Connection) -> None:
    a = await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    await conn.execute("DELETE FROM devices WHERE id = $1", a.device_id)
    assert await conn.fetchval("SELECT count(*) FROM config_versions") == 0


# -- redaction ---------------------------------------------------------------------------

SECRETS = """\
hostname r1
enable secret 5 $1$abcd$EFGHIJKLmnop
username admin privilege 15 secret 9 $9$xyzXYZ
username ops password 7 0822455D0A16
snmp-server community s3cr3tRO RO
snmp-server community Wr1te RW 10
tacacs-server key 7 045802150C2E
radius-server key plainkey
key chain OSPF
 key 1
  key-string 7 13061E010803
ntp authentication-key 1 md5 1234ABCD 7
crypto isakmp key PSKvalue address 0.0.0.0
set system root-authentication encrypted-password "$6$junos$hash"
set snmp community junosComm authorization read-only
interface eth0
 description password reset desk
"""


def test_redact_blanks_the_common_cli_secrets() -> None:
    out = redact(SECRETS)
    for secret in (
        "$1$abcd$EFGHIJKLmnop",
        "$9$xyzXYZ",
        "0822455D0A16",
        "s3cr3tRO",
        "Wr1te",
        "045802150C2E",
        "plainkey",
        "13061E010803",
        "1234ABCD",
        "PSKvalue",
        "$6$junos$hash",
        "junosComm",
    ):
        assert secret not in out, secret
    assert f"enable secret 5 {REDACTED}\n" in out
    assert f"snmp-server community {REDACTED} RW 10\n" in out
    assert f"username ops password 7 {REDACTED}\n" in out
    assert f"crypto isakmp key {REDACTED} address 0.0.0.0\n" in out
    assert "key chain OSPF\n" in out  # a name, not a secret
    assert out.startswith("hostname r1\n")
    assert out.endswith("interface eth0\n description password reset desk\n")
    assert " key 1\n" in out  # a key id, not a secret
    assert len(out.splitlines()) == len(SECRETS.splitlines())
    assert redact(out) == out  # idempotent: the hash of redacted text is stable


def test_redact_blanks_secret_elements_in_xml() -> None:
    xml = (
        "<config><system><login><user><name>admin</name><authentication>"
        '<encrypted-password xmlns="urn:x">$6$hash</encrypted-password>'
        "</authentication></user></login></system>"
        "<snmp><community-name>public</community-name></snmp>"
        "<aaa><ns:secret>t0ps3cret</ns:secret></aaa></config>"
    )
    out = redact(xml, XML_PATTERNS, "&lt;redacted&gt;")
    assert "$6$hash" not in out
    assert "public" not in out
    assert "t0ps3cret" not in out
    assert "<name>admin</name>" in out
    assert "<ns:secret>&lt;redacted&gt;</ns:secret>" in out
    assert redact(out, XML_PATTERNS, "&lt;redacted&gt;") == out


async def test_save_config_stores_only_redacted_text(conn: asyncpg.Connection) -> None:
    a = await save_config(conn, "r1", "running", "cli", "text", SECRETS, T0)
    version = await get_version(conn, a.version_id)
    assert version is not None
    assert version.content == redact(SECRETS)
    assert "s3cr3tRO" not in await conn.fetchval("SELECT content FROM config_versions")
    # Only a secret changed: the stored text did not, so no new version.
    again = await save_config(
        conn, "r1", "running", "cli", "text", SECRETS.replace("s3cr3tRO", "other"), T0
    )
    assert not again.changed
    xml = await save_config(
        conn, "r1", "running", "netconf", "xml", "<c><password>pw</password></c>", T0
    )
    stored = await get_version(conn, xml.version_id)
    assert stored is not None
    assert stored.content == "<c><password>&lt;redacted&gt;</password></c>"


async def test_concurrent_saves_of_one_device_form_one_chain(db: Database) -> None:
    async def one(i: int) -> None:
        async with db.pool.acquire() as conn:
            await save_config(conn, "r1", "running", "cli", "text", f"hostname r{i}\n", T0)

    async with db.pool.acquire() as conn:
        await save_config(conn, "r1", "running", "cli", "text", V1, T0)
    await asyncio.gather(*(one(i) for i in range(8)))
    async with db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, previous_id FROM config_versions ORDER BY id")
        assert len(rows) == 9
        # Each version follows the one stored just before it: no two share a previous one.
        assert [r["previous_id"] for r in rows] == [None, *(r["id"] for r in rows[:-1])]
        assert await conn.fetchval("SELECT count(*) FROM device_events") == 8
