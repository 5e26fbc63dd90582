"""Logging in and out: the token a user pastes becomes an HttpOnly cookie.

The token is checked by the API's own TokenCache, so a revoked, expired or unknown token
is refused here exactly as on the API. It never appears in a URL (the form is POSTed) or
in the log. The cookie's checks against forgery are in ``netmon.api.cookie_auth``.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Redirect, Template

from netmon.api.auth import Principal
from netmon.api.context import ApiContext
from netmon.api.cookie_auth import TOKEN_COOKIE, same_origin
from netmon.ui.headers import PAGE_HEADERS

__all__ = ["SessionController"]

MAX_TOKEN_CHARS = 200


def _cookie(request: Request[Any, Any, Any], value: str, max_age: int | None = None) -> Cookie:
    return Cookie(
        key=TOKEN_COOKIE,
        value=value,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=max_age,
    )


class SessionController(Controller):
    path = "/"
    include_in_schema = False
    response_headers = PAGE_HEADERS

    @get("/login", exclude_from_auth=True, sync_to_thread=False)
    def login_form(self) -> Template:
        return Template("login.html", context={"error": None, "user": None})

    @post("/login", exclude_from_auth=True, status_code=303)
    async def login(self, ctx: ApiContext, request: Request[Any, Any, Any]) -> Redirect | Template:
        if not same_origin(request):
            raise PermissionDeniedException("cross-origin login refused")
        form = await request.form()
        token = str(form.get("token", "")).strip()
        error = "Paste a token made with: netmon token create --role viewer"
        if token and len(token) <= MAX_TOKEN_CHARS and ctx.tokens is not None:
            try:
                await ctx.tokens.principal(token)
            except NotAuthorizedException as exc:
                error = f"This token is refused: {exc.detail}"
            else:
                return Redirect("/", status_code=303, cookies=[_cookie(request, token)])
        return Template("login.html", context={"error": error, "user": None}, status_code=401)

    @post("/logout", exclude_from_auth=True, status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        if not same_origin(request):
            raise PermissionDeniedException("cross-origin logout refused")
        return Redirect("/login", status_code=303, cookies=[_cookie(request, "", max_age=0)])


def signed_in(request: Request[Any, Any, Any]) -> Principal | None:
    user = request.scope.get("user")
    return user if isinstance(user, Principal) else None
