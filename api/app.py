"""The Litestar application: controllers, authentication, errors, OpenAPI.

``create_app(ctx)`` builds one app around an :class:`ApiContext`; ``netmon run`` passes
its own database, writer and poller, ``netmon api`` a context of its own (see server.py).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware.base import DefineMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ControllerRouterHandler

from netmon import __version__
from netmon.api.auth import AuthMiddleware
from netmon.api.context import ApiContext
from netmon.api.controllers.admin import AuditController, InventoryController, TokenController
from netmon.api.controllers.alerts import AlertController
from netmon.api.controllers.configs import ConfigController, DeviceConfigController
from netmon.api.controllers.devices import DeviceController
from netmon.api.controllers.events import EventController
from netmon.api.controllers.health import HealthController
from netmon.api.controllers.inventory import InventorySyncController, NetBoxWebhookController
from netmon.api.controllers.live import LiveController
from netmon.api.controllers.metrics import MetricsQueryController, SeriesController
from netmon.api.controllers.metrics_export import HttpMetricsMiddleware, MetricsController
from netmon.api.controllers.rules import RuleController
from netmon.api.controllers.silences import SilenceController
from netmon.api.controllers.webhooks import DeliveryController, WebhookController
from netmon.api.feeds import FeedHub
from netmon.api.problems import handle_exception
from netmon.api.tokens import TokenCache
from netmon.ui import PAGES_PATTERN, PUBLIC_PATTERNS, schema_viewer, templates, ui_handlers

__all__ = ["create_app"]

DESCRIPTION = """\
Devices, series, metrics, events, alerts (rules, silences, webhooks) and live feeds of
netmon.

Authenticate with `Authorization: Bearer <token>`; make a token with
`netmon token create --role viewer|operator|admin`. The web UI at `/` signs in with the
same tokens (an HttpOnly cookie; see docs/ui.md). Every error is a problem-details
document (`application/problem+json`) that says why.
"""


def route_handlers() -> list[ControllerRouterHandler]:
    return [
        HealthController,
        DeviceController,
        SeriesController,
        MetricsQueryController,
        EventController,
        DeviceConfigController,
        ConfigController,
        InventoryController,
        InventorySyncController,
        NetBoxWebhookController,
        TokenController,
        AuditController,
        MetricsController,
        AlertController,
        RuleController,
        SilenceController,
        WebhookController,
        DeliveryController,
        LiveController,
        *ui_handlers(),
    ]


def create_app(ctx: ApiContext, *, manage_db: bool = False) -> Litestar:
    """The app; with ``manage_db`` it starts and stops ``ctx.db`` itself (``netmon api``)."""
    settings = ctx.settings.api
    tokens = ctx.tokens = TokenCache(ctx.db, settings)
    hub = ctx.hub = FeedHub(ctx.db, ctx.settings)
    hub.on_token_revoked = tokens.forget

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if manage_db:
            await ctx.db.start()
        tokens.start()
        await hub.start()
        if manage_db:
            # A process of its own (`netmon api`): what exists now (modules, the app, its
            # routes and schemas) lives as long as the process. Out of the collector's
            # sight, a full collection no longer walks it: over these ~100,000 objects
            # it took 80-160 ms on the benchmark machine, a stall of every request in
            # flight.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await hub.stop()
            await tokens.stop()
            if manage_db:
                await ctx.db.stop()

    def context() -> ApiContext:
        return ctx

    cors = (
        CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            allow_credentials=False,
            max_age=600,
        )
        if settings.cors_origins
        else None
    )
    return Litestar(
        route_handlers=route_handlers(),
        dependencies={"ctx": Provide(context, use_cache=True, sync_to_thread=False)},
        middleware=[
            HttpMetricsMiddleware,  # first: it counts what authentication refuses too
            DefineMiddleware(
                AuthMiddleware,
                tokens=tokens,
                rate_limit=settings.rate_limit,
                exclude=[*PUBLIC_PATTERNS, *(["^/metrics$"] if settings.metrics_public else [])],
                pages=PAGES_PATTERN,
            ),
        ],
        exception_handlers={HTTPException: handle_exception, Exception: handle_exception},
        cors_config=cors,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="netmon",
            version=__version__,
            description=DESCRIPTION,
            path="/schema",
            use_handler_docstrings=True,
            security=[{"bearer": []}],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="A token from `netmon token create`.",
                    )
                }
            ),
            # Swagger UI from the package's own copy: /schema works offline.
            render_plugins=[schema_viewer()],
        ),
        template_config=templates(),
        lifespan=[lifespan],
        logging_config=None,
        debug=False,
    )
