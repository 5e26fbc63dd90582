"""A small in-process TCP proxy for fault injection: real sockets, cut and restored on demand.

It listens on 127.0.0.1 (an ephemeral port, kept across cuts) and forwards every
connection to an upstream PostgreSQL, over TCP or a Unix socket. ``cut()`` aborts every
open connection (RST) and closes the listening socket, so new connections are refused
exactly as if the server had gone away; ``restore()`` listens on the same port again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

__all__ = ["TcpProxy", "proxy_for", "through"]

_CHUNK = 1 << 16


class TcpProxy:
    def __init__(
        self, *, host: str | None = None, port: int | None = None, unix_path: Path | None = None
    ) -> None:
        if (unix_path is None) == (host is None or port is None):
            raise ValueError("give either host and port, or unix_path")
        self.upstream_host = host
        self.upstream_port = port
        self.unix_path = unix_path
        self.listen_host = "127.0.0.1"
        self.port = 0
        self.connections = 0  # accepted and forwarded, in total
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(
            self._handle, self.listen_host, self.port, reuse_address=True
        )
        sock: socket.socket = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        return self

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix_path is not None:
            return await asyncio.open_unix_connection(str(self.unix_path))
        assert self.upstream_host is not None
        assert self.upstream_port is not None
        return await asyncio.open_connection(self.upstream_host, self.upstream_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted in the instant of a cut
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        pair = (writer.transport, up_writer.transport)
        self._transports.update(pair)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for transport in pair:
                transport.abort()
                self._transports.discard(transport)
            self._tasks.difference_update(pumps)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()

    async def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        for task in list(self._tasks):
            task.cancel()
        # Let the aborts and cancellations run before the caller goes on.
        await asyncio.sleep(0)

    async def restore(self) -> None:
        """Accept connections again, on the same port."""
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()


def proxy_for(url: str) -> TcpProxy:
    """A proxy to the server of ``url``: TCP, or the Unix socket the embedded server uses."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if socket_dir.startswith("/"):
        return TcpProxy(unix_path=Path(socket_dir) / f".s.PGSQL.{parts.port or 5432}")
    assert parts.hostname == "127.0.0.1"
    return TcpProxy(host=parts.hostname, port=parts.port or 5432)


def through(proxy: TcpProxy, url: str) -> str:
    """``url`` with the proxy in the way."""
    parts = urlsplit(url)
    return f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{proxy.port}{parts.path}"
