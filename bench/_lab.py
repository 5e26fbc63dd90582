"""The built-in lab in a process of its own (its CPU is then not the poller's), and netmon's
poller polling it in this process, for the benchmarks that measure polling."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from netmon.config import load_settings
from netmon.poller.service import PollerService
from netmon.store.batcher import Batcher
from netmon.store.database import Database
from netmon.store.schema import upgrade
from netmon.store.writer import SampleWriter

__all__ = ["LabProcess", "polling"]


class LabProcess:
    """``netmon lab`` with its inventory written to ``folder``, until the block ends."""

    def __init__(
        self,
        devices: int,
        folder: Path,
        *,
        base_port: int,
        interfaces: int,
        snmp_only: bool = False,
        start_timeout: float = 120.0,
        first: int = 1,
    ) -> None:
        self.args = [
            "lab",
            "--devices",
            str(devices),
            "--first",
            str(first),
            "--interfaces",
            str(interfaces),
            "--base-port",
            str(base_port),
            "--write-inventory",
            str(folder),
            "--control",
            str(folder / "lab.sock"),
            "--host-key-dir",
            str(folder / "keys"),
        ]
        if snmp_only:
            self.args.append("--snmp-only")
        self.folder = folder
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LabProcess:
        netmon = shutil.which("netmon") or str(Path(sys.executable).parent / "netmon")
        self.proc = subprocess.Popen(
            [netmon, *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.start_timeout
        while not (self.folder / "hosts.yaml").exists() or not (self.folder / "lab.sock").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the lab did not start")
            time.sleep(0.1)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@asynccontextmanager
async def polling(
    url: str, scratch: Path, inventory: Path, *, max_in_flight: int | None = None
) -> AsyncIterator[PollerService]:
    """The poller as ``netmon run`` runs it (writer, batcher, poller service) on the
    migrated database ``url``, polling ``inventory`` without jitter."""
    poller: dict[str, object] = {"inventory": str(inventory), "jitter": "0s"}
    if max_in_flight is not None:
        poller["max_in_flight"] = max_in_flight
    settings = load_settings(
        None,
        data_dir=scratch / "data",
        database={"url": url},
        poller=poller,
        log={"level": "warning"},
    )
    db = Database(settings.database, settings.data_dir)
    await db.start()
    await upgrade(db)
    writer = SampleWriter(db, settings)
    await writer.start()
    batcher = Batcher(writer, settings.writer)
    batcher.start()
    service = PollerService(settings, db, batcher, inventory)
    try:
        await service.start()
        assert service.poller is not None
        yield service
    finally:
        await service.stop()
        await batcher.close()
        await writer.close()
        await db.stop()
