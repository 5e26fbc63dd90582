"""Rule evaluation in the ingest stream.

The engine sees every submitted batch before it is written (``Batcher.submit``) and keeps,
per (rule, series), just enough state to say when an alert changes: pending since when,
firing or not, and the recent condition flips for flap detection. It never reads the
sample tables. Its output is a list of :class:`Transition` for the recorder, which makes
them rows, notifications and outbox messages.

The clock is the samples' own time (a ``for`` of 5 minutes means samples 5 minutes apart),
except for ``absent`` rules, which :meth:`AlertEngine.tick` checks against the wall clock.

Not thread-safe: called from the event loop that runs the batcher.
"""

from __future__ import annotations

import hashlib
import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from time import monotonic, perf_counter
from typing import Any

from netmon.alerts.matchers import matches_all
from netmon.alerts.model import AlertEvent
from netmon.alerts.rules import Rule, format_template
from netmon.records import DeviceEvent, Sample, SeriesKey

__all__ = ["AlertEngine", "DeviceAttrs", "EngineStats", "OpenAlert", "Transition", "fingerprint"]

Labels = tuple[tuple[str, str], ...]
TrackKey = tuple[str, str, Labels]  # rule name, device, series labels

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_ADMIN_STATUS = "ifAdminStatus"
_TIMED = frozenset({"absent", "event"})
_IF_UP = 1.0


def _fast_test(rule: Rule) -> tuple[Callable[[Any, float], bool], float] | None:
    """A comparison on the raw value that must hold for the rule's condition to hold, when
    there is one: with no alert open, a sample that fails it changes nothing."""
    if rule.kind == "absent":
        return None  # every sample counts: it is seen
    if rule.state == "interface_down":
        return operator.ne, _IF_UP
    if rule.state is not None:
        return operator.eq, 0.0  # up / poll_success == 0
    if rule.divide_by or rule.scale != 1.0 or rule.value is None:
        return None
    return _OPS[rule.op], rule.value


# Alerts about an inventory sync itself are raised under inventory/<source>, not a device.
SYNC_DEVICE_PREFIX = "inventory/"


