"""Alerting as the API takes and shows it: alerts, rules, silences, webhooks, deliveries;
and the checks a schema cannot make (rule consistency, matcher syntax, time windows,
duration bounds), which answer 422 naming the field.

The rows themselves (``AlertView``, ``RuleRow``, ``SilenceRow``, ``WebhookRow``,
``DeliveryRow``) are ``netmon.alerts``' own structs; here are the pages around them and the
request bodies.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar.exceptions import ValidationException
from litestar.params import KwargDefinition
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY

from netmon.alerts.admin import HistoryEntry, RuleRow
from netmon.alerts.matchers import MatcherError, parse_matchers
from netmon.alerts.model import AlertView, Severity
from netmon.alerts.rules import RuleError, RuleSpec, parse_rule
from netmon.alerts.silences import SilenceRow
from netmon.alerts.webhooks import DeliveryRow, WebhookRow
from netmon.api.schemas.common import Name, to_utc
from netmon.durations import parse_duration

__all__ = [
    "AckBody",
    "AlertDetail",
    "AlertPage",
    "DeliveryPage",
    "RuleCreate",
    "RuleList",
    "RuleReplace",
    "SilenceCreate",
    "SilencePage",
    "Unprocessable",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookList",
    "WebhookUpdate",
    "checked_matchers",
    "duration_in",
    "new_secret",
    "rule_spec",
    "silence_window",
    "unprocessable",
]


class Unprocessable(ValidationException):
    """Well formed, but not something netmon can do: 422, ``errors`` naming the field."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY


def unprocessable(field: str, message: str) -> Unprocessable:
    return Unprocessable(f"{field}: {message}", extra=[{"key": field, "message": message}])


# -- shared types ------------------------------------------------------------------------

