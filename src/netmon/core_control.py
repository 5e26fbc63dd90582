"""What the API asks of the core of ``netmon run``: the poller, writer and alerting.

The core and the API live in different processes (``netmon run`` starts the API as its
own process, so that API load cannot starve polling). The API asks through
:class:`Core`: reload the inventory, back a device's configuration up now, and the core's
own figures for ``/metrics``. :class:`LocalCore` answers in the core's process (it serves
the control socket, and tests use it in-process); :class:`RemoteCore` asks it from the
API's process over the control socket (``netmon.control_socket``, ``<data dir>/core.sock``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from netmon import control_socket
from netmon.errors import CoreUnavailableError

if TYPE_CHECKING:
    from netmon.alerts.service import AlertService
    from netmon.poller.service import PollerService
    from netmon.store.batcher import Batcher
    from netmon.store.writer import SampleWriter

__all__ = [
    "CORE_SOCKET_ENV",
    "BackupReply",
    "Core",
    "LagWindow",
    "LocalCore",
    "PollLag",
    "ReloadReply",
    "RemoteCore",
    "core_socket",
]

# Set by `netmon run` for the API processes it starts: where its core listens.
CORE_SOCKET_ENV = "NETMON_CORE_SOCKET"
# An inventory reload re-reads files and syncs devices; a backup runs a device's tasks.
_RELOAD_WAIT = 60.0
_BACKUP_WAIT = 120.0


def core_socket(data_dir: Path) -> Path:
    return data_dir / "core.sock"


@dataclass(frozen=True, slots=True)
class ReloadReply:
    ok: bool
    devices: int | None
    error: str | None
    origin: str  # the core's process, which the broadcast that follows may skip


@dataclass(frozen=True, slots=True)
class BackupReply:
    here: bool  # the device is polled by this core
    ok: bool = True
    error: str | None = None  # the backup failed (the device's error)
    refused: str | None = None  # it has no configuration task


@dataclass(frozen=True, slots=True)
class PollLag:
    """Polls started over the last ``window_s`` seconds, and how many of them late."""

    polls: int
    late: int
    window_s: float


# How far back readiness looks at the poller: polls late during an outage that ended
# longer ago than this no longer make it lagging.
LAG_WINDOW_S = 60.0


class LagWindow:
    """The scheduler's poll and late counters are cumulative since start: read raw, an
    outage's late polls would count against readiness forever. Marks of them are kept,
    and a figure is the difference with the newest mark at least ``window`` old (or the
    oldest there is)."""

    def __init__(
        self, window: float = LAG_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._clock = clock
        self._marks: deque[tuple[float, int, int]] = deque()

    def observe(self, polls: int, late: int) -> PollLag:
        now = self._clock()
        self._marks.append((now, polls, late))
        while len(self._marks) > 1 and now - self._marks[1][0] >= self.window:
            self._marks.popleft()
        at, base_polls, base_late = self._marks[0]
        return PollLag(polls=polls - base_polls, late=late - base_late, window_s=now - at)


class Core(Protocol):
    async def reload(self) -> ReloadReply: ...

    async def backup(self, device: str) -> BackupReply: ...

    async def exposition(self) -> bytes:
        """The core's figures in the Prometheus text format (no process metrics of the
        API's own, no ``netmon_build_info``)."""
        ...


class LocalCore:
    """The core's parts, in this process."""

    def __init__(
        self,
        *,
        poller: PollerService | None = None,
        writer: SampleWriter | None = None,
        batcher: Batcher | None = None,
        alerts: AlertService | None = None,
        reload: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.poller = poller
        self.writer = writer
        self.batcher = batcher
        self.alerts = alerts
        self._after_reload = reload
        self._lag = LagWindow()

    def poll_lag(self) -> PollLag | None:
        """Polls (and late ones) of about the last minute (since the first time asked,
        at the start); None without a poller."""
        poller = self.poller.poller if self.poller is not None else None
        if poller is None:
            return None
        stats = poller.stats
        return self._lag.observe(stats.start_lag.count, stats.late)

    async def reload(self) -> ReloadReply:
        from netmon.store.notify import ORIGIN

        if self.poller is None:
            return ReloadReply(ok=True, devices=None, error=None, origin=ORIGIN)
        result = await self.poller.reload()
        if self._after_reload is not None:
            await self._after_reload()
        return ReloadReply(ok=result.ok, devices=result.devices, error=result.error, origin=ORIGIN)

    async def backup(self, device: str) -> BackupReply:
        if self.poller is None or not self.poller.polls(device):
            return BackupReply(here=False)
        try:
            result = await self.poller.backup_configs(device)
        except LookupError as exc:
            return BackupReply(here=True, ok=False, refused=str(exc))
        error = str(result.error) if result.error is not None else None
        return BackupReply(here=True, ok=error is None, error=error)

    async def exposition(self) -> bytes:
        from netmon.core_metrics import core_exposition

        return core_exposition(self)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control-socket request (``netmon.control_socket``)."""
        command = request.get("command")
        if command == "reload":
            r = await self.reload()
            return {
                "ok": True,
                "reload_ok": r.ok,
                "devices": r.devices,
                "error": r.error,
                "origin": r.origin,
            }
        if command == "backup":
            device = request.get("device")
            if not isinstance(device, str):
                raise ValueError("backup needs a device name")
            b = await self.backup(device)
            return {
                "ok": True,
                "here": b.here,
                "backup_ok": b.ok,
                "error": b.error,
                "refused": b.refused,
            }
        if command == "metrics":
            return {"ok": True, "text": (await self.exposition()).decode()}
        if command == "poll_lag":
            lag = self.poll_lag()
            if lag is None:
                return {"ok": True, "lag": None}
            return {"ok": True, "lag": [lag.polls, lag.late, lag.window_s]}
        raise ValueError(
            f"unknown command {command!r}; expected reload, backup, metrics or poll_lag"
        )


class RemoteCore:
    """The core of ``netmon run``, from an API process, over its control socket."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def _ask(self, body: dict[str, Any], wait_s: float) -> dict[str, Any]:
        try:
            reply = await control_socket.request_async(self.path, body, wait_s)
        except (OSError, ValueError) as exc:  # socket.timeout and refusals are OSErrors
            raise CoreUnavailableError(f"the core did not answer {body['command']}: {exc}") from exc
        if not reply.get("ok"):
            raise CoreUnavailableError(f"the core refused {body['command']}: {reply.get('error')}")
        return reply

    async def reload(self) -> ReloadReply:
        r = await self._ask({"command": "reload"}, _RELOAD_WAIT)
        return ReloadReply(
            ok=bool(r["reload_ok"]), devices=r["devices"], error=r["error"], origin=r["origin"]
        )

    async def backup(self, device: str) -> BackupReply:
        r = await self._ask({"command": "backup", "device": device}, _BACKUP_WAIT)
        return BackupReply(
            here=bool(r["here"]), ok=bool(r["backup_ok"]), error=r["error"], refused=r["refused"]
        )

    async def exposition(self) -> bytes:
        r = await self._ask({"command": "metrics"}, 10.0)
        return str(r["text"]).encode()

    async def poll_lag(self, wait_s: float = 1.0) -> PollLag | None:
        r = await self._ask({"command": "poll_lag"}, wait_s)
        if r["lag"] is None:
            return None
        polls, late, window = r["lag"]
        return PollLag(polls=int(polls), late=int(late), window_s=float(window))
