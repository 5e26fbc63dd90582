"""The clients of the live feeds: what one WebSocket subscribed to, its bounded queue, the
gap it is owed, and the close it is owed. The hub (``feeds.py``) offers each client its
messages; the WebSocket handlers (``controllers/live.py``) send what the queue holds and
speak the protocol below.

Protocol (``/ws/metrics``, ``/ws/events`` and ``/ws/alerts``; authenticate with
``Authorization: Bearer <token>`` or ``?access_token=<token>``, viewer role)::

    client: {"subscribe": {"devices": ["sw1"], "metrics": ["ifHCInOctets"],
                           "labels": {"ifName": "eth0"}}}
    server: {"type": "subscribed", "id": 1}
    server: {"type": "samples", "samples": [{"device": "sw1", "metric": "ifHCInOctets",
             "labels": {"ifName": "eth0"}, "time": "2026-11-27T13:00:00Z",
             "value": 12345}, ...]}
    client: {"unsubscribe": 1}
    server: {"type": "unsubscribed", "id": 1}

- Every filter field is optional; an empty or missing field matches everything within the
  token's sites. Within a subscription the fields combine with AND, the names of one field
  with OR; ``labels`` must all be equal. A sample matching several subscriptions arrives
  once. Nothing arrives before the first subscription.
- ``/ws/events`` filters on ``devices``, ``kinds`` and ``severities`` (info, warning,
  critical) and sends ``{"type": "events", "events": [{"uid", "device", "time", "kind",
  "severity", "message", "attributes"}, ...]}``.
- ``/ws/alerts`` filters on ``matchers`` (Alertmanager syntax, all must match, as for
  silences: ``["site=\\"lon1\\"", "rule=~\\"interface-.*\\""]``) and ``min_severity``
  (critical, major, minor, warning, info) and sends one message per change of an alert:
  ``{"type": "alert", "event": "firing", "time": T, "alert": {AlertView}}``.
- Values are JSON numbers, except integers beyond ±(2**53 - 1) and non-finite floats,
  which are strings (``"18446744073709551615"``, ``"nan"``, ``"inf"``, ``"-inf"``), so
  that a JavaScript client loses no counter digit. Times are RFC 3339 UTC.
- ``{"type": "gap", "reason": "slow", "missed": N, "since": T}`` comes before the next
  message after this client missed N messages (its queue was full) since time T.
  ``"reason": "feed"``: this process lost its database listener at T (or could not look
  up metadata); what was written meanwhile was not delivered (``missed`` counts only the
  messages dropped on top of that). Either way, ask ``/api/v1/metrics/range`` (or
  ``/api/v1/events``) from T to fill in; alert clients read ``/api/v1/alerts`` again.
- A message the server cannot take gets ``{"type": "error", "detail": "..."}`` and the
  connection stays open. Too many subscriptions (``api.ws_max_subscriptions``) is such
  an error. Too many clients in this process (``api.ws_max_clients``) or of this token
  (``api.ws_max_clients_per_token``): an error, then close code 1013 (try again later).
- A feed lives as long as its token: revoked or expired, the connection is closed with
  code 1008 (policy violation) and the reason ``token revoked`` or ``token expired``.
- A token limited to sites never receives samples, events or alerts of devices elsewhere
  (nor of devices without a site).

Delivery is best effort and at most once; samples are batched, up to 500 to a message.
Spool replays after a database outage are not published (see ``store/writer.py``).

Memory: a client is this object, its subscriptions and a queue of references to messages
the hub encoded once for every client that wants them. Clients with the same sites and
subscriptions share one :class:`Group`, and the hub matches series, events and alerts
against groups, never client by client.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import msgspec

from netmon.alerts.matchers import MAX_PROGRAM, Matcher, matches_all, parse_matchers
from netmon.alerts.model import SEVERITIES, AlertView, severity_rank
from netmon.alerts.model import Severity as AlertSeverity
from netmon.api.feed_meta import SeriesMeta
from netmon.records import DeviceEvent

if TYPE_CHECKING:
    from netmon.api.feeds import FeedHub

__all__ = [
    "AlertFilter",
    "AlertSubscription",
    "EventFilter",
    "FeedClient",
    "FeedKind",
    "Filter",
    "Group",
    "SampleFilter",
    "TooManySubscriptionsError",
    "group_key",
]

FeedKind = Literal["metrics", "events", "alerts"]
Severity = Literal["info", "warning", "critical"]

# WebSocket close codes the feeds send (RFC 6455 section 7.4.1, and IANA's registry).
POLICY_VIOLATION = 1008  # the token was revoked or expired
INTERNAL_ERROR = 1011  # a fault of the server's (logged)
SERVICE_RESTART = 1012  # the server is stopping
TRY_AGAIN_LATER = 1013  # too many clients, in this process or of this token

_encode = msgspec.json.encode


class TooManySubscriptionsError(Exception):
    """The client holds api.ws_max_subscriptions subscriptions already."""


# -- subscriptions -----------------------------------------------------------------------


class SampleFilter(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What ``/ws/metrics`` clients subscribe to."""

    devices: list[str] = []
    metrics: list[str] = []
    labels: dict[str, str] = {}


