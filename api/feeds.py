"""Live feeds: what the writers commit, fanned out to this process's WebSocket clients.

One ``FeedHub`` per process holds one dedicated connection that LISTENs on
``netmon_samples``, ``netmon_events``, ``netmon_alerts`` and ``netmon_control`` (see
``store/notify.py``), a
cache of series metadata (device, site, metric, labels, loaded in bulk on a miss;
``feed_meta.py``), and the clients (``feed_clients.py``). Each client has a bounded queue
(``api.ws_queue`` messages): a client that does not keep up loses messages, never slows
the others down, and is told so.

The protocol of ``/ws/metrics``, ``/ws/events`` and ``/ws/alerts`` is described in
``feed_clients.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from netmon.alerts.model import AlertChange
from netmon.api.feed_clients import (
    AlertFilter,
    AlertSubscription,
    EventFilter,
    FeedClient,
    FeedKind,
    SampleFilter,
    TooManySubscriptionsError,
)
from netmon.api.feed_meta import SeriesMeta, SeriesMetaCache
from netmon.config import Settings
from netmon.logs import get_logger
from netmon.records import DeviceEvent
from netmon.store.database import Database, is_connection_error
from netmon.store.listener import Listener
from netmon.store.notify import (
    ALERTS_CHANNEL,
    CONTROL_CHANNEL,
    EVENTS_CHANNEL,
    SAMPLES_CHANNEL,
    WireSample,
    decode_control,
    decode_events,
    decode_samples_wire,
)

# The clients' names are re-exported: they are what ``FeedHub.connect`` hands out.
__all__ = [
    "AlertFilter",
    "AlertSubscription",
    "EventFilter",
    "FeedClient",
    "FeedHub",
    "FeedKind",
    "SampleFilter",
    "TooManyClientsError",
    "TooManySubscriptionsError",
]

log = get_logger(__name__)

# Samples in one message: large enough to keep per-message overhead small, small enough to
# stay far under a WebSocket client's default limit of 1 MiB per message.
MESSAGE_SAMPLES = 500
MESSAGE_EVENTS = 100
# Notifications waiting for the fan-out: beyond this, the fan-out cannot keep up with the
# writers and the oldest are dropped (every client is told by a gap).
INBOX_MAX = 20_000
# First and longest pause between reconnects of the LISTEN connection, and how often an
# idle one is checked (a half-open TCP connection tells nobody it died).
RETRY_MIN = 0.2
RETRY_MAX = 30.0
KEEPALIVE = 10.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.encode
_alert_change = msgspec.json.Decoder(AlertChange)


class TooManyClientsError(Exception):
    """This process serves api.ws_max_clients clients already."""


# -- the hub -----------------------------------------------------------------------------


@dataclass
class _Inbox:
    items: deque[tuple[str, str]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False


class FeedHub:
    """The live feeds of one process. Counters for /metrics are plain attributes."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.queue_limit = settings.api.ws_queue
        self.max_clients = settings.api.ws_max_clients
        self.max_subscriptions = settings.api.ws_max_subscriptions
        self._clients: dict[int, FeedClient] = {}
        self._client_ids = itertools.count(1)
        self.meta = SeriesMetaCache(db)
        self._inbox = _Inbox()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._listener = Listener(
            db,
            dict.fromkeys(
                (SAMPLES_CHANNEL, EVENTS_CHANNEL, ALERTS_CHANNEL, CONTROL_CHANNEL),
                self._on_notification,
            ),
            name="feed listener",
            retry_min=RETRY_MIN,
            retry_max=RETRY_MAX,
            keepalive=KEEPALIVE,
            keepalive_timeout=settings.database.connect_timeout.total_seconds(),
            on_connect=self._on_connect,
        )
        # Counters.
        self.delivered = 0  # messages queued to clients (one per client reached)
        self.gaps = 0  # gap messages queued
        self.dropped = 0  # messages dropped at full client queues
        self.notifications = 0  # notifications received
        self.reconnects = 0  # LISTEN connections re-established after a loss
        self.errors = 0  # fan-out rounds that failed (logged)

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up (health)."""
        return self._listener.listening

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._tasks = [
            asyncio.create_task(
                self._listener.run(lambda: self._stopping), name="netmon-feed-listen"
            ),
            asyncio.create_task(self._fanout_loop(), name="netmon-feed-fanout"),
        ]

    async def stop(self) -> None:
        """Stop listening; every client's handler is told to close."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for client in list(self._clients.values()):
            client.queue.put_nowait(None)

    # -- clients ---------------------------------------------------------------------

    def connect(self, kind: FeedKind, sites: frozenset[str] | None) -> FeedClient:
        if len(self._clients) >= self.max_clients:
            raise TooManyClientsError(f"this server has {self.max_clients} feed clients already")
        client = FeedClient(self, next(self._client_ids), kind, sites)
        self._clients[client.id] = client
        return client

    def disconnect(self, client: FeedClient) -> None:
        self._clients.pop(client.id, None)

    def forget_series(self) -> None:
        """Drop series and device metadata (a device was deleted, renamed or moved)."""
        self.meta.forget()

    def _feed_lost(
        self, since: datetime, kinds: Iterable[FeedKind] = ("metrics", "events", "alerts")
    ) -> None:
        """Every client (of ``kinds``) missed what was written since ``since``. Idle
        clients are told now; one with a full queue before its next message."""
        wanted = set(kinds)
        for client in self._clients.values():
            if client.kind in wanted:
                client.lose_feed(since)

    # -- LISTEN ----------------------------------------------------------------------

    def _on_notification(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        inbox = self._inbox
        if len(inbox.items) >= INBOX_MAX:
            inbox.items.popleft()
            inbox.overflowed = True
        inbox.items.append((channel, payload))
        inbox.wake.set()
        self.notifications += 1

    def _on_connect(self, lost_since: datetime | None, _reconnected: bool) -> None:
        if lost_since is not None:
            # What was published while we were away is lost; metadata may have changed
            # unannounced (a series_forget missed) too.
            self.reconnects += 1
            self.forget_series()
            self._feed_lost(lost_since)
            log.info("feed listener reconnected", since=lost_since.isoformat())

    # -- fan-out ---------------------------------------------------------------------

    async def _fanout_loop(self) -> None:
        inbox = self._inbox
        while True:
            await inbox.wake.wait()
            inbox.wake.clear()
            items = list(inbox.items)
            inbox.items.clear()
            if inbox.overflowed:
                inbox.overflowed = False
                log.warning("feed fan-out fell behind; oldest notifications dropped")
                self._feed_lost(datetime.now(UTC))
            try:
                await self._fan_out(items)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("feed fan-out failed; its notifications are lost")

    async def _fan_out(self, items: Sequence[tuple[str, str]]) -> None:
        samples: list[WireSample] = []
        events: list[DeviceEvent] = []
        alerts: list[AlertChange] = []
        # A process nobody watches does not even decode what it hears.
        kinds = {c.kind for c in self._clients.values() if c.subscriptions}
        for channel, payload in items:
            try:
                if channel == SAMPLES_CHANNEL and "metrics" in kinds:
                    samples += decode_samples_wire(payload)
                elif channel == EVENTS_CHANNEL and "events" in kinds:
                    events += decode_events(payload)
                elif channel == ALERTS_CHANNEL and "alerts" in kinds:
                    alerts.append(_alert_change.decode(payload))
                elif channel == CONTROL_CHANNEL:
                    self._on_control(payload)
            except msgspec.DecodeError as exc:
                log.warning("unreadable notification ignored", channel=channel, error=str(exc))
        if self.meta.stale():
            await self.meta.refresh()
        if samples:
            await self._fan_out_samples(samples)
        if events:
            await self._fan_out_events(events)
        if alerts:
            self._fan_out_alerts(alerts)

    def _on_control(self, payload: str) -> None:
        op = decode_control(payload).op
        if op in ("series_forget", "device_changed"):
            self.forget_series()

    async def _fan_out_samples(self, samples: list[WireSample]) -> None:
        clients = [c for c in self._clients.values() if c.kind == "metrics" and c.subscriptions]
        if not clients:
            return
        meta = self.meta.series
        missing = {sid for sid, _, _ in samples if sid not in meta}
        if missing and not await self._load(lambda: self.meta.load_series(missing), "metrics"):
            return
        sids = [sid for sid, _, _ in samples]
        distinct = set(sids)
        # Clients asking for the same series get the very same messages, built once.
        built: dict[frozenset[int], list[str]] = {}
        fragments: list[bytes] = []
        for client in clients:
            # One call per series and client; per sample only set lookups.
            wanted = frozenset(sid for sid in distinct if client.wants_series(sid, meta))
            if not wanted:
                continue
            messages = built.get(wanted)
            if messages is None:
                if not fragments:
                    fragments = self._fragments(samples, meta)
                chosen = [fragments[i] for i, sid in enumerate(sids) if sid in wanted]
                messages = built[wanted] = [
                    '{"type":"samples","samples":['
                    + b",".join(chosen[start : start + MESSAGE_SAMPLES]).decode()
                    + "]}"
                    for start in range(0, len(chosen), MESSAGE_SAMPLES)
                ]
            for message in messages:
                client.offer(message)

    @staticmethod
    def _fragments(samples: list[WireSample], meta: dict[int, SeriesMeta | None]) -> list[bytes]:
        """Each sample as the JSON object clients get (empty for series without metadata,
        which no client wants)."""
        times: dict[int, bytes] = {}
        out: list[bytes] = []
        for sid, us, value in samples:
            m = meta.get(sid)
            if m is None:
                out.append(b"")
                continue
            head = times.get(us)
            if head is None:
                stamp = _encode(_EPOCH + timedelta(microseconds=us))
                head = times[us] = b'"time":' + stamp + b',"value":'
            out.append(m.prefix + head + _encode(value) + b"}")
        return out

    async def _fan_out_events(self, events: list[DeviceEvent]) -> None:
        clients = [c for c in self._clients.values() if c.kind == "events" and c.subscriptions]
        if not clients:
            return
        missing = {e.device for e in events if e.device not in self.meta.sites}
        if missing and not await self._load(lambda: self.meta.load_sites(missing), "events"):
            return
        sites = self.meta.sites
        encoded: dict[int, str] = {}
        for client in clients:
            chosen = [i for i, e in enumerate(events) if client.wants_event(e, sites.get(e.device))]
            for start in range(0, len(chosen), MESSAGE_EVENTS):
                part = []
                for i in chosen[start : start + MESSAGE_EVENTS]:
                    if i not in encoded:
                        encoded[i] = _encode(events[i]).decode()
                    part.append(encoded[i])
                client.offer('{"type":"events","events":[' + ",".join(part) + "]}")

    def _fan_out_alerts(self, changes: list[AlertChange]) -> None:
        """One message per change, in the order they were committed; an alert carries
        its device's site, so no metadata is needed."""
        clients = [c for c in self._clients.values() if c.kind == "alerts" and c.subscriptions]
        for change in changes:
            message: str | None = None
            for client in clients:
                if client.wants_alert(change.alert):
                    if message is None:
                        message = _encode(
                            {
                                "type": "alert",
                                "event": change.event,
                                "time": change.time,
                                "alert": change.alert,
                            }
                        ).decode()
                    client.offer(message)

    async def _load(self, load: Callable[[], Awaitable[None]], kind: FeedKind) -> bool:
        """Run a metadata query; if it fails, the batch cannot be delivered and the
        clients of ``kind`` are owed a gap."""
        try:
            await load()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_connection_error(exc):
                log.warning("feed metadata unavailable", error=f"{type(exc).__name__}: {exc}")
            else:
                log.exception("feed metadata query failed")
            self._feed_lost(datetime.now(UTC), (kind,))
            return False
        return True
