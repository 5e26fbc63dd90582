"""Who is asking, and may they: bearer tokens, roles, site scope, rate limits.

Every route but ``/health/*`` and ``/schema*`` needs a token (``Authorization: Bearer``;
WebSockets may pass ``?access_token=`` as browsers cannot set their headers). The web UI's
browser holds its token in an HttpOnly cookie (``netmon.ui.session``); the cookie counts for
the UI's pages, the JSON API and the feeds alike, with two extra checks because a browser
sends it by itself: a state-changing request must carry ``X-Requested-With`` (a header no
other site's page can add without a CORS preflight, which this API never grants with
credentials), and a request that names its ``Origin`` must name this host. Roles nest:
viewer reads, operator also changes devices and reloads the inventory, admin also reads
the audit log and manages tokens. A token limited to sites sees only those sites'
devices; the rest answer 404 so that their names do not leak.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import (
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    TooManyRequestsException,
)
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp, Guard

from netmon.api.cookie_auth import TOKEN_COOKIE, check_cookie_request
from netmon.config import Role
from netmon.store.audit import Actor

if TYPE_CHECKING:
    from litestar.handlers.base import BaseRouteHandler

    from netmon.api.tokens import TokenCache

__all__ = [
    "ROLE_RANK",
    "AuthMiddleware",
    "Principal",
    "actor_of",
    "check_role",
    "check_site",
    "requires",
]

ROLE_RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}
# The NetBox webhook is authorised by its signature (controllers/inventory.py).
PUBLIC_PATHS = ["^/health/", "^/schema", "^/api/v1/inventory/netbox/webhook$"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The token behind a request."""

    token_id: int | None
    name: str
    role: Role
    sites: frozenset[str] | None  # None: every site

    def has(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def sees(self, site: str | None) -> bool:
        return self.sites is None or (site is not None and site in self.sites)


def check_role(connection: ASGIConnection[Any, Any, Any, Any], role: Role) -> None:
    """401 without a token, 403 unless the token's role is ``role`` or above."""
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException("a token is required")
    if not user.has(role):
        raise PermissionDeniedException(
            f"this needs the {role} role; the token {user.name!r} is {user.role}"
        )


def requires(role: Role) -> Guard:
    """A route guard: :func:`check_role`. A coroutine function, because Litestar runs a
    plain function guard in its thread pool: a thread hop per request, about a third of a
    millisecond of the API's CPU at 64 connections (bench/api.py), for a check that does
    no I/O."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        check_role(connection, role)

    guard.__name__ = f"requires_{role}"
    return guard


def check_site(principal: Principal, site: str | None, what: str) -> None:
    """404 for an object outside the token's sites, worded as for a missing one."""
    if not principal.sees(site):
        raise NotFoundException(f"{what} not found")


def actor_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    """The audit log's view of the caller."""
    user: Principal = connection.scope["user"]
    client = connection.client.host if connection.client else None
    return Actor(
        name=user.name,
        token_id=user.token_id,
        role=user.role,
        request_id=connection.scope.get("state", {}).get("request_id"),
        client=client,
    )


class _Bucket:
    """A token bucket: ``rate`` per second, bursts up to ``burst``."""

    __slots__ = ("level", "stamp")

    def __init__(self, burst: float) -> None:
        self.level = burst
        self.stamp = time.monotonic()


class RateLimiter:
    """Requests per minute per token, per process (a proxy in front of several workers
    multiplies the limit by their number). Constant memory per token, no I/O."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(per_minute / 6.0, 10.0)  # ten seconds' worth
        self._buckets: dict[int | str, _Bucket] = {}

    def take(self, key: int | str) -> float:
        """0 if allowed, else the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.burst)
        now = time.monotonic()
        bucket.level = min(self.burst, bucket.level + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.level >= 1.0:
            bucket.level -= 1.0
            return 0.0
        return (1.0 - bucket.level) / self.rate


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise NotAuthorizedException("expected 'Authorization: Bearer <token>'")
        return value.strip()
    if connection.scope["type"] == ScopeType.WEBSOCKET:
        query: str | None = connection.query_params.get("access_token")
        if query:
            return query
    cookie = connection.cookies.get(TOKEN_COOKIE)
    if cookie:
        check_cookie_request(connection)
        return cookie
    return None


class AuthMiddleware(AbstractAuthenticationMiddleware):
    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenCache,
        rate_limit: int,
        exclude: list[str] | None = None,
        pages: str | None = None,
    ) -> None:
        super().__init__(app, exclude=[*PUBLIC_PATHS, *(exclude or [])])
        self.tokens = tokens
        self.limiter = RateLimiter(rate_limit) if rate_limit else None
        # The UI's pages: without a valid token they are asked for anyway (user None),
        # so that the page can send the browser to the login form instead of a 401.
        self.pages = re.compile(pages) if pages else None

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        request_id = connection.headers.get("x-request-id")
        if not request_id or len(request_id) > 100 or not request_id.isprintable():
            request_id = uuid.uuid4().hex
        connection.scope.setdefault("state", {})["request_id"] = request_id
        page = self.pages is not None and self.pages.match(connection.scope["path"]) is not None
        token = _bearer(connection)
        if not token:
            if page:
                return AuthenticationResult(user=None, auth=None)
            raise NotAuthorizedException("a token is required: 'Authorization: Bearer <token>'")
        try:
            principal = await self.tokens.principal(token)
        except NotAuthorizedException:
            if page:  # revoked or expired: the page says so and offers the login form
                return AuthenticationResult(user=None, auth=None)
            raise
        if self.limiter is not None:
            wait = self.limiter.take(principal.token_id or principal.name)
            if wait:
                retry = str(max(1, int(wait + 0.999)))
                raise TooManyRequestsException(
                    f"rate limit of this token exceeded; retry in {retry} s",
                    headers={"Retry-After": retry},
                )
        return AuthenticationResult(user=principal, auth=token)
