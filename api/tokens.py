"""Token checks for every request, cached briefly so that they cost no query each.

A checked token is trusted for ``api.token_cache`` (5 s by default): a revoked token stops
working within that time. When tokens were last used is written in batches, once a
minute, not per request. The live feeds, which outlive the check at their handshake, ask
again for all their tokens at once with :func:`token_states` (``api/feed_tokens.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException

from netmon.api.auth import Principal
from netmon.config import ApiSettings
from netmon.logs import get_logger
from netmon.store.database import Database, is_connection_error
from netmon.store.tokens import find_token, touch_tokens

__all__ = ["TokenCache", "TokenState", "token_states"]

log = get_logger(__name__)

_MAX_ENTRIES = 10_000
_TOUCH_INTERVAL = 60.0
_STATES = """
SELECT id, revoked_at IS NOT NULL AS revoked, expires_at FROM api_tokens
WHERE id = ANY($1::bigint[])
"""


@dataclass(frozen=True, slots=True)
class TokenState:
    revoked: bool
    expires_at: float | None  # epoch seconds


async def token_states(db: Database, ids: Collection[int]) -> dict[int, TokenState]:
    """Whether each token is revoked and when it expires, in one query; a token not in the
    answer no longer exists."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(_STATES, list(ids))
    return {
        row["id"]: TokenState(
            revoked=row["revoked"],
            expires_at=_epoch(row["expires_at"]),
        )
        for row in rows
    }


def _epoch(when: datetime | None) -> float | None:
    if when is None:
        return None
    # asyncpg reads PostgreSQL's 'infinity' as a naive datetime.max
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class TokenCache:
    def __init__(self, db: Database, settings: ApiSettings) -> None:
        self.db = db
        self.ttl = settings.token_cache.total_seconds()
        self.pepper = settings.resolved_pepper()
        # token -> (principal or the reason it is refused, checked at, expires at)
        self._cache: dict[str, tuple[Principal | str, float, float | None]] = {}
        self._used: dict[int, datetime] = {}
        self._toucher: asyncio.Task[None] | None = None

    async def principal(self, token: str) -> Principal:
        """The principal of a valid token; 401 with the reason otherwise."""
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is None or now - hit[1] > self.ttl:
            hit = await self._check(token, now)
        found, _, expires = hit
        if isinstance(found, str):
            raise NotAuthorizedException(found)
        if expires is not None and time.time() >= expires:
            raise NotAuthorizedException("the token has expired")
        if found.token_id is not None:
            self._used[found.token_id] = datetime.now(UTC)
        return found

    async def _check(self, token: str, now: float) -> tuple[Principal | str, float, float | None]:
        try:
            async with self.db.pool.acquire() as conn:
                row = await find_token(conn, token, self.pepper)
        except Exception as exc:
            if is_connection_error(exc):
                raise ServiceUnavailableException(
                    "the database is not reachable; tokens cannot be checked",
                    headers={"Retry-After": "5"},
                ) from exc
            raise
        entry: tuple[Principal | str, float, float | None]
        if row is None:
            entry = ("unknown token", now, None)
        elif row.revoked_at is not None:
            entry = ("the token has been revoked", now, None)
        else:
            sites = frozenset(row.sites) if row.sites is not None else None
            principal = Principal(token_id=row.id, name=row.name, role=row.role, sites=sites)
            expires = row.expires_at.timestamp() if row.expires_at is not None else None
            entry = (principal, now, expires)
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.clear()  # bad tokens in bulk must not grow memory
        self._cache[token] = entry
        return entry

    def expires_at(self, token: str) -> float | None:
        """When a token this cache accepted expires (epoch seconds; None: never, or not
        checked here lately)."""
        hit = self._cache.get(token)
        return hit[2] if hit is not None and not isinstance(hit[0], str) else None

    def forget(self) -> None:
        """Drop cached checks (after a revocation made in this process)."""
        self._cache.clear()

    def start(self) -> None:
        self._toucher = asyncio.create_task(self._touch_loop(), name="netmon-token-touch")

    async def stop(self) -> None:
        if self._toucher is not None:
            self._toucher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._toucher
            self._toucher = None
        await self._touch()

    async def _touch_loop(self) -> None:
        while True:
            await asyncio.sleep(_TOUCH_INTERVAL)
            await self._touch()

    async def _touch(self) -> None:
        used, self._used = self._used, {}
        if not used:
            return
        try:
            async with self.db.pool.acquire() as conn:
                await touch_tokens(conn, used)
        except Exception as exc:
            # Last-used times are a convenience; losing one minute of them is fine.
            log.warning("could not record token use", error=f"{type(exc).__name__}: {exc}")
