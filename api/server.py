"""Serving the app with uvicorn: inside ``netmon run`` (same process, same event loop,
the poller's writer and stats at hand) or alone as ``netmon api`` (one process, or
``--workers N`` processes on one port).

Workers are separate ``netmon api`` processes that each bind the port with SO_REUSEPORT,
so the kernel spreads connections over them, and a small supervisor here restarts one
that dies. (uvicorn's own ``--workers`` hands each worker a socket rebuilt from a file
descriptor, whose protocol field asyncio does not recognise as TCP: it leaves Nagle's
algorithm on, and every response waited ~40 ms for a delayed ACK.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import cast

import uvicorn

from netmon.api.app import create_app
from netmon.api.context import ApiContext
from netmon.api.http_limits import HttpGuard, HttpLimits
from netmon.api.problems import PlainErrorsAsProblems
from netmon.config import CONFIG_ENV, Settings
from netmon.logs import get_logger

__all__ = ["ApiServer", "serve_workers"]

log = get_logger(__name__)

REUSE_PORT_ENV = "NETMON_API_REUSE_PORT"  # set by the supervisor for its workers
_RESTART_DELAY = 1.0
_FAST_FAILS = 5  # workers dying this often within a minute stop the supervisor


def _config(app: object, settings: Settings, guard: HttpGuard | None = None) -> uvicorn.Config:
    """uvicorn's options, with HTTP and WebSocket protocols held to ``guard``'s limits (one
    made from the settings if none is given)."""
    if guard is None:
        guard = HttpGuard(HttpLimits.from_settings(settings.api))
    if settings.api.cors_origins:
        app = PlainErrorsAsProblems(app)  # Litestar's CORS refusal is plain text
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.api.host,
        port=settings.api.port,
        lifespan="on",
        log_config=None,  # netmon's structured logging, not uvicorn's
        access_log=False,
        # uvicorn calls `http` as a class with the protocol's arguments; a factory that
        # refuses connections over the cap before one is made.
        http=cast("type[asyncio.Protocol]", guard.http_protocol),
        ws=guard.ws_protocol_class,
        ws_max_size=64 * 1024,  # clients send subscriptions, not data
        # zlib state is ~50 KB a client, half of a feed client's memory with it on
        ws_per_message_deflate=settings.api.ws_compression,
        timeout_keep_alive=guard.limits.keepalive_timeout,
        timeout_graceful_shutdown=5,
        server_header=False,
        backlog=2048,
    )


def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to host:port, made the way asyncio's create_server makes its own
    (protocol IPPROTO_TCP, so accepted connections get TCP_NODELAY)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # netmon's Service (or `netmon api`) owns SIGINT/SIGTERM and stops the API itself.
        yield


class ApiServer:
    """uvicorn on the running event loop; ``start`` returns once the port is bound."""

    def __init__(
        self, ctx: ApiContext, *, manage_db: bool = False, reuse_port: bool = False
    ) -> None:
        self.ctx = ctx
        self.app = create_app(ctx, manage_db=manage_db)
        self.reuse_port = reuse_port
        self.guard = ctx.guard = HttpGuard(HttpLimits.from_settings(ctx.settings.api))
        self._server = _Server(_config(self.app, ctx.settings, self.guard))
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    async def start(self) -> None:
        api = self.ctx.settings.api
        try:
            sock = bind_socket(api.host, api.port, reuse_port=self.reuse_port)
        except OSError as exc:
            raise RuntimeError(f"the API cannot listen on {api.host}:{api.port}: {exc}") from exc
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="netmon-api")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError(f"the API did not start on {api.host}:{api.port}")
            await asyncio.sleep(0.02)
        log.info("api listening", url=f"http://{api.host}:{self.port}")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


def _worker_env(settings: Settings, config: str | None, port: int) -> dict[str, str]:
    env = dict(os.environ)
    if config is not None:
        env[CONFIG_ENV] = config
    # What the command line chose reaches the workers as environment overrides.
    env.update(
        {
            "NETMON_API__HOST": settings.api.host,
            "NETMON_API__PORT": str(port),
            "NETMON_API__WORKERS": "1",
            "NETMON_DATA_DIR": str(settings.data_dir),
            "NETMON_LOG__LEVEL": settings.log.level,
            "NETMON_LOG__FORMAT": settings.log.format,
            REUSE_PORT_ENV: "1",
        }
    )
    return env


def serve_workers(settings: Settings, config: str | None) -> int:
    """Run ``api.workers`` worker processes on one port until SIGINT/SIGTERM; restart one
    that dies. Returns the exit code."""
    # Hold the port (bound, not listening) so that port 0 becomes one port for all and
    # nothing else takes it between worker restarts.
    holder = bind_socket(settings.api.host, settings.api.port, reuse_port=True)
    port = int(holder.getsockname()[1])
    env = _worker_env(settings, config, port)
    command = [sys.executable, "-m", "netmon", "api", "--workers", "1"]
    stopping = False

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter and module

    workers = [spawn() for _ in range(settings.api.workers)]
    log.info("api workers started", workers=len(workers), port=port)
    deaths: list[float] = []
    code = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for i, proc in enumerate(workers):
                if proc.poll() is None or stopping:
                    continue
                now = time.monotonic()
                deaths = [t for t in deaths if now - t < 60] + [now]
                log.error("api worker died; restarting", pid=proc.pid, code=proc.returncode)
                if len(deaths) >= _FAST_FAILS:
                    log.error("api workers keep dying; stopping", deaths_per_minute=len(deaths))
                    stopping, code = True, 1
                    break
                time.sleep(_RESTART_DELAY)
                workers[i] = spawn()
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        holder.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
