"""Live feeds: what the writers commit, fanned out to this process's WebSocket clients.

One ``FeedHub`` per process holds one dedicated connection that LISTENs on
``netmon_samples``, ``netmon_events``, ``netmon_alerts`` and ``netmon_control`` (see
``store/notify.py``), a
cache of series metadata (device, site, metric, labels, loaded in bulk on a miss;
``feed_meta.py``), the clients and their groups (``feed_clients.py``) and the tokens they
hold (``feed_tokens.py``). Each client has a bounded queue (``api.ws_queue`` messages): a
client that does not keep up loses messages, never slows the others down, and is told so.

Matching is per group of clients with the same sites and subscriptions, not per client,
and a series' groups are remembered (``_audience``) until a group comes or goes or the
metadata changes: a batch costs its distinct series plus the groups that want them. Every
message is encoded once, for all the groups that want exactly those samples, and queued
by reference.

The protocol of ``/ws/metrics``, ``/ws/events`` and ``/ws/alerts`` is described in
``feed_clients.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from netmon.alerts.model import AlertChange
from netmon.api.auth import Principal
from netmon.api.feed_clients import (
    SERVICE_RESTART,
    AlertFilter,
    AlertSubscription,
    EventFilter,
    FeedClient,
    FeedKind,
    Group,
    SampleFilter,
    TooManySubscriptionsError,
    group_key,
)
from netmon.api.feed_meta import SeriesMeta, SeriesMetaCache
from netmon.api.feed_tokens import TokenWatch, TooManyClientsError
from netmon.api.last_values import LastValues
from netmon.api.tokens import token_states
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
# Longest stretch the alert fan-out runs its clients' matchers before it lets the event
# loop serve others.
_SLICE = 0.005
# First and longest pause between reconnects of the LISTEN connection, and how often an
# idle one is checked (a half-open TCP connection tells nobody it died).
RETRY_MIN = 0.2
RETRY_MAX = 30.0
KEEPALIVE = 10.0
# Series whose groups are remembered; past this the memory starts over (a process that
# sees more series than this in one metadata generation recomputes some).
AUDIENCE_MAX = 1_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.encode
_alert_change = msgspec.json.Decoder(AlertChange)
_KINDS: tuple[FeedKind, ...] = ("metrics", "events", "alerts")


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
        api = settings.api
        self.queue_limit = api.ws_queue
        self.max_clients = api.ws_max_clients
        self.max_subscriptions = api.ws_max_subscriptions
        self.tokens = TokenWatch(
            lambda ids: token_states(db, ids),
            interval=api.token_cache.total_seconds(),
            per_token=api.ws_max_clients_per_token,
        )
        self._clients: dict[int, FeedClient] = {}
        self._client_ids = itertools.count(1)
        self._groups: dict[Hashable, Group] = {}
        self._kind_groups: dict[FeedKind, set[Group]] = {kind: set() for kind in _KINDS}
        # Metrics groups by the devices they name, and those that take any device: the
        # only groups a series of a device can interest.
        self._by_device: dict[str, set[Group]] = {}
        self._any_device: set[Group] = set()
        # series id -> the metrics groups that want it, for one metadata generation and
        # one set of groups.
        self._audience: dict[int, tuple[Group, ...]] = {}
        self._audience_generation = -1
        self.meta = SeriesMetaCache(db)
        # The newest value of every series, fed by the same notifications
        # (last_values.py): device detail and /metrics/last read it.
        self.last = LastValues(db, lambda: self._listener.listening)
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
        self.refused = 0  # connections refused: too many clients, in all or of a token
        # Called on every token revocation any process announces: the app points it at
        # its HTTP token cache, so that requests, too, stop at once rather than within
        # api.token_cache.
        self.on_token_revoked: Callable[[], None] | None = None

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up (health)."""
        return self._listener.listening

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def groups(self) -> int:
        return len(self._groups)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        try:
            await self.last.start()
        except Exception as exc:
            # Its reads go through the main pool instead.
            log.warning("last values: no read pool", error=f"{type(exc).__name__}: {exc}")
        self._tasks = [
            asyncio.create_task(
                self._listener.run(lambda: self._stopping), name="netmon-feed-listen"
            ),
            asyncio.create_task(self._fanout_loop(), name="netmon-feed-fanout"),
        ]
        self.tokens.start()

    async def stop(self) -> None:
        """Stop listening; every client still connected is closed with 1012 (uvicorn
        has closed those of its WebSockets by the time the app's lifespan ends)."""
        self._stopping = True
        await self.tokens.stop()
        await self.last.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for client in list(self._clients.values()):
            client.close(SERVICE_RESTART, "server shutting down")

    # -- clients ---------------------------------------------------------------------

    def connect(
        self, kind: FeedKind, principal: Principal, expires_at: float | None = None
    ) -> FeedClient:
        """A new client of ``kind`` for ``principal``'s token, which expires at
        ``expires_at`` (epoch seconds) as far as the caller knows."""
        if len(self._clients) >= self.max_clients:
            self.refused += 1
            raise TooManyClientsError(
                f"this server has {self.max_clients} feed clients already (api.ws_max_clients)"
            )
        token = principal.token_id if principal.token_id is not None else principal.name
        client = FeedClient(self, next(self._client_ids), kind, principal.sites, token)
        try:
            self.tokens.admit(client, expires_at)
        except TooManyClientsError:
            self.refused += 1
            raise
        self._clients[client.id] = client
        return client

    def disconnect(self, client: FeedClient) -> None:
        if self._clients.pop(client.id, None) is None:
            return
        self.tokens.release(client)
        client.subscriptions.clear()
        self.regroup(client)

    def regroup(self, client: FeedClient) -> None:
        """Put ``client`` in the group of its sites and subscriptions (none without any)."""
        old = client.group
        new: Group | None = None
        if client.subscriptions:
            filters = tuple(client.subscriptions.values())
            key = group_key(client.kind, client.sites, filters)
            if old is not None and old.key == key:
                return
            new = self._groups.get(key)
            if new is None:
                new = self._add_group(Group(key, client.kind, client.sites, filters))
        if old is not None:
            old.clients.discard(client)
            if not old.clients:
                self._remove_group(old)
        if new is not None:
            new.clients.add(client)
        client.group = new

    def _add_group(self, group: Group) -> Group:
        self._groups[group.key] = group
        self._kind_groups[group.kind].add(group)
        if group.kind == "metrics":
            if group.devices is None:
                self._any_device.add(group)
            else:
                for device in group.devices:
                    self._by_device.setdefault(device, set()).add(group)
            self._audience.clear()
        return group

    def _remove_group(self, group: Group) -> None:
        del self._groups[group.key]
        self._kind_groups[group.kind].discard(group)
        if group.kind == "metrics":
            if group.devices is None:
                self._any_device.discard(group)
            else:
                for device in group.devices:
                    named = self._by_device.get(device)
                    if named is not None:
                        named.discard(group)
                        if not named:
                            del self._by_device[device]
            self._audience.clear()

    def forget_series(self) -> None:
        """Drop series and device metadata (a device was deleted, renamed or moved)."""
        self.meta.forget()

    async def forget_deleted_devices(self) -> None:
        """Drop the last values of devices that are gone (memory only: readers ask the
        database which devices exist)."""
        async with self.db.pool.acquire() as conn:
            ids = {row["id"] for row in await conn.fetch("SELECT id FROM devices")}
        self.last.forget_devices(ids)

    def _feed_lost(self, since: datetime, kinds: Iterable[FeedKind] = _KINDS) -> None:
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

    def _on_connect(self, lost_since: datetime | None, reconnected: bool) -> None:
        # LISTEN is up: what is committed from now on is notified, what was committed
        # before is read by the fill (again, after a gap: what was published meanwhile
        # is lost to the values held).
        self.last.refill(lost=reconnected or lost_since is not None)
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
                self.last.lost()
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
        # A process nobody watches decodes only samples (for its last values).
        groups = self._kind_groups
        forget = False
        for channel, payload in items:
            try:
                if channel == SAMPLES_CHANNEL:
                    samples += decode_samples_wire(payload)
                elif channel == EVENTS_CHANNEL and groups["events"]:
                    events += decode_events(payload)
                elif channel == ALERTS_CHANNEL and groups["alerts"]:
                    alerts.append(_alert_change.decode(payload))
                elif channel == CONTROL_CHANNEL:
                    forget = self._on_control(payload) or forget
            except msgspec.DecodeError as exc:
                log.warning("unreadable notification ignored", channel=channel, error=str(exc))
                if channel == SAMPLES_CHANNEL:
                    self.last.lost()  # its samples are not known: fill again
        if samples:
            await self._apply_last(samples)
        if forget:
            await self._forget_last()
        if self.meta.stale():
            await self.meta.refresh()
        if samples:
            await self._fan_out_samples(samples)
        if events:
            await self._fan_out_events(events)
        if alerts:
            await self._fan_out_alerts(alerts)

    async def _apply_last(self, samples: list[WireSample]) -> None:
        unknown = self.last.apply(samples)
        if unknown:
            try:
                await self.last.learn(unknown)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("last values: new series unreadable; filling again", error=str(exc))
                self.last.lost()

    async def _forget_last(self) -> None:
        try:
            await self.forget_deleted_devices()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("last values: devices unreadable", error=str(exc))

    def _on_control(self, payload: str) -> bool:
        """Act on a control message; True for a deletion (the last values drop the
        devices that are gone)."""
        control = decode_control(payload)
        op = control.op
        if op in ("series_forget", "device_changed"):
            self.forget_series()
            return op == "series_forget"
        if op == "samples_replayed":
            # A writer stored spooled samples without publishing them; some may be the
            # newest of their series, so what memory holds is no longer known newest.
            self.last.refill(lost=True)
            return False
        if op == "token_revoked":
            token_id = control.args.get("id")
            if isinstance(token_id, int):
                self.tokens.revoked(token_id)
            if self.on_token_revoked is not None:
                self.on_token_revoked()
        return False

    async def _fan_out_samples(self, samples: list[WireSample]) -> None:
        if not self._kind_groups["metrics"]:
            return
        meta = self.meta.series
        missing = {sid for sid, _, _ in samples if sid not in meta}
        if missing and not await self._load(lambda: self.meta.load_series(missing), "metrics"):
            return
        if self._audience_generation != self.meta.generation or (
            len(self._audience) > AUDIENCE_MAX
        ):
            self._audience.clear()
            self._audience_generation = self.meta.generation
        audience = self._audience
        # Where each series' samples are in the batch, in commit order.
        positions: dict[int, list[int]] = {}
        for i, (sid, _, _) in enumerate(samples):
            at = positions.get(sid)
            if at is None:
                positions[sid] = [i]
            else:
                at.append(i)
        wanted: dict[Group, list[int]] = {}
        for sid in positions:
            groups = audience.get(sid)
            if groups is None:
                groups = audience[sid] = self._audience_of(meta.get(sid))
            for group in groups:
                sids = wanted.get(group)
                if sids is None:
                    wanted[group] = [sid]
                else:
                    sids.append(sid)
        if not wanted:
            return
        fragments = self._fragments(samples, meta)
        # Groups asking for the same series get the very same messages, built once.
        built: dict[tuple[int, ...], list[str]] = {}
        for group, sids in wanted.items():
            key = tuple(sids)
            messages = built.get(key)
            if messages is None:
                at = (
                    positions[sids[0]]
                    if len(sids) == 1
                    else sorted(i for sid in sids for i in positions[sid])
                )
                chosen = [fragments[i] for i in at]
                messages = built[key] = [
                    '{"type":"samples","samples":['
                    + b",".join(chosen[start : start + MESSAGE_SAMPLES]).decode()
                    + "]}"
                    for start in range(0, len(chosen), MESSAGE_SAMPLES)
                ]
            for client in group.clients:
                for message in messages:
                    client.offer(message)

    def _audience_of(self, meta: SeriesMeta | None) -> tuple[Group, ...]:
        if meta is None:
            return ()
        found = [g for g in self._any_device if g.wants_series(meta)]
        found += [g for g in self._by_device.get(meta.device, ()) if g.wants_series(meta)]
        return tuple(found) if found else ()

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
        groups = self._kind_groups["events"]
        if not groups:
            return
        missing = {e.device for e in events if e.device not in self.meta.sites}
        if missing and not await self._load(lambda: self.meta.load_sites(missing), "events"):
            return
        sites = self.meta.sites
        encoded: dict[int, str] = {}
        built: dict[tuple[int, ...], list[str]] = {}
        for group in list(groups):
            chosen = tuple(
                i for i, e in enumerate(events) if group.wants_event(e, sites.get(e.device))
            )
            if not chosen:
                continue
            messages = built.get(chosen)
            if messages is None:
                messages = built[chosen] = []
                for start in range(0, len(chosen), MESSAGE_EVENTS):
                    part = []
                    for i in chosen[start : start + MESSAGE_EVENTS]:
                        if i not in encoded:
                            encoded[i] = _encode(events[i]).decode()
                        part.append(encoded[i])
                    messages.append('{"type":"events","events":[' + ",".join(part) + "]}")
            for client in group.clients:
                for message in messages:
                    client.offer(message)

    async def _fan_out_alerts(self, changes: list[AlertChange]) -> None:
        """One message per change, in the order they were committed; an alert carries
        its device's site, so no metadata is needed. Clients' matchers are regular
        expressions: each group costs at most one connection's budget of RE2 program
        (milliseconds at worst), and the loop is given back between groups once a round
        has run for ``_SLICE`` seconds, so no set of subscriptions stalls the API."""
        groups = list(self._kind_groups["alerts"])
        started = time.perf_counter()
        for change in changes:
            message: str | None = None
            for group in groups:
                if time.perf_counter() - started > _SLICE:
                    await asyncio.sleep(0)
                    started = time.perf_counter()
                if group.wants_alert(change.alert):
                    if message is None:
                        message = _encode(
                            {
                                "type": "alert",
                                "event": change.event,
                                "time": change.time,
                                "alert": change.alert,
                            }
                        ).decode()
                    for client in group.clients:
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
