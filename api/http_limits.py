"""The HTTP limits that hold before the app, and so before authentication: what a client
without a token can make the server hold (memory, file descriptors, time).

uvicorn's httptools protocol enforces none of them. It buffers a request head of any size
(httptools grows a header value by concatenation: eight 64 MiB header fields took a
server from 75 to 451 MB and stalled it for 20 s), waits for ever on a connection that
sends nothing or half a request, queues every request a read holds (about 1 KB for each,
which can be 18 bytes), and accepts connections until the process runs out of file
descriptors.
:class:`HttpGuard` holds one server's limits and counts and gives uvicorn protocols that
enforce them, thin subclasses of uvicorn's httptools and websockets-sansio ones (``http``
and ``ws`` in api/server.py; they lean on uvicorn 0.55's internals, which
tests/test_api_limits.py exercises):

- The head (request line and header fields) is counted as it arrives, before the parser
  buffers it: over ``max_header_bytes``, or more than ``max_headers`` fields, is answered
  431; a request target over ``max_url_bytes`` 414. The connection is then closed.
- Header timeout: a head must be complete ``header_timeout`` after the connection opened
  or the previous response ended. A deadline, not an idle time, so a trickle of bytes
  does not extend it. Then 408 and close; a connection that sent nothing is closed without
  an answer (there is no request to answer).
- Keep-alive: uvicorn's idle timeout between requests (``keepalive_timeout``).
- Body timeout: a body must be complete ``body_timeout`` after its head; while uvicorn
  has stopped reading because the app has not taken what came, the clock waits.
- Pipelining: at most ``MAX_PIPELINED`` requests wait behind the one being answered.
- Connections: at most ``max_connections`` open (HTTP and WebSocket), and at most
  ``max_connections_per_client`` from one address. One more gets a prepared 503 the
  moment it is accepted and is closed: no parser, no request read, nothing kept. A 503
  rather than a bare close, so that a client (or its operator) sees why.

Every answer of this layer is problem+json (api/problems.py): the limits', a malformed
request's (400; 505 for another HTTP version), uvicorn's own 500, and the WebSocket
handshake's refusals. A WebSocket handshake is an HTTP request head first, so it meets the
same limits before uvicorn hands the connection to the WebSocket protocol.

Cost: about 2.5 us a request more than uvicorn's own protocol (a trivial app behind
both, in-process on uvloop; netmon's endpoints take 0.9 to 2.6 ms of the API's CPU a
request in bench/api.py), from overridden parser callbacks and a clock read when a
response ends. No timer while a whole head arrives in one read, the usual case.

The guard holds no state outside its process, so it is the same in-process (``netmon
run``) and in each ``netmon api --workers`` process; the limits are per process.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import math
import resource
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.server import ServerProtocol

from netmon.api.problems import PROBLEM_JSON, problem_json
from netmon.logs import get_logger

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent
    from uvicorn.config import Config
    from uvicorn.server import ServerState
    from websockets.typing import StatusLike

    from netmon.config import ApiSettings

__all__ = ["HttpGuard", "HttpLimits"]

log = get_logger(__name__)

# File descriptors left to everything else in the process (database pool, listening
# socket, logs, and in `netmon run` the poller) when the connection cap is set from the
# open-file limit.
FD_RESERVE = 256
RETRY_AFTER = 5  # seconds, on a 503 for too many connections
MAX_PIPELINED = 16  # requests queued behind the one being answered, per connection

# The head budget (``_head_left``) is the bytes the current head may still have; two
# negative values mark the other states of a connection.
_BODY = -1  # the head is complete; its message (a body) is not
_DONE = -2  # answered, refused or handed to the WebSocket protocol: nothing more is read

_VERSION_ERRORS = frozenset({"Invalid HTTP version", "Pause on PRI/Upgrade"})


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    max_headers: int
    max_url_bytes: int
    header_timeout: float
    keepalive_timeout: int  # whole seconds: uvicorn's setting
    body_timeout: float
    max_connections: int
    max_connections_per_client: int  # 0: none

    @classmethod
    def from_settings(cls, api: ApiSettings) -> HttpLimits:
        return cls(
            max_header_bytes=api.max_header_bytes,
            max_headers=api.max_headers,
            max_url_bytes=api.max_url_bytes,
            header_timeout=api.header_timeout.total_seconds(),
            keepalive_timeout=max(1, math.ceil(api.keepalive_timeout.total_seconds())),
            body_timeout=api.body_timeout.total_seconds(),
            max_connections=_within_open_files(api.max_connections),
            max_connections_per_client=api.max_connections_per_client,
        )


def _within_open_files(cap: int) -> int:
    """The cap, or less if the process may not open that many files: past the open-file
    limit accept() fails, and so does every other socket the process opens."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or cap <= soft - FD_RESERVE:
        return cap
    fitted = max(16, soft - FD_RESERVE)
    log.warning(
        "api.max_connections lowered to fit the open-file limit",
        max_connections=cap,
        open_file_limit=soft,
        now=fitted,
    )
    return fitted


