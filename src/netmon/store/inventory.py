"""The devices an inventory source owns, and applying a sync to them in one transaction.

A source is an owner (``yaml``, ``netbox``) and a poller identity: two pollers sharing a
database each keep their own rows. Applying takes an advisory lock per (owner, poller),
reads the owned rows under ``FOR UPDATE``, diffs them against the fetched hosts
(``netmon.inventory.diff``) and writes rows, silences, cables, the audit trail and the
run record together: a sync is all there or not at all.

A host whose name is already a row's is taken over only if no source holds that row
(the API's, or one that was retired, or the old single inventory's); a row another
source or poller holds is left to it and the host is skipped, saying whose it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from netmon.inventory.diff import COMPARED, Change, Diff, OwnedRow, diff_inventory, host_values
from netmon.inventory.model import Cable, Fetched, InventoryHost, Skipped
from netmon.store.notify import publish_control

__all__ = [
    "ApplyResult",
    "SourceKey",
    "apply_sync",
    "owned_rows",
    "purge_retired",
    "recent_runs",
    "record_run",
    "retire_poller",
]

# A muted device's silence runs until the source says otherwise (the sync ends it).
_MUTE_FOR = timedelta(days=3650)


@dataclass(frozen=True)
class SourceKey:
    owner: str  # yaml, netbox
    poller: str

    @property
    def actor(self) -> str:
        return f"inventory:{self.owner}@{self.poller}"

    def lock_key(self) -> int:
        digest = hashlib.sha256(f"{self.owner}\0{self.poller}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def silence_prefix(self, external_id: str) -> str:
        return f"inventory/{self.owner}/{self.poller}/{external_id}/"


@dataclass
class ApplyResult:
    diff: Diff
    held: bool = False  # the guard kept the retirements back
    held_reason: str = ""
    names_changed: bool = False
    retired_ids: list[int] = field(default_factory=list)
    # What the guard kept back: the rows it would have retired, still as they were.
    held_back: list[OwnedRow] = field(default_factory=list)

    @property
    def skipped(self) -> list[Skipped]:
        return self.diff.skipped


_OWNED = """
SELECT id, external_id, name, address, site, role, platform, tags, labels::text AS labels,
       lifecycle
