"""Configuration backups: a version per distinct configuration of a device and source.

``save_config`` stores what a collector read (NETCONF ``<get-config>``, a CLI ``show
running-config``) as the device returned it, but for secrets: ``redact`` blanks the
usual ones (passwords, secrets, keys, SNMP communities) before the text is hashed or
stored, so credentials never reach the database (nor its backups). The content is plain
text, not compressed.

A configuration equal to the newest stored one of its device and source is not stored
again: only that version's ``last_seen_at`` moves. A different one, even one equal to an
earlier version, is a new version, linked to the one before it (``previous_id``) with the
lines added and removed since, and announced as a ``device.config_changed`` device event
(stored in ``device_events`` and published on ``netmon_events`` at commit, as the writer
does). The first version of a device and source raises no event: there is nothing it
changed from, and a new installation would otherwise announce every device at once.

Errors: ``VersionNotFoundError`` (a version id that does not exist) and
``DifferentDevicesError`` (a diff across devices), both ``QueryError``s.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

import asyncpg

from netmon.errors import QueryError
from netmon.records import DeviceEvent
from netmon.store.notify import publish_events

__all__ = [
    "CLI_PATTERNS",
    "CONFIG_CHANGED",
    "REDACTED",
    "XML_PATTERNS",
    "ConfigFormat",
    "ConfigProtocol",
    "ConfigSource",
    "ConfigVersion",
    "DifferentDevicesError",
    "SaveResult",
    "VersionDiff",
    "VersionNotFoundError",
    "check_comparable",
    "config_diff",
    "diff",
    "get_version",
    "latest_versions",
    "list_versions",
    "redact",
    "save_config",
    "version_diff",
]

ConfigSource = Literal["running", "candidate", "startup"]
ConfigProtocol = Literal["netconf", "cli"]
ConfigFormat = Literal["xml", "text"]

CONFIG_CHANGED = "device.config_changed"
REDACTED = "<redacted>"

_FLAGS = re.IGNORECASE | re.MULTILINE
# Each pattern's ``secret`` group is what gets blanked. CLI (IOS, NX-OS, EOS, Junos set and
# curly style): the token after the keyword, past an optional encryption type digit; not
# in free text (descriptions, remarks).
CLI_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"^(?!\s*(?:description|remark|alias)\b)[^\n]*?"
        r"\b(?:password|secret|encrypted-password|key-string|pre-shared-key"
        r"|authentication-key(?:[ \t]+\d+[ \t]+md5)?"
        r"|(?<![\w-])key(?![ \t]+(?:chain\b|\d+[ \t]*$)))"
        r"(?:[ \t]+ascii-text)?[ \t]+(?:[0-9][ \t]+)?(?P<secret>\"[^\"\n]*\"|[^\s;]+)",
        _FLAGS,
    ),
    re.compile(r"\bcommunity[ \t]+(?P<secret>\"[^\"\n]*\"|[^\s;{]+)", _FLAGS),
)
# NETCONF (XML): the text of elements named after secrets, in any namespace.
XML_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"<(?P<tag>(?:[\w.-]+:)?(?:password|secret|encrypted-password|key-string"
        r"|authentication-key|pre-shared-key|shared-secret|community-name))(?:\s[^>]*)?>"
        r"(?P<secret>[^<]+)</(?P=tag)>",
        _FLAGS,
    ),
)
_XML_REDACTED = "&lt;redacted&gt;"


def redact(
    content: str,
    patterns: Sequence[re.Pattern[str]] = CLI_PATTERNS,
    replacement: str = REDACTED,
) -> str:
    """``content`` with the ``secret`` group of every match of ``patterns`` replaced by
    ``replacement``. Idempotent: redacted text stays as it is, and hashes the same."""

    def blank(match: re.Match[str]) -> str:
        start, end = match.span("secret")
        whole = match.group(0)
        offset = match.start()
        return whole[: start - offset] + replacement + whole[end - offset :]

    for pattern in patterns:
        content = pattern.sub(blank, content)
    return content


def _redact_as(content: str, format: ConfigFormat) -> str:
    if format == "xml":
        return redact(content, XML_PATTERNS, _XML_REDACTED)
    return redact(content)


# -- rows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigVersion:
    """One stored version; ``content`` is None where a listing leaves it out."""

    id: int
    device_id: int
    device: str
    site: str | None
    source: str
    protocol: str
    format: str
    sha256: str
    size: int
    collected_at: datetime
    last_seen_at: datetime
    previous_id: int | None
    lines_added: int
    lines_removed: int
    content: str | None = None


@dataclass(frozen=True)
class SaveResult:
    """What ``save_config`` did: ``changed`` False when the configuration was the newest
    version's (``version_id`` is that version), ``first`` for a device's first version of
    that source; ``event`` is the ``device.config_changed`` event, if one was raised."""

    version_id: int
    device_id: int
    changed: bool
    first: bool
    sha256: str
    lines_added: int = 0
    lines_removed: int = 0
    event: DeviceEvent | None = None


class VersionNotFoundError(QueryError, LookupError):
    """No configuration version with that id."""


class DifferentDevicesError(QueryError):
    """Two versions of different devices (or sources) cannot be compared."""


_COLUMNS = """
v.id, v.device_id, d.name AS device, d.site, v.source, v.protocol, v.format, v.sha256,
v.size, v.collected_at, v.last_seen_at, v.previous_id, v.lines_added, v.lines_removed
"""


def _version(row: asyncpg.Record, content: str | None = None) -> ConfigVersion:
    return ConfigVersion(
        id=row["id"],
        device_id=row["device_id"],
        device=row["device"],
        site=row["site"],
        source=row["source"],
        protocol=row["protocol"],
        format=row["format"],
        sha256=row["sha256"],
        size=row["size"],
        collected_at=row["collected_at"],
        last_seen_at=row["last_seen_at"],
        previous_id=row["previous_id"],
        lines_added=row["lines_added"],
        lines_removed=row["lines_removed"],
        content=content,
    )


# -- saving ------------------------------------------------------------------------------

# The device row, locked: two saves of one device run one after the other, so both cannot
# take the same newest version as their previous one.
_DEVICE = """
WITH made AS (INSERT INTO devices (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id)
SELECT id FROM made
UNION ALL
SELECT id FROM devices WHERE name = $1
"""
_LOCK = "SELECT id FROM devices WHERE id = $1 FOR NO KEY UPDATE"
_LATEST = """
SELECT id, sha256, content FROM config_versions
WHERE device_id = $1 AND source = $2 ORDER BY id DESC LIMIT 1
"""
_SEEN = """
UPDATE config_versions SET last_seen_at = greatest(last_seen_at, $2) WHERE id = $1
"""
_INSERT = """
INSERT INTO config_versions (device_id, source, protocol, format, sha256, size, content,
                             collected_at, last_seen_at, previous_id, lines_added,
                             lines_removed)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11)
