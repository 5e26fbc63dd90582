"""The UI's pages: server-rendered shells (layout, navigation, who is signed in) that the
page's script fills from the JSON API and keeps current over the WebSocket feeds.

The data comes from the same routes every other client uses, so the role and site
checks are the API's own; a page only decides whether anyone is signed in at all.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Redirect, Template

from netmon.ui.headers import PAGE_HEADERS
from netmon.ui.session import signed_in

__all__ = ["PAGES_PATTERN", "PageController"]

# The paths above, for the auth middleware: without a token they still reach the handler,
# which sends the browser to the login form.
PAGES_PATTERN = r"^/(?:devices(?:/\d+)?|alerts|configs)?$"


def _page(request: Request[Any, Any, Any], name: str, **context: Any) -> Template | Redirect:
    user = signed_in(request)
    if user is None:
        return Redirect("/login", status_code=303)
    return Template(
        f"{name}.html",
        context={"page": name, "user": user, "operator": user.has("operator"), **context},
    )


class PageController(Controller):
    path = "/"
    include_in_schema = False
    response_headers = PAGE_HEADERS

    @get("/", sync_to_thread=False)
    def overview(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        return _page(request, "overview")

    @get("/devices", sync_to_thread=False)
    def devices(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        return _page(request, "devices")

    @get("/devices/{device_id:int}", sync_to_thread=False)
    def device(self, request: Request[Any, Any, Any], device_id: int) -> Template | Redirect:
        return _page(request, "device", device_id=device_id)

    @get("/alerts", sync_to_thread=False)
    def alerts(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        return _page(request, "alerts")

    @get("/configs", sync_to_thread=False)
    def configs(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        return _page(request, "configs")
