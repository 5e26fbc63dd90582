"""Silences in the database, as the API reads and writes them (the rules file's are
synced by ``service.sync_rules_file``; notifying applies them in ``groups``).

Plain functions on a connection: the caller holds the transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from netmon.alerts.matchers import Matcher, MatcherError, matches_all, parse_matchers
from netmon.alerts.model import AlertView, from_jsonb, to_jsonb
from netmon.logs import get_logger

__all__ = [
    "Silence",
    "SilenceRow",
    "SilenceState",
    "expire_silence",
    "get_silence",
    "insert_silence",
    "list_silences",
    "load_silences",
    "site_matchers",
]

SilenceState = Literal["active", "pending", "expired"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Silence:
    """A silence as notifying sees it: which alerts it holds back."""

    id: int
    matchers: tuple[Matcher, ...]

    def silences(self, alert: AlertView) -> bool:
        return matches_all(self.matchers, alert.match_labels(), alert.tags)


async def load_silences(conn: asyncpg.Connection, now: datetime) -> list[Silence]:
    rows = await conn.fetch(
        "SELECT id, matchers FROM silences WHERE starts_at <= $1 AND ends_at > $1 ORDER BY id",
        now,
    )
    silences = []
    for r in rows:
        try:
            matchers = parse_matchers(from_jsonb(r["matchers"]))
        except MatcherError as exc:
            # Checked when written, but an older netmon took what RE2 refuses (lookahead):
            # skip the one (its alerts notify) rather than fail every notification.
            log.error("stored silence skipped", silence=r["id"], error=str(exc))
            continue
        silences.append(Silence(r["id"], tuple(matchers)))
    return silences


# -- silences ----------------------------------------------------------------------------


class SilenceRow(msgspec.Struct, frozen=True):
    id: int
    name: str | None  # file silences are named
    source: str
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime
    state: SilenceState


_SILENCE_COLUMNS = """
id, name, source, matchers::text AS matchers, starts_at, ends_at, comment, created_by,
created_at,
CASE WHEN ends_at <= clock_timestamp() THEN 'expired'
     WHEN starts_at > clock_timestamp() THEN 'pending'
     ELSE 'active' END AS state
"""
_SILENCE_STATES = {
    "active": "starts_at <= clock_timestamp() AND ends_at > clock_timestamp()",
    "pending": "starts_at > clock_timestamp()",
    "expired": "ends_at <= clock_timestamp()",
}


def _silence(r: asyncpg.Record) -> SilenceRow:
    return SilenceRow(
        id=r["id"],
        name=r["name"],
        source=r["source"],
        matchers=[str(m) for m in from_jsonb(r["matchers"])],
        starts_at=r["starts_at"],
        ends_at=r["ends_at"],
        comment=r["comment"],
        created_by=r["created_by"],
        created_at=r["created_at"],
        state=r["state"],
    )


def site_matchers(sites: Collection[str]) -> list[str]:
    """The matchers, as stored, that confine a silence to ``sites``."""
    return [str(Matcher.of("site", "=", s)) for s in sorted(sites)]


async def list_silences(
    conn: asyncpg.Connection,
    *,
    limit: int,
    before_id: int | None = None,
    state: SilenceState | None = "active",
    sites: Collection[str] | None = None,
) -> list[SilenceRow]:
    """Newest first (by id); ``state`` None: all. ``sites``: only silences confined to
    them: a ``site="..."`` matcher for one of them, and every matcher on ``site`` such a
    one (matchers are stored as ``name<op>"value"``, so ``^site[=!]`` finds them)."""
    where = _SILENCE_STATES[state] if state is not None else "true"
    rows = await conn.fetch(
        f"""
        SELECT {_SILENCE_COLUMNS} FROM silences
        WHERE ($1::bigint IS NULL OR id < $1) AND {where}
          AND ($2::text[] IS NULL OR (
                matchers ?| $2
                AND NOT EXISTS (
                    SELECT 1 FROM jsonb_array_elements_text(matchers) AS m
                    WHERE m ~ '^site[=!]' AND NOT m = ANY($2::text[])
                )))
        ORDER BY id DESC LIMIT $3
        """,
        before_id,
        site_matchers(sites) if sites is not None else None,
        limit,
    )
    return [_silence(r) for r in rows]


async def get_silence(
    conn: asyncpg.Connection, silence_id: int, *, lock: bool = False
) -> SilenceRow | None:
    sql = f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE id = $1" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, silence_id)
    return _silence(row) if row is not None else None


async def insert_silence(
    conn: asyncpg.Connection,
    *,
    matchers: Sequence[str],
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    created_by: str,
) -> SilenceRow:
    row = await conn.fetchrow(
        f"""
        INSERT INTO silences (source, matchers, starts_at, ends_at, comment, created_by)
        VALUES ('api', $1::jsonb, $2, $3, $4, $5)
        RETURNING {_SILENCE_COLUMNS}
        """,
        to_jsonb(list(matchers)),
        starts_at,
        ends_at,
        comment,
        created_by,
    )
    return _silence(row)


async def expire_silence(conn: asyncpg.Connection, silence_id: int) -> SilenceRow | None:
    """End a silence now. One that has not started yet ends before it starts: its start
    moves to a microsecond before now (a silence must end after it starts). None if it
    had ended already (nothing changes).

    "Now" is the clock when the statement runs, not the transaction's start (``now()``):
    of two expiries racing on one row, the second waits for the first's lock, and its
    transaction may have begun before the first's; by its own start it would find the
    silence still running, end it again, and record it twice."""
    row = await conn.fetchrow(
        f"""
        UPDATE silences
        SET starts_at = least(starts_at, t.at - interval '1 microsecond'), ends_at = t.at
        FROM (SELECT clock_timestamp() AS at) AS t
        WHERE id = $1 AND ends_at > t.at
        RETURNING {_SILENCE_COLUMNS}
        """,
        silence_id,
    )
    return _silence(row) if row is not None else None
