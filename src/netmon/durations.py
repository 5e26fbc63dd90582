"""Human durations as engineers write them in config files: ``90s``, ``5m``, ``1h``, ``30d``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

__all__ = ["Duration", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration(value: Any) -> timedelta:
    """Accept ``timedelta``, a number of seconds, or a string such as ``30d``."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '90s', '5m', '1h' or '30d'")
    try:
        if isinstance(value, int | float):
            return timedelta(seconds=value)
        if isinstance(value, str):
            match = _PATTERN.match(value)
            if match:
                return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:
        # timedelta holds up to 999,999,999 days; pydantic reports only ValueError well.
        raise ValueError(f"{value!r} is longer than any duration netmon can hold") from None
    raise ValueError(f"expected a duration such as '90s', '5m', '1h' or '30d', got {value!r}")


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
