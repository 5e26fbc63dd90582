"""netmon's web UI: pages for a NOC (overview, devices, alerts, configurations) served by
the API's own process, on its port, with its tokens and roles. See docs/ui.md."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from netmon.ui.assets import STATIC_PATH, schema_viewer, static_router, templates
from netmon.ui.pages import PAGES_PATTERN, PageController
from netmon.ui.session import SessionController

__all__ = ["PAGES_PATTERN", "PUBLIC_PATTERNS", "schema_viewer", "templates", "ui_handlers"]

# What the auth middleware lets through without a token: the login form and the assets
# (vendored libraries and the UI's own scripts; nothing in them is secret).
PUBLIC_PATTERNS = ["^/login$", "^/logout$", f"^{STATIC_PATH}/"]


def ui_handlers() -> list[ControllerRouterHandler]:
    return [SessionController, PageController, static_router()]
