"""HTTP requests on ``/metrics``: the middleware that counts and times them, and the
figures it keeps per route (``NetmonCollector`` in ``prometheus.py`` turns them into
families at scrape time)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException

from netmon.histogram import Histogram

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpMetricsMiddleware", "HttpStats", "recorded_http_stats"]

# API answers take a fraction of a millisecond when cached, tens of milliseconds when they
# go to the database.
HTTP_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_HTTP_KEY = "netmon_http_stats"


class _RouteStats:
    __slots__ = ("seconds", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.seconds = Histogram(HTTP_SECONDS_BUCKETS)


class HttpStats:
    """Requests per (method, route template) and status, and their durations. Route
    templates (``/api/v1/devices/{device_id:int}``), not paths, keep the label values
    bounded whatever clients ask for."""

    __slots__ = ("routes",)

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], _RouteStats] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route)
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = _RouteStats()
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        stats.seconds.observe(seconds)


def _http_stats(app: Litestar) -> HttpStats:
    stats = app.state.get(_HTTP_KEY)
    if stats is None:
        stats = app.state[_HTTP_KEY] = HttpStats()
    assert isinstance(stats, HttpStats)
    return stats


def recorded_http_stats(app: Litestar) -> HttpStats | None:
    """The app's figures, or None before its first request."""
    stats: HttpStats | None = app.state.get(_HTTP_KEY)
    return stats


class HttpMetricsMiddleware:
    """Counts and times every HTTP request that reached a route. Put it first in the
    app's middleware, so answers of the authentication middleware (401, 429) count too.

    About 1 µs per request (measured in the tests): two clock reads, one closure, two dict
    look-ups and a bisect; no lock, as everything runs on the event loop. Paths that match
    no route (404, 405 on routing) never reach route middleware and are not counted."""

    __slots__ = ("app", "stats")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.stats: HttpStats | None = None  # the app's, found at the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        stats = self.stats
        if stats is None:
            stats = self.stats = _http_stats(scope["litestar_app"])
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            # Raised past us: an outer layer turns it into the answer.
            if not status:
                status = exc.status_code if isinstance(exc, HTTPException) else 500
            raise
        finally:
            # No status at all: the client went away before an answer (nginx's 499).
            stats.record(
                scope["method"],
                scope.get("path_template", ""),
                status or 499,
                time.perf_counter() - started,
            )
