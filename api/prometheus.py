"""``/metrics``: netmon's own state, and optionally its devices' latest samples, in the
Prometheus text exposition format.

Built as prometheus_client's custom collectors: nothing is mirrored into client-library
metric objects as it happens; every scrape reads the live counters of the feed hub and
HTTP middleware of this process, and asks the core of ``netmon run`` (poller, writer,
batcher, alerting; ``netmon.core_metrics``) for its figures, over the control socket when
the API runs as a process of its own. Each app has a registry of its own (never the
global one), so two apps in one process (tests) do not see each other.

Device samples come from this process's memory of last values (``last_values.py``), or
from PostgreSQL (one query for every series, newest value within a bounded lookback)
while that cannot answer; their text is written directly (``device_samples_page``), in a worker
thread when it is large, as it grows with the number of series.

What a scrape of ``netmon api --workers N`` sees is the worker that answered: the poller
and writer figures exist only in ``netmon run``, HTTP and WebSocket figures per worker.

Here: the registry, the collector of netmon's own metrics and the entry points; the HTTP
middleware and its figures are in ``http_stats.py``, the device samples in
``device_export.py``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import CollectorRegistry

from netmon import __version__
from netmon.api.context import ApiContext
from netmon.api.device_export import (
    DeviceRow,
    device_lookback,
    device_samples_page,
    fetch_device_samples,
)
from netmon.api.http_stats import HttpStats, recorded_http_stats
from netmon.errors import CoreUnavailableError
from netmon.histogram import Histogram
from netmon.logs import get_logger
from netmon.store.database import is_connection_error

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["CONTENT_TYPE", "MetricsExporter", "NetmonCollector", "exporter_of"]

log = get_logger(__name__)

# The classic text format: what every Prometheus and every scraper since 2014 reads.
# Without the charset, which Litestar appends to text/* itself.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4.removesuffix("; charset=utf-8")

_STATE_KEY = "netmon_metrics"


# -- netmon's own metrics --------------------------------------------------------------


def _le(hist: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(b) else repr(b), n) for b, n in hist.cumulative()]


def _count(value: Any) -> int | None:
    """A hub attribute as a number: a count, or a collection to count."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        return len(value)
    except TypeError:
        return None


class NetmonCollector:
    """Everything this process knows about itself, read at scrape time. Parts that do not
    run here (the poller and writer under ``netmon api``) are left out, not exported as
    zeros that would read as "nothing happens"."""

    def __init__(self, ctx: ApiContext, http: Callable[[], HttpStats | None]) -> None:
        self.ctx = ctx
        self.http = http

    def collect(self) -> Iterable[Metric]:
        yield _build_info_family()
        yield from self._feeds()
        yield from self._last_values()
        yield from self._feed_tokens()
        yield from self._http()

    def _feeds(self) -> Iterable[Metric]:
        hub = self.ctx.hub
        if hub is None:
            return
        clients = _count(getattr(hub, "clients", None))
        if clients is not None:
            yield GaugeMetricFamily(
                "netmon_websocket_clients",
                "WebSocket clients connected to this process's live feeds.",
                value=clients,
            )
        gaps = _count(getattr(hub, "gaps", None))
        if gaps is not None:
            yield CounterMetricFamily(
                "netmon_websocket_gaps",
                "Times a WebSocket client fell behind by a full queue (api.ws_queue) and "
                "missed messages; the client was told with a gap message.",
                value=gaps,
            )
        delivered = _count(getattr(hub, "delivered", None))
        if delivered is not None:
            yield CounterMetricFamily(
                "netmon_websocket_messages_delivered",
                "Messages queued for WebSocket clients (one per client a message reached).",
                value=delivered,
            )

        for attr, name, doc in (
            (
                "dropped",
                "netmon_websocket_messages_dropped",
                "Messages dropped at full client queues (the clients were sent gap messages).",
            ),
            (
                "reconnects",
                "netmon_websocket_listener_reconnects",
                "Times this process's LISTEN connection was lost and made again; clients got a "
                "gap message for what was published meanwhile.",
            ),
            (
                "errors",
                "netmon_websocket_fanout_errors",
                "Fan-out rounds that failed (logged); their messages were not delivered.",
            ),
            (
                "refused",
                "netmon_websocket_refused",
                "Feed connections refused with 1013: the process held api.ws_max_clients, or "
                "the token api.ws_max_clients_per_token.",
            ),
        ):
            value = _count(getattr(hub, attr, None))
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)

    def _last_values(self) -> Iterable[Metric]:
        hub = self.ctx.hub
        last = getattr(hub, "last", None)
        if last is None:
            return
        yield GaugeMetricFamily(
            "netmon_api_last_values",
            "Series whose newest value this process holds in memory (device detail and "
            "/api/v1/metrics/last read them).",
            value=last.values,
        )
        yield GaugeMetricFamily(
            "netmon_api_last_values_series",
            "Series this process knows in memory (their device, metric and labels).",
            value=last.series,
        )
        yield GaugeMetricFamily(
            "netmon_api_last_values_bytes",
            "Bytes of the last-value arrays and per-device series lists in this process.",
            value=last.nbytes,
        )
        yield CounterMetricFamily(
            "netmon_api_last_values_fills",
            "Fills of the last values from the database completed: at start, and after "
            "each gap in the live feed.",
            value=last.fills,
        )

    def _feed_tokens(self) -> Iterable[Metric]:
        hub = self.ctx.hub
        if hub is None:
            return
        closed = CounterMetricFamily(
            "netmon_websocket_closed_by_token",
            "Feed connections closed with 1008 because their token was revoked or expired.",
            labels=["reason"],
        )
        closed.add_metric(["revoked"], hub.tokens.closed_revoked)
        closed.add_metric(["expired"], hub.tokens.closed_expired)
        yield closed

    def _http(self) -> Iterable[Metric]:
        guard = self.ctx.guard
        if guard is not None:
            yield GaugeMetricFamily(
                "netmon_http_connections",
                "Open HTTP and WebSocket connections of this process (api.max_connections "
                "bounds them).",
                value=guard.open,
            )
            yield CounterMetricFamily(
                "netmon_http_connections_refused",
                "Connections refused at once with a 503 because this process held "
                "api.max_connections (or api.max_connections_per_client from one address).",
                value=guard.refused,
            )
        stats = self.http()
        if stats is None:
            return
        requests = CounterMetricFamily(
            "netmon_http_requests",
            "HTTP requests answered, by method, route template and status (499: the "
            "client went away first). Requests to paths that match no route are not counted.",
            labels=["method", "route", "status"],
        )
        durations = HistogramMetricFamily(
            "netmon_http_request_duration_seconds",
            "Time from a request reaching its route (authentication included) to the end "
            "of its answer.",
            labels=["method", "route"],
        )
        for (method, route), r in sorted(stats.routes.items()):
            for status, n in sorted(r.statuses.items()):
                requests.add_metric([method, route, str(status)], n)
            durations.add_metric([method, route], _le(r.seconds), r.seconds.sum)
        yield requests
        yield durations


