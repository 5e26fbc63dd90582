"""The write path: records in, batched COPY out, durable before it returns.

``write`` returns once every accepted sample is in PostgreSQL or in the on-disk spool.
Idempotent on (series, time): COPY first (fast), and only a batch that hits a unique
violation goes through INSERT ... ON CONFLICT DO NOTHING. While the database is away,
batches go to the spool and a background task replays them, in order, when it returns;
a spool left by a crash is replayed on start. While the spool holds anything, new batches
queue behind it so replay order is acceptance order.

With ``writer.publish``, what was committed goes to the API's live feeds by NOTIFY
(``store/notify.py``). The writer also LISTENs on ``netmon_control``: a device deleted in
another process empties its series cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, get_args, get_type_hints

import asyncpg
import msgspec

from netmon.config import Settings
from netmon.errors import DatabaseUnavailableError
from netmon.histogram import WRITE_SECONDS_BUCKETS, Histogram
from netmon.logs import get_logger
from netmon.outage_log import StateLog, quiet_library_outage_logs
from netmon.records import U64_MAX, DeviceEvent, Sample, SeriesKind
from netmon.store.database import Database, is_connection_error
from netmon.store.listener import Listener
from netmon.store.notify import (
    CONTROL_CHANNEL,
    Control,
    Fragments,
    decode_control,
    publish_control,
    publish_events,
    publish_fragments,
    publish_samples,
    sample_fragments,
)
from netmon.store.partitions import ensure_partitions, partitioned_tables
from netmon.store.rollups import lower_watermarks
from netmon.store.series import SeriesCache
from netmon.store.spool import Spool

__all__ = ["Batch", "SampleWriter", "WriteResult", "WriterStats"]

log = get_logger(__name__)
_T = TypeVar("_T")

COLUMNS = ("series_id", "time", "value")
# Below this many rows a batch is not worth splitting across connections.
_SPLIT_MIN_ROWS = 2_000
# A chunk that loses a deadlock to another writer is tried again, up to this many times.
_DEADLOCK_RETRIES = 3
# One row of `samples` as COPY takes it.
Row = tuple[int, datetime, int | float | Decimal]

_INSERT_IGNORE = """
WITH ins AS (
    INSERT INTO samples (series_id, time, value)
    SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::numeric[])
    ON CONFLICT (series_id, time) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins
"""

# Publishing needs the rows that were new, not only how many (the others may hold other
# values than the ones stored).
_INSERT_IGNORE_RETURNING = """
INSERT INTO samples (series_id, time, value)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::numeric[])
ON CONFLICT (series_id, time) DO NOTHING
RETURNING series_id, time
"""

_INSERT_EVENTS = """
INSERT INTO device_events (uid, device_id, time, kind, severity, message, attributes)
SELECT i.uid, d.id, i.time, i.kind, i.severity, i.message, i.attributes
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
            $7::jsonb[]) AS i(uid, device, time, kind, severity, message, attributes)
JOIN devices d ON d.name = i.device
ON CONFLICT (uid) DO NOTHING
"""
_INSERT_EVENTS_RETURNING = _INSERT_EVENTS + "RETURNING uid\n"
# The control listener: first and longest pause between reconnects, and how often an idle
# connection is checked (a half-open TCP connection tells nobody it died).
_LISTEN_RETRY_MAX = 10.0
_LISTEN_KEEPALIVE = 10.0


class Batch(msgspec.Struct):
    """What one spool file holds."""

    samples: list[Sample] = []
    events: list[DeviceEvent] = []


@dataclass
class WriteResult:
    """What became of one ``write`` call. accepted = stored + duplicates + spooled, all
    counted in samples; rejected counts samples and events."""

    stored: int = 0
    duplicates: int = 0
    spooled: int = 0
    rejected: int = 0
    dropped: int = 0

    @property
    def accepted(self) -> int:
        return self.stored + self.duplicates + self.spooled


async def _announce_replay(conn: asyncpg.Connection, stored: int) -> int:
    await publish_control(conn, "samples_replayed", stored=stored)
    return 1


@dataclass
class WriterStats:
    """Running totals for /metrics and the live summary."""

    stored: int = 0
    duplicates: int = 0
    spooled: int = 0
    replayed: int = 0
    rejected: int = 0
    expired: int = 0
    dropped: int = 0
    batches: int = 0
    write_seconds: float = 0.0
    # Seconds per batch into PostgreSQL, replays included (a batch that fails over to the
    # spool is not observed: its time says nothing about the database).
    write_latency: Histogram = field(default_factory=lambda: Histogram(WRITE_SECONDS_BUCKETS))
    # Live feeds (writer.publish): notifications sent, and publishes that failed after the
    # rows were committed (the rows stay stored; feed clients miss them).
    notifications: int = 0
    publish_errors: int = 0
    # netmon_control: series caches dropped on request of another process or on reconnect.
    series_forgets: int = 0
    # Writes abandoned at writer.write_deadline (their batches went to the spool).
    deadlines: int = 0


_KINDS = frozenset(get_args(SeriesKind))
_SEVERITIES = frozenset(get_args(get_type_hints(DeviceEvent)["severity"]))


def _swallow(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned write's outcome (its connections were closed under it)."""
    if not task.cancelled():
        task.exception()


