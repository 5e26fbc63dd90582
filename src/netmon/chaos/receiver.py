"""A webhook receiver for the experiments: records every delivery it gets, on disk.

It stands where a NOC's Alertmanager or NSP would: the ``alerts-during-outage`` experiment
asks it, not netmon, whether a firing and a resolved arrived and when. Each delivery is
one JSON line (receive time, ``webhook-id``, the body) appended to a file that probes in
another process can read. It answers 200 to everything: a receiver that fails is another
experiment.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Delivery", "Receiver", "read_deliveries"]

Delivery = dict[str, Any]  # {"time": float, "webhook_id": str, "body": Any}


class Receiver:
    def __init__(self, log: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.log = log
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(min(length, 16 << 20))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                receiver.record(
                    {
                        "time": time.time(),
                        "webhook_id": self.headers.get("webhook-id", ""),
                        "path": self.path,
                        "body": body,
                    }
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # the journal is the record; stderr stays quiet

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def record(self, delivery: Delivery) -> None:
        line = json.dumps(delivery) + "\n"
        with self._lock, self.log.open("a") as f:
            f.write(line)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="chaos-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def read_deliveries(log: Path, since: float = 0.0) -> list[Delivery]:
    if not log.exists():
        return []
    return [d for d in _lines(log) if d["time"] >= since]


def _lines(log: Path) -> Iterator[Delivery]:
    for line in log.read_text().splitlines():
        if line.strip():
            yield json.loads(line)