def fingerprint(rule: str, device: str, labels: Labels) -> str:
    """One alert identity per (rule, device, labels), the same in every process."""
    h = hashlib.sha256(rule.encode())
    h.update(b"\0" + device.encode())
    for k, v in labels:
        h.update(b"\0" + k.encode() + b"=" + v.encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class DeviceAttrs:
    """What matchers may ask about a device besides its name (from the inventory)."""

    site: str | None = None
    role: str | None = None
    tags: tuple[str, ...] = ()


_NO_ATTRS = DeviceAttrs()


@dataclass(frozen=True, slots=True)
class Transition:
    """One change the recorder must store. ``time`` is the sample's time (or the wall clock
    for absent rules); ``since`` is when the condition first held (pending_at)."""

    event: AlertEvent
    rule: Rule
    fingerprint: str
    device: str
    labels: Labels
    time: datetime
    since: datetime
    value: float | None
    changes: int = 0
    detail: str = ""
    summary: str = ""
    description: str = ""
    submitted: float = field(default_factory=perf_counter, compare=False)


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An alert the database holds open, for :meth:`AlertEngine.restore`."""

    rule: str
    device: str
    labels: Labels
    state: str  # pending, firing or acknowledged
    pending_at: datetime
    flapping: bool


@dataclass
class EngineStats:
    samples: int = 0  # samples looked at
    evaluations: int = 0  # (sample, rule) pairs evaluated
    transitions: int = 0


class _Track:
    """State of one rule on one series."""

    __slots__ = (
        "clear",
        "device",
        "fast",
        "fields",
        "fingerprint",
        "flapping",
        "flips",
        "key",
        "labels",
        "last_seen",
        "rule",
        "since",
        "state",
        "value",
    )

    def __init__(self, rule: Rule, device: str, labels: Labels) -> None:
        self.rule = rule
        self.fast = _fast_test(rule)
        self.device = device
        self.labels = labels
        self.key: TrackKey = (rule.name, device, labels)
        self.fingerprint = fingerprint(rule.name, device, labels)
        self.state: str | None = None  # None (no alert), "pending", "firing"
        self.since: datetime | None = None
        self.flips: deque[float] = deque()
        self.flapping = False
        self.clear = False  # while flapping: was the condition clear at the last flip?
        self.value: float | None = None
        self.last_seen = monotonic()
        # Event rules: the last event's message, kind and attributes, for the templates.
        self.fields: dict[str, str] = {}


class AlertEngine:
    def __init__(
        self,
        rules: Sequence[Rule] = (),
        *,
        flap_window_s: float = 600.0,
        flap_threshold: int = 6,
        devices: Mapping[str, DeviceAttrs] | None = None,
    ) -> None:
        self.flap_window = flap_window_s
        self.flap_threshold = flap_threshold
        self.stats = EngineStats()
        self._devices: dict[str, DeviceAttrs] = dict(devices or {})
        # Devices the inventory retired or does not poll: their alerts resolve, saying why.
        self._gone_reasons: dict[str, str] = {}
        self._tracks: dict[TrackKey, _Track] = {}
        self._bound: dict[SeriesKey, tuple[_Track, ...]] = {}
        self._companion_values: dict[tuple[str, str, Labels], float] = {}
        self._rules: dict[str, Rule] = {}
        self._by_metric: dict[str, list[Rule]] = {}
        self._companions: frozenset[str] = frozenset()
        self._event_rules: list[Rule] = []
        # Tracks the clock decides on (absent and event rules), for tick().
        self._timed: list[_Track] = []
        self.set_rules(rules)

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    # -- configuration -------------------------------------------------------------------

    def set_rules(self, rules: Sequence[Rule]) -> list[Transition]:
        """Replace the rule set. Alerts of rules that are gone, or that no longer match
        their series, are resolved; the others keep their state."""
        self._rules = {r.name: r for r in rules}
        by_metric: dict[str, list[Rule]] = {}
        companions: set[str] = set()
        self._event_rules = [r for r in rules if r.kind == "event"]
        for r in rules:
            if r.kind == "event":
                continue
            by_metric.setdefault(r.metric, []).append(r)
            if r.divide_by:
                companions.add(r.divide_by)
            if r.state == "interface_down":
                companions.add(_ADMIN_STATUS)
        self._by_metric = by_metric
        self._companions = frozenset(companions)
        for track in self._tracks.values():
            new = self._rules.get(track.rule.name)
            if new is not None:
                track.rule = new
                track.fast = _fast_test(new)
        return self._rebind("rule removed or changed")

    def set_devices(
        self, devices: Mapping[str, DeviceAttrs], gone: Mapping[str, str] | None = None
    ) -> list[Transition]:
        """Replace the devices alerts may be about, with the attributes matchers see (after
        an inventory sync). An open alert of a device not among them resolves; ``gone``
        gives the reason per device (retired from the inventory, not polled)."""
        self._devices = dict(devices)
        self._gone_reasons = dict(gone or {})
        return self._rebind("device left the inventory or no longer matches")

    def prune(self) -> list[Transition]:
        """Resolve what :meth:`restore` took up for devices no longer in the inventory."""
        return self._rebind("device left the inventory or no longer matches")

    def _rebind(self, why: str) -> list[Transition]:
        self._bound.clear()
        out: list[Transition] = []
        now = datetime.now(UTC)
        for key, track in list(self._tracks.items()):
            rule = self._rules.get(track.rule.name)
            # An event rule's matchers may name the event's attributes, which only the
            # next event brings: its alert ends on its hold time, not here.
            gone = rule is None or (
                rule.kind != "event" and not self._matches(rule, track.device, track.labels)
            )
            reason = why
            if not gone and track.device in self._gone_reasons:
                gone, reason = True, self._gone_reasons[track.device]
            elif (
                not gone
                and self._devices
                and track.device not in self._devices
                and not track.device.startswith(SYNC_DEVICE_PREFIX)
            ):
                gone = True
            if gone:
                if track.state is not None:
                    out.append(self._emit(track, "resolved", now, track.value, detail=reason))
                del self._tracks[key]
        self._timed = [t for t in self._tracks.values() if t.rule.kind in _TIMED]
        return out

    def restore(self, alerts: Iterable[OpenAlert]) -> int:
        """Take up alerts the database holds open (after a restart): a firing alert is not
        fired again, and a pending one keeps its start. Returns how many were taken."""
        n = 0
        for a in alerts:
            rule = self._rules.get(a.rule)
            if rule is None:
                continue
            track = self._track(rule, a.device, a.labels)
            track.state = "pending" if a.state == "pending" else "firing"
            track.since = a.pending_at
            track.flapping = a.flapping
            n += 1
        return n

    # -- evaluation ----------------------------------------------------------------------

    def observe(self, samples: Sequence[Sample]) -> list[Transition]:
        """Evaluate the rules on a batch; return the alert changes it causes."""
        out: list[Transition] = []
        by_metric = self._by_metric
        if not by_metric:
            return out
        self.stats.samples += len(samples)
        if self._companions:
            companions = self._companions
            values = self._companion_values
            for s in samples:
                k = s.series
                if k.metric in companions:
                    values[(k.device, k.metric, k.labels)] = float(s.value)
        bound = self._bound
        evaluations = 0
        for s in samples:
            key = s.series
            if key.metric not in by_metric:
                continue
            tracks = bound.get(key)
            if tracks is None:
                tracks = self._bind(key)
            evaluations += len(tracks)
            value = s.value
            for track in tracks:
                # Most evaluations find no alert and a condition that does not hold: one
                # comparison, no call, decides them.
                fast = track.fast
                if fast is not None and track.state is None and not fast[0](value, fast[1]):
                    continue
                self._evaluate(track, s, out)
        self.stats.evaluations += evaluations
        self.stats.transitions += len(out)
        return out

    def observe_events(self, events: Sequence[DeviceEvent]) -> list[Transition]:
        """Event rules: an event of the rule's kind fires its device's alert, or keeps it
        firing (a repeat is no new alert: it extends the hold)."""
        out: list[Transition] = []
        for event in events:
            for rule in self._event_rules:
                if not fnmatchcase(event.kind, rule.metric):
                    continue
                if rule.matchers and not self._event_matches(rule, event):
                    continue
                track = self._track(rule, event.device, ())
                track.last_seen = monotonic()
                track.fields = {**event.attributes, "message": event.message, "kind": event.kind}
                if track.state is None:
                    track.since = event.time
                    track.state = "firing"
                    out.append(self._emit(track, "firing", event.time, None))
        self.stats.transitions += len(out)
        return out

    def _event_matches(self, rule: Rule, event: DeviceEvent) -> bool:
        seen, tags = self._match_view(event.device, ())
        seen = {**event.attributes, **seen, "kind": event.kind}
        seen["rule"], seen["severity"] = rule.name, rule.severity
        return matches_all(rule.matchers, seen, tags)

    def tick(self, now: float | None = None) -> list[Transition]:
        """Absent and event rules against the clock (call about once a second): a series
        silent for ``for`` fires; an event alert ``for`` after its last event resolves."""
        out: list[Transition] = []
        mono = monotonic() if now is None else now
        for track in self._timed:
            # (a deadline, not a difference: (t + 600) - t can come out an ulp under 600)
            if mono < track.last_seen + track.rule.for_s:
                continue
            if track.rule.kind == "absent" and track.state is None:
                wall = datetime.now(UTC)
                track.since = wall
                self._change(track, "firing", wall, None, out)
            elif track.rule.kind == "event" and track.state is not None:
                track.state = None
                out.append(self._emit(track, "resolved", datetime.now(UTC), None))
        self.stats.transitions += len(out)
        return out

    def _bind(self, key: SeriesKey) -> tuple[_Track, ...]:
        seen, tags = self._match_view(key.device, key.labels)
        tracks = []
        for rule in self._by_metric.get(key.metric, ()):
            if rule.matchers:
                seen["rule"], seen["severity"] = rule.name, rule.severity
                if not matches_all(rule.matchers, seen, tags):
                    continue
            tracks.append(self._track(rule, key.device, key.labels))
        bound = self._bound[key] = tuple(tracks)
        return bound

    def _track(self, rule: Rule, device: str, labels: Labels) -> _Track:
        key = (rule.name, device, labels)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(rule, device, labels)
            if rule.kind in _TIMED:
                self._timed.append(track)
        return track

    def _matches(self, rule: Rule, device: str, labels: Labels) -> bool:
        if not rule.matchers:
            return True
        seen, tags = self._match_view(device, labels)
        seen["rule"], seen["severity"] = rule.name, rule.severity
        return matches_all(rule.matchers, seen, tags)

    def _match_view(self, device: str, labels: Labels) -> tuple[dict[str, str], tuple[str, ...]]:
        """What matchers see of a series: its labels, its device and the device's
        inventory attributes (the rule's own name and severity are added per rule)."""
        attrs = self._devices.get(device, _NO_ATTRS)
        seen = dict(labels)
        seen["device"] = device
        # The device's own, never a series label of that name (a missing one matches as
        # ""): a rule confined to site="lon1" must not bind a series elsewhere that
        # carries a site label.
        for name, value in (("site", attrs.site), ("role", attrs.role)):
            if value is None:
                seen.pop(name, None)
            else:
                seen[name] = value
        return seen, attrs.tags

    def _evaluate(self, track: _Track, sample: Sample, out: list[Transition]) -> None:
        rule = track.rule
        if rule.kind == "absent":
            track.last_seen = monotonic()
            if track.state is not None:
                self._change(track, "resolved", sample.time, None, out)
            return
        verdict = self._condition(rule, sample)
        if verdict is None:
            return
        value, firing_now, clear_now = verdict
        track.value = value
        state = track.state
        if state is None:
            if firing_now:
                track.since = sample.time
                if rule.for_s <= 0:
                    self._change(track, "firing", sample.time, value, out)
                else:
                    track.state = "pending"
                    out.append(self._emit(track, "pending", sample.time, value))
        elif state == "pending":
            if clear_now:
                track.state = None
                out.append(self._emit(track, "resolved", sample.time, value, detail="cleared"))
            elif firing_now:
                assert track.since is not None
                if (sample.time - track.since).total_seconds() >= rule.for_s:
                    self._change(track, "firing", sample.time, value, out)
        elif track.flapping:
            self._while_flapping(track, sample, value, firing_now, clear_now, out)
        elif clear_now:
            self._change(track, "resolved", sample.time, value, out)

    def _condition(self, rule: Rule, s: Sample) -> tuple[float, bool, bool] | None:
        """(value, condition holds, condition clearly gone); None: cannot say yet."""
        value = float(s.value)
        key = s.series
        if rule.state is not None:
            if rule.state == "interface_down":
                admin = self._companion_values.get((key.device, _ADMIN_STATUS, key.labels))
                if admin is None:
                    return None
                down = value != _IF_UP and admin == _IF_UP
                return value, down, not down
            failing = value == 0.0  # up / poll_success
            return value, failing, not failing
        if rule.divide_by:
            base = self._companion_values.get((key.device, rule.divide_by, key.labels))
            if not base:
                return None  # unknown or zero (an interface without a speed)
            value = value / base * rule.scale
        elif rule.scale != 1.0:
            value *= rule.scale
        if value != value:  # NaN compares false with everything: say nothing
            return None
        assert rule.value is not None
        cmp = _OPS[rule.op]
        holds = cmp(value, rule.value)
        edge = rule.clear if rule.clear is not None else rule.value
        return value, holds, not cmp(value, edge)

    # -- state changes and flapping --------------------------------------------------------

    def _change(
        self,
        track: _Track,
        event: AlertEvent,
        when: datetime,
        value: float | None,
        out: list[Transition],
    ) -> None:
        """firing or resolved, unless the flip makes the alert flap."""
        if self._flip(track, when):
            if event == "firing" and track.state is None:
                track.state = "firing"
                out.append(self._emit(track, "firing", when, value))
            track.flapping = True
            track.clear = event == "resolved"
            out.append(
                self._emit(track, "flapping", when, value, detail=f"{len(track.flips)} changes")
            )
            return
        track.state = "firing" if event == "firing" else None
        out.append(self._emit(track, event, when, value))

    def _flip(self, track: _Track, when: datetime) -> bool:
        """Count a state change; True if it makes the alert start flapping."""
        t = when.timestamp()
        flips = track.flips
        flips.append(t)
        while flips and flips[0] < t - self.flap_window:
            flips.popleft()
        return not track.flapping and len(flips) >= self.flap_threshold

    def _while_flapping(
        self,
        track: _Track,
        sample: Sample,
        value: float,
        firing_now: bool,
        clear_now: bool,
        out: list[Transition],
    ) -> None:
        # The alert stays open; flips of the condition are only counted.
        t = sample.time.timestamp()
        flips = track.flips
        if (clear_now and not track.clear) or (firing_now and track.clear):
            flips.append(t)
            track.clear = clear_now
        while flips and flips[0] < t - self.flap_window:
            flips.popleft()
        if len(flips) * 2 < self.flap_threshold:
            track.flapping = False
            detail = f"{len(flips)} changes"
            out.append(self._emit(track, "stable", sample.time, value, detail=detail))
            if clear_now:
                track.state = None
                out.append(self._emit(track, "resolved", sample.time, value))

    def _emit(
        self,
        track: _Track,
        event: AlertEvent,
        when: datetime,
        value: float | None,
        detail: str = "",
    ) -> Transition:
        summary = description = ""
        if event in ("pending", "firing"):
            summary, description = self._describe(track, value)
        return Transition(
            event=event,
            rule=track.rule,
            fingerprint=track.fingerprint,
            device=track.device,
            labels=track.labels,
            time=when,
            since=track.since or when,
            value=value,
            changes=len(track.flips),
            detail=detail,
            summary=summary,
            description=description,
        )

    def _describe(self, track: _Track, value: float | None) -> tuple[str, str]:
        rule = track.rule
        attrs = self._devices.get(track.device, _NO_ATTRS)
        fields: dict[str, object] = {**track.fields, **dict(track.labels)}
        fields.update(
            rule=rule.name,
            device=track.device,
            value=value,
            threshold=rule.value,
            severity=rule.severity,
            site=attrs.site or "",
            role=attrs.role or "",
            metric=rule.metric,
        )
        return format_template(rule.summary, fields), format_template(rule.description, fields)
