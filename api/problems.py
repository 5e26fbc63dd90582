"""One error shape for every 4xx and 5xx: problem details (RFC 9457).

``{"type", "title", "status", "detail", "instance"}``, plus ``errors`` (which field, and
why) when input failed validation. Routes declare the problems they can answer with
``responses(...)``, so the OpenAPI document tells clients the truth about errors too.

Below the app the same shape is written as bytes (``problem_json``): by the HTTP server
layer (api/http_limits.py: limits, malformed requests, uvicorn's own 500, WebSocket
handshake refusals), and by :class:`PlainErrorsAsProblems` for the one plain-text error
Litestar writes outside the app's exception handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from netmon.errors import CoreUnavailableError
from netmon.logs import get_logger
from netmon.store.database import is_connection_error

__all__ = [
    "PROBLEM_JSON",
    "Conflict",
    "FieldError",
    "PlainErrorsAsProblems",
    "Problem",
    "handle_exception",
    "is_too_deep",
    "problem",
    "problem_json",
    "responses",
]

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class Conflict(ClientException):
    """409: the request is sound, but the resource's state does not allow it now."""

    status_code = HTTPStatus.CONFLICT


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    type: str  # always sent, though RFC 9457 lets "about:blank" be left out
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


_DESCRIPTIONS = {
    400: "The request is malformed or a value is invalid; `errors` names the fields.",
    401: "No valid token: send `Authorization: Bearer <token>`.",
    403: "The token's role does not allow this.",
    404: "No such resource (or it is outside the token's sites).",
    405: "The method is not allowed on this path.",
    409: "The request conflicts with the resource's state.",
    413: "The request body is too large.",
    414: "The request target (path and query) is over `api.max_url_bytes`; the server "
    "answers it before reading further, and closes the connection.",
    429: "Too many requests for this token; retry after `Retry-After` seconds.",
    431: "The request head is over `api.max_header_bytes` or `api.max_headers` fields.",
    500: "netmon failed; the log holds the details.",
    503: "A dependency (the database) is not available now.",
}


def responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problems a route can answer with; every authenticated route
    can also answer 400, 401, 403, 429, 500 and 503, and the server before any route 414
    and 431, so they are always included."""
    every = {400, 401, 403, 414, 429, 431, 500, 503, *codes}
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS.get(code, HTTPStatus(code).phrase),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for code in sorted(every)
    }


def problem(
    status: int, detail: str | None, instance: str | None = None, **extra: Any
) -> Response[Problem]:
    body = Problem(
        type="about:blank",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        **extra,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def problem_json(status: int, detail: str | None, instance: str | None = None) -> bytes:
    """The problem document as bytes, for answers written below the app."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:  # a status Python does not name
        title = "Client Error" if status < 500 else "Server Error"
    return msgspec.json.encode(
        Problem(type="about:blank", title=title, status=status, detail=detail, instance=instance)
    )


def _field_errors(extra: Any) -> list[FieldError] | None:
    if not isinstance(extra, list):
        return None
    errors = []
    for item in extra:
        if isinstance(item, dict):
            key = item.get("key") or item.get("source") or ""
            errors.append(FieldError(field=str(key), message=str(item.get("message", ""))))
    return errors or None


def _reason(request: Request[Any, Any, Any], exc: HTTPException) -> str | None:
    """The exception's detail, or for Litestar's own (which repeat the title) the reason."""
    status = exc.status_code
    if exc.detail and exc.detail != HTTPStatus(status).phrase:
        return exc.detail
    if status == 404:
        return f"nothing at {request.url.path}"
    if status == 405:
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
        return f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    if status == 413:
        try:
            limit = request.route_handler.resolve_request_max_body_size()
        except (KeyError, AttributeError):
            limit = None
        return (
            f"the request body is over {limit} bytes" if limit else "the request body is too large"
        )
    return exc.detail or None


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    path = request.url.path
    if isinstance(exc, HTTPException):
        status = exc.status_code
        errors = _field_errors(exc.extra) if isinstance(exc, ValidationException) else None
        response = problem(status, _reason(request, exc), path, errors=errors)
        if exc.headers:
            response.headers.update(exc.headers)
        if status == 401:
            response.headers.setdefault("WWW-Authenticate", 'Bearer realm="netmon"')
        return response
    if is_too_deep(exc):
        # msgspec's own bound on nesting (the interpreter's recursion limit), met while
        # reading the body: the client's document, not a fault of ours.
        return problem(400, "the JSON body is nested too deeply", path)
    if isinstance(exc, CoreUnavailableError):
        log.warning("core unavailable", path=path, error=str(exc))
        response = problem(503, f"{exc}; retry shortly", path)
        response.headers["Retry-After"] = "5"
        return response
    if is_connection_error(exc):
        log.warning("database unreachable", path=path, error=f"{type(exc).__name__}: {exc}")
        response = problem(503, "the database is not reachable; retry shortly", path)
        response.headers["Retry-After"] = "5"
        return response
    log.exception("request failed", path=path, method=request.method)
    return problem(500, "internal error; see the netmon log", path)


def is_too_deep(exc: BaseException) -> bool:
    """A JSON document nested past what msgspec will decode (``[[[[...``)."""
    return isinstance(exc, RecursionError) and "while deserializing" in str(exc)


_PLAIN_DETAIL_MAX = 500  # characters of a plain-text error body kept as the detail
_Send = Callable[[dict[str, Any]], Awaitable[None]]
_Receive = Callable[[], Awaitable[dict[str, Any]]]


def _is_plain(headers: Any) -> bool:
    """No content type, or a text one: not a document of ours (the app's own JSON
    answers, such as the readiness report's 503, are left alone)."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return bool(value.lower().startswith(b"text/"))
    return True


class PlainErrorsAsProblems:
    """ASGI wrapper: a 4xx/5xx that leaves the app as plain text is rewritten as a problem,
    its text kept as the detail and its other headers as they were. Only OPTIONS requests
    are looked at, so that the others pay one check: the one such answer is Litestar's
    refusal of a CORS preflight from an origin not allowed ("Disallowed CORS Origin"),
    which its CORS middleware writes outside the app's exception handlers (api/server.py
    wraps the app when CORS is on)."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None  # the start of a plain error, until its body came
        text = bytearray()

        async def send_problems(message: dict[str, Any]) -> None:
            nonlocal held
            if held is None:
                if (
                    message["type"] == "http.response.start"
                    and message["status"] >= 400
                    and _is_plain(message.get("headers", ()))
                ):
                    held = message
                    return
                await send(message)
                return
            if len(text) < _PLAIN_DETAIL_MAX:
                text.extend(message.get("body", b"")[:_PLAIN_DETAIL_MAX])
            if not message.get("more_body", False):
                detail = text.decode("utf-8", "replace").strip()[:_PLAIN_DETAIL_MAX]
                await _send_problem(send, held, detail or None, scope.get("path"))

        await self.app(scope, receive, send_problems)


async def _send_problem(
    send: _Send, start: dict[str, Any], detail: str | None, path: str | None
) -> None:
    status = start["status"]
    body = problem_json(status, detail, path)
    headers = [
        (name, value)
        for name, value in start.get("headers", ())
        if name.lower() not in (b"content-type", b"content-length")
    ]
    headers += [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
