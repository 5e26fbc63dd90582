"""A LISTEN connection of its own that comes back after a loss.

The writer (``netmon_control``) and each API process's feed hub (samples, events,
control) hold one. A connection can end closed (the termination listener) or silently
(a network partition that closes nothing: a keep-alive query finds it); either way the
listener reconnects with backoff and tells its owner, since what was published while it
was away is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import asyncpg

from netmon.logs import get_logger
from netmon.store.database import Database, is_connection_error

__all__ = ["Listener", "NotificationHandler"]

log = get_logger(__name__)

NotificationHandler = Callable[[asyncpg.Connection, int, str, str], None]


class Listener:
    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, NotificationHandler],
        *,
        name: str,
        retry_min: float,
        retry_max: float,
        keepalive: float,
        keepalive_timeout: float,
        on_connect: Callable[[datetime | None, bool], None] | None = None,
    ) -> None:
        """``on_connect(lost_since, reconnected)`` runs once the channels are listened to:
        ``lost_since`` is when the listener last stopped being connected (or first failed
        to connect), None if nothing was missed; ``reconnected`` is False the first time."""
        self.db = db
        self.handlers = dict(handlers)
        self.name = name
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.on_connect = on_connect
        self.listening = False  # for health and tests

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Listen until ``stopping()`` (or until cancelled)."""
        retry = self.retry_min
        lost_since: datetime | None = None
        connected_before = False
        while not stopping():
            try:
                if not self.db.url:  # not started (yet): connecting would pick libpq defaults
                    raise ConnectionError("the database is not started")
                conn = await self.db.connect()
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception(f"{self.name} cannot connect; retrying")
                lost_since = lost_since or datetime.now(UTC)
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.retry_max)
                continue
            try:
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                for channel, handler in self.handlers.items():
                    await conn.add_listener(channel, handler)
                self.listening = True
                retry = self.retry_min
                if self.on_connect is not None:
                    self.on_connect(lost_since, connected_before)
                connected_before = True
                lost_since = None
                await self._keep_alive(conn, lost)
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception(f"{self.name} failed; reconnecting")
            finally:
                self.listening = False
                await _close_quietly(conn)
            if not stopping():
                lost_since = lost_since or datetime.now(UTC)
                # Info: the writer's "database unreachable" is the outage's warning.
                log.info(f"{self.name} lost its connection; reconnecting")
                await asyncio.sleep(retry)

    async def _keep_alive(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is gone: closed, or not answering."""
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.keepalive):
                    await lost.wait()
            if not lost.is_set():
                await conn.execute("SELECT 1", timeout=self.keepalive_timeout)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    """A termination listener that sets ``event`` (bound now, not to the loop variable)."""

    def on_termination(_conn: object) -> None:
        event.set()

    return on_termination


async def _close_quietly(conn: asyncpg.Connection) -> None:
    try:
        async with asyncio.timeout(2):
            await conn.close()
    except Exception:
        # A connection that will not close cleanly (server gone) is dropped.
        conn.terminate()
