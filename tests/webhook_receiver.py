"""A real webhook receiver for tests: HTTP/1.1 over asyncio streams on a loopback port.

It does what a careful receiver does: verifies every request with ``standardwebhooks``
(the secret of the path it came to), answers 401 when that fails, and drops a message it
has already taken (same ``webhook-id``), answering 200 and counting the duplicate.
Tests script its answers per path (500, 429 with Retry-After, 410, 400, ...), slow it
down, and take it down and back up on the same port: ``stop()`` aborts its connections
and closes the listening socket, so connecting is refused, as with a receiver that is
gone. With ``ssl`` it serves https (``make_tls`` makes a CA and a server certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import socket
import ssl
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.certs import certificate, new_key

__all__ = ["Received", "Reply", "Tls", "WebhookReceiver", "make_tls"]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    """One request as it arrived, and what the receiver made of it."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: str
    at: float  # time.monotonic() on arrival
    verified: bool = False
    error: str = ""
    status: int = 0

    @property
    def message_id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver:
    def __init__(self, *, delay: float = 0.0, ssl: ssl.SSLContext | None = None) -> None:
        self.ssl = ssl
        self.host = "127.0.0.1"
        self.port = 0
        self.delay = delay  # before every answer: widens the window for overlaps
        self.secrets: dict[str, str] = {}
        self.requests: list[Received] = []
        self.accepted: dict[str, list[str]] = defaultdict(list)  # path -> message ids
        self.duplicates = 0
        self.inflight: dict[str, int] = defaultdict(int)
        self.max_inflight: dict[str, int] = defaultdict(int)
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._seen: set[str] = set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # --- set-up ------------------------------------------------------------------------

    def url(self, path: str, host: str | None = None) -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def add(self, path: str, secret: str, host: str | None = None) -> str:
        self.secrets[path] = secret
        return self.url(path, host)

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with these, in order (then the default)."""
        self._scripts[path].extend(replies)

    def default(self, path: str, reply: Reply) -> None:
        self._defaults[path] = reply

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    # --- up and down -------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True, ssl=self.ssl
        )
        sock: socket.socket = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await server.wait_closed()

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- HTTP ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line:
            return False
        _method, target, _version = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
        request = Received(target, headers, body, time.monotonic())
        self.requests.append(request)
        self.inflight[target] += 1
        self.max_inflight[target] = max(self.max_inflight[target], self.inflight[target])
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            reply = self._answer(request)
        finally:
            self.inflight[target] -= 1
        request.status = reply.status
        writer.write(_response(reply))
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    def _answer(self, request: Received) -> Reply:
        secret = self.secrets.get(request.path)
        if secret is None:
            return Reply(404, "no such hook")
        try:
            Webhook(secret).verify(request.body, request.headers)
        except WebhookVerificationError as exc:
            request.error = str(exc)
            return Reply(401, f"verification failed: {exc}")
        request.verified = True
        script = self._scripts[request.path]
        reply = script.popleft() if script else self._defaults.get(request.path, Reply())
        if 200 <= reply.status < 300:
            if request.message_id in self._seen:
                self.duplicates += 1
            else:
                self._seen.add(request.message_id)
                self.accepted[request.path].append(request.message_id)
        return reply


def _response(reply: Reply) -> bytes:
    body = reply.body.encode()
    phrase = http.HTTPStatus(reply.status).phrase
    lines = [f"HTTP/1.1 {reply.status} {phrase}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in reply.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Tls:
    ca: Path  # the CA certificate (PEM), for the client's trust store
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls(directory: Path, names: list[str]) -> Tls:
    """A test CA and a server certificate for ``names`` (DNS names or IP addresses)."""
    ca_key, key = new_key(), new_key()
    ca = certificate("netmon test CA", ca_key, ca_key, None, ca=True)
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    server = certificate(names[0], key, ca_key, ca, ca=False, alt_names=alt_names)
    tls = Tls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls
