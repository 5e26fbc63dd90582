"""NetBox's REST API over one httpx connection pool: paging, retries, and errors that say
what to check.

:class:`NetBoxClient` reads lists page by page (``limit``/``offset``): the first page
gives ``count``, then the other offsets are fetched a few at a time and handed over in
order. Requests that failed to connect, timed out, or got a 5xx or 429 answer are retried
with exponential backoff and jitter (a 429's ``Retry-After`` is honoured up to a bound);
any other 4xx is raised at once as a :class:`NetBoxError` carrying NetBox's own reason.

Found the hard way, against NetBox 4.7.3:

* NetBox caps ``limit`` at its ``MAX_PAGE_SIZE`` without saying so: the offsets after the
  first page step by the length of the page it really returned, not by the limit asked.
* ``next`` links are built from the request NetBox saw (``build_absolute_uri``): behind a
  TLS-terminating proxy they can say ``http://`` or an inner host name, so offsets are
  computed here, never followed.
* Offset pages shift when objects are created or deleted during the read, and an object
  can fall between two pages. Every page repeats ``count``; when it changed during the
  read, the list is read again by cursor (``start=<pk>``, NetBox 4.7), which is ordered
  by primary key and misses nothing that existed throughout. Pages may then repeat
  objects: :meth:`NetBoxClient.all` keeps the last copy of each id.
* A token without permission to view an object type is not refused: NetBox answers 200
  with no objects. Only an unknown or expired token gets a 403 (401 without a scheme).
* Query parameters: a list is sent as the parameter repeated (``status=active&
  status=offline``), booleans as ``true``/``false``.

The token is sent in the ``Authorization`` header only: never logged, never in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from netmon.config import NetBoxSettings
from netmon.errors import NetmonError
from netmon.logs import get_logger

__all__ = [
    "NetBoxAuthError",
    "NetBoxClient",
    "NetBoxError",
    "NetBoxRequestError",
    "NetBoxTimeoutError",
    "NetBoxUnavailableError",
    "query_params",
]

log = get_logger(__name__)

TOKEN_KEY = "inventory.netbox.token"  # noqa: S105 - the setting's name
# A 429's Retry-After above this is cut to it: a sync that waits minutes for one page is
# worse than one that fails and is tried again at the next interval.
MAX_RETRY_AFTER_S = 30.0
MAX_BACKOFF_S = 10.0
# How much of an error body goes into a message.
BODY_SNIPPET = 300


class NetBoxError(NetmonError):
    """NetBox could not give what was asked. The message says what to check; ``status``
    is the HTTP status when NetBox answered (None when it did not)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NetBoxUnavailableError(NetBoxError, ConnectionError):
    """NetBox could not be reached, or kept answering 5xx/429, after the retries."""


class NetBoxTimeoutError(NetBoxUnavailableError, TimeoutError):
    """NetBox did not answer within the timeout, after the retries."""


class NetBoxAuthError(NetBoxError, PermissionError):
    """NetBox refused the token (401/403)."""


class NetBoxRequestError(NetBoxError, ValueError):
    """NetBox refused the request itself (a 4xx other than 401/403/429): a bad filter,
    a path this NetBox does not have, a write it did not accept."""


QueryList = list[tuple[str, str | int | float | bool | None]]


def query_params(params: Mapping[str, Any] | None) -> QueryList:
    """``params`` as NetBox reads them: lists repeated, booleans ``true``/``false``,
    ``None`` left out."""
    out: QueryList = []
    for key, value in (params or {}).items():
        values = value if isinstance(value, list | tuple | set | frozenset) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool):
                out.append((key, "true" if item else "false"))
            else:
                out.append((key, str(item)))
    return out


def _authorization(token: str) -> str:
    # v2 tokens (NetBox 4.5+) are nbt_<key>.<secret> and only work as Bearer; v1 tokens
    # (40 hex characters) only as Token.
    return f"Bearer {token}" if token.startswith("nbt_") else f"Token {token}"