class _Rejected(Exception):
    """Raised in a parser callback to stop parsing a request that is over a limit; status
    0: answer nothing, just stop reading."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _answer(status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 problem response that ends the connection."""
    body = problem_json(status, detail)
    head = [STATUS_LINE[status]]
    for name, value in headers:
        head += [name, b": ", value, b"\r\n"]
    head.append(
        b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (PROBLEM_JSON.encode(), len(body))
    )
    return b"".join([*head, body])


def _busy(detail: str) -> bytes:
    return _answer(503, detail, [(b"retry-after", str(RETRY_AFTER).encode())])


class HttpGuard:
    """One server's limits and connection counts, and the protocols that enforce them:
    ``http_protocol`` is uvicorn's HTTP protocol factory, ``ws_protocol_class`` its
    WebSocket protocol."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.open = 0  # connections counted against max_connections
        self.per_client: dict[str, int] = {}
        self.refused = 0  # connections refused by either cap
        self._full = _busy(
            f"the server holds its limit of {limits.max_connections} connections; "
            f"retry in {RETRY_AFTER} s"
        )
        # Classes of this guard's own, so that a protocol made by uvicorn finds it.
        self.http_protocol_class = cast(
            "type[LimitedHttpProtocol]",
            type("GuardedHttpProtocol", (LimitedHttpProtocol,), {"guard": self}),
        )
        self.ws_protocol_class = cast(
            "type[LimitedWebSocketProtocol]",
            type("GuardedWebSocketProtocol", (LimitedWebSocketProtocol,), {"guard": self}),
        )

    def http_protocol(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Protocol:
        """A protocol for a connection just accepted: the guarded one, or over the cap a
        refusal that makes nothing else."""
        if self.open >= self.limits.max_connections:
            self.refused += 1
            return _Refusal(self._full)
        protocol = self.http_protocol_class(
            config=config, server_state=server_state, app_state=app_state, _loop=_loop
        )
        # Counted here, not when the connection is made: asyncio accepts a burst of
        # connections before it tells the first one's protocol.
        self.open += 1
        return protocol

    def admit(self, client: str) -> bool:
        """Count a connection from ``client`` against the per-address cap, if there is one
        and there is room."""
        count = self.per_client.get(client, 0)
        if count >= self.limits.max_connections_per_client:
            self.refused += 1
            return False
        self.per_client[client] = count + 1
        return True

    def release(self, client: str | None) -> None:
        """A connection ended (``client``: the address it was counted for, if it was)."""
        self.open -= 1
        if client is not None:
            count = self.per_client.get(client, 0) - 1
            if count > 0:
                self.per_client[client] = count
            else:
                self.per_client.pop(client, None)

    def too_many_from(self, client: str) -> bytes:
        cap = self.limits.max_connections_per_client
        return _busy(f"{client} holds its limit of {cap} connections; retry in {RETRY_AFTER} s")


class _Refusal(asyncio.Protocol):
    """A connection over the cap: answered and closed as soon as it is accepted."""

    __slots__ = ("answer",)

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.answer)
        transport.close()


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol held to an :class:`HttpGuard`'s limits."""

    guard: ClassVar[HttpGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.guard.limits
        self._head_max = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._max_url = limits.max_url_bytes
        self._head_left = self._head_max  # or _BODY, _DONE
        self._timer: asyncio.TimerHandle | None = None
        self._since = 0.0  # when the current head's time began: connected, or last response
        self._counted_as: str | None = None  # the address counted in guard.per_client

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        if guard.limits.max_connections_per_client:
            client = self.client[0] if self.client else ""
            if not guard.admit(client):
                self._head_left = _DONE
                transport.write(guard.too_many_from(client))
                transport.close()
                return
            self._counted_as = client
        self._since = self.loop.time()
        self._timer = self.loop.call_at(self._since + guard.limits.header_timeout, self._expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        self.guard.release(self._counted_as)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport, and with it the connection's place
        # in the guard's counts (it releases them when the connection ends).
        self._stop_clock()
        self._head_left = _DONE
        super().handle_websocket_upgrade()

    # Reading

    def data_received(self, data: bytes) -> None:
        left = self._head_left
        if left >= 0:
            if len(data) > left:
                self._overflow(data, left)
                return
            self._head_left = left - len(data)
        elif left == _DONE:
            return
        # _feed, inline: this runs for every request
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserError as exc:
            self._malformed(exc)
        # A head begun but not complete, or a body still to come, runs against a clock.
        if self._timer is None and self._head_left != self._head_max:
            self._start_clock()

    def _overflow(self, data: bytes, left: int) -> None:
        """More bytes than the head may still have: parse only those. If the head ends
        within them, what follows (a body, the next request) is read as usual; if not,
        the head is over the limit."""
        view = memoryview(data)
        while left < len(view):
            self._head_left = 0
            self._feed(view[:left])
            view = view[left:]
            left = self._head_left
            if left == 0:
                if len(getattr(self, "url", b"")) > self._max_url:
                    self._refuse(414, f"the request target is over {self._max_url} bytes")
                else:
                    self._refuse(431, f"the request head is over {self._head_max} bytes")
                return
            if left == _DONE or self.transport.is_closing():
                return
            if left == _BODY:
                break
        if view:
            self.data_received(bytes(view))

    def _feed(self, data: bytes | memoryview) -> None:
        # uvicorn's data_received, with problem answers and upgrades that end the connection
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserError as exc:
            self._malformed(exc)

    def _upgrade(self) -> None:
        if self._should_upgrade():
            self.handle_websocket_upgrade()
        else:
            self._unsupported_upgrade()

    def _malformed(self, exc: httptools.HttpParserError) -> None:
        cause = exc.__context__
        if isinstance(cause, _Rejected):
            if cause.status:
                self._refuse(cause.status, cause.detail)
            else:  # nothing to answer: stop reading, end after the answers queued
                self._head_left = _DONE
                self._stop_clock()
            return
        reason = str(cause if cause is not None else exc)[:200]
        if reason in _VERSION_ERRORS:
            self._refuse(505, "only HTTP/1.0 and HTTP/1.1 are served")
        else:
            self._refuse(400, f"malformed request: {reason}")

    def _unsupported_upgrade(self) -> None:
        """An Upgrade to anything but a WebSocket (h2c): the request is answered as if
        there were none, but the parser stopped at the end of its head and would read
        what follows (its body, say) as new requests, so the connection ends with the
        answer."""
        self._head_left = _DONE
        self._stop_clock()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
        else:
            self.transport.close()

    # Parser callbacks

    # The base class is called by name, not through super(): these run for every request.

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        if len(headers) >= self._max_headers:
            raise _Rejected(431, f"more than {self._max_headers} header fields")
        # uvicorn's on_header, inline (four or more calls a request)
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        if len(self.url) > self._max_url:
            raise _Rejected(414, f"the request target is over {self._max_url} bytes")
        if len(self.pipeline) >= MAX_PIPELINED:
            # uvicorn parses every request of a read at once and queues those behind the
            # one being answered: about 1 KB each, for as little as 18 bytes. The last one
            # queued ends the connection; this one and any after it go unanswered, and a
            # client that pipelines sends them again on a new connection (RFC 9112 9.3.2).
            self.pipeline[0][0].keep_alive = False
            raise _Rejected(0, "too many pipelined requests")
        self._head_left = _BODY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # uvicorn's on_headers_complete (0.55), making a cycle that answers its own 500
        # (an exception before the answer, or no answer) with a problem. Made as that
        # class, not changed to it afterwards: an object whose class changes loses
        # CPython's fast attribute access, 2 us a request. uvicorn's limit_concurrency
        # is not used (max_connections is).
        scope = self.scope
        scope["method"] = self.parser.get_method().decode("ascii")
        http_version = self.parser.get_http_version()
        if http_version != "1.1":
            scope["http_version"] = http_version
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        existing_cycle = self.cycle
        self.cycle = _ProblemCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:
            # A pipelined request waits for the one before it.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._head_left = self._head_max
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_response_complete(self) -> None:
        self._since = self.loop.time()
        HttpToolsProtocol.on_response_complete(self)
        # A next head begun while this answer was written runs against the clock from now.
        if self._timer is None and self._head_left != self._head_max:
            self._start_clock()

    # Clocks

    def _start_clock(self) -> None:
        if self.transport.is_closing():
            return
        limits = self.guard.limits
        left = self._head_left
        if left == _BODY:
            self._timer = self.loop.call_later(limits.body_timeout, self._expired)
            return
        if left < 0 or left == self._head_max:
            return  # done, or between requests (uvicorn's keep-alive timeout)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # the head's time begins when the answer under way ends
        self._timer = self.loop.call_at(self._since + limits.header_timeout, self._expired)

    def _stop_clock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        left = self._head_left
        if left == _BODY:
            if self.flow.read_paused:
                self._start_clock()  # uvicorn waits for the app to read, not for the client
                return
            timeout = self.guard.limits.body_timeout
            self._refuse(408, f"the request body did not arrive within {timeout:g} s")
        elif left >= 0:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return  # its end starts the clock again (on_response_complete)
            if left == self._head_max:
                self._head_left = _DONE  # nothing of a request came: nothing to answer
                self.transport.close()
                return
            timeout = self.guard.limits.header_timeout
            self._refuse(408, f"the request head did not arrive within {timeout:g} s")

    # Answers

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` and close; nothing more is read."""
        in_body = self._head_left == _BODY
        self._head_left = _DONE
        self._stop_clock()
        log.debug("http request refused", status=status, detail=detail, client=self.client)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not in_body:
                # A head after a request still being answered (pipelining): that answer
                # ends the connection, and this head gets none.
                cycle.keep_alive = False
                return
            # The body of the last request failed: its app is told the client left, and
            # whatever it still sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started or self.pipeline:
                # An answer is under way (its own, or one to a request before it, which
                # it waits behind): no other can follow in order.
                self.transport.close()
                return
        self.transport.write(_answer(status, detail, self.server_state.default_headers))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own 400 (text/plain), should any path of it still call this
        self._refuse(400, msg)


class _ProblemCycle(RequestResponseCycle):
    """uvicorn's request cycle, answering its own 500 with a problem."""

    async def send_500_response(self) -> None:
        body = problem_json(500, "internal error; see the netmon log", self.scope["path"])
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


class _ProblemServerProtocol(ServerProtocol):
    """websockets' handshake, refusing with problem+json instead of plain text."""

    refusal: str | None = None  # the app's reason, when it closed before accepting

    def reject(self, status: StatusLike, text: str) -> Response:
        status = http.HTTPStatus(status)
        body = problem_json(status.value, text.strip() or self.refusal or status.phrase)
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", PROBLEM_JSON),
            ]
        )
        return Response(status.value, status.phrase, headers, body)


class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, counted by an :class:`HttpGuard` until it
    ends and refusing handshakes with problem+json."""

    guard: ClassVar[HttpGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # The handshake uvicorn built, with every option it chose; only its refusals change.
        self.conn.__class__ = _ProblemServerProtocol

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            counted = self.guard.limits.max_connections_per_client
            self.guard.release((self.client[0] if self.client else "") if counted else None)

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "websocket.close" and not self.handshake_complete:
            # uvicorn refuses the handshake with a 403 of its own; the reason becomes its
            # detail.
            reason = cast(dict[str, Any], message).get("reason")
            cast(_ProblemServerProtocol, self.conn).refusal = reason or None
        await super().send(message)