FROM devices
WHERE owner = $1 AND (poller = $2 OR (poller IS NULL AND owner = 'yaml'))
"""


def _owned(r: asyncpg.Record) -> OwnedRow:
    return OwnedRow(
        id=r["id"],
        external_id=r["external_id"] or r["name"],
        name=r["name"],
        address=r["address"],
        site=r["site"],
        role=r["role"],
        platform=r["platform"],
        tags=tuple(r["tags"] or ()),
        labels=json.loads(r["labels"]) if r["labels"] else {},
        lifecycle=r["lifecycle"],
    )


async def owned_rows(
    conn: asyncpg.Connection, key: SourceKey, *, lock: bool = False
) -> list[OwnedRow]:
    """The rows ``key`` owns (with the old single inventory's when the owner is YAML)."""
    sql = _OWNED + (" ORDER BY id FOR UPDATE" if lock else "")
    return [_owned(r) for r in await conn.fetch(sql, key.owner, key.poller)]


async def apply_sync(
    conn: asyncpg.Connection,
    key: SourceKey,
    fetched: Fetched,
    *,
    requested: Collection[str] = (),
    guard: float | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ApplyResult:
    """Make ``key``'s rows hold ``fetched``; the caller holds the transaction.

    ``guard``: when the fetch is complete and would retire more than this fraction of
    the rows not yet retired, nothing is retired (the rest applies) and the result says
    ``held``. ``dry_run`` computes the same result and writes nothing."""
    now = now or datetime.now(UTC)
    await conn.execute("SELECT pg_advisory_xact_lock($1)", key.lock_key())
    rows = await owned_rows(conn, key, lock=not dry_run)
    kept = [s.external_id for s in fetched.skipped]
    diff = diff_inventory(
        fetched.hosts, rows, complete=fetched.complete, requested=requested, kept=kept
    )
    diff.skipped[:0] = fetched.skipped
    result = ApplyResult(diff)
    live = sum(1 for r in rows if r.lifecycle != "retired")
    if fetched.complete and guard is not None and diff.retired and live:
        share = len(diff.retired) / live
        if share > guard:
            result.held = True
            result.held_reason = (
                f"the sync would retire {len(diff.retired)} of {live} devices "
                f"({share:.0%}, more than {guard:.0%}): nothing was retired"
            )
            result.held_back, diff.retired = diff.retired, []
    await _take_names(conn, key, diff)
    if dry_run:
        return result
    await _insert(conn, key, diff.added, now)
    renamed = await _update(conn, key, diff)
    result.names_changed = renamed
    if diff.retired:
        result.retired_ids = [r.id for r in diff.retired]
        await conn.execute(
            """
            UPDATE devices SET lifecycle = 'retired', retired_at = $2,
                   retired_reason = $3, updated_at = now()
            WHERE id = ANY($1::bigint[])
            """,
            result.retired_ids,
            now,
            f"left the {key.owner} inventory",
        )
    await _audit(conn, key, diff, now)
    await _silences(conn, key, fetched.hosts, diff, now)
    if fetched.cables is not None:
        await _cables(conn, key, fetched.cables)
    if not diff.empty:
        # Renames and moves: caches keyed by name or site drop what they hold; alerting
        # reads the devices again (a retired device's alerts resolve).
        await publish_control(conn, "series_forget")
        await publish_control(conn, "device_changed")
    return result


async def _take_names(conn: asyncpg.Connection, key: SourceKey, diff: Diff) -> None:
    """Hosts to add (or rename) whose name a row already has: take the row over where no
    source holds it, else skip the host saying who holds the name."""
    wanted = [h.name for h in diff.added] + [
        c.host.name for c in diff.changed if "name" in c.fields
    ]
    if not wanted:
        return
    taken = {
        r["name"]: r
        for r in await conn.fetch(
            """
            SELECT id, name, owner, poller, lifecycle, external_id FROM devices
            WHERE name = ANY($1::text[]) ORDER BY id FOR UPDATE
            """,
            wanted,
        )
    }
    added: list[InventoryHost] = []
    for host in diff.added:
        row = taken.get(host.name)
        if row is None:
            added.append(host)
        elif _free(row):
            # Taken over: the row keeps its id and history, now this source's.
            diff.changed.append(_takeover(host, row))
        else:
            diff.skipped.append(_owned_elsewhere(host, row))
    diff.added = added
    # A row of this source taken over by name is not also retired.
    taken_ids = {c.row.id for c in diff.changed}
    diff.retired = [r for r in diff.retired if r.id not in taken_ids]
    # A name whose row is renamed away in this same sync is free (two names swapped).
    leaving = {c.row.id for c in diff.changed if "name" in c.fields}
    kept = []
    for change in diff.changed:
        row = taken.get(change.host.name)
        if (
            "name" in change.fields
            and row is not None
            and row["id"] != change.row.id
            and row["id"] not in leaving
        ):
            diff.skipped.append(
                Skipped(
                    change.host.name,
                    change.host.external_id,
                    "name_taken",
                    f"{change.row.name} cannot be renamed {change.host.name}: a device of "
                    f"that name exists ({_holder(row)}); it keeps its name until that one is "
                    "purged or renamed",
                )
            )
            fields = tuple(f for f in change.fields if f != "name")
            if fields:
                kept.append(Change(replace(change.host, name=change.row.name), change.row, fields))
            continue
        kept.append(change)
    diff.changed = kept


def _free(row: asyncpg.Record) -> bool:
    return bool(
        row["owner"] is None
        or row["lifecycle"] == "retired"
        or (row["poller"] is None and row["owner"] == "yaml")
    )


def _holder(row: asyncpg.Record) -> str:
    if row["owner"] is None:
        return "the API's"
    state = " (retired)" if row["lifecycle"] == "retired" else ""
    return f"held by the {row['owner']} inventory of poller {row['poller']}{state}"


def _owned_elsewhere(host: InventoryHost, row: asyncpg.Record) -> Skipped:
    return Skipped(
        host.name,
        host.external_id,
        "owned",
        f"{host.name}: the device is {_holder(row)}; a device has one source",
    )


def _takeover(host: InventoryHost, row: asyncpg.Record) -> Change:
    taken = OwnedRow(
        id=row["id"],
        external_id=row["external_id"] or "",
        name=row["name"],
        address=None,
        site=None,
        role=None,
        platform=None,
        tags=(),
        labels={},
        lifecycle="(taken over)",
    )
    return Change(host, taken, COMPARED)


async def _insert(
    conn: asyncpg.Connection, key: SourceKey, hosts: Sequence[InventoryHost], now: datetime
) -> None:
    if not hosts:
        return
    await conn.execute(
        """
        INSERT INTO devices (name, address, site, role, platform, tags, labels, lifecycle,
                             owner, poller, external_id)
        SELECT i.name, i.address, i.site, i.role, i.platform,
               ARRAY(SELECT jsonb_array_elements_text(i.tags)), i.labels, i.lifecycle,
               $10, $11, i.external_id
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                    $7::jsonb[], $8::text[], $9::text[])
             AS i(name, address, site, role, platform, tags, labels, lifecycle, external_id)
        ORDER BY i.name
        """,
        *_columns(hosts),
        key.owner,
        key.poller,
    )


def _columns(hosts: Sequence[InventoryHost]) -> list[list[Any]]:
    return [
        [h.name for h in hosts],
        [h.address for h in hosts],
        [h.site for h in hosts],
        [h.role for h in hosts],
        [h.platform for h in hosts],
        [json.dumps(list(h.tags)) for h in hosts],
        [json.dumps(h.labels, sort_keys=True) for h in hosts],
        [h.lifecycle for h in hosts],
        [h.external_id for h in hosts],
    ]


async def _update(conn: asyncpg.Connection, key: SourceKey, diff: Diff) -> bool:
    """Changed and taken-over rows; True if a name changed."""
    if not diff.changed:
        return False
    hosts = [c.host for c in diff.changed]
    # Two renames may swap names: clear them first so that the unique index never sees
    # a name twice within the statement.
    renames = [c.row.id for c in diff.changed if "name" in c.fields]
    if renames:
        await conn.execute(
            "UPDATE devices SET name = '~renaming~' || id WHERE id = ANY($1::bigint[])", renames
        )
    await conn.execute(
        """
        UPDATE devices d SET
            name = i.name, address = i.address, site = i.site, role = i.role,
            platform = i.platform, tags = ARRAY(SELECT jsonb_array_elements_text(i.tags)),
            labels = i.labels, lifecycle = i.lifecycle, external_id = i.external_id,
            owner = $11, poller = $12, updated_at = now(),
            retired_at = CASE WHEN i.lifecycle = 'retired' THEN d.retired_at END,
            retired_reason = CASE WHEN i.lifecycle = 'retired' THEN d.retired_reason END
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                    $7::jsonb[], $8::text[], $9::text[], $10::bigint[])
             AS i(name, address, site, role, platform, tags, labels, lifecycle, external_id,
                  id)
        WHERE d.id = i.id
        """,
        *_columns(hosts),
        [c.row.id for c in diff.changed],
        key.owner,
        key.poller,
    )
    return bool(renames)


def _summary(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    out["tags"] = list(out["tags"])
    return out


async def _audit(conn: asyncpg.Connection, key: SourceKey, diff: Diff, now: datetime) -> None:
    """One audit entry per device the sync added, changed or retired."""
    entries: list[tuple[Any, ...]] = []
    ids = (
        {
            r["external_id"]: r["id"]
            for r in await conn.fetch(
                "SELECT id, external_id FROM devices WHERE owner = $1 AND poller = $2 "
                "AND external_id = ANY($3::text[])",
                key.owner,
                key.poller,
                [h.external_id for h in diff.added],
            )
        }
        if diff.added
        else {}
    )
    for host in diff.added:
        after = _summary(host_values(host))
        entries.append(("create", ids.get(host.external_id), None, after, host.site, None))
    for change in diff.changed:
        before = _summary(change.row.values()) if change.row.lifecycle != "(taken over)" else None
        after = _summary(host_values(change.host))
        action = "update" if before is not None else "take_over"
        entries.append((action, change.row.id, before, after, change.host.site, change.row.site))
    for row in diff.retired:
        before = _summary(row.values())
        entries.append(
            ("retire", row.id, before, {**before, "lifecycle": "retired"}, row.site, None)
        )
    if not entries:
        return
    await conn.executemany(
        """
        INSERT INTO audit_log (time, actor, action, resource, resource_id, before, after, sites)
        VALUES ($1, $2, $3, 'device', $4, $5::jsonb, $6::jsonb, $7)
        """,
        [
            (
                now,
                key.actor,
                action,
                None if device_id is None else str(device_id),
                None if before is None else json.dumps(before),
                json.dumps(after),
                sorted({s for s in (site, old_site) if s}) or None,
            )
            for action, device_id, before, after, site, old_site in entries
        ],
    )


def _device_matcher(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'device="{escaped}"'


async def _silences(
    conn: asyncpg.Connection,
    key: SourceKey,
    hosts: Sequence[InventoryHost],
    diff: Diff,
    now: datetime,
) -> None:
    """The silences the source's hosts ask for (maintenance windows, muted devices): made,
    moved or ended so that they match; a retired device's are ended."""
    want: dict[str, tuple[str, datetime, datetime, str]] = {}
    handled: list[str] = []
    skipped = {s.external_id for s in diff.skipped}
    for host in hosts:
        if host.external_id in skipped or host.lifecycle == "retired":
            continue
        prefix = key.silence_prefix(host.external_id)
        handled.append(prefix)
        matcher = _device_matcher(host.name)
        for i, window in enumerate(host.maintenance):
            if window.ends_at > now:
                comment = window.comment or f"maintenance ({key.owner})"
                want[f"{prefix}maintenance/{i}"] = (
                    matcher,
                    window.starts_at,
                    window.ends_at,
                    comment,
                )
        if host.lifecycle == "muted":
            want[f"{prefix}muted"] = (
                matcher,
                now,
                now + _MUTE_FOR,
                f"muted by the {key.owner} inventory: {host.note or 'status'}",
            )
    handled += [key.silence_prefix(r.external_id) for r in diff.retired]
    if not handled:
        return
    # End (by deleting: they were never the API's) what the hosts no longer ask for.
    await conn.execute(
        """
        DELETE FROM silences
        WHERE source = 'inventory' AND name LIKE ANY($1::text[]) AND NOT (name = ANY($2::text[]))
        """,
        [_like(p) + "%" for p in handled],
        list(want),
    )
    if want:
        names = list(want)
        await conn.execute(
            """
            INSERT INTO silences (name, source, matchers, starts_at, ends_at, comment, created_by)
            SELECT w.name, 'inventory', jsonb_build_array(w.matcher), w.starts_at, w.ends_at,
                   w.comment, $6
            FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                        $5::text[]) AS w(name, matcher, starts_at, ends_at, comment)
            ON CONFLICT (name) DO UPDATE SET
                matchers = excluded.matchers, comment = excluded.comment,
                starts_at = CASE WHEN silences.starts_at <= now()
                                  AND excluded.starts_at <= now()
                                 THEN silences.starts_at ELSE excluded.starts_at END,
                ends_at = CASE WHEN silences.name LIKE '%/muted' THEN silences.ends_at
                               ELSE excluded.ends_at END
            """,
            names,
            [want[n][0] for n in names],
            [want[n][1] for n in names],
            [want[n][2] for n in names],
            [want[n][3] for n in names],
            key.actor,
        )


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _cables(conn: asyncpg.Connection, key: SourceKey, cables: Sequence[Cable]) -> None:
    """Replace the source's cables with these (both ends must be its devices)."""
    await conn.execute(
        "DELETE FROM inventory_cables WHERE owner = $1 AND poller = $2", key.owner, key.poller
    )
    if not cables:
        return
    await conn.execute(
        """
        INSERT INTO inventory_cables (owner, poller, external_id, a_device_id, a_port,
                                      b_device_id, b_port, status)
        SELECT $7, $8, c.external_id, a.id, c.a_port, b.id, c.b_port, c.status
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
             AS c(external_id, a_host, a_port, b_host, b_port, status)
        JOIN devices a ON a.owner = $7 AND a.poller = $8 AND a.external_id = c.a_host
        JOIN devices b ON b.owner = $7 AND b.poller = $8 AND b.external_id = c.b_host
        ON CONFLICT DO NOTHING
        """,
        [c.external_id for c in cables],
        [c.a_host for c in cables],
        [c.a_port for c in cables],
        [c.b_host for c in cables],
        [c.b_port for c in cables],
        [c.status for c in cables],
        key.owner,
        key.poller,
    )


# -- runs ------------------------------------------------------------------------------


async def record_run(
    conn: asyncpg.Connection,
    key: SourceKey,
    *,
    kind: str,
    started_at: datetime,
    result: ApplyResult | None,
    fetched: int = 0,
    error: str | None = None,
) -> int:
    detail: dict[str, Any] = {}
    if result is not None:
        summary = result.diff.summary()
        detail = {
            "added": summary["added"][:1000],
            "changed": summary["changed"][:1000],
            "retired": summary["retired"][:1000],
            "skipped": [
                {
                    "name": s.name,
                    "external_id": s.external_id,
                    "reason": s.reason,
                    "message": s.message,
                }
                for s in result.skipped[:1000]
            ],
        }
        if result.held:
            detail["held"] = result.held_reason
    diff = result.diff if result is not None else None
    row_id: int = await conn.fetchval(
        """
        INSERT INTO inventory_sync_runs (source, poller, kind, started_at, ok, held, error,
            fetched, added, changed, retired, unchanged, skipped, detail)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)
        RETURNING id
        """,
        key.owner,
        key.poller,
        kind,
        started_at,
        error is None,
        bool(result is not None and result.held),
        error,
        fetched,
        len(diff.added) if diff else 0,
        len(diff.changed) if diff else 0,
        len(diff.retired) if diff else 0,
        len(diff.unchanged) if diff else 0,
        len(diff.skipped) if diff else 0,
        json.dumps(detail),
    )
    # Keep the last thousand runs per source; the audit log keeps the changes.
    await conn.execute(
        """
        DELETE FROM inventory_sync_runs WHERE source = $1 AND poller = $2 AND id <= (
            SELECT id FROM inventory_sync_runs WHERE source = $1 AND poller = $2
            ORDER BY id DESC OFFSET 1000 LIMIT 1)
        """,
        key.owner,
        key.poller,
    )
    return row_id


async def recent_runs(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """
            SELECT id, source, poller, kind, started_at, finished_at, ok, held, error, fetched,
                   added, changed, retired, unchanged, skipped, detail::text AS detail
            FROM inventory_sync_runs ORDER BY id DESC LIMIT $1
            """,
            limit,
        )
    )


async def purge_retired(
    conn: asyncpg.Connection, older_than: timedelta, *, dry_run: bool = False
) -> list[tuple[int, str]]:
    """Delete devices retired longer than ``older_than``, with all they measured."""
    from netmon.store.devices import delete_device

    rows = await conn.fetch(
        """
        SELECT id, name FROM devices
        WHERE lifecycle = 'retired' AND retired_at < now() - $1::interval
        ORDER BY name FOR UPDATE SKIP LOCKED
        """,
        older_than,
    )
    found = [(int(r["id"]), str(r["name"])) for r in rows]
    if not dry_run:
        for device_id, name in found:
            await delete_device(conn, device_id)
            await conn.execute(
                """
                INSERT INTO audit_log (actor, action, resource, resource_id, before)
                VALUES ('cli', 'purge', 'device', $1, $2::jsonb)
                """,
                str(device_id),
                json.dumps({"name": name, "lifecycle": "retired"}),
            )
        if found:
            await publish_control(conn, "series_forget")
    return found


async def retire_poller(
    conn: asyncpg.Connection, poller: str, *, dry_run: bool = False
) -> list[str]:
    """Retire the devices ``poller`` holds (it is gone for good): other pollers may then
    take them over by name. Audited, like a sync's retirements."""
    rows = await conn.fetch(
        "SELECT id, name, site FROM devices WHERE poller = $1 AND lifecycle <> 'retired' "
        "ORDER BY name FOR UPDATE",
        poller,
    )
    if dry_run or not rows:
        return [r["name"] for r in rows]
    await conn.execute(
        """
        UPDATE devices SET lifecycle = 'retired', retired_at = now(),
               retired_reason = $2, updated_at = now()
        WHERE id = ANY($1::bigint[])
        """,
        [r["id"] for r in rows],
        f"its poller {poller} was retired by an operator",
    )
    await conn.executemany(
        """
        INSERT INTO audit_log (actor, action, resource, resource_id, after, sites)
        VALUES ('cli', 'retire', 'device', $1, $2::jsonb, $3)
        """,
        [
            (
                str(r["id"]),
                json.dumps({"name": r["name"], "lifecycle": "retired"}),
                [r["site"]] if r["site"] else None,
            )
            for r in rows
        ],
    )
    await publish_control(conn, "device_changed")
    return [r["name"] for r in rows]
