"""The range every time netmon takes from outside is brought into.

RFC 3339 admits years 0001 to 9999 with any offset. Near those ends, an offset or an
added duration overflows Python's datetime, and asyncpg writes ``datetime.max`` as
PostgreSQL's 'infinity' and reads it back without a timezone. Two days short of each end,
nothing downstream meets them.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["TIME_MAX", "TIME_MIN", "bounded_utc"]

TIME_MIN = datetime(1, 1, 2, tzinfo=UTC)
TIME_MAX = datetime(9999, 12, 30, tzinfo=UTC)


def bounded_utc(value: datetime) -> datetime:
    """``value`` (with a timezone) in UTC, within [TIME_MIN, TIME_MAX]."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return TIME_MIN if value.year == 1 else TIME_MAX
    return min(max(utc, TIME_MIN), TIME_MAX)
