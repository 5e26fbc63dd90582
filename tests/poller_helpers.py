"""A lab, its inventory and a running poller, for the poller's tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from netmon.config import Settings, load_settings
from netmon.lab import Lab, write_inventory
from netmon.poller.service import PollerService
from netmon.store.batcher import Batcher
from netmon.store.database import Database
from netmon.store.writer import SampleWriter


def fast_inventory(
    lab: Lab, folder: Path, *, interval: str = "1s", tasks: list[str] | None = None
) -> Path:
    """The lab's inventory, polled every ``interval`` with a 1 s timeout and no retry.
    For an SNMP-only lab (``Lab(ssh=False)``): every host gets ``tasks``."""
    assert not lab.params.ssh, "fast_inventory writes the SNMP group only: use Lab(ssh=False)"
    write_inventory(lab, folder)
    names = tasks or ["system", "interfaces", "resources"]
    (folder / "groups.yaml").write_text(
        f"lab:\n  data:\n    site: lab\n    poll_interval: {interval}\n    tasks: {names}\n"
    )
    defaults = (folder / "defaults.yaml").read_text()
    defaults = defaults.replace("timeout: 2s", "timeout: 1s").replace("retries: 1", "retries: 0")
    (folder / "defaults.yaml").write_text(defaults)
    return folder


def poller_settings(settings: Settings, **poller: Any) -> Settings:
    assert settings.database.url is not None
    return load_settings(
        None,
        data_dir=settings.data_dir,
        database={"url": settings.database.url, "pool_min": 2, "pool_max": 10},
        writer={"flush_interval": "50ms"},
        poller={"jitter": "0s", "stop_timeout": "10s", **poller},
    )


@asynccontextmanager
async def running_poller(
    settings: Settings, db: Database, inventory: Path
) -> AsyncIterator[PollerService]:
    writer = SampleWriter(db, settings)
    await writer.start()
    batcher = Batcher(writer, settings.writer)
    batcher.start()
    service = PollerService(settings, db, batcher, inventory)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await batcher.close()
        await writer.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` is true (polled every 0.2 s); fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
