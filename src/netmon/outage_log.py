"""Outage logging: one line when something goes away, one when it is back.

A database outage of ten minutes used to bury its one useful line under hundreds of
warnings with tracebacks, one per failed write, retry and flush. A :class:`StateLog`
logs on transitions only: ``<what> unreachable`` once (with ``since`` and what is done
meanwhile), ``<what> reachable again`` once (with ``after_s``), and while it lasts at most
one ``<what> still unreachable`` reminder every ``remind_every`` seconds. Expected
connection errors are named in a field, never logged with a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["REMIND_EVERY", "StateLog", "quiet_library_outage_logs"]

REMIND_EVERY = 300.0  # seconds between "still unreachable" reminders


def _error(error: BaseException | str | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"


class StateLog:
    """``state = StateLog(log, "database")``; ``state.down(exc, doing="spooling")`` on
    every failure, ``state.up()`` on every success: only changes (and reminders) log."""

    def __init__(
        self,
        log: Any,
        what: str,
        *,
        remind_every: float = REMIND_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        self.remind_every = remind_every
        self._clock = clock
        self._down_at: float | None = None
        self._since: datetime | None = None
        self._reminded_at = 0.0

    @property
    def is_down(self) -> bool:
        return self._down_at is not None

    @property
    def since(self) -> datetime | None:
        return self._since

    def down(self, error: BaseException | str | None = None, **fields: Any) -> bool:
        """Note a failure; True when this one began the outage (and was logged)."""
        now = self._clock()
        if self._down_at is None:
            self._down_at = self._reminded_at = now
            self._since = datetime.now(UTC)
            self.log.warning(
                f"{self.what} unreachable",
                since=self._since.isoformat(),
                error=_error(error),
                **fields,
            )
            return True
        if now - self._reminded_at >= self.remind_every:
            self._reminded_at = now
            self.log.warning(
                f"{self.what} still unreachable",
                since=self._since.isoformat() if self._since else None,
                down_s=round(now - self._down_at),
                error=_error(error),
                **fields,
            )
        return False

    def up(self, **fields: Any) -> bool:
        """Note a success; True when this one ended an outage (and was logged)."""
        if self._down_at is None:
            return False
        after = self._clock() - self._down_at
        self._down_at = self._since = None
        self.log.info(f"{self.what} reachable again", after_s=round(after, 1), **fields)
        return True


class _DropConnectionErrors(logging.Filter):
    """asyncpg's pool logs a warning with a traceback each time it fails to reconnect its
    minimum of connections: every few hundred milliseconds for the whole outage. The
    writer's StateLog says the database is gone; a connection error here says nothing
    more, so it is dropped. Anything else the pool logs comes through."""

    def filter(self, record: logging.LogRecord) -> bool:
        from netmon.store.database import is_connection_error

        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and is_connection_error(exc))


_FILTER = _DropConnectionErrors()


def quiet_library_outage_logs() -> None:
    """Drop the database libraries' per-retry connection-error logs (idempotent)."""
    for name in ("asyncpg.pool", "asyncpg"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
