"""/ws/metrics, /ws/events and /ws/alerts: the live feeds over WebSocket (protocol:
``api/feed_clients.py``).

Each connection runs two tasks: one reads the client's subscribe and unsubscribe messages
and answers them, one sends what the hub queued for it. They share a lock, as two tasks
must not write one WebSocket at once.
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

__all__ = ["LiveController"]

# WebSocket close codes: the server is going away; try again later (too many clients).
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013


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
        await _refuse(socket, "live feeds are not available in this process", GOING_AWAY)
        return
    try:
        client = hub.connect(kind, socket.user.sites)
    except TooManyClientsError as exc:
        await _refuse(socket, str(exc), TRY_AGAIN_LATER)
        return
    lock = asyncio.Lock()
    try:
        reader = asyncio.create_task(_read(socket, client, kind, lock))
        sender = asyncio.create_task(_send(socket, client, lock))
        done, pending = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await task
        for task in done:
            # A client gone is the normal end; anything else is worth a traceback.
            with contextlib.suppress(WebSocketDisconnect):
                task.result()
    finally:
        client.close()


async def _refuse(socket: WebSocket[Any, Any, Any], detail: str, code: int) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        await socket.send_text(msgspec.json.encode({"type": "error", "detail": detail}).decode())
        await socket.close(code=code, reason=detail[:120])


async def _send(socket: WebSocket[Any, Any, Any], client: FeedClient, lock: asyncio.Lock) -> None:
    while True:
        message = await client.queue.get()
        if message is None:  # the hub is stopping
            async with lock:
                await socket.close(code=GOING_AWAY, reason="server shutting down")
            return
        async with lock:
            await socket.send_text(message)


async def _read(
    socket: WebSocket[Any, Any, Any], client: FeedClient, kind: FeedKind, lock: asyncio.Lock
) -> None:
    while True:
        event = await socket.receive()
        if event["type"] == "websocket.disconnect":
            return
        text, data = event.get("text"), event.get("bytes")
        payload = text if isinstance(text, str) else data if isinstance(data, bytes) else b""
        reply = _answer(client, kind, payload)
        async with lock:
            await socket.send_text(msgspec.json.encode(reply).decode())


def _answer(client: FeedClient, kind: FeedKind, data: str | bytes) -> dict[str, Any]:
    """The reply to one client message."""
    try:
        command = _command.decode(data)
    except msgspec.DecodeError as exc:
        return _error(f'expected {{"subscribe": {{...}}}} or {{"unsubscribe": <id>}}: {exc}')
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