def _verify(value: bool | str | Path) -> bool | ssl.SSLContext:
    if isinstance(value, bool):
        return ssl.create_default_context() if value else False
    return ssl.create_default_context(cafile=str(Path(value).expanduser()))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(response: httpx.Response) -> str:
    """NetBox's own words for a refusal: ``detail``, or ``field: message`` pairs (a bad
    filter value answers ``{"site": ["Select a valid choice. ..."]}``)."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return text[:BODY_SNIPPET] or response.reason_phrase
    if isinstance(body, Mapping):
        if "detail" in body and len(body) == 1:
            return str(body["detail"])[:BODY_SNIPPET]
        parts = []
        for key, value in body.items():
            text = "; ".join(str(v) for v in value) if isinstance(value, list) else str(value)
            parts.append(f"{key}: {text}")
        return ", ".join(parts)[:BODY_SNIPPET]
    if isinstance(body, list):
        return "; ".join(str(v) for v in body)[:BODY_SNIPPET]
    return str(body)[:BODY_SNIPPET]


def _fields_named(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    if isinstance(body, Mapping):
        return [str(k) for k in body if k not in ("detail", "non_field_errors")]
    return []


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "no answer within the timeout"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {text}"
    return f"{type(exc).__name__}: {text}"


class NetBoxClient:
    """One NetBox API, one pool of keep-alive HTTP/1.1 connections.

    Built from :class:`NetBoxSettings`, or from explicit arguments (which also override
    the settings'). ``concurrency`` bounds the requests in flight (pages of one list are
    fetched that many at a time); ``backoff`` is the first retry's delay in seconds.
    """

    def __init__(
        self,
        settings: NetBoxSettings | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        verify: bool | str | Path | None = None,
        page_size: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        concurrency: int = 4,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if settings is not None:
            url = url if url is not None else settings.url
            if token is None:
                token = settings.token.reveal(TOKEN_KEY)
            verify = verify if verify is not None else settings.verify_tls
            page_size = page_size if page_size is not None else settings.page_size
            timeout = timeout if timeout is not None else settings.timeout.total_seconds()
            retries = retries if retries is not None else settings.retries
        if not url:
            raise NetBoxRequestError("inventory.netbox.url: NetBox's URL is not set")
        if not token:
            raise NetBoxAuthError(f"{TOKEN_KEY}: the token is empty")
        self.url = url.rstrip("/")
        self.page_size = max(1, min(page_size or 250, 1000))
        self.timeout = float(timeout if timeout is not None else 30.0)
        self.retries = max(0, retries if retries is not None else 3)
        self.concurrency = max(1, concurrency)
        self.backoff = max(0.0, backoff)
        self._slots = asyncio.Semaphore(self.concurrency)
        self._http = httpx.AsyncClient(
            base_url=self.url + "/",
            headers={
                "Authorization": _authorization(token.strip()),
                "Accept": "application/json",
            },
            verify=_verify(True if verify is None else verify),
            timeout=self.timeout,
            limits=httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            ),
            # NetBox is inside the network netmon watches: a proxy from the environment
            # would be a surprise, and NO_PROXY rarely lists it.
            trust_env=False,
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:  # never the token
        return f"NetBoxClient({self.url!r})"

    async def __aenter__(self) -> NetBoxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # --- single requests -------------------------------------------------------------

    async def get(
        self, path: str, params: Mapping[str, Any] | None = None, *, hint: str | None = None
    ) -> Any:
        """The JSON NetBox answers to GET ``path`` (``/api/...``). ``hint`` names the
        setting a 400 most likely comes from (``inventory.netbox.filters``)."""
        response = await self._request("GET", path, query_params(params), None, hint)
        return self._json(response, "GET", path)

    async def post(self, path: str, body: Any, *, hint: str | None = None) -> Any:
        """POST ``body`` as JSON. Retried only when it was surely not received (connect
        error, 429), so a retry never writes twice."""
        response = await self._request("POST", path, [], body, hint)
        return self._json(response, "POST", path)

    async def status(self) -> dict[str, Any]:
        """``/api/status/``: ``netbox-version``, ``python-version``, plugins, workers."""
        answer = await self.get("/api/status/")
        if not isinstance(answer, dict) or "netbox-version" not in answer:
            raise NetBoxRequestError(
                f"{self.url}/api/status/ is not NetBox's status: check inventory.netbox.url"
            )
        return answer

    async def version(self) -> tuple[int, ...]:
        """NetBox's version as numbers, e.g. (4, 7, 3)."""
        text = str((await self.status())["netbox-version"])
        numbers = []
        for part in text.split("-")[0].split("."):
            digits = "".join(c for c in part if c.isdigit())
            if not digits:
                break
            numbers.append(int(digits))
        return tuple(numbers)

    # --- lists -----------------------------------------------------------------------

    async def all(
        self, path: str, params: Mapping[str, Any] | None = None, *, hint: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of a list, each once (by ``id``; the last copy read wins)."""
        seen: dict[Any, dict[str, Any]] = {}
        anonymous: list[dict[str, Any]] = []
        async for page in self.pages(path, params, hint=hint):
            for obj in page:
                key = obj.get("id")
                if key is None:
                    anonymous.append(obj)
                else:
                    seen.pop(key, None)  # keep the order of the last copy
                    seen[key] = obj
        return [*seen.values(), *anonymous]

    async def pages(
        self, path: str, params: Mapping[str, Any] | None = None, *, hint: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The pages of a list, in order. The first page gives ``count``; the other
        offsets are fetched ``concurrency`` at a time. If ``count`` moved during the
        read (objects created or deleted), the list is read again by cursor after the
        offset pages, so an object may come twice but none that stayed is missed."""
        query = [(k, v) for k, v in query_params(params) if k not in ("limit", "offset")]
        first = await self._page(path, [*query, ("limit", str(self.page_size))], hint)
        results = _results(first, path)
        count = first.get("count")
        yield results
        if not first.get("next") or not results or not isinstance(count, int):
            return
        step = len(results)  # what NetBox really gave: MAX_PAGE_SIZE may be under our limit
        offsets = deque(range(step, count, step))
        window: deque[asyncio.Task[dict[str, Any]]] = deque()
        drifted = False
        last: dict[str, Any] = first
        try:
            while offsets or window:
                while offsets and len(window) < self.concurrency:
                    offset = offsets.popleft()
                    page_query = [*query, ("limit", str(step)), ("offset", str(offset))]
                    window.append(asyncio.create_task(self._page(path, page_query, hint)))
                last = await window.popleft()
                drifted = drifted or last.get("count") != count
                yield _results(last, path)
        finally:
            for task in window:
                task.cancel()
            for task in window:
                with contextlib.suppress(BaseException):
                    await task
        if drifted or last.get("next"):
            log.info("netbox list changed during the read; reading it again by id", path=path)
            async for page in self._cursor_pages(path, query, hint):
                yield page

    async def _cursor_pages(
        self, path: str, query: QueryList, hint: str | None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        # A cursor orders by primary key, and NetBox refuses an ordering beside it.
        query = [(k, v) for k, v in query if k != "ordering"]
        start = 0
        while True:
            answer = await self._page(
                path, [*query, ("limit", str(self.page_size)), ("start", str(start))], hint
            )
            results = _results(answer, path)
            if answer.get("count") is not None:
                # This NetBox does not know cursors (before 4.7): it answered offset 0
                # again. Follow its offsets one by one instead.
                yield results
                offset = len(results)
                while answer.get("next") and results:
                    answer = await self._page(
                        path,
                        [*query, ("limit", str(len(results))), ("offset", str(offset))],
                        hint,
                    )
                    results = _results(answer, path)
                    offset += len(results)
                    yield results
                return
            yield results
            ids = [obj["id"] for obj in results if isinstance(obj.get("id"), int)]
            if not answer.get("next") or not ids:
                return
            start = max(ids) + 1

    async def _page(self, path: str, query: QueryList, hint: str | None) -> dict[str, Any]:
        response = await self._request("GET", path, query, None, hint)
        answer = self._json(response, "GET", path)
        if not isinstance(answer, dict):
            raise NetBoxRequestError(
                f"NetBox answered GET {path} with a {type(answer).__name__}, not a page: "
                "check inventory.netbox.url",
                status=response.status_code,
            )
        return answer

    # --- the one place that talks HTTP -----------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        query: QueryList,
        body: Any,
        hint: str | None,
    ) -> httpx.Response:
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                async with self._slots, asyncio.timeout(self.timeout):
                    response = await self._http.request(
                        method, path.lstrip("/"), params=query, json=body
                    )
            except (httpx.TimeoutException, TimeoutError) as exc:
                failure: BaseException = exc
                # A POST that timed out may have been written: not sent again.
                retryable = method == "GET"
            except httpx.TransportError as exc:
                failure = exc
                retryable = method == "GET" or isinstance(exc, httpx.ConnectError)
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status == 429 or (status >= 500 and method == "GET"):
                    failure = _HttpStatus(response)
                    retryable = True
                    retry_after = _retry_after(response) if status == 429 else None
                else:
                    raise self._refused(method, path, response, hint)
            if not retryable or attempt >= self.retries:
                raise self._unavailable(method, path, failure, attempt + 1)
            delay = min(MAX_BACKOFF_S, self.backoff * 2**attempt)
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
            if retry_after is not None:
                delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
            log.info(
                "netbox request failed; retrying",
                method=method,
                path=path,
                error=_describe(failure),
                attempt=attempt + 1,
                delay=round(delay, 2),
            )
            attempt += 1
            await asyncio.sleep(delay)

    def _json(self, response: httpx.Response, method: str, path: str) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise NetBoxRequestError(
                f"NetBox at {self.url} answered {method} {path} with {kind}, not JSON: "
                "check inventory.netbox.url (a proxy's or login page?)",
                status=response.status_code,
            ) from None

    def _refused(
        self, method: str, path: str, response: httpx.Response, hint: str | None
    ) -> NetBoxError:
        status = response.status_code
        reason = _reason(response)
        if status in (401, 403):
            return NetBoxAuthError(
                f"NetBox refused the token ({status} {reason}): check {TOKEN_KEY} and its "
                "permissions",
                status=status,
            )
        if status == 404:
            return NetBoxRequestError(
                f"NetBox at {self.url} has no {path} (404): check inventory.netbox.url, and "
                "that this NetBox's version has that endpoint",
                status=status,
            )
        where = f": check {hint}" if hint else ""
        fields = _fields_named(response)
        named = f" (parameter {', '.join(fields)})" if fields and method == "GET" else ""
        return NetBoxRequestError(
            f"NetBox refused {method} {path} ({status}){named}: {reason}{where}", status=status
        )

    def _unavailable(
        self, method: str, path: str, failure: BaseException, tries: int
    ) -> NetBoxError:
        times = f"{tries} tr{'y' if tries == 1 else 'ies'}"
        if isinstance(failure, _HttpStatus):
            status = failure.response.status_code
            return NetBoxUnavailableError(
                f"NetBox at {self.url} answered {method} {path} with {status} "
                f"({_reason(failure.response)}) after {times}: is NetBox healthy?",
                status=status,
            )
        if isinstance(failure, httpx.TimeoutException | TimeoutError):
            return NetBoxTimeoutError(
                f"NetBox at {self.url} did not answer {method} {path} within "
                f"{self.timeout:g} s ({times}): check that it is up, or raise "
                "inventory.netbox.timeout / lower inventory.netbox.page_size"
            )
        return NetBoxUnavailableError(
            f"NetBox at {self.url} could not be reached for {method} {path} ({times}): "
            f"{_describe(failure)}; check inventory.netbox.url and that NetBox is up"
        )


class _HttpStatus(Exception):
    """A retryable answer (5xx, 429), kept for the message if the retries run out."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _results(answer: dict[str, Any], path: str) -> list[dict[str, Any]]:
    results = answer.get("results")
    if not isinstance(results, list):
        raise NetBoxRequestError(f"NetBox's answer to GET {path} has no results list")
    return [r for r in results if isinstance(r, dict)]