RETURNING id
"""
_INSERT_EVENT = """
INSERT INTO device_events (uid, device_id, time, kind, severity, message, attributes)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
"""


async def save_config(
    conn: asyncpg.Connection,
    device: str,
    source: ConfigSource,
    protocol: ConfigProtocol,
    format: ConfigFormat,
    content: str,
    collected_at: datetime,
    *,
    publish: bool = True,
) -> SaveResult:
    """Store ``content`` (redacted first) as the newest ``source`` configuration of the
    device named ``device`` (made if unknown, as the writer does), in one transaction;
    see the module docstring. ``publish``: send the event on ``netmon_events`` at commit
    (``writer.publish``)."""
    content = _redact_as(content, format)
    sha = hashlib.sha256(content.encode()).hexdigest()
    async with conn.transaction():
        device_id: int | None = await conn.fetchval(_DEVICE, device)
        if device_id is None:  # made by a concurrent transaction after our snapshot
            device_id = await conn.fetchval("SELECT id FROM devices WHERE name = $1", device)
        assert device_id is not None
        await conn.execute(_LOCK, device_id)
        latest = await conn.fetchrow(_LATEST, device_id, source)
        if latest is not None and latest["sha256"] == sha:
            await conn.execute(_SEEN, latest["id"], collected_at)
            return SaveResult(latest["id"], device_id, changed=False, first=False, sha256=sha)
        _, added, removed = config_diff(latest["content"] if latest else content, content)
        version_id: int = await conn.fetchval(
            _INSERT,
            device_id,
            source,
            protocol,
            format,
            sha,
            len(content.encode()),
            content,
            collected_at,
            latest["id"] if latest is not None else None,
            added,
            removed,
        )
        result = SaveResult(version_id, device_id, True, latest is None, sha, added, removed)
        if latest is None:
            return result
        event = _changed_event(device, source, collected_at, version_id, latest["id"], result)
        await conn.execute(
            _INSERT_EVENT,
            event.uid,
            device_id,
            event.time,
            event.kind,
            event.severity,
            event.message,
            json.dumps(event.attributes),
        )
        if publish:
            await publish_events(conn, [event])  # sent at commit, never on rollback
    return SaveResult(version_id, device_id, True, False, sha, added, removed, event)


def _changed_event(
    device: str,
    source: str,
    time: datetime,
    version_id: int,
    previous_id: int,
    result: SaveResult,
) -> DeviceEvent:
    added, removed = result.lines_added, result.lines_removed
    return DeviceEvent(
        device=device,
        time=time,
        kind=CONFIG_CHANGED,
        message=f"{source} configuration changed: version {version_id} (+{added}/-{removed} lines)",
        severity="info",
        attributes={
            "source": source,
            "version_id": str(version_id),
            "previous_id": str(previous_id),
            "lines_added": str(added),
            "lines_removed": str(removed),
        },
    )


# -- diffs -------------------------------------------------------------------------------


class VersionDiff(NamedTuple):
    text: str  # unified diff, empty when equal
    lines_added: int
    lines_removed: int


def config_diff(old: str, new: str, old_name: str = "a", new_name: str = "b") -> VersionDiff:
    """The unified diff from ``old`` to ``new``, and the lines it adds and removes."""
    lines = list(
        difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm="")
    )
    added = removed = 0
    for line in lines[2:]:  # past the ---/+++ header
        if line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            removed += 1
    return VersionDiff("\n".join(lines) + "\n" if lines else "", added, removed)


def version_diff(old: ConfigVersion | None, new: ConfigVersion) -> VersionDiff:
    """From ``old`` (None: the empty configuration) to ``new``, both read with content."""
    if old is not None:
        check_comparable(old, new)
    return config_diff(
        old.content or "" if old is not None else "",
        new.content or "",
        _label(old) if old is not None else "/dev/null",
        _label(new),
    )


# -- reading -----------------------------------------------------------------------------

_LIST = f"""
SELECT {_COLUMNS}
FROM config_versions v JOIN devices d ON d.id = v.device_id
WHERE v.device_id = $1 AND ($2::bigint IS NULL OR v.id < $2)
  AND ($3::text IS NULL OR v.source = $3)