class _Chunk:
    """Samples as one COPY takes them; ``fragments`` to publish them (None: not
    published)."""

    __slots__ = ("copy_text", "fragments", "samples")

    def __init__(self, samples: list[Sample], copy_text: bytes, fragments: Fragments | None):
        self.samples = samples
        self.copy_text = copy_text
        self.fragments = fragments


# What _store_rows returns when COPY stored a whole chunk (every row is new).
_ALL_NEW: list[Row] = []


def _plain(value: object) -> int | float:
    """An int or float subclass as the plain value COPY text needs (an IntEnum's str is
    its name)."""
    return int(value) if isinstance(value, int) else float(value)  # type: ignore[arg-type]


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


_I64_MIN = -(2**63)


def _odd_value_ok(value: object) -> bool:
    """Values that are not a plain float or int: int subclasses (not bool) in range and
    float subclasses pass; anything else cannot be stored."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _I64_MIN <= value <= U64_MAX
    return isinstance(value, float)


class _Rejects:
    """Records refused before they are stored or spooled: those the database could never
    take would otherwise fail on every replay and block the spool behind them."""

    def __init__(self, settings: Settings) -> None:
        self.oldest_age = settings.storage.raw_retention
        self.max_future = settings.storage.max_future

    def split(self, samples: Sequence[Sample]) -> tuple[list[Sample], int]:
        now = datetime.now(UTC)
        oldest, newest = now - self.oldest_age, now + self.max_future
        try:
            # The hot path: exact types first, one comprehension, no call per sample.
            good = [
                s
                for s in samples
                if oldest <= s.time <= newest
                and (
                    type(s.value) is float
                    or (type(s.value) is int and _I64_MIN <= s.value <= U64_MAX)
                    or _odd_value_ok(s.value)
                )
                and s.series.kind in _KINDS
            ]
        except TypeError:  # a naive datetime somewhere: sort it out sample by sample
            good = [s for s in samples if s.time.tzinfo is not None and oldest <= s.time <= newest]
            good = [s for s in good if _odd_value_ok(s.value) and s.series.kind in _KINDS]
        return good, len(samples) - len(good)

    def still_retained(self, samples: list[Sample]) -> list[Sample]:
        oldest = datetime.now(UTC) - self.oldest_age
        return [s for s in samples if s.time >= oldest]

    @staticmethod
    def split_events(events: Sequence[DeviceEvent]) -> tuple[list[DeviceEvent], int]:
        good = [e for e in events if e.severity in _SEVERITIES]
        return good, len(events) - len(good)


class SampleWriter:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.spool = Spool(settings.spool_dir, settings.writer.spool_max_bytes)
        self.stats = WriterStats()
        self.series = SeriesCache()
        self._rejects = _Rejects(settings)
        self._tables = {t.name: t for t in partitioned_tables(settings.storage)}
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Batch)
        self._wake = asyncio.Event()
        # Set while the spool is empty: new writes that find it replaying wait for this.
        self._spool_empty = asyncio.Event()
        if not len(self.spool):
            self._spool_empty.set()
        self._replayer: asyncio.Task[None] | None = None
        self._control: asyncio.Task[None] | None = None
        # netmon_control, on a connection of its own for as long as the writer runs: a
        # device deleted through the API in another process must not leave this one
        # writing samples under the deleted series ids.
        self._listener = Listener(
            db,
            {CONTROL_CHANNEL: self._on_control},
            name="control listener",
            retry_min=settings.writer.retry_interval.total_seconds(),
            retry_max=_LISTEN_RETRY_MAX,
            keepalive=_LISTEN_KEEPALIVE,
            keepalive_timeout=settings.database.connect_timeout.total_seconds(),
            on_connect=self._on_connect,
        )
        self._closing = False
        self._deadline = settings.writer.write_deadline.total_seconds()
        # Replay (and its probe) waits longer: it runs in the background, nothing waits on
        # it, and a database that is slow but answers (a first batch of new series takes
        # several round trips) must be able to take the spool back, or it would fill up
        # forever. Bounded still, by command_timeout, so a frozen server is let go.
        self._replay_deadline = max(
            self._deadline, settings.database.command_timeout.total_seconds()
        )
        self.database_up = True
        # One line when the database goes, one when it is back (netmon.outage_log).
        self._outage = StateLog(log, "database")
        self._spooled_at_down = 0
        quiet_library_outage_logs()
        self.publish = settings.writer.publish
        # Other control messages (inventory_reload, ...) go to whoever runs this writer.
        self.on_control: Callable[[Control], None] | None = None

    @property
    def control_listening(self) -> bool:
        """True while the netmon_control listener is connected (for health and tests)."""
        return self._listener.listening

    # -- lifecycle ---------------------------------------------------------------------

    async def spool_replayed(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the spool to be empty (replayed); whether it
        is. What a crashed process spooled is in the database only after this."""
        try:
            async with asyncio.timeout(within):
                await self._spool_empty.wait()
        except TimeoutError:
            return False
        return True

    async def start(self) -> None:
        """Start the replayer; a spool left by an earlier run is replayed first."""
        if len(self.spool):
            log.info(
                "replaying spool from an earlier run",
                batches=len(self.spool),
                bytes=self.spool.bytes_used,
            )
            self._wake.set()
        self._replayer = asyncio.create_task(self._replay_loop(), name="netmon-spool-replay")
        self._control = asyncio.create_task(
            self._listener.run(lambda: self._closing), name="netmon-writer-control"
        )

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Stop; give the replayer ``drain_timeout`` s to empty the spool. Whatever is left
        stays on disk for the next start."""
        if self._replayer is None:
            return
        deadline = asyncio.get_running_loop().time() + drain_timeout
        while len(self.spool) and self.database_up and asyncio.get_running_loop().time() < deadline:
            self._wake.set()
            await asyncio.sleep(0.05)
        self._closing = True
        self._wake.set()
        self._replayer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._replayer
        self._replayer = None
        if self._control is not None:
            self._control.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._control
            self._control = None

    async def __aenter__(self) -> SampleWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the write path ----------------------------------------------------------------

    async def write(
        self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()
    ) -> WriteResult:
        """Make ``samples`` (and ``events``) durable; see WriteResult for the outcome.

        Returns within ``writer.write_deadline`` (plus the spool's fsync) whatever the
        database does: a write it has not finished by then is abandoned (its connections
        closed, so nothing waits on a cancel the server cannot answer), the batch goes to
        the spool and the database counts as down until the replayer reaches it again."""
        batch, result = self._accept(samples, events)
        if batch is None:
            return result
        if self.database_up and len(self.spool):
            # The replayer is taking the spool back: wait for it, within the deadline,
            # rather than add to it (nothing upstream waits on this write). Spooling
            # instead would keep the spool from ever running empty while batches arrive
            # faster than a replay round takes, and fresh samples would never reach the
            # live feeds again.
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._deadline):
                    await self._spool_empty.wait()
        if self.database_up and not len(self.spool):
            try:
                stored, dups = await self._bounded(
                    lambda held: self._to_database(batch, True, held)
                )
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self._went_down(exc)
            else:
                result.stored, result.duplicates = stored, dups
                self.stats.stored += stored
                self.stats.duplicates += dups
                return result
        await self._to_spool(batch, result)
        return result

    async def spool_batch(
        self, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()
    ) -> WriteResult:
        """Make records durable in the spool, without trying the database (the batcher's
        queue overflowed); the replayer stores them in order."""
        batch, result = self._accept(samples, events)
        if batch is not None:
            await self._to_spool(batch, result)
        return result

    async def _bounded(
        self,
        work_on: Callable[[list[asyncpg.Connection]], Awaitable[_T]],
        deadline: float | None = None,
    ) -> _T:
        """``work_on(held)`` within ``deadline`` (``write_deadline``); past it,
        DatabaseUnavailableError.

        Cancelling a query makes asyncpg send a cancel request and wait for the server, and
        a frozen server answers neither: so the connections the write holds are closed
        first (terminate: no round trip), then the write is cancelled and not awaited."""
        limit = self._deadline if deadline is None else deadline
        held: list[asyncpg.Connection] = []
        work = asyncio.ensure_future(work_on(held))
        try:
            async with asyncio.timeout(limit):
                return await asyncio.shield(work)
        except TimeoutError:
            for conn in held:
                with contextlib.suppress(Exception):
                    conn.terminate()
            work.cancel()
            work.add_done_callback(_swallow)
            self.stats.deadlines += 1
            raise DatabaseUnavailableError(
                f"a write to the database did not finish within {limit:g} s"
            ) from None

    def _accept(
        self, samples: Sequence[Sample], events: Sequence[DeviceEvent]
    ) -> tuple[Batch | None, WriteResult]:
        """What can be stored, as a batch (None: nothing), and the result so far."""
        good, rejected = self._rejects.split(samples)
        good_events, rejected_events = self._rejects.split_events(events)
        result = WriteResult(rejected=rejected + rejected_events)
        if rejected:
            self.stats.rejected += rejected
            log.warning(
                "samples rejected: time outside retention or too far ahead, or value out of "
                "range, or unknown series kind",
                rejected=rejected,
            )
        if rejected_events:
            self.stats.rejected += rejected_events
            log.warning("events rejected: unknown severity", rejected=rejected_events)
        if not good and not good_events:
            return None, result
        return Batch(samples=good, events=good_events), result

    async def _to_spool(self, batch: Batch, result: WriteResult) -> None:
        payload = self._encoder.encode(batch)
        self._spool_empty.clear()  # before the thread runs: a writer must not slip past
        if await asyncio.to_thread(self.spool.append, payload):
            result.spooled = len(batch.samples)
            self.stats.spooled += len(batch.samples)
        else:
            if not len(self.spool):
                self._spool_empty.set()
            result.dropped = len(batch.samples)
            self.stats.dropped += len(batch.samples)
            log.error(
                "spool full: batch dropped",
                samples=len(batch.samples),
                spool_bytes=self.spool.bytes_used,
                spool_max_bytes=self.spool.max_bytes,
                dropped_total=self.stats.dropped,
            )
        self._wake.set()

    def _went_down(self, exc: BaseException) -> None:
        if self._outage.down(exc, doing="spooling", spool_files=len(self.spool)):
            self._spooled_at_down = self.stats.spooled
        self.database_up = False
        self._wake.set()

    async def _probe(self, held: list[asyncpg.Connection]) -> None:
        async with self._acquire(held) as conn:
            await conn.execute("SELECT 1")

    @contextlib.asynccontextmanager
    async def _acquire(self, held: list[asyncpg.Connection]) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, noted in ``held`` so a write past its deadline can close it."""
        async with self.db.pool.acquire() as conn:
            held.append(conn)
            try:
                yield conn
            finally:
                held.remove(conn)

    async def _to_database(
        self, batch: Batch, fresh: bool = True, held: list[asyncpg.Connection] | None = None
    ) -> tuple[int, int]:
        """Store ``batch``. ``fresh``: written now, not replayed from the spool; only fresh
        samples go to the live feeds. A replay can carry hours of backlog: a flood of old
        samples would overflow every feed client's queue and push out the current ones,
        and a client wanting the history asks the range API for it. Events are published
        either way: there are few, and "went down during the outage" is news."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        samples = batch.samples
        stored = 0
        if held is None:
            held = []
        if batch.events:
            async with self._acquire(held) as conn:
                await self.series.resolve(conn, {s.series for s in samples})
                await self._write_events(conn, batch.events)
        if samples:
            times = {s.time for s in samples}
            oldest, newest = min(times), max(times)
            publish = fresh and self.publish
            chunks = await self._encoded(samples, times, publish, held)
            if len(chunks) == 1:
                stored = await self._copy(chunks[0], oldest, newest, held)
            else:
                counts = await asyncio.gather(
                    *(self._copy(c, oldest, newest, held) for c in chunks)
                )
                stored = sum(counts)
            if oldest < datetime.now(UTC) - self.settings.storage.rollup_lateness:
                async with self._acquire(held) as conn:
                    await lower_watermarks(conn, oldest)
            if stored and not fresh and self.publish:
                # Replayed samples are not sent to the feeds (see above), but some may be
                # the newest of their series: the API processes' last values refill.
                async with self._acquire(held) as conn:
                    await self._publish(_announce_replay, conn, stored)
        elapsed = loop.time() - started
        self.stats.batches += 1
        self.stats.write_seconds += elapsed
        self.stats.write_latency.observe(elapsed)
        return stored, len(samples) - stored

    async def _encoded(
        self,
        samples: list[Sample],
        times: set[datetime],
        publish: bool,
        held: list[asyncpg.Connection],
    ) -> list[_Chunk]:
        for attempt in range(3):
            try:
                return self._encode(samples, times, publish)
            except KeyError:
                # Series not seen before: create or look them up. Once is enough, unless a
                # series_forget emptied the cache while we waited for the database.
                if attempt == 2:
                    raise
                async with self._acquire(held) as conn:
                    await self.series.resolve(conn, {s.series for s in samples})
        raise AssertionError("unreachable")

    def _encode(self, samples: list[Sample], times: set[datetime], publish: bool) -> list[_Chunk]:
        """The batch as COPY text (and, to publish, as live-feed fragments), in chunks
        for ``writer.connections`` connections when it is large.

        Text, not asyncpg's binary COPY: a sample is one f-string of an id, a time
        converted once per batch (a poll has one or two) and the value's own repr,
        where the binary encoder builds a numeric digit by digit (a float by way of
        Decimal: its shortest repr, so 0.1 stays 0.1). About 0.4 µs a sample."""
        ids = self.series.ids
        stamps = {t: t.isoformat() for t in times}
        lines: list[str] = []
        add = lines.append
        for s in samples:  # the value in a local: loaded once, not once per test
            v = s.value
            if type(v) is not int and type(v) is not float:
                v = _plain(v)
            add(f"{ids[s.series]}\t{stamps[s.time]}\t{v}\n")
        parts: list[_Chunk] = []
        for lo, hi in self._bounds(len(samples)):
            part = samples[lo:hi]
            frags = sample_fragments(part, ids, times) if publish else None
            parts.append(_Chunk(part, "".join(lines[lo:hi]).encode(), frags))
        return parts

    def _bounds(self, count: int) -> list[tuple[int, int]]:
        n = self.settings.writer.connections
        if n == 1 or count < _SPLIT_MIN_ROWS:
            return [(0, count)]
        size = -(-count // n)
        return [(i, min(i + size, count)) for i in range(0, count, size)]

    def _rows(self, samples: list[Sample]) -> list[Row]:
        ids = self.series.ids
        # A float goes to numeric by its shortest repr: 0.1 stays 0.1, where asyncpg
        # would store all 55 digits of its binary expansion.
        return [
            (ids[s.series], s.time, s.value if type(s.value) is not float else _dec(s.value))
            for s in samples
        ]

    async def _copy(
        self,
        chunk: _Chunk,
        oldest: datetime,
        newest: datetime,
        held: list[asyncpg.Connection],
    ) -> int:
        """Store a chunk idempotently; return how many rows were new. With fragments, send
        the new ones to the live feeds once committed."""
        publish = chunk.fragments is not None
        async with self._acquire(held) as conn:
            new = await self._store_rows(conn, chunk, oldest, newest, publish)
            if isinstance(new, int):
                return new
            # After the commit (COPY and INSERT run in autocommit), on the same connection:
            # one round trip more, where a transaction around the COPY would cost two
            # (BEGIN, COMMIT); and nothing uncommitted can be sent. A crash between commit
            # and publish loses only the notification.
            if new is _ALL_NEW:
                assert chunk.fragments is not None
                await self._publish(publish_fragments, conn, chunk.fragments)
                return len(chunk.samples)
            if new:
                await self._publish(publish_samples, conn, new)
            return len(new)

    async def _store_rows(
        self,
        conn: asyncpg.Connection,
        chunk: _Chunk,
        oldest: datetime,
        newest: datetime,
        want_rows: bool,
    ) -> int | list[Row]:
        """Store a chunk; the count of new rows or, if ``want_rows``, the new rows
        (``_ALL_NEW`` when COPY took them all)."""
        partitions_made = False
        deadlocks = 0
        while True:
            try:
                # The missing-partition handler below must also cover the ON CONFLICT
                # path: COPY can meet a duplicate before it routes a row that has no
                # partition yet.
                try:
                    # A memoryview: asyncpg takes bytes for a file name.
                    await conn.copy_to_table(
                        "samples",
                        source=memoryview(chunk.copy_text),
                        columns=COLUMNS,
                        format="text",
                    )
                    return _ALL_NEW if want_rows else len(chunk.samples)
                except asyncpg.exceptions.UniqueViolationError:
                    rows = self._rows(chunk.samples)
                    if want_rows:
                        return await self._insert_returning_new(conn, rows)
                    return await self._insert_ignoring_duplicates(conn, rows)
            except asyncpg.exceptions.CheckViolationError as exc:
                # "no partition of relation ... found for row": make it, then retry.
                if "no partition" not in str(exc) or partitions_made:
                    raise
                await ensure_partitions(
                    conn,
                    self._tables["samples"],
                    oldest,
                    newest + self._tables["samples"].interval / 1_000_000,
                    self.settings.storage.lock_timeout * 20,
                )
                partitions_made = True
            except asyncpg.exceptions.DeadlockDetectedError:
                # Another writer was inserting some of the same rows in another order,
                # and ours was rolled back. Try again: its rows are duplicates now.
                deadlocks += 1
                if deadlocks > _DEADLOCK_RETRIES:
                    raise

    async def _insert_ignoring_duplicates(self, conn: asyncpg.Connection, rows: list[Row]) -> int:
        ids, times, values = zip(*rows, strict=True)
        count: int = await conn.fetchval(_INSERT_IGNORE, list(ids), list(times), list(values))
        return count

    async def _insert_returning_new(self, conn: asyncpg.Connection, rows: list[Row]) -> list[Row]:
        ids, times, values = zip(*rows, strict=True)
        records = await conn.fetch(_INSERT_IGNORE_RETURNING, list(ids), list(times), list(values))
        new = {(r["series_id"], r["time"]) for r in records}
        out: list[Row] = []
        for row in rows:
            key = (row[0], row[1])
            # A key twice in one batch was inserted once, from its first row.
            if key in new:
                new.discard(key)
                out.append(row)
        return out

    async def _write_events(self, conn: asyncpg.Connection, events: Sequence[DeviceEvent]) -> None:
        await conn.execute(
            "INSERT INTO devices (name) SELECT DISTINCT unnest($1::text[]) ON CONFLICT DO NOTHING",
            [e.device for e in events],
        )
        args = (
            [e.uid for e in events],
            [e.device for e in events],
            [e.time for e in events],
            [e.kind for e in events],
            [e.severity for e in events],
            [e.message for e in events],
            [json.dumps(e.attributes) for e in events],
        )
        if not self.publish:
            await conn.execute(_INSERT_EVENTS, *args)
            return
        # Only the events stored now: one already stored (a replay of a batch whose events
        # made it before the samples failed) was published then.
        new = {r["uid"] for r in await conn.fetch(_INSERT_EVENTS_RETURNING, *args)}
        if new:
            await self._publish(publish_events, conn, [e for e in events if e.uid in new])

    async def _publish(
        self,
        send: Callable[[asyncpg.Connection, Any], Awaitable[int]],
        conn: asyncpg.Connection,
        what: Any,
    ) -> None:
        """Publish committed rows; a failure is counted and logged, never raised: the rows
        are stored, and failing the write would spool them again for nothing."""
        try:
            self.stats.notifications += await send(conn, what)
        except Exception as exc:
            self.stats.publish_errors += 1
            log.warning(
                "live feed publish failed; the rows are stored",
                error=f"{type(exc).__name__}: {exc}",
                publish_errors=self.stats.publish_errors,
            )

    # -- netmon_control ----------------------------------------------------------------

    def _on_connect(self, _lost_since: datetime | None, reconnected: bool) -> None:
        # A series_forget sent while the listener was away is lost: drop the whole cache
        # (it costs one lookup per series).
        if reconnected:
            self._forget_series("control listener reconnected")

    def _on_control(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            control = decode_control(payload)
        except msgspec.DecodeError:
            log.warning("netmon_control: unreadable notification ignored", payload=payload[:200])
            return
        if control.op == "series_forget":
            self._forget_series("series_forget")
        elif self.on_control is not None:
            self.on_control(control)  # e.g. the Service reloads its poller's inventory

    def _forget_series(self, why: str) -> None:
        self.series.clear()
        self.stats.series_forgets += 1
        log.debug("series cache dropped", reason=why)

    # -- replay ------------------------------------------------------------------------

    async def _replay_loop(self) -> None:
        retry = self.settings.writer.retry_interval.total_seconds()
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(retry):
                    await self._wake.wait()
            self._wake.clear()
            if not len(self.spool) and self.database_up:
                continue
            try:
                await self._replay_once()
            except DatabaseUnavailableError as exc:
                self._went_down(exc)
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("spool replay failed; retrying")
                else:
                    self._outage.down(exc, doing="spooling")
                self.database_up = False
                await asyncio.sleep(retry)

    async def _replay_once(self) -> None:
        """Replay the spool in order, several files per COPY (up to writer.batch_size
        samples): one file per COPY could fall behind a steady stream of new batches and
        never drain."""
        pending = self.spool.pending()
        if not pending and not self.database_up:
            # Nothing to replay (the spool filled up and dropped, or is being written):
            # the database counts as back only once it answers.
            await self._bounded(self._probe, self._replay_deadline)
        while pending:
            group: list[Path] = []
            samples: list[Sample] = []
            events: list[DeviceEvent] = []
            while pending and (not group or len(samples) < self.settings.writer.batch_size):
                path = pending.pop(0)
                batch = await self._read_spooled(path)
                if batch is None:
                    continue
                group.append(path)
                samples += batch.samples
                events += batch.events
            if not group:
                continue
            # Time passed while the batches waited: what aged out of retention meanwhile
            # would re-create dropped partitions. It is let go, counted and logged.
            kept = self._rejects.still_retained(samples)
            expired = len(samples) - len(kept)
            if expired:
                self.stats.expired += expired
                log.warning("spooled samples expired past retention", expired=expired)
            replay = Batch(samples=kept, events=events)
            stored, dups = await self._bounded(
                lambda held, replay=replay: self._to_database(replay, False, held),  # type: ignore[misc]
                self._replay_deadline,
            )
            for path in group:
                self.spool.remove(path)
            if not len(self.spool):
                self._spool_empty.set()
            self.stats.replayed += len(kept)
            self.stats.stored += stored
            self.stats.duplicates += dups
        self._outage.up(doing="spool replayed", spooled=self.stats.spooled - self._spooled_at_down)
        self.database_up = True

    async def _read_spooled(self, path: Path) -> Batch | None:
        # Replay's file operations run on the loop, not in a thread: a replayer cancelled by
        # close() must not leave a thread behind that still moves files (reads and unlinks
        # are quick; only append fsyncs).
        payload = self.spool.read(path)
        if payload is None:
            return None
        try:
            return self._decoder.decode(payload)
        except msgspec.DecodeError as exc:  # intact, but not a Batch this code can read
            self.spool.set_aside(path, f"not a batch: {exc}")
            return None
