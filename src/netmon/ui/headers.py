"""The headers every UI page carries.

The Content-Security-Policy allows scripts from this origin only: no inline script, no
``eval``, so a value that slipped past escaping still cannot run. Styles allow
``'unsafe-inline'`` because uPlot sizes its canvas with style attributes; a style cannot
run code. ``connect-src 'self'`` covers the API and the ``ws://`` feeds of this host.
"""

from __future__ import annotations

from litestar.datastructures import ResponseHeader

__all__ = ["CSP", "PAGE_HEADERS"]

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

PAGE_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=CSP),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with
    # the page's own form posts, and the login and logout forms check the Origin.
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    # A page shows what a token may see: no shared cache may keep it.
    ResponseHeader(name="Cache-Control", value="no-store"),
]