ORDER BY v.id DESC
LIMIT $4
"""
_LATEST_EACH = f"""
SELECT DISTINCT ON (v.source) {_COLUMNS}
FROM config_versions v JOIN devices d ON d.id = v.device_id
WHERE v.device_id = $1
ORDER BY v.source, v.id DESC
"""
_GET = f"""
SELECT {_COLUMNS}, v.content
FROM config_versions v JOIN devices d ON d.id = v.device_id
WHERE v.id = $1
"""


async def list_versions(
    conn: asyncpg.Connection,
    device_id: int,
    *,
    limit: int,
    before: int | None = None,
    source: ConfigSource | None = None,
) -> list[ConfigVersion]:
    """A device's versions without their content, newest first; ``before``: the id of the
    last row of the previous page."""
    rows = await conn.fetch(_LIST, device_id, before, source, limit)
    return [_version(r) for r in rows]


async def latest_versions(conn: asyncpg.Connection, device_id: int) -> list[ConfigVersion]:
    """A device's newest version of each source, without content."""
    return [_version(r) for r in await conn.fetch(_LATEST_EACH, device_id)]


async def get_version(conn: asyncpg.Connection, version_id: int) -> ConfigVersion | None:
    """One version with its content, or None."""
    row = await conn.fetchrow(_GET, version_id)
    return _version(row, row["content"]) if row is not None else None


async def diff(conn: asyncpg.Connection, from_id: int, to_id: int) -> str:
    """The unified diff from version ``from_id`` to version ``to_id``, of one device and
    source; ``VersionNotFoundError`` or ``DifferentDevicesError`` otherwise."""
    old, new = await _existing(conn, from_id), await _existing(conn, to_id)
    return version_diff(old, new).text


async def _existing(conn: asyncpg.Connection, version_id: int) -> ConfigVersion:
    version = await get_version(conn, version_id)
    if version is None:
        raise VersionNotFoundError(f"configuration version {version_id} not found")
    return version


def check_comparable(old: ConfigVersion, new: ConfigVersion) -> None:
    """``DifferentDevicesError`` unless both are versions of one device and source."""
    if old.device_id != new.device_id:
        raise DifferentDevicesError(
            f"version {old.id} is of device {old.device!r}, version {new.id} of "
            f"{new.device!r}: only versions of one device can be compared"
        )
    if old.source != new.source:
        raise DifferentDevicesError(
            f"version {old.id} is a {old.source} configuration, version {new.id} a "
            f"{new.source} one: only versions of one source can be compared"
        )


def _label(version: ConfigVersion) -> str:
    return f"{version.device} {version.source} version {version.id}"