_NO_NUL = r"^[^\x00]*$"
# Patterns are read by Python (msgspec) and by JSON Schema's ECMA 262 engines alike, so
# they spell out what differs between the two: whitespace (\s is wider in Python) and the
# end ($ also matches before a final newline in Python, hence (?!\n) after it).
_WS = r" \t\n\r\f\v"
_SPACE = rf"[{_WS}]"
_END = r"$(?!\n)"
# matchers.Matcher's syntax, less NUL (PostgreSQL's JSON cannot hold it). Whether a
# regular expression (=~, !~) compiles is checked after: a 422.
MATCHER_PATTERN = (
    rf"^{_SPACE}*[A-Za-z_][A-Za-z0-9_.]*{_SPACE}*(=~|!~|!=|=){_SPACE}*"
    rf'("([^"\\\x00]|\\[^\x00])*"|[^"\x00{_WS}][^\x00{_WS}]*)?{_SPACE}*$'
)
MatcherText = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=1000, pattern=MATCHER_PATTERN, examples=['site="lon1"']),
    KwargDefinition(min_length=1, max_length=1000, pattern=MATCHER_PATTERN),
]
Matchers = Annotated[list[MatcherText], msgspec.Meta(max_length=50)]
DURATION_PATTERN = r"^[0-9]{1,6}(\.[0-9]{1,6})?(ms|s|m|h|d|w)" + _END
DurationText = Annotated[
    str, msgspec.Meta(max_length=20, pattern=DURATION_PATTERN, examples=["30s", "5m", "4h"])
]
LABEL_NAME = r"^[A-Za-z_][A-Za-z0-9_.]*" + _END
LabelName = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=100, pattern=LABEL_NAME),
    KwargDefinition(min_length=1, max_length=100, pattern=LABEL_NAME),
]
Text = Annotated[str, msgspec.Meta(max_length=1000, pattern=_NO_NUL)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


def checked_matchers(field: str, texts: list[str], *, at_least_one: bool = False) -> list[str]:
    """Matchers in the one form they are stored in (``name="value"``); 422 if one is not a
    matcher, or (``at_least_one``) if there are none."""
    try:
        parsed = parse_matchers(texts)
    except MatcherError as exc:
        raise unprocessable(field, str(exc)) from None
    if at_least_one and not parsed:
        raise unprocessable(field, "at least one matcher is needed (a silence of everything)")
    return [str(m) for m in parsed]


def duration_in(field: str, text: str, low: timedelta, high: timedelta) -> timedelta:
    """A duration as written ("30s"), between ``low`` and ``high``; 422 otherwise."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise unprocessable(field, str(exc)) from None
    if not low <= value <= high:
        raise unprocessable(field, f"must be between {_human(low)} and {_human(high)}, not {text}")
    return value


def _human(d: timedelta) -> str:
    s = d.total_seconds()
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"


# -- alerts ------------------------------------------------------------------------------


class AlertPage(msgspec.Struct, frozen=True):
    items: list[AlertView]
    next_cursor: str | None


class AlertDetail(msgspec.Struct, frozen=True):
    alert: AlertView
    # The newest entries (up to 1000), oldest first.
    history: list[HistoryEntry]


class AckBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    comment: Text = ""


# -- rules -------------------------------------------------------------------------------

RULE_NAME = r"^[A-Za-z0-9_.:-]+" + _END
RuleName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=RULE_NAME)]
METRIC = r"^[A-Za-z_][A-Za-z0-9_.:-]*" + _END
Metric = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=METRIC)]
EVENT_KIND = r"^[A-Za-z_*][A-Za-z0-9_.:*-]*" + _END
EventKind = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=EVENT_KIND)]
Finite = Annotated[float, msgspec.Meta(ge=-1e300, le=1e300)]
UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


class _RuleFields(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A rule's fields as in the rules file (docs/alerts.md); a field left out takes its
    default there. ``for`` is a duration ("5m")."""

    kind: Literal["threshold", "state", "absent", "event"] | Unset = UNSET
    metric: Metric | Unset = UNSET
    state: Literal["device_unreachable", "interface_down", "poll_failing"] | Unset = UNSET
    event: EventKind | Unset = UNSET
    op: Literal[">", ">=", "<", "<=", "==", "!="] | Unset = UNSET
    value: Finite | Unset = UNSET
    clear: Finite | Unset = UNSET
    divide_by: Metric | Unset = UNSET
    scale: Finite | Unset = UNSET
    for_: DurationText | Unset = msgspec.field(default=UNSET, name="for")
    matchers: Matchers | Unset = UNSET
    severity: Severity | Unset = UNSET
    summary: Annotated[str, msgspec.Meta(max_length=500, pattern=_NO_NUL)] | Unset = UNSET
    description: Annotated[str, msgspec.Meta(max_length=4000, pattern=_NO_NUL)] | Unset = UNSET

    def fields(self) -> dict[str, Any]:
        """The fields given, by their names in the rules file."""
        out: dict[str, Any] = {}
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            if value is not UNSET:
                out[field.encode_name] = value
        return out


class RuleCreate(_RuleFields, frozen=True, kw_only=True):
    name: RuleName


class RuleReplace(_RuleFields, frozen=True, kw_only=True):
    """The whole rule: what is left out takes its default. ``name``, if given, must be
    the one in the path."""

    name: RuleName | Unset = UNSET


class RuleList(msgspec.Struct, frozen=True):
    items: list[RuleRow]


_RULE_FIELDS = {f.encode_name for f in msgspec.structs.fields(RuleCreate)}
_QUOTED = re.compile(r"'([a-z_]+)'")


def rule_spec(fields: dict[str, Any]) -> RuleSpec:
    """The checked rule; 422 naming the field (``RuleError``'s first one) otherwise."""
    try:
        return parse_rule(fields, "rule")
    except RuleError as exc:
        message = str(exc)
        _, _, problem = message.partition(": ")
        named = [n for n in _QUOTED.findall(problem) if n in _RULE_FIELDS]
        raise unprocessable(named[0] if named else "body", problem or message) from None


# -- silences ----------------------------------------------------------------------------

SILENCE_MAX = timedelta(days=3660)


class SilenceCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Silence the alerts every matcher matches, from ``starts_at`` (default now) until
    ``ends_at`` or for ``duration`` (one of the two)."""

    matchers: Annotated[list[MatcherText], msgspec.Meta(min_length=1, max_length=50)]
    starts_at: AwareTime | None = None
    ends_at: AwareTime | None = None
    duration: DurationText | None = None
    comment: Text = ""


class SilencePage(msgspec.Struct, frozen=True):
    items: list[SilenceRow]
    next_cursor: str | None


def silence_window(body: SilenceCreate, now: datetime) -> tuple[datetime, datetime]:
    """(starts_at, ends_at) in UTC; 422 unless it ends after it starts, after now, and
    lasts at most ten years."""
    starts = to_utc(body.starts_at) if body.starts_at is not None else now
    if (body.ends_at is None) == (body.duration is None):
        raise unprocessable("ends_at", "give ends_at or duration (one of them)")
    if body.duration is not None:
        length = duration_in("duration", body.duration, timedelta(seconds=1), SILENCE_MAX)
        try:
            ends = starts + length
        except OverflowError:
            raise unprocessable("duration", "ends past the year 9999") from None
    else:
        assert body.ends_at is not None
        ends = to_utc(body.ends_at)
        if ends - starts > SILENCE_MAX:
            raise unprocessable("ends_at", "a silence lasts at most 3660 days")
    if ends <= starts:
        raise unprocessable("ends_at", "must be after starts_at")
    if ends <= now:
        raise unprocessable("ends_at", "is in the past: the silence would never apply")
    return starts, ends


# -- webhooks ----------------------------------------------------------------------------

# No spaces nor control characters, which a URL cannot hold unencoded.
URL_PATTERN = r"^https?://[^\x00-\x20\x7f]+" + _END
Url = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=2000,
        pattern=URL_PATTERN,
        examples=["https://nsp.example.net/hook"],
    ),
]
# Standard Webhooks: whsec_ and the base64 of 24 to 64 random bytes (or a little more).
SECRET_PATTERN = r"^whsec_([A-Za-z0-9+/]{4}){8,21}([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?" + _END
Secret = Annotated[str, msgspec.Meta(pattern=SECRET_PATTERN, max_length=100)]
Format = Literal["netmon", "alertmanager", "nsp"]
GroupBy = Annotated[list[LabelName], msgspec.Meta(max_length=20)]

# Bounds of the grouping timers (Alertmanager's defaults lie well inside).
GROUP_WAIT = (timedelta(0), timedelta(hours=1))
GROUP_INTERVAL = (timedelta(seconds=1), timedelta(days=1))
REPEAT_INTERVAL = (timedelta(minutes=1), timedelta(days=30))


class WebhookCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A subscription: alerts matching ``matchers`` go to ``url`` as ``format``, grouped
    by ``group_by``. Timers default to ``alerts.group_wait`` / ``group_interval`` /
    ``repeat_interval``; ``secret`` defaults to a new one, shown once in the answer."""

    name: Name
    url: Url
    secret: Secret | None = None
    format: Format = "netmon"
    matchers: Matchers = msgspec.field(default_factory=list)
    group_by: GroupBy = msgspec.field(default_factory=lambda: ["rule", "device"])
    group_wait: DurationText | None = None
    group_interval: DurationText | None = None
    repeat_interval: DurationText | None = None
    send_resolved: bool = True
    enabled: bool = True


class WebhookUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Fields to change; a field left out keeps its value. Enabling clears
    ``disabled_reason``. A new ``secret`` is taken, never shown."""

    name: Name | Unset = UNSET
    url: Url | Unset = UNSET
    secret: Secret | Unset = UNSET
    format: Format | Unset = UNSET
    matchers: Matchers | Unset = UNSET
    group_by: GroupBy | Unset = UNSET
    group_wait: DurationText | Unset = UNSET
    group_interval: DurationText | Unset = UNSET
    repeat_interval: DurationText | Unset = UNSET
    send_resolved: bool | Unset = UNSET
    enabled: bool | Unset = UNSET

    def changes(self) -> dict[str, Any]:
        return {
            f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET
        }


class WebhookCreated(WebhookRow, frozen=True, kw_only=True):
    """The new webhook, and its secret if netmon made it: this is the only time it is
    shown (null when the request gave one)."""

    secret: str | None = None


class WebhookList(msgspec.Struct, frozen=True):
    items: list[WebhookRow]


class DeliveryPage(msgspec.Struct, frozen=True):
    items: list[DeliveryRow]
    next_cursor: str | None


def new_secret() -> str:
    """A Standard Webhooks signing secret: whsec_ and base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
