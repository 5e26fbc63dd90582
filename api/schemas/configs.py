"""Configuration backups as the API shows them (``netmon.store.configs`` holds the rows)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from netmon.store.configs import ConfigVersion

__all__ = [
    "BackupOutcome",
    "ConfigDiff",
    "ConfigVersionDetail",
    "ConfigVersionPage",
    "ConfigVersionSummary",
    "detail_of",
    "summary_of",
]


class ConfigVersionSummary(msgspec.Struct, frozen=True):
    """A stored configuration, without its text."""

    id: int
    device_id: int
    device: str
    source: str  # running, candidate, startup
    protocol: str  # netconf, cli
    format: str  # xml, text
    sha256: str
    size: int  # bytes of the (redacted) text
    collected_at: datetime  # first read
    last_seen_at: datetime  # last read unchanged
    previous_id: int | None
    lines_added: int  # since previous_id
    lines_removed: int


class ConfigVersionDetail(ConfigVersionSummary, frozen=True):
    """A stored configuration with its text, as the device returned it, secrets redacted."""

    content: str = ""


class ConfigVersionPage(msgspec.Struct, frozen=True):
    items: list[ConfigVersionSummary]
    next_cursor: str | None


class ConfigDiff(msgspec.Struct, frozen=True):
    """The unified diff from ``from_id`` (null: the empty configuration) to ``to_id``."""

    device_id: int
    device: str
    source: str
    from_id: int | None
    to_id: int
    lines_added: int
    lines_removed: int
    diff: str


_SUMMARY_FIELDS = ConfigVersionSummary.__struct_fields__


def summary_of(version: ConfigVersion) -> ConfigVersionSummary:
    return ConfigVersionSummary(**{f: getattr(version, f) for f in _SUMMARY_FIELDS})


def detail_of(version: ConfigVersion) -> ConfigVersionDetail:
    fields = {f: getattr(version, f) for f in _SUMMARY_FIELDS}
    return ConfigVersionDetail(**fields, content=version.content or "")


class BackupOutcome(msgspec.Struct, frozen=True):
    """What an on-demand backup did. ``here``: a poller in this process polls the device
    and read its configuration now (``ok``, ``error``, ``versions`` tell how it went);
    otherwise the pollers of other processes were asked through the database
    (``broadcast``) and the new version, if any, appears in the device's list."""

    device_id: int
    device: str
    here: bool
    ok: bool
    error: str | None
    versions: list[ConfigVersionSummary]  # the device's newest version of each source
    broadcast: bool