# -- the exporter ----------------------------------------------------------------------


class MetricsExporter:
    """One per app: its registry, its HTTP figures, and what renders a scrape."""

    def __init__(self, ctx: ApiContext, app: Litestar) -> None:
        self.ctx = ctx
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NetmonCollector(ctx, lambda: recorded_http_stats(app)))
        # What every Python exporter reports: CPU, memory, open files, GC, interpreter.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    async def render(self, sites: frozenset[str] | None = None) -> bytes:
        """The page for one scrape. For a token limited to ``sites``: only those sites'
        device samples. netmon's own figures are of every site (polls, errors, queues of
        the whole process), so they are for tokens of every site."""
        own = generate_latest(self.registry) if sites is None else _build_info()
        if sites is None and self.ctx.core is not None:
            own += await self._core()
        if not self.ctx.settings.api.device_samples_exported:
            return own
        ok = True
        rows: list[DeviceRow] = []
        try:
            held = getattr(self.ctx.hub, "last", None)
            rows = await fetch_device_samples(
                self.ctx.db, device_lookback(self.ctx), sites, held=held
            )
        except Exception as exc:
            if not (is_connection_error(exc) or isinstance(exc, TimeoutError)):
                raise
            ok = False
            log.warning("device samples left out of /metrics", error=f"{type(exc).__name__}: {exc}")
        if len(rows) < 1000:
            return own + device_samples_page(rows, ok)
        return own + await asyncio.to_thread(device_samples_page, rows, ok)

    async def _core(self) -> bytes:
        """The core's figures; a core that does not answer leaves them out (logged), as a
        scrape must not fail for it: its own absence then shows as missing series."""
        assert self.ctx.core is not None
        try:
            figures = await self.ctx.core.exposition()
        except CoreUnavailableError as exc:
            log.warning("the core's figures left out of /metrics", error=str(exc))
            figures = b""
        up = GaugeMetricFamily(
            "netmon_core_up",
            "1 when the core (poller, writer, alerting) answered this scrape; 0 when its "
            "figures are missing from it.",
            value=1 if figures else 0,
        )
        return figures + _render(up)


def _build_info_family() -> Metric:
    info = GaugeMetricFamily(
        "netmon_build_info",
        "Always 1; the version label says which netmon answers (join on it to see "
        "what runs where).",
        labels=["version"],
    )
    info.add_metric([__version__], 1)
    return info


class _Families:
    def __init__(self, families: tuple[Metric, ...]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


def _render(*families: Metric) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def _build_info() -> bytes:
    return _render(_build_info_family())


def exporter_of(app: Litestar, ctx: ApiContext) -> MetricsExporter:
    exporter = app.state.get(_STATE_KEY)
    if exporter is None:
        exporter = app.state[_STATE_KEY] = MetricsExporter(ctx, app)
    assert isinstance(exporter, MetricsExporter)
    return exporter
