"""GET /metrics: Prometheus' scrape target (see api/prometheus.py for what it holds).

A viewer token is needed unless ``api.metrics_public`` (then the app factory leaves the
path out of authentication, for a scraper on a LAN that holds no token, and device samples
are on the page only if the configuration turned them on in so many words:
``ApiSettings.device_samples_exported``). A token limited to sites gets only those sites'
device samples (and ``netmon_build_info``): netmon's own figures are of the whole
process, every site's polls, errors and queues.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get

from netmon.api.auth import Principal, check_role
from netmon.api.context import Ctx
from netmon.api.http_stats import HttpMetricsMiddleware
from netmon.api.problems import responses
from netmon.api.prometheus import CONTENT_TYPE, exporter_of

__all__ = ["HttpMetricsMiddleware", "MetricsController"]


class MetricsController(Controller):
    path = "/metrics"
    tags = ["metrics"]

    @get(
        "/",
        summary="Prometheus metrics",
        media_type=CONTENT_TYPE,
        cache_control=None,
        responses=responses(),
    )
    async def metrics(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[bytes]:
        """netmon's own counters (polls, errors by class, poll duration, writes, spool,
        queues, WebSocket clients, HTTP requests) in the text exposition format 0.0.4;
        unless `api.metrics_device_samples` is false, also the latest sample of every
        device series of the token's sites, labelled device, site, role and the series'
        labels."""
        user = request.scope.get("user")
        if not ctx.settings.api.metrics_public:
            # The auth middleware has already asked for a token; this keeps /metrics
            # closed even if the route were ever left out of authentication by mistake.
            check_role(request, "viewer")
        sites = user.sites if isinstance(user, Principal) else None
        body = await exporter_of(request.app, ctx).render(sites)
        return Response(body, media_type=CONTENT_TYPE)
