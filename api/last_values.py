"""The newest value of every series, in memory, for device detail and ``/metrics/last``.

Each API process keeps one ``LastValues``, owned by its feed hub (``feeds.py``): fed by
the ``netmon_samples`` notifications the hub already LISTENs to, filled from the database
once the LISTEN connection is up, and filled again after every gap (a reconnect of that
connection, or notifications the hub had to drop).

Why a read from here is as fresh as one from PostgreSQL, less the feed's lag:

- The fill starts after LISTEN is up: a commit before it is read by the fill, a commit
  after it arrives as a notification. Both are merged as "the newest by time wins", so a
  fill racing notifications, or an older sample arriving late, never replaces a newer
  value.
- A series is answered from here only once it is *loaded*: the fill has read it since the
  last gap (or it was created after the fill passed its id, when every sample of it is
  notified). Anything else is read from the database, as before.
- While the LISTEN connection is down nothing is answered from here (``usable``): from
  the moment it is lost until the refill has read a series again.

What is *not* kept here: which devices exist and their sites. Readers take those from the
database on every request (a primary-key lookup), so site scope and deletions are exact;
the series of a device (their ids, metrics, labels) never change once created, and are
kept here. Memory: slot arrays indexed by series id (22 bytes a series id up to the
highest), 8 bytes a series in its device's list, and one shared entry per distinct
(metric, labels, unit, kind); ``nbytes`` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from array import array
from bisect import bisect_right, insort
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg

from netmon.api.schemas.devices import (
    INTERFACE_METRICS,
    Interface,
    interface_reader,
    make_interface,
)
from netmon.api.schemas.metrics import SeriesOut, SeriesValue
from netmon.logs import get_logger
from netmon.store.database import Database, is_connection_error
from netmon.store.notify import WireSample, from_wire
from netmon.store.queries import fill_last_values, highest_series_id, series_rows

__all__ = ["FILL_CHUNK", "FILL_WINDOW", "LastValues", "SeriesMeta", "read_pool"]

log = get_logger(__name__)

# How far back the fill looks for a series' newest value: a series with nothing newer is
# known to have nothing newer, and a read reaching further back asks the database.
FILL_WINDOW = timedelta(days=1)
# Series per fill query: small enough that a query is a few hundred milliseconds of
# PostgreSQL, and that notifications are applied between them.
FILL_CHUNK = 20_000
# Pause before a fill that failed (the database is away) is tried again.
FILL_RETRY = 2.0
# Connections of the read pool (``LastValues.reads``).
READ_POOL_MIN, READ_POOL_MAX = 2, 8

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SAFE = 2**53  # integers up to this travel exactly through a double

# kinds[sid]: how values[sid] reads back
_NONE, _FLOAT, _INT, _BIG = 0, 1, 2, 3


def _us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class SeriesMeta:
    """What a series measures; shared by every series with the same four (most are: one
    device's interfaces have the same metrics and label sets as the next's)."""

    metric: str
    labels: dict[str, str]  # shared: read, never change
    unit: str
    kind: str
    # For device detail: the interface, and the Interface field this series feeds with
    # how its value reads.
    interface: str | None
    read: tuple[str, Callable[[float], object]] | None


class LastValues:
    """Newest (time, value) per series id, with per-device series lists."""

    def __init__(
        self,
        db: Database,
        listening: Callable[[], bool],
        *,
        window: timedelta = FILL_WINDOW,
        chunk: int = FILL_CHUNK,
    ) -> None:
        self.db = db
        self._listening = listening
        self.window = window
        self.chunk = chunk
        # Slots by series id.
        self._times = array("q")
        self._values = array("d")
        self._kinds = bytearray()
        self._loaded = bytearray()
        self._metas = array("I")  # index into _meta_table; 0: series not known here
        self._big: dict[int, int] = {}  # integers beyond a double's exact range
        # _times[sid] > 0: the newest sample's µs; < 0: -floor, "nothing at or after
        # floor" (what the fill found); 0: nothing known.
        self._meta_table: list[SeriesMeta | None] = [None]
        self._meta_index: dict[tuple[str, str, str, str], int] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._devices: dict[int, array[int]] = {}
        # The fill: its task, how far (series id) it has read, and whether every series
        # is in the device lists (a pass completed since the last gap).
        self._fill: asyncio.Task[None] | None = None
        self._reads: asyncpg.Pool | None = None
        self._turns = asyncio.Semaphore(READ_POOL_MAX)  # lets nobody past its waiters
        self._cursor = 0
        self.complete = False
        self.generation = 0
        # Counters and figures for /metrics.
        self.fills = 0  # passes completed
        self.fill_seconds = 0.0  # the last one's duration
        self.values = 0  # series holding a value
        self.series = 0  # series known

    # -- state -----------------------------------------------------------------------

    def usable(self) -> bool:
        """Whether anything may be answered from here now: LISTEN is up (a loss is
        noticed before the reconnect's refill)."""
        return self._listening()

    @property
    def nbytes(self) -> int:
        slots = (
            self._times.itemsize * len(self._times)
            + self._values.itemsize * len(self._values)
            + len(self._kinds)
            + len(self._loaded)
            + self._metas.itemsize * len(self._metas)
        )
        lists = sum(a.itemsize * len(a) for a in self._devices.values())
        return slots + lists

    def _grow(self, sid: int, exact: bool = False) -> None:
        size = len(self._times)
        if sid < size:
            return
        # Grow by a half again, or to the highest id there is (the fill knows it).
        more = (sid + 1 if exact else max(sid + 1, size + size // 2 + 1024)) - size
        self._times.extend(array("q", bytes(8 * more)))
        self._values.extend(array("d", bytes(8 * more)))
        self._kinds.extend(bytes(more))
        self._loaded.extend(bytes(more))
        self._metas.extend(array("I", bytes(4 * more)))

    # -- lifecycle -------------------------------------------------------------------

    def refill(self, *, lost: bool) -> None:
        """Fill (again): at the first LISTEN, and after each gap (``lost``: notifications
        were missed, so nothing held is known to be the newest any more)."""
        if lost:
            self._loaded = bytearray(len(self._loaded))
            self.complete = False
        self.generation += 1
        self._cursor = 0
        if self._fill is not None:
            self._fill.cancel()
        self._fill = asyncio.create_task(self._run_fill(self.generation), name="netmon-last-fill")

    async def start(self) -> None:
        """Open the read pool (the fill starts with LISTEN: ``refill``)."""
        if self._reads is None:
            self._reads = await read_pool(self.db)

    async def stop(self) -> None:
        if self._fill is not None:
            self._fill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fill
            self._fill = None
        if self._reads is not None:
            reads, self._reads = self._reads, None
            try:
                async with asyncio.timeout(5):
                    await reads.close()
            except (TimeoutError, OSError, asyncpg.PostgresError):
                reads.terminate()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for the reads around the values: the read pool's, else the
        database's pool. Requests queue for the read pool in order, on a semaphore:
        asyncpg's pool hands a released connection to whoever asks first, and a woken
        waiter that finds it taken queues again at the back, so under load some
        requests waited hundreds of milliseconds while others barged past (the p99)."""
        pool = self._reads
        if pool is None:
            async with self.db.pool.acquire() as conn:
                yield conn
            return
        async with self._turns, pool.acquire() as conn:
            yield conn

    async def _run_fill(self, generation: int) -> None:
        while True:
            try:
                await self._fill_pass(generation)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_connection_error(exc):
                    log.warning("last values: fill failed", error=f"{type(exc).__name__}: {exc}")
                else:
                    log.exception("last values: fill failed")
            await asyncio.sleep(FILL_RETRY)
            if generation != self.generation:
                return
            self._cursor = 0

    async def _fill_pass(self, generation: int) -> None:
        started = time.perf_counter()
        after = 0
        async with self.db.pool.acquire() as conn:
            highest = await highest_series_id(conn)
        if highest is not None:
            self._grow(highest + 1024, exact=True)  # room for the series made meanwhile
        while True:
            now = datetime.now(UTC)
            async with self.db.pool.acquire() as conn:
                rows = await fill_last_values(
                    conn, after, self.chunk, now - self.window, now + timedelta(days=1)
                )
            if generation != self.generation:
                return
            floor = _us(now - self.window)
            for sid, device_id, metric, labels, unit, kind, moment, text in rows:
                self._know(sid, device_id, metric, labels, unit, kind)
                if moment is not None:
                    self._merge(sid, _us(moment), _read(text))
                elif self._times[sid] == 0 or -self._times[sid] > floor:
                    # Nothing since ``floor``, unless a notification brought a value.
                    self._times[sid] = -floor
                self._loaded[sid] = 1
            if len(rows) < self.chunk:
                break
            after = rows[-1][0]
            self._cursor = after
            await asyncio.sleep(0)
        self._cursor = 1 << 62
        self.complete = True
        self.fills += 1
        self.fill_seconds = time.perf_counter() - started
        self._count()
        log.info(
            "last values filled",
            series=self.series,
            values=self.values,
            seconds=round(self.fill_seconds, 2),
            bytes=self.nbytes,
        )

    def _count(self) -> None:
        self.series = sum(len(a) for a in self._devices.values())
        self.values = sum(1 for t in self._times if t > 0)

    # -- writes ----------------------------------------------------------------------

    def _know(
        self, sid: int, device_id: int, metric: str, labels_text: str, unit: str, kind: str
    ) -> None:
        self._grow(sid)
        if self._metas[sid]:
            return
        key = (metric, labels_text, unit, kind)
        index = self._meta_index.get(key)
        if index is None:
            labels = self._labels.get(labels_text)
            if labels is None:
                labels = self._labels[labels_text] = json.loads(labels_text)
            interface = labels.get("interface")
            read = (
                interface_reader(metric)
                if interface is not None and metric in INTERFACE_METRICS
                else None
            )
            index = self._meta_index[key] = len(self._meta_table)
            self._meta_table.append(SeriesMeta(metric, labels, unit, kind, interface, read))
        self._metas[sid] = index
        ids = self._devices.get(device_id)
        if ids is None:
            self._devices[device_id] = array("q", [sid])
        elif ids[-1] < sid:
            ids.append(sid)
        else:
            insort(ids, sid)

    def _merge(self, sid: int, us: int, value: int | float) -> bool:
        """Keep (us, value) if it is newer than what is held; True if it was. Below a
        floor (nothing at or after -times[sid]) a late sample is not known to be the
        newest: reads reaching back that far ask the database."""
        times = self._times
        held = times[sid]
        if held >= us or (held < 0 and us < -held):
            return False
        if held <= 0:
            self.values += 1
        times[sid] = us
        if type(value) is float:
            self._values[sid] = value
            self._kinds[sid] = _FLOAT
        elif -_SAFE <= value <= _SAFE:
            self._values[sid] = value
            self._kinds[sid] = _INT
            self._big.pop(sid, None)
        else:
            self._big[sid] = int(value)
            self._kinds[sid] = _BIG
        return True

    def apply(self, samples: Sequence[WireSample]) -> set[int]:
        """Merge notified samples; return the series ids not known here yet (the caller
        learns them: ``learn``)."""
        unknown: set[int] = set()
        size = len(self._times)
        metas = self._metas
        for sid, us, value in samples:
            if sid >= size:
                self._grow(sid)
                size = len(self._times)
                metas = self._metas
            if not metas[sid]:
                unknown.add(sid)
            self._merge(sid, us, from_wire(value) if isinstance(value, str) else value)
        return unknown

    async def learn(self, ids: Iterable[int]) -> None:
        """Add series first heard of in a notification. One the fill has passed was
        created after LISTEN began, so every sample of it was notified: it is loaded."""
        wanted = list(ids)
        async with self.db.pool.acquire() as conn:
            rows = await series_rows(conn, wanted)
        cursor = self._cursor
        for sid, device_id, metric, labels, unit, kind in rows:
            self._know(sid, device_id, metric, labels, unit, kind)
            if sid <= cursor:
                self._loaded[sid] = 1
        self.series += len(rows)

    def lost(self) -> None:
        """Notifications were dropped: fill again."""
        self.refill(lost=True)

    def forget_devices(self, keep: set[int]) -> None:
        """Drop the series of devices not in ``keep`` (deleted)."""
        for device_id in [d for d in self._devices if d not in keep]:
            for sid in self._devices.pop(device_id):
                if self._times[sid] > 0:
                    self.values -= 1
                self._times[sid] = 0
                self._kinds[sid] = _NONE
                self._loaded[sid] = 0
                self._metas[sid] = 0
                self._big.pop(sid, None)
        self.series = sum(len(a) for a in self._devices.values())

    # -- reads -----------------------------------------------------------------------

    def device_series(self, device_id: int) -> array[int] | None:
        """The device's series ids, ascending, if every one is known here."""
        if not self.complete:
            return None
        return self._devices.get(device_id, _EMPTY)

    def meta(self, sid: int) -> SeriesMeta | None:
        return self._meta_table[self._metas[sid]] if sid < len(self._metas) else None

    def lookup(
        self, sid: int, since_us: int, now_us: int
    ) -> tuple[int, int | float] | Literal[False] | None:
        """The newest (µs, value) of ``sid`` in [since, now]; None if it has none there;
        False if that is not known here (ask the database)."""
        if sid >= len(self._loaded) or not self._loaded[sid]:
            return False
        us = self._times[sid]
        if us > 0:
            if us > now_us:
                return False  # stamped in the future: the database has the newest up to now
            if us < since_us:
                return None
            kind = self._kinds[sid]
            if kind == _FLOAT:
                return us, self._values[sid]
            if kind == _INT:
                return us, int(self._values[sid])
            return us, self._big[sid]
        # Nothing at or after -us (the fill's floor): known only for windows within it.
        return None if us < 0 and since_us >= -us else False

    def values_of(
        self, ids: Sequence[int], since: datetime, now: datetime
    ) -> tuple[list[tuple[int, datetime, int | float]], list[int]]:
        """(series id, time, value) of those of ``ids`` with a value in [since, now], and
        the ids this cannot answer for."""
        since_us, now_us = _us(since), _us(now)
        found: list[tuple[int, datetime, int | float]] = []
        missing: list[int] = []
        # Inlined lookup (this runs for every series of every /metrics/last); a device's
        # series share a few poll times, each made a datetime once.
        loaded, times, kinds, values = self._loaded, self._times, self._kinds, self._values
        size = len(loaded)
        stamps: dict[int, datetime] = {}
        for sid in ids:
            if sid >= size or not loaded[sid]:
                missing.append(sid)
                continue
            us = times[sid]
            if us <= 0 or us > now_us:
                if us > now_us or us == 0 or since_us < -us:
                    missing.append(sid)
                continue
            if us < since_us:
                continue
            stamp = stamps.get(us)
            if stamp is None:
                stamp = stamps[us] = _time(us)
            kind = kinds[sid]
            if kind == _FLOAT:
                found.append((sid, stamp, values[sid]))
            elif kind == _INT:
                found.append((sid, stamp, int(values[sid])))
            else:
                found.append((sid, stamp, self._big[sid]))
        return found, missing

    def interfaces(
        self, device_id: int, count: int, since: datetime, now: datetime
    ) -> list[Interface] | None:
        """Device detail's interfaces, as ``interfaces_from_rows`` makes them from the
        database; None if not all of it is known here (the device has ``count`` series
        in the database)."""
        ids = self.device_series(device_id)
        if ids is None or len(ids) != count:
            return None
        since_us, now_us = _us(since), _us(now)
        by_name: dict[str, dict[str, Any]] = {}
        newest: dict[str, int] = {}
        table, metas = self._meta_table, self._metas
        loaded, times, kinds, values = self._loaded, self._times, self._kinds, self._values
        for sid in ids:
            meta = table[metas[sid]]
            if meta is None or meta.read is None or meta.interface is None:
                continue
            # As lookup(), inlined: this runs for every interface series of a detail.
            us = times[sid]
            if not loaded[sid] or us > now_us or us == 0 or (us < 0 and since_us < -us):
                return None
            if us < since_us:
                continue
            value = values[sid] if kinds[sid] != _BIG else float(self._big[sid])
            name = meta.interface
            fields = by_name.get(name)
            if fields is None:
                fields = by_name[name] = {"name": name}
                newest[name] = us
            elif us > newest[name]:
                newest[name] = us
            field, convert = meta.read
            fields[field] = convert(value)
        stamps: dict[int, datetime] = {}
        out = []
        for name in sorted(by_name):
            us = newest[name]
            stamp = stamps.get(us)
            if stamp is None:
                stamp = stamps[us] = _time(us)
            out.append(make_interface({**by_name[name], "updated_at": stamp}))
        return out

    def last_page(
        self,
        devices: Sequence[tuple[int, str, int]],
        metrics: set[str] | None,
        labels: dict[str, str],
        after_id: int,
        limit: int,
        since: datetime,
        now: datetime,
    ) -> tuple[list[SeriesValue], int | None] | None:
        """A page of ``/metrics/last`` for ``devices`` (id, name, series count in the
        database), all from memory: the first ``limit`` series after ``after_id`` by id
        that the selector picks (as ``select_series``), their newest values in [since,
        now] (as ``queries.last_values``), and the id to go on from if there are more.
        None if any of it is not known here."""
        if not self.complete:
            return None
        table, metas = self._meta_table, self._metas
        picked: list[int] = []
        names: dict[int, str] = {}
        several = len(devices) > 1
        for device_id, name, count in devices:
            ids = self._devices.get(device_id, _EMPTY)
            if len(ids) != count:
                return None  # a series created a moment ago, not learned yet
            start = bisect_right(ids, after_id) if after_id else 0
            for i in range(start, len(ids)):
                sid = ids[i]
                meta = table[metas[sid]]
                if meta is None:
                    return None
                if metrics is not None and meta.metric not in metrics:
                    continue
                if labels and any(meta.labels.get(k) != v for k, v in labels.items()):
                    continue
                picked.append(sid)
                if several:
                    names[sid] = name
                elif len(picked) > limit:
                    break
        if several:
            picked.sort()
        more = len(picked) > limit
        del picked[limit:]
        since_us, now_us = _us(since), _us(now)
        loaded, times, kinds, values = self._loaded, self._times, self._kinds, self._values
        stamps: dict[int, datetime] = {}
        items: list[SeriesValue] = []
        name = devices[0][1] if devices else ""
        for sid in picked:
            us = times[sid]
            if not loaded[sid] or us > now_us or us == 0 or (us < 0 and since_us < -us):
                return None
            if us < since_us:
                continue
            stamp = stamps.get(us)
            if stamp is None:
                stamp = stamps[us] = _time(us)
            kind = kinds[sid]
            value: int | float = (
                values[sid]
                if kind == _FLOAT
                else int(values[sid])
                if kind == _INT
                else self._big[sid]
            )
            meta = table[metas[sid]]
            assert meta is not None
            items.append(
                SeriesValue(
                    SeriesOut(
                        sid,
                        names[sid] if several else name,
                        meta.metric,
                        meta.labels,
                        meta.unit,
                        meta.kind,
                    ),
                    stamp,
                    value,
                )
            )
        return items, (picked[-1] if more and picked else None)

    def after(self, ids: array[int], after_id: int) -> Sequence[int]:
        """``ids`` (ascending) above ``after_id``."""
        return ids[bisect_right(ids, after_id) :] if after_id else ids


_EMPTY: array[int] = array("q")


async def _keep(_conn: asyncpg.Connection) -> None:
    """No reset between uses: the read pool runs single SELECTs outside transactions,
    and asyncpg's default reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) would be
    one more round trip on every request."""


async def read_pool(db: Database) -> asyncpg.Pool:
    """A small pool for the hot reads of device detail and /metrics/last: which devices
    exist, their sites and health. Nothing else uses it, so nothing leaves state behind
    on its connections for a reset to clear."""
    kwargs = db.connect_kwargs()
    pool: asyncpg.Pool = await asyncpg.create_pool(
        **kwargs, min_size=READ_POOL_MIN, max_size=READ_POOL_MAX, reset=_keep
    )
    return pool


def _read(text: str) -> int | float:
    """A numeric as text: an int when written without a fraction (as queries._number)."""
    if "." in text or "N" in text or "n" in text:
        return float(text)
    return int(text)