class EventFilter(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What ``/ws/events`` clients subscribe to."""

    devices: list[str] = []
    kinds: list[str] = []
    severities: list[Severity] = []


class AlertSubscription(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What ``/ws/alerts`` clients subscribe to, as they send it."""

    matchers: list[str] = []
    min_severity: AlertSeverity = SEVERITIES[-1]


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """An :class:`AlertSubscription` read: matchers parsed, severity as a rank."""

    matchers: tuple[Matcher, ...]
    max_rank: int

    @classmethod
    def of(cls, sub: AlertSubscription) -> AlertFilter:
        """Raises ``MatcherError`` (a ValueError) for a matcher that is not one."""
        return cls(tuple(parse_matchers(sub.matchers)), severity_rank(sub.min_severity))

    def matches(self, alert: AlertView) -> bool:
        return severity_rank(alert.severity) <= self.max_rank and matches_all(
            self.matchers, alert.match_labels(), alert.tags
        )

    @property
    def program_size(self) -> int:
        return sum(m.program_size for m in self.matchers)


Filter = SampleFilter | EventFilter | AlertFilter
_FILTERS: dict[FeedKind, type[Filter]] = {
    "metrics": SampleFilter,
    "events": EventFilter,
    "alerts": AlertFilter,
}


def _filter_key(f: Filter) -> Hashable:
    """Equal for filters that match the same things (names in any order)."""
    if isinstance(f, SampleFilter):
        return (frozenset(f.devices), frozenset(f.metrics), frozenset(f.labels.items()))
    if isinstance(f, EventFilter):
        return (frozenset(f.devices), frozenset(f.kinds), frozenset(f.severities))
    return (frozenset((m.name, m.op, m.value) for m in f.matchers), f.max_rank)


def group_key(kind: FeedKind, sites: frozenset[str] | None, filters: Iterable[Filter]) -> Hashable:
    return (kind, sites, frozenset(_filter_key(f) for f in filters))


def _matches_series(f: SampleFilter, meta: SeriesMeta) -> bool:
    return (
        (not f.devices or meta.device in f.devices)
        and (not f.metrics or meta.metric in f.metrics)
        and all(meta.labels.get(k) == v for k, v in f.labels.items())
    )


def _matches_event(f: EventFilter, event: DeviceEvent) -> bool:
    return (
        (not f.devices or event.device in f.devices)
        and (not f.kinds or event.kind in f.kinds)
        and (not f.severities or event.severity in f.severities)
    )


class Group:
    """The clients of one kind whose sites and subscriptions are the same: what one of them
    wants, all of them want, so the hub matches each series, event or alert once per group.
    """

    __slots__ = ("clients", "devices", "filters", "key", "kind", "sites")

    def __init__(
        self,
        key: Hashable,
        kind: FeedKind,
        sites: frozenset[str] | None,
        filters: tuple[Filter, ...],
    ) -> None:
        self.key = key
        self.kind: FeedKind = kind
        self.sites = sites
        self.filters = filters
        self.clients: set[FeedClient] = set()
        # The devices this group can want at all; None when a filter names none (any).
        names: set[str] = set()
        for f in filters:
            wanted = f.devices if isinstance(f, SampleFilter | EventFilter) else None
            if not wanted:
                self.devices: frozenset[str] | None = None
                break
            names.update(wanted)
        else:
            self.devices = frozenset(names)

    def sees(self, site: str | None) -> bool:
        return self.sites is None or (site is not None and site in self.sites)

    def wants_series(self, meta: SeriesMeta) -> bool:
        return self.sees(meta.site) and any(
            _matches_series(f, meta) for f in self.filters if isinstance(f, SampleFilter)
        )

    def wants_event(self, event: DeviceEvent, site: str | None) -> bool:
        return self.sees(site) and any(
            _matches_event(f, event) for f in self.filters if isinstance(f, EventFilter)
        )

    def wants_alert(self, alert: AlertView) -> bool:
        return self.sees(alert.site) and any(
            f.matches(alert) for f in self.filters if isinstance(f, AlertFilter)
        )


# -- clients -----------------------------------------------------------------------------


class FeedClient:
    """One WebSocket's side of the hub: its subscriptions, its queue, what it missed, and
    why it must close, once it must.

    The handler takes messages with :meth:`next` and waits with :meth:`wait`; once
    :attr:`closing` is set (code, reason) the queue is dropped and nothing more is queued.
    """

    __slots__ = (
        "_ids",
        "_room",
        "_waiter",
        "closing",
        "feed_lost",
        "group",
        "hub",
        "id",
        "kind",
        "missed",
        "missed_since",
        "queue",
        "sites",
        "subscriptions",
        "token",
    )

    def __init__(
        self,
        hub: FeedHub,
        client_id: int,
        kind: FeedKind,
        sites: frozenset[str] | None,
        token: int | str,
    ) -> None:
        self.hub = hub
        self.id = client_id
        self.kind: FeedKind = kind
        self.sites = sites
        self.token = token  # the token's id (its name for one without)
        self.queue: deque[str] = deque()
        self.subscriptions: dict[int, Filter] = {}
        self._ids = itertools.count(1)
        self.group: Group | None = None
        # Pending gap: messages dropped since, and whether the feed itself was lost.
        self.missed = 0
        self.missed_since: datetime | None = None
        self.feed_lost = False
        self.closing: tuple[int, str] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the sender, waiting for a message
        self._room: asyncio.Future[None] | None = None  # the reader, waiting for room

    def __repr__(self) -> str:
        return f"<FeedClient {self.id} {self.kind} token={self.token!r}>"

    def subscribe(self, spec: Filter) -> int:
        expected = _FILTERS[self.kind]
        if not isinstance(spec, expected):
            raise TypeError(f"a {self.kind} feed takes a {expected.__name__}")
        if len(self.subscriptions) >= self.hub.max_subscriptions:
            raise TooManySubscriptionsError(
                f"at most {self.hub.max_subscriptions} subscriptions per connection"
            )
        if isinstance(spec, AlertFilter):
            # What one alert change may cost this connection, whatever its subscriptions:
            # one list's worth of RE2 program (netmon.alerts.matchers.MAX_PROGRAM).
            held = sum(
                f.program_size for f in self.subscriptions.values() if isinstance(f, AlertFilter)
            )
            if held + spec.program_size > MAX_PROGRAM:
                raise TooManySubscriptionsError(
                    f"the regular expressions of this connection's subscriptions would compile "
                    f"to {held + spec.program_size:,} RE2 instructions; {MAX_PROGRAM:,} are "
                    "allowed for one connection"
                )
        sub_id = next(self._ids)
        self.subscriptions[sub_id] = spec
        self.hub.regroup(self)
        return sub_id

    def unsubscribe(self, sub_id: int) -> bool:
        found = self.subscriptions.pop(sub_id, None) is not None
        if found:
            self.hub.regroup(self)
        return found

    # -- delivery (by the hub; never waits) ------------------------------------------

    def offer(self, message: str) -> None:
        """Queue ``message``, after the gap this client is owed; drop it if the queue is
        full."""
        if self.closing is not None:
            return
        hub = self.hub
        if len(self.queue) >= hub.queue_limit:
            if self.missed_since is None:
                self.missed_since = datetime.now(UTC)
            self.missed += 1
            hub.dropped += 1
            return
        if self.missed or self.feed_lost:
            self._queue_gap()
        self.queue.append(message)
        hub.delivered += 1
        self._wake()

    def reply(self, message: str) -> None:
        """Queue the answer to a command, whatever the queue holds: the reader waits for
        room (:meth:`room`) before it reads the next command."""
        if self.closing is None:
            self.queue.append(message)
            self._wake()

    def lose_feed(self, since: datetime) -> None:
        """This client missed what was written since ``since``. Told now if its queue has
        room; before its next message if not."""
        self.feed_lost = True
        if self.missed_since is None or since < self.missed_since:
            self.missed_since = since
        if len(self.queue) < self.hub.queue_limit:
            self._queue_gap()
            self._wake()

    def _queue_gap(self) -> None:
        # The gap may take the queue one over its limit: it must go before the message
        # that follows it, and it carries what the dropped ones would have said.
        gap = {
            "type": "gap",
            "reason": "feed" if self.feed_lost else "slow",
            "missed": self.missed,
            "since": self.missed_since or datetime.now(UTC),
        }
        self.queue.append(_encode(gap).decode())
        self.missed = 0
        self.missed_since = None
        self.feed_lost = False
        self.hub.gaps += 1

    def close(self, code: int, reason: str) -> None:
        """Make the handler close the connection with ``code``; what is queued is dropped
        (a revoked token gets nothing more)."""
        if self.closing is None:
            self.closing = (code, reason)
            self.queue.clear()
            self._wake()
            if self._room is not None and not self._room.done():
                self._room.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the handler's side ------------------------------------------------------------

    def next(self) -> str | None:
        """The next message to send, if any."""
        queue = self.queue
        if not queue:
            return None
        message = queue.popleft()
        room = self._room
        if room is not None and len(queue) < self.hub.queue_limit and not room.done():
            room.set_result(None)
        return message

    async def wait(self) -> None:
        """Until something is queued or the client must close."""
        if self.queue or self.closing is not None:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def room(self) -> None:
        """Until the queue is under its limit (or the client must close)."""
        if len(self.queue) < self.hub.queue_limit or self.closing is not None:
            return
        self._room = asyncio.get_running_loop().create_future()
        try:
            await self._room
        finally:
            self._room = None
