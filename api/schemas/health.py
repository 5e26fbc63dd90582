"""Health reports."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

__all__ = ["Check", "Live", "Ready"]


class Live(msgspec.Struct, frozen=True):
    status: Literal["ok"] = "ok"


class Check(msgspec.Struct, frozen=True, omit_defaults=True):
    ok: bool
    detail: str | None = None
    value: float | None = None  # what was measured (lag in seconds, latency in ms)


class Ready(msgspec.Struct, frozen=True):
    status: Literal["ready", "not ready"]
    checks: dict[str, Check]
    checked_at: datetime  # the answer is kept and served again for a second
