"""The tokens behind a process's live-feed clients: a feed lives as long as its token.

A WebSocket is authenticated once, at its handshake, and may stay open for days; the
token may meanwhile be revoked (``DELETE /api/v1/tokens/{id}``, ``netmon token revoke``,
in this process or any other) or reach its ``expires_at``. :class:`TokenWatch` keeps, per
token, its clients (for ``api.ws_max_clients_per_token``), a timer for its expiry, and
every ``api.token_cache`` asks the database once about all of its tokens (one query,
however many clients and tokens). A revoked or expired token's clients are closed with
1008. A ``token_revoked`` control notification (``netmon_control``) closes them at once,
without waiting for that query.

Cost: one small record per token, not per client; one timer per token that expires; one
query per interval while any client is connected. A database that cannot be reached
leaves the clients as they are (their feed is lost anyway) until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection

from netmon.api.feed_clients import POLICY_VIOLATION, FeedClient
from netmon.api.tokens import TokenState
from netmon.logs import get_logger
from netmon.store.database import is_connection_error

__all__ = ["TokenWatch", "TooManyClientsError"]

log = get_logger(__name__)

REVOKED = "token revoked"
EXPIRED = "token expired"
# An expiry further away than this gets no timer yet: a later check arms it (the loop's
# timers are cheap, but a token may be revoked, or its expiry changed, long before).
_TIMER_HORIZON = 86_400.0

States = Callable[[Collection[int]], Awaitable[dict[int, TokenState]]]


class TooManyClientsError(Exception):
    """This process, or this token, holds its most clients already."""


class _Token:
    __slots__ = ("clients", "expires_at", "timer")

    def __init__(self, expires_at: float | None) -> None:
        self.clients: set[FeedClient] = set()
        self.expires_at = expires_at
        self.timer: asyncio.TimerHandle | None = None


class TokenWatch:
    def __init__(self, states: States, interval: float, per_token: int) -> None:
        self.states = states
        self.interval = interval
        self.per_token = per_token
        self._tokens: dict[int | str, _Token] = {}
        self._task: asyncio.Task[None] | None = None
        # Counters.
        self.checks = 0  # queries made
        self.check_errors = 0
        self.closed_revoked = 0  # clients closed because their token was revoked
        self.closed_expired = 0

    @property
    def tokens(self) -> int:
        return len(self._tokens)

    # -- clients ---------------------------------------------------------------------

    def admit(self, client: FeedClient, expires_at: float | None) -> None:
        """Count ``client`` against its token; raise if the token holds its most."""
        entry = self._tokens.get(client.token)
        if entry is not None and len(entry.clients) >= self.per_token:
            raise TooManyClientsError(
                f"this token has {self.per_token} feed connections open already "
                "(api.ws_max_clients_per_token)"
            )
        if entry is None:
            entry = self._tokens[client.token] = _Token(expires_at)
            entry.clients.add(client)
            self._arm(client.token, entry)
        else:
            entry.clients.add(client)

    def release(self, client: FeedClient) -> None:
        entry = self._tokens.get(client.token)
        if entry is None:
            return
        entry.clients.discard(client)
        if not entry.clients:
            if entry.timer is not None:
                entry.timer.cancel()
            del self._tokens[client.token]

    def revoked(self, token_id: int) -> None:
        """Another part of netmon says ``token_id`` was revoked."""
        entry = self._tokens.get(token_id)
        if entry is not None:
            self._close(entry, REVOKED)

    def close_all(self, code: int, reason: str) -> None:
        for entry in list(self._tokens.values()):
            for client in list(entry.clients):
                client.close(code, reason)

    # -- expiry ----------------------------------------------------------------------

    def _arm(self, key: int | str, entry: _Token) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if entry.expires_at is None:
            return
        delay = entry.expires_at - time.time()
        if delay <= 0:
            self._close(entry, EXPIRED)
        elif delay <= _TIMER_HORIZON:
            loop = asyncio.get_running_loop()
            entry.timer = loop.call_later(delay, self._expire, key)

    def _expire(self, key: int | str) -> None:
        entry = self._tokens.get(key)
        if entry is not None:
            entry.timer = None
            self._arm(key, entry)  # the wall clock may be behind the loop's: again if so

    def _close(self, entry: _Token, reason: str) -> None:
        closing = [c for c in entry.clients if c.closing is None]
        for client in closing:
            client.close(POLICY_VIOLATION, reason)
        if reason == REVOKED:
            self.closed_revoked += len(closing)
        else:
            self.closed_expired += len(closing)
        if closing:
            log.info("feed clients closed", reason=reason, clients=len(closing))

    # -- the database ----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="netmon-feed-tokens")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.check_errors += 1
                if is_connection_error(exc):
                    log.warning("feed tokens not checked", error=f"{type(exc).__name__}: {exc}")
                else:
                    log.exception("feed token check failed")

    async def check(self) -> None:
        """Ask the database about every token with clients here; close the clients of
        those revoked (or gone), expired, or expiring sooner than thought."""
        ids = [key for key in self._tokens if isinstance(key, int)]
        if not ids:
            return
        states = await self.states(ids)
        self.checks += 1
        for token_id in ids:
            entry = self._tokens.get(token_id)
            if entry is None:
                continue  # its clients left during the query
            state = states.get(token_id)
            if state is None or state.revoked:
                self._close(entry, REVOKED)
            elif state.expires_at != entry.expires_at:
                entry.expires_at = state.expires_at
                self._arm(token_id, entry)
            elif entry.timer is None and entry.expires_at is not None:
                self._arm(token_id, entry)  # within the horizon now, or past it
