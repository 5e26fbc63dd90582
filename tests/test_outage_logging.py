"""An outage logs its changes, not its failures: one "database unreachable" line when the
database goes away and one "database reachable again" when it is back, whatever the number
of writes and retries meanwhile, and no traceback for a connection that is simply gone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog

from netmon.outage_log import StateLog
from netmon.store.database import Database
from netmon.store.writer import SampleWriter
from tests.tcp_proxy import TcpProxy, through
from tests.test_outage import proxy, run_outage, writer_settings

__all__ = ["proxy"]

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*Unable to (connect to database|fetch server version)"
)


async def test_an_outage_logs_one_line_going_and_one_coming_back(
    database_url: str, proxy: TcpProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Retries every 100 ms through an outage of 1.5 s: some fifteen retry rounds and
    # about seventy spooled batches, each of which used to log.
    settings = writer_settings(tmp_path / "data", through(proxy, database_url))
    db = Database(settings.database, settings.data_dir)
    await db.start()
    caplog.set_level(logging.WARNING)
    try:
        with structlog.testing.capture_logs() as logs:
            async with SampleWriter(db, settings) as writer:
                await run_outage(writer, cut=proxy.cut, restore=proxy.restore)
    finally:
        await db.stop()
    events = [e["event"] for e in logs]
    gone = [e for e in logs if e["event"] == "database unreachable"]
    back = [e for e in logs if e["event"] == "database reachable again"]
    assert len(gone) == 1, events
    assert len(back) == 1, events
    assert gone[0]["since"]
    assert back[0]["after_s"] >= 1.0
    assert back[0]["spooled"] > 0
    noisy = [e for e in logs if e["log_level"] in ("warning", "error") and e not in gone]
    assert not noisy, noisy
    assert not [e for e in logs if e.get("exc_info")], events
    assert not [r for r in caplog.records if r.exc_info], caplog.records


def test_state_log_logs_changes_and_reminds_at_most_every_interval() -> None:
    now = [0.0]
    with structlog.testing.capture_logs() as logs:
        state = StateLog(
            structlog.get_logger("t"), "database", remind_every=300, clock=lambda: now[0]
        )
        assert state.up() is False
        assert state.down(ConnectionRefusedError("refused"), doing="spooling") is True
        for _ in range(100):
            now[0] += 5
            state.down(ConnectionRefusedError("refused"))
        assert state.up(spooled=7) is True
        assert state.up() is False
    assert [e["event"] for e in logs] == [
        "database unreachable",
        "database still unreachable",
        "database reachable again",
    ]
    assert logs[0]["error"] == "ConnectionRefusedError: refused"
    assert logs[0]["doing"] == "spooling"
    assert logs[1]["down_s"] == 300
    assert logs[2]["after_s"] == 500
