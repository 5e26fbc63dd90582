"""The API as processes of their own beside the core of ``netmon run``.

``netmon run`` polls, writes and alerts in its own process and starts ``api.workers``
``netmon api`` processes for the API: API load then cannot starve the poller's event
loop, its threads of the GIL, or (with ``api.nice``) its CPU. The workers share the port
(SO_REUSEPORT; the supervisor holds it bound meanwhile, so port 0 means one port for all),
reach the database by the core's URL (the embedded server's too) and the core itself over
its control socket (``netmon.core_control``). One that dies is started again; the
supervisor gives up after five deaths in a minute and says so. On a terminal their log
lines come through this process (``_relay``), so that they print above ``netmon run``'s
live view instead of under it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

from netmon.api.server import REUSE_PORT_ENV, bind_socket
from netmon.config import CONFIG_ENV, Settings
from netmon.core_control import CORE_SOCKET_ENV
from netmon.logs import get_logger

__all__ = ["ApiProcesses"]

log = get_logger(__name__)

_READY_WAIT = 60.0  # seconds for a worker to listen (imports, a database pool)
_STOP_WAIT = 15.0
_RESTART_DELAY = 1.0
_FAST_FAILS = 5  # deaths within a minute that stop the restarts


class ApiProcesses:
    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str,
        core_socket: Path,
        config: Path | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.core_socket = core_socket
        self.config = config
        self.port = 0
        self._holder: socket.socket | None = None
        self._procs: list[asyncio.subprocess.Process] = []
        self._watcher: asyncio.Task[None] | None = None
        self._deaths: list[float] = []
        self._stopping = False
        self._relays: set[asyncio.Task[None]] = set()

    def _env(self) -> dict[str, str]:
        api, env = self.settings.api, dict(os.environ)
        if self.config is not None:
            env[CONFIG_ENV] = str(self.config.resolve())
        env.update(
            {
                "NETMON_DATABASE__URL": self.database_url,
                "NETMON_API__HOST": api.host,
                "NETMON_API__PORT": str(self.port),
                "NETMON_API__WORKERS": "1",
                "NETMON_DATA_DIR": str(self.settings.data_dir),
                "NETMON_LOG__LEVEL": self.settings.log.level,
                "NETMON_LOG__FORMAT": self.settings.log.format,
                REUSE_PORT_ENV: "1",
                CORE_SOCKET_ENV: str(self.core_socket),
            }
        )
        return env

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = self._env()
        # On a terminal the parent's live view owns the screen: a child writing to the
        # terminal itself would land under the view and be redrawn over, or leave the view
        # stacked. Its lines are relayed through this process's (swappable) stderr instead,
        # in the format this process's own lines have there.
        relay = sys.stderr.isatty()
        if relay and self.settings.log.format == "auto":
            env["NETMON_LOG__FORMAT"] = "console"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "netmon", "api", "--workers", "1", env=env,
            stderr=asyncio.subprocess.PIPE if relay else None,
        )  # fmt: skip
        if proc.stderr is not None:
            task = asyncio.create_task(_relay(proc.stderr), name=f"api-log-relay-{proc.pid}")
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)
        if self.settings.api.nice:
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, proc.pid, self.settings.api.nice)
        return proc

    async def start(self) -> None:
        """Start the workers; return once the port takes connections."""
        api = self.settings.api
        try:
            self._holder = bind_socket(api.host, api.port, reuse_port=True)
        except OSError as exc:
            raise RuntimeError(f"the API cannot listen on {api.host}:{api.port}: {exc}") from exc
        self.port = int(self._holder.getsockname()[1])
        self._procs = [await self._spawn() for _ in range(api.workers)]
        await self._wait_listening()
        self._watcher = asyncio.create_task(self._watch(), name="netmon-api-processes")
        log.info(
            "api processes started",
            url=f"http://{api.host}:{self.port}",
            workers=len(self._procs),
            pids=[p.pid for p in self._procs],
        )

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + _READY_WAIT
        host = self.settings.api.host
        while True:
            dead = [p for p in self._procs if p.returncode is not None]
            if dead:
                raise RuntimeError(
                    f"the API process exited with code {dead[0].returncode} before it listened"
                )
            try:
                _, writer = await asyncio.open_connection(host, self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the API did not listen on {host}:{self.port} within {_READY_WAIT} s"
                    ) from None
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return

    async def _watch(self) -> None:
        while not self._stopping:
            waits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(self._procs)}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if self._stopping:
                return
            for task in done:
                await self._restart(waits[task])

    async def _restart(self, index: int) -> None:
        old = self._procs[index]
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < 60] + [now]
        if len(self._deaths) >= _FAST_FAILS:
            log.error(
                "api processes keep dying; not restarting them",
                deaths_per_minute=len(self._deaths),
                code=old.returncode,
            )
            self._stopping = True
            return
        log.error("api process died; starting another", pid=old.pid, code=old.returncode)
        await asyncio.sleep(_RESTART_DELAY)
        self._procs[index] = await self._spawn()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.returncode is None]

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                async with asyncio.timeout(_STOP_WAIT):
                    await proc.wait()
            except TimeoutError:
                log.warning("api process did not stop; killing it", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in list(self._relays):  # their last lines (EOF follows the exit)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await task
        if self._holder is not None:
            self._holder.close()
            self._holder = None


async def _relay(stream: asyncio.StreamReader) -> None:
    """A child's stderr to ``sys.stderr`` as it is at each write, whole lines only: rich's
    proxy prints a partial line it is asked to flush as markup. Read in chunks, not
    lines: a line longer than the reader's limit must not stop the relay (the child
    would block on a full pipe)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    rest = ""
    while chunk := await stream.read(65536):
        text = rest + decoder.decode(chunk)
        end = text.rfind("\n") + 1
        if end:
            sys.stderr.write(text[:end])
        rest = text[end:]
    if rest := rest + decoder.decode(b"", final=True):
        sys.stderr.write(rest + "\n")
