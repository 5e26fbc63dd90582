"""The clients of the live feeds: what one WebSocket subscribed to, its bounded queue, and
the gap it is owed. The hub (``feeds.py``) offers each client its messages; the WebSocket
handlers (``controllers/live.py``) read the queues and speak the protocol below.

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
  an error. Too many clients in this process (``api.ws_max_clients``): an error, then the
  connection is closed with code 1013 (try again later).
- A token limited to sites never receives samples, events or alerts of devices elsewhere
  (nor of devices without a site).

Delivery is best effort and at most once; samples are batched, up to 500 to a message.
Spool replays after a database outage are not published (see ``store/writer.py``).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import msgspec

from netmon.alerts.matchers import Matcher, matches_all, parse_matchers
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
    "SampleFilter",
    "TooManySubscriptionsError",
]

FeedKind = Literal["metrics", "events", "alerts"]
Severity = Literal["info", "warning", "critical"]

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


Filter = SampleFilter | EventFilter | AlertFilter
_FILTERS: dict[FeedKind, type[Filter]] = {
    "metrics": SampleFilter,
    "events": EventFilter,
    "alerts": AlertFilter,
}


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


# -- clients -----------------------------------------------------------------------------


class FeedClient:
    """One WebSocket's side of the hub: its subscriptions, its queue, what it missed.

    The handler reads ``queue``; ``None`` there means the hub is stopping."""

    def __init__(
        self, hub: FeedHub, client_id: int, kind: FeedKind, sites: frozenset[str] | None
    ) -> None:
        self.hub = hub
        self.id = client_id
        self.kind: FeedKind = kind
        self.sites = sites
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.subscriptions: dict[int, Filter] = {}
        self._ids = itertools.count(1)
        # series id -> whether this client wants it; valid for one metadata generation.
        self._wants: dict[int, bool] = {}
        self._generation = -1
        # Pending gap: messages dropped since, and whether the feed itself was lost.
        self.missed = 0
        self.missed_since: datetime | None = None
        self.feed_lost = False
        self.delivered = 0
        self.gaps = 0

    def subscribe(self, spec: Filter) -> int:
        expected = _FILTERS[self.kind]
        if not isinstance(spec, expected):
            raise TypeError(f"a {self.kind} feed takes a {expected.__name__}")
        if len(self.subscriptions) >= self.hub.max_subscriptions:
            raise TooManySubscriptionsError(
                f"at most {self.hub.max_subscriptions} subscriptions per connection"
            )
        sub_id = next(self._ids)
        self.subscriptions[sub_id] = spec
        self._wants.clear()
        return sub_id

    def unsubscribe(self, sub_id: int) -> bool:
        found = self.subscriptions.pop(sub_id, None) is not None
        self._wants.clear()
        return found

    def sees(self, site: str | None) -> bool:
        return self.sites is None or (site is not None and site in self.sites)

    def wants_series(self, series_id: int, meta: dict[int, SeriesMeta | None]) -> bool:
        if self._generation != self.hub.meta.generation:
            self._wants.clear()
            self._generation = self.hub.meta.generation
        wanted = self._wants.get(series_id)
        if wanted is None:
            m = meta.get(series_id)
            wanted = self._wants[series_id] = (
                m is not None
                and self.sees(m.site)
                and any(
                    _matches_series(f, m)
                    for f in self.subscriptions.values()
                    if isinstance(f, SampleFilter)
                )
            )
        return wanted

    def wants_event(self, event: DeviceEvent, site: str | None) -> bool:
        return self.sees(site) and any(
            _matches_event(f, event)
            for f in self.subscriptions.values()
            if isinstance(f, EventFilter)
        )

    def wants_alert(self, alert: AlertView) -> bool:
        return self.sees(alert.site) and any(
            f.matches(alert) for f in self.subscriptions.values() if isinstance(f, AlertFilter)
        )

    def close(self) -> None:
        self.hub.disconnect(self)

    # -- delivery (by the hub; never waits) ------------------------------------------

    def offer(self, message: str) -> None:
        """Queue ``message``, after the gap this client is owed; drop it if the queue is
        full."""
        hub = self.hub
        queue = self.queue
        if queue.qsize() >= hub.queue_limit:
            if self.missed_since is None:
                self.missed_since = datetime.now(UTC)
            self.missed += 1
            hub.dropped += 1
            return
        if self.missed or self.feed_lost:
            self._queue_gap()
        queue.put_nowait(message)
        self.delivered += 1
        hub.delivered += 1

    def lose_feed(self, since: datetime) -> None:
        """This client missed what was written since ``since``. Told now if its queue has
        room; before its next message if not."""
        self.feed_lost = True
        if self.missed_since is None or since < self.missed_since:
            self.missed_since = since
        if self.queue.qsize() < self.hub.queue_limit:
            self._queue_gap()

    def _queue_gap(self) -> None:
        # The gap may take the queue one over its limit: it must go before the message
        # that follows it, and it carries what the dropped ones would have said.
        gap = {
            "type": "gap",
            "reason": "feed" if self.feed_lost else "slow",
            "missed": self.missed,
            "since": self.missed_since or datetime.now(UTC),
        }
        self.queue.put_nowait(_encode(gap).decode())
        self.missed = 0
        self.missed_since = None
        self.feed_lost = False
        self.gaps += 1
        self.hub.gaps += 1
