"""/ws/metrics, /ws/events and /ws/alerts: the live feeds over WebSocket (protocol:
``api/feed_clients.py``).

Each connection is its handler, which reads the client's subscribe and unsubscribe
messages, and one task that sends what the hub queued for it (replies go through the same
queue, so one task writes the socket and a reply comes before what its subscription
brings). The sender also closes the connection when the hub says so: token revoked or
expired (1008), server stopping (1012).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from litestar import Controller, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from netmon.alerts.matchers import MatcherError
from netmon.api.auth import Principal, requires
from netmon.api.context import ApiContext, Ctx
from netmon.api.feed_clients import INTERNAL_ERROR, SERVICE_RESTART, TRY_AGAIN_LATER
from netmon.api.feeds import (
    AlertFilter,
    AlertSubscription,
    EventFilter,
    FeedClient,
    FeedKind,
    SampleFilter,
    TooManyClientsError,
    TooManySubscriptionsError,
)
from netmon.api.problems import is_too_deep
from netmon.logs import get_logger

__all__ = ["LiveController"]

log = get_logger(__name__)

# What the sender may meet when the client is gone: Litestar's disconnect, or uvicorn's
# ClientDisconnected (an OSError).
_GONE = (WebSocketDisconnect, OSError)


class _Command(msgspec.Struct, forbid_unknown_fields=True):
    subscribe: dict[str, Any] | None = None
    unsubscribe: int | None = None


_command = msgspec.json.Decoder(_Command)
_filters: dict[FeedKind, type[SampleFilter | EventFilter | AlertSubscription]] = {
    "metrics": SampleFilter,
    "events": EventFilter,
    "alerts": AlertSubscription,
}
_fields: dict[FeedKind, str] = {
    "metrics": "devices, metrics, labels",
    "events": "devices, kinds, severities",
    "alerts": "matchers, min_severity",
}


class LiveController(Controller):
    path = "/ws"
    tags = ["live"]
    guards = [requires("viewer")]

    @websocket("/metrics", name="live-metrics")
    async def metrics(self, socket: WebSocket[Principal, Any, Any], ctx: Ctx) -> None:
        """Live samples. Send ``{"subscribe": {"devices": [...], "metrics": [...],
        "labels": {"ifName": "eth0"}}}``; see docs/api.md, "Live feeds"."""
        await _serve(socket, ctx, "metrics")

    @websocket("/events", name="live-events")
    async def events(self, socket: WebSocket[Principal, Any, Any], ctx: Ctx) -> None:
        """Live device events. Send ``{"subscribe": {"devices": [...], "kinds": [...],
        "severities": ["critical"]}}``; see docs/api.md, "Live feeds"."""
        await _serve(socket, ctx, "events")

    @websocket("/alerts", name="live-alerts")
    async def alerts(self, socket: WebSocket[Principal, Any, Any], ctx: Ctx) -> None:
        """Alert changes as they commit. Send ``{"subscribe": {"matchers":
        ["site=\\"lon1\\""], "min_severity": "major"}}``; see docs/api.md, "Live feeds"."""
        await _serve(socket, ctx, "alerts")


async def _serve(socket: WebSocket[Principal, Any, Any], ctx: ApiContext, kind: FeedKind) -> None:
    await socket.accept()
    hub = ctx.hub
    if hub is None:
        await _refuse(socket, "live feeds are not running in this process", SERVICE_RESTART)
        return
    tokens = ctx.tokens
    expires_at = tokens.expires_at(socket.auth) if tokens is not None else None
    try:
        client = hub.connect(kind, socket.user, expires_at)
    except TooManyClientsError as exc:
        await _refuse(socket, str(exc), TRY_AGAIN_LATER)
        return
    sender = asyncio.create_task(_send(socket, client))
    try:
        await _read(socket, client, kind)
    finally:
        hub.disconnect(client)
        if not sender.done():
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, *_GONE):
            await sender


async def _refuse(socket: WebSocket[Any, Any, Any], detail: str, code: int) -> None:
    with contextlib.suppress(*_GONE):
        await socket.send_text(msgspec.json.encode({"type": "error", "detail": detail}).decode())
        await socket.close(code=code, reason=detail[:120])


async def _send(socket: WebSocket[Any, Any, Any], client: FeedClient) -> None:
    try:
        while client.closing is None:
            message = client.next()
            if message is None:
                await client.wait()
            else:
                await socket.send_text(message)
    except _GONE:
        return  # the reader hears of it too
    except Exception:
        # A bug: the client would otherwise wait for messages that never come.
        log.exception("feed sender failed", client=client.id)
        client.close(INTERNAL_ERROR, "internal error")
    assert client.closing is not None
    code, reason = client.closing
    await socket.close(code=code, reason=reason)


async def _read(socket: WebSocket[Any, Any, Any], client: FeedClient, kind: FeedKind) -> None:
    """Until the client leaves, or the sender closed the connection (which ends the
    receive with a disconnect too)."""
    while True:
        event = await socket.receive()
        if event["type"] == "websocket.disconnect":
            return
        text, data = event.get("text"), event.get("bytes")
        payload = text if isinstance(text, str) else data if isinstance(data, bytes) else b""
        client.reply(msgspec.json.encode(_answer(client, kind, payload)).decode())
        # A client that sends commands but reads nothing stops being read.
        await client.room()


def _answer(client: FeedClient, kind: FeedKind, data: str | bytes) -> dict[str, Any]:
    """The reply to one client message."""
    try:
        command = _command.decode(data)
    except msgspec.DecodeError as exc:
        return _error(f'expected {{"subscribe": {{...}}}} or {{"unsubscribe": <id>}}: {exc}')
    except RecursionError as exc:
        if not is_too_deep(exc):
            raise
        return _error("the message is nested too deeply")
    if (command.subscribe is None) == (command.unsubscribe is None):
        return _error('send exactly one of "subscribe" and "unsubscribe"')
    if command.unsubscribe is not None:
        if not client.unsubscribe(command.unsubscribe):
            return _error(f"no subscription {command.unsubscribe}")
        return {"type": "unsubscribed", "id": command.unsubscribe}
    assert command.subscribe is not None
    try:
        wire = msgspec.convert(command.subscribe, _filters[kind])
        spec = AlertFilter.of(wire) if isinstance(wire, AlertSubscription) else wire
    except msgspec.ValidationError as exc:
        return _error(f"subscribe: {exc} (fields: {_fields[kind]})")
    except MatcherError as exc:
        return _error(f"subscribe: matchers: {exc}")
    try:
        sub_id = client.subscribe(spec)
    except TooManySubscriptionsError as exc:
        return _error(str(exc))
    return {"type": "subscribed", "id": sub_id}


def _error(detail: str) -> dict[str, Any]:
    return {"type": "error", "detail": detail}
