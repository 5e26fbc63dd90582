"""API tokens: made once, shown once, kept only as a salted hash.

A token reads ``nmt_<key id>_<secret>``. The key id finds the row; the secret is checked
against sha256(salt || secret || pepper) in constant time. The secret carries 256 bits
from the OS's CSPRNG, so a fast hash is enough: there is nothing to brute-force that a
slow hash would protect (unlike a password).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec

from netmon.config import Role

__all__ = [
    "PREFIX",
    "TokenRow",
    "create_token",
    "find_token",
    "get_token",
    "hash_secret",
    "list_tokens",
    "parse_token",
    "revoke_token",
    "touch_tokens",
]

PREFIX = "nmt"
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")


class TokenRow(msgspec.Struct, frozen=True):
    id: int
    key_id: str
    name: str
    role: Role
    sites: list[str] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def hash_secret(salt: bytes, secret: str, pepper: bytes) -> bytes:
    return hashlib.sha256(salt + secret.encode() + pepper).digest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or len(parts[2]) < 32:
        return None
    return parts[1], parts[2]


_COLUMNS = (
    "id, key_id, name, role, sites, created_at, created_by, expires_at, revoked_at, last_used_at"
)


def _aware(value: datetime | None) -> datetime | None:
    """asyncpg reads PostgreSQL's 'infinity' as a naive datetime.max: the end of time, in
    UTC (a token from before times were bounded may hold it)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row(r: asyncpg.Record) -> TokenRow:
    return TokenRow(
        id=r["id"],
        key_id=r["key_id"],
        name=r["name"],
        role=r["role"],
        sites=list(r["sites"]) if r["sites"] is not None else None,
        created_at=r["created_at"],
        created_by=r["created_by"],
        expires_at=_aware(r["expires_at"]),
        revoked_at=r["revoked_at"],
        last_used_at=r["last_used_at"],
    )


async def create_token(
    conn: asyncpg.Connection,
    *,
    name: str,
    role: Role,
    created_by: str,
    pepper: bytes,
    sites: Sequence[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[TokenRow, str]:
    """Store a new token; return its row and the token itself (the only time it exists)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    row = await conn.fetchrow(
        f"""
        INSERT INTO api_tokens (key_id, name, role, sites, salt, hash, created_by, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING {_COLUMNS}
        """,
        key_id,
        name,
        role,
        list(sites) if sites is not None else None,
        salt,
        hash_secret(salt, secret, pepper),
        created_by,
        expires_at,
    )
    assert row is not None
    return _row(row), f"{PREFIX}_{key_id}_{secret}"


async def find_token(conn: asyncpg.Connection, token: str, pepper: bytes) -> TokenRow | None:
    """The row of a token whose secret matches (revoked or expired ones included: the
    caller decides, so it can say why)."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, salt, hash FROM api_tokens WHERE key_id = $1", key_id
    )
    if row is None:
        # Spend the same time as a real check, so key ids cannot be probed by timing.
        hmac.compare_digest(hash_secret(b"\0" * 16, secret, pepper), b"\0" * 32)
        return None
    if not hmac.compare_digest(hash_secret(row["salt"], secret, pepper), row["hash"]):
        return None
    return _row(row)


async def list_tokens(
    conn: asyncpg.Connection, *, within: Collection[str] | None = None
) -> list[TokenRow]:
    """Every token; ``within``: only tokens limited to some of these sites."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM api_tokens
        WHERE $1::text[] IS NULL OR (sites IS NOT NULL AND sites <@ $1::text[])
        ORDER BY id
        """,
        sorted(within) if within is not None else None,
    )
    return [_row(r) for r in rows]


async def get_token(
    conn: asyncpg.Connection, token_id: int, *, lock: bool = False
) -> TokenRow | None:
    sql = f"SELECT {_COLUMNS} FROM api_tokens WHERE id = $1" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, token_id)
    return _row(row) if row is not None else None


async def revoke_token(conn: asyncpg.Connection, token_id: int) -> TokenRow | None:
    """Revoke a token; None when there is no such token, or it is revoked already (a
    second revocation changes nothing and so is recorded nowhere)."""
    row = await conn.fetchrow(
        f"""
        UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
        RETURNING {_COLUMNS}
        """,
        token_id,
    )
    return _row(row) if row is not None else None


async def touch_tokens(conn: asyncpg.Connection, used: dict[int, datetime]) -> None:
    """Record when tokens were last used (batched: one statement for many)."""
    if used:
        await conn.execute(
            """
            UPDATE api_tokens t SET last_used_at = u.at
            FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, at)
            WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)
            """,
            list(used),
            list(used.values()),
        )
