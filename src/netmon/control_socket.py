"""Requests between netmon's own processes on one machine: one JSON object per line on a
unix socket, one JSON object back.

The built-in lab takes its commands this way (``netmon lab reboot ...``), and so does the
core of ``netmon run`` (poller, writer, alerting) from the API processes it starts
(``netmon.core_control``). The socket is made mode 0600 in the data directory: whoever
may use it may act as netmon. A reply is ``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}``; a handler raises ``ValueError`` for a request it cannot take.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from netmon.logs import get_logger

__all__ = ["Handler", "request", "request_async", "serve"]

log = get_logger(__name__)

MAX_LINE = 4 << 20  # a reply may hold a whole /metrics page

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve(path: Path, handler: Handler, *, what: str = "netmon") -> asyncio.Server:
    """Listen on ``path``; a stale socket file left by a killed process is replaced, a
    live one is not (``what`` names who holds it, for the error)."""
    # Local filesystem calls on a short path: not worth a thread.
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():  # noqa: ASYNC240
        if _listening(path):
            raise OSError(errno.EADDRINUSE, f"{path}: another {what} is already listening there")
        path.unlink()  # noqa: ASYNC240
    server = await asyncio.start_unix_server(
        functools.partial(_serve_client, handler), path=str(path), limit=MAX_LINE
    )
    os.chmod(path, 0o600)
    return server


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


async def _serve_client(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while line := await reader.readline():
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("expected one JSON object per line")
                reply = await handler(request)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:
                # The asker gets the reason; this process keeps serving.
                log.exception("control request failed", request=line[:200].decode(errors="replace"))
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, ValueError):  # ValueError: a line longer than MAX_LINE
        pass
    finally:
        writer.close()


def request(path: Path, body: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the process listening on ``path``; its reply (blocking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(json.dumps(body).encode() + b"\n")
        data = bytearray()
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError(f"{path}: the connection closed without a reply")
            data += chunk
            if len(data) > MAX_LINE:
                raise ValueError(f"{path}: a reply over {MAX_LINE} bytes")
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError(f"{path}: unexpected reply {reply!r}")
    return reply


async def request_async(path: Path, body: Mapping[str, Any], wait_s: float = 5.0) -> dict[str, Any]:
    """:func:`request` from an event loop (a local socket: one short thread hop); the
    socket's own timeout bounds the wait, as a thread cannot be cancelled."""
    return await asyncio.to_thread(request, path, body, wait_s)
