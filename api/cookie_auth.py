"""The web UI's token cookie, and the checks a cookie-borne request must pass.

A browser sends a cookie by itself, also on requests another site's page starts: that is
cross-site request forgery. Three layers keep such a request from acting:

- the cookie is ``SameSite=Strict``: a browser leaves it off any request that another
  site started, navigation included;
- a state-changing request (anything but GET, HEAD, OPTIONS) authenticated by the cookie
  must carry ``X-Requested-With``. A page of another origin can set that header only
  after a CORS preflight, and this API grants none with credentials
  (``allow_credentials`` is off in app.py);
- a request (WebSocket handshakes included: they are GETs a page of any origin may open)
  that carries an ``Origin`` must name this very host.

Bearer tokens in the ``Authorization`` header are not ambient and need none of this.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException

__all__ = ["CSRF_HEADER", "TOKEN_COOKIE", "check_cookie_request", "same_origin"]

TOKEN_COOKIE = "netmon_token"  # noqa: S105 (a cookie name, not a secret)
CSRF_HEADER = "x-requested-with"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """No ``Origin`` (not a cross-origin browser request), or one naming this host."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    host = connection.headers.get("host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def check_cookie_request(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """403 for a cookie-authenticated request that could have been forged."""
    if not same_origin(connection):
        raise PermissionDeniedException("cross-origin request refused: the Origin is not this host")
    method = connection.scope.get("method", "GET")
    if method not in SAFE_METHODS and not connection.headers.get(CSRF_HEADER):
        raise PermissionDeniedException(
            "a request authenticated by the session cookie must send X-Requested-With"
        )
