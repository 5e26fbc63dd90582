"""Alert rules: what they say, how they are read and checked, and the built-in set.

A rule is one of three kinds (docs/alerts.md has the full reference):

- ``threshold``: a metric (raw or a derived ``:rate``) compared with a value, optionally
  divided by another metric of the same series labels and scaled (utilisation in percent
  is ``ifHCInOctets:rate`` divided by ``ifSpeed``, scaled by 800), held ``for`` a while
  before it fires, and with ``clear`` as the other edge of a hysteresis band.
- ``state``: a named device or interface state: ``device_unreachable``,
  ``interface_down`` (oper-down while admin-up) or ``poll_failing``.
- ``absent``: a series that matched and then stopped arriving for ``for``.
- ``event``: a device event of a kind (``device.rebooted``, ``device.config_changed``);
  the alert stays firing ``for`` after the last such event, then resolves.

Every rule has label matchers (``site``, ``role``, ``tag``, ``device``, ``interface`` or any
series label), a severity and ``summary`` / ``description`` templates. A rule that cannot
be read raises :class:`RuleError` naming the rule and the field.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from netmon.alerts.matchers import Matcher, MatcherError, parse_matchers
from netmon.alerts.model import Severity
from netmon.durations import Duration
from netmon.errors import ConfigError

__all__ = [
    "BUILTIN_RULES",
    "STATES",
    "Rule",
    "RuleError",
    "RuleSpec",
    "RulesFile",
    "SilenceSpec",
    "format_template",
    "load_rules_file",
    "parse_rule",
]

RuleKind = Literal["threshold", "state", "absent", "event"]
StateName = Literal["device_unreachable", "interface_down", "poll_failing"]
Op = Literal[">", ">=", "<", "<=", "==", "!="]

# What each state rule watches: the metric that triggers evaluation, and its condition
# (netmon.alerts.conditions). The poller writes `up` and `poll_success` with every poll.
STATES: dict[str, str] = {
    "device_unreachable": "up",
    "interface_down": "ifOperStatus",
    "poll_failing": "poll_success",
}

# Names a template may use besides the series' own labels (and, for event rules, the
# event's message, kind and attributes).
TEMPLATE_FIELDS = ("rule", "device", "value", "threshold", "severity", "site", "role", "metric")


class RuleError(ConfigError):
    """A rule that cannot be used; the message names the rule and the field (and the file,
    for a rules file)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RuleSpec(_Spec):
    """One rule as written in YAML or sent to the API."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    kind: RuleKind = "threshold"
    metric: str | None = Field(default=None, min_length=1, max_length=200)
    state: StateName | None = None
    event: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z_*][A-Za-z0-9_.:*-]*$",
        description="Event rules: the device event kind, `*` as a wildcard "
        "(device.rebooted, device.config_changed, device.*).",
    )
    op: Op = ">"
    value: float | None = None
    clear: float | None = Field(
        default=None,
        description="Resolve only once the value is past this on the other side of `op` "
        "(hysteresis). Default: the threshold itself.",
    )
    divide_by: str | None = Field(default=None, min_length=1, max_length=200)
    scale: float = 1.0
    for_: Duration = Field(default=timedelta(0), alias="for")
    matchers: list[str] | dict[str, str] = Field(default_factory=list)
    severity: Severity = "warning"
    summary: str = Field(default="", max_length=500)
    description: str = Field(default="", max_length=4000)

    @field_validator("for_")
    @classmethod
    def _for_bounded(cls, v: timedelta) -> timedelta:
        if v < timedelta(0) or v > timedelta(days=7):
            raise ValueError("must be between 0s and 7d")
        return v

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, v: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        try:
            parse_matchers(v)
        except MatcherError as exc:
            raise ValueError(str(exc)) from exc
        return v

    @field_validator("summary", "description")
    @classmethod
    def _template_formats(cls, v: str) -> str:
        try:
            format_template(v, {}, strict=True)
        except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"not a usable template: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> RuleSpec:
        if self.kind != "event" and self.event is not None:
            raise ValueError("'event' belongs to event rules (kind: event)")
        if self.kind == "threshold":
            _need(self.metric, "metric", "a threshold rule")
            _need(self.value, "value", "a threshold rule")
            if self.state is not None:
                raise ValueError("'state' belongs to state rules (kind: state)")
        elif self.kind == "state":
            _need(self.state, "state", "a state rule")
            for name in ("metric", "value", "divide_by", "clear"):
                if getattr(self, name) is not None:
                    raise ValueError(f"'{name}' does not apply to a state rule")
        elif self.kind == "event":
            _need(self.event, "event", "an event rule")
            if self.for_ <= timedelta(0):
                raise ValueError(
                    "an event rule needs 'for' (how long the alert stays after the last event)"
                )
            for name in ("metric", "value", "divide_by", "clear", "state"):
                if getattr(self, name) is not None:
                    raise ValueError(f"'{name}' does not apply to an event rule")
        else:
            _need(self.metric, "metric", "an absent rule")
            if self.for_ <= timedelta(0):
                raise ValueError("an absent rule needs 'for' (how long a series may be silent)")
            for name in ("value", "divide_by", "clear", "state"):
                if getattr(self, name) is not None:
                    raise ValueError(f"'{name}' does not apply to an absent rule")
        if self.scale == 0:
            raise ValueError("'scale' must not be 0")
        return self

    def definition(self) -> dict[str, Any]:
        """The rule as stored (``alert_rules.definition``) and shown by the API."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        out["name"] = self.name
        out["kind"] = self.kind
        out["severity"] = self.severity
        return out


def _need(value: object, name: str, what: str) -> None:
    if value is None:
        raise ValueError(f"{what} needs '{name}'")


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """A checked rule, ready for the engine."""

    name: str
    kind: RuleKind
    metric: str
    state: StateName | None
    op: Op
    value: float | None
    clear: float | None
    divide_by: str | None
    scale: float
    for_s: float
    matchers: tuple[Matcher, ...]
    severity: Severity
    summary: str
    description: str
    source: Literal["file", "api", "builtin"] = "file"

    @classmethod
    def from_spec(cls, spec: RuleSpec, source: Literal["file", "api", "builtin"]) -> Rule:
        # An event rule's "metric" is the event kind it watches (kept on its alerts).
        metric = STATES[spec.state] if spec.state is not None else spec.metric or spec.event
        assert metric is not None  # checked by RuleSpec
        return cls(
            name=spec.name,
            kind=spec.kind,
            metric=metric,
            state=spec.state,
            op=spec.op,
            value=spec.value,
            clear=spec.clear,
            divide_by=spec.divide_by,
            scale=spec.scale,
            for_s=spec.for_.total_seconds(),
            matchers=tuple(parse_matchers(spec.matchers)),
            severity=spec.severity,
            summary=spec.summary or _default_summary(spec),
            description=spec.description,
            source=source,
        )


def _default_summary(spec: RuleSpec) -> str:
    if spec.kind == "state":
        return {
            "device_unreachable": "{device} does not answer",
            "interface_down": "{device} {interface} is down (admin up)",
            "poll_failing": "polls of {device} fail",
        }[spec.state or ""]
    if spec.kind == "event":
        return "{device}: {message}"
    if spec.kind == "absent":
        return f"{{device}}: no {spec.metric} for {_human(spec.for_)}"
    return f"{{device}}: {spec.metric} {{value:.4g}} {spec.op} {{threshold:g}}"


def _human(d: timedelta) -> str:
    s = int(d.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0 and s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


class _Fields(dict[str, Any]):
    """Template values; an unknown name stays as written rather than failing at fire time."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


_FORMATTER = string.Formatter()


def format_template(template: str, values: Mapping[str, Any], *, strict: bool = False) -> str:
    """Fill a summary or description. ``strict`` (when a rule is checked): values are
    stand-ins, so a bad format spec fails now rather than when the alert fires."""
    if not template:
        return ""
    if strict:
        fields = _Fields(
            {name: 0.0 if name in ("value", "threshold") else "x" for name in TEMPLATE_FIELDS}
        )
        for _, name, spec, _ in _FORMATTER.parse(template):
            if name is not None and name not in fields:
                fields[name] = "x"
            if name and spec and name not in ("value", "threshold"):
                fields[name] = "x"
        return template.format_map(fields)
    try:
        return template.format_map(_Fields(values))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        # A value of another type than the spec expects (value None for an absent rule):
        # show the template rather than lose the alert.
        return template


def parse_rule(data: Any, where: str = "rule") -> RuleSpec:
    """Check one rule given as a mapping; :class:`RuleError` names the rule and field."""
    name = data.get("name") if isinstance(data, Mapping) else None
    label = f"{where} {name!r}" if isinstance(name, str) and name else where
    if not isinstance(data, Mapping):
        raise RuleError(f"{label}: must be a mapping of fields, got {type(data).__name__}")
    try:
        return RuleSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise RuleError(f"{label}: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"field '{loc}': {msg}" if loc else msg)
    return "; ".join(problems)


class SilenceSpec(_Spec):
    """A maintenance window in the rules file: matchers and a time range."""

    name: str = Field(min_length=1, max_length=200)
    matchers: list[str] | dict[str, str]
    starts_at: datetime
    ends_at: datetime
    comment: str = ""

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _ordered(self) -> SilenceSpec:
        if self.ends_at <= self.starts_at:
            raise ValueError("'ends_at' must be after 'starts_at'")
        return self

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, v: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        try:
            if not parse_matchers(v):
                raise ValueError("at least one matcher is needed (a silence of everything)")
        except MatcherError as exc:
            raise ValueError(str(exc)) from exc
        return v


class RulesFile(msgspec.Struct, frozen=True):
    rules: list[RuleSpec]
    silences: list[SilenceSpec]


def load_rules_file(path: Path) -> RulesFile:
    """Read ``rules:`` and ``silences:`` from a YAML file; errors name the file, the rule
    and the field."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise RuleError(f"{path}: cannot read the rules file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise RuleError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, Mapping):
        raise RuleError(f"{path}: must be a mapping with 'rules:' (and 'silences:')")
    unknown = set(data) - {"rules", "silences"}
    if unknown:
        raise RuleError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}: use 'rules', 'silences'"
        )
    rules = _items(data.get("rules"), path, "rules")
    specs = [parse_rule(r, f"{path}: rules[{i}]") for i, r in enumerate(rules)]
    _unique((s.name for s in specs), path, "rule")
    silences = []
    for i, s in enumerate(_items(data.get("silences"), path, "silences")):
        label = f"{path}: silences[{i}]"
        if isinstance(s, Mapping) and isinstance(s.get("name"), str):
            label += f" {s['name']!r}"
        try:
            silences.append(SilenceSpec.model_validate(s))
        except ValidationError as exc:
            raise RuleError(f"{label}: {_first_problem(exc)}") from None
    _unique((s.name for s in silences), path, "silence")
    return RulesFile(specs, silences)


def _items(value: Any, path: Path, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RuleError(f"{path}: '{key}' must be a list")
    return value


def _unique(names: Iterable[str], path: Path, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise RuleError(f"{path}: two {what}s are named {name!r}")
        seen.add(name)


def _utilisation(direction: Literal["in", "out"]) -> RuleSpec:
    """Octets per second over the interface's speed, in percent (bytes x 8 x 100)."""
    metric = "ifHCInOctets:rate" if direction == "in" else "ifHCOutOctets:rate"
    way = "inbound" if direction == "in" else "outbound"
    return RuleSpec(
        name=f"interface-utilisation-{direction}",
        metric=metric,
        divide_by="ifSpeed",
        scale=800,
        op=">",
        value=80,
        clear=70,
        for_=timedelta(minutes=5),
        severity="warning",
        summary=f"{{device}} {{interface}}: {way} utilisation {{value:.0f}} % > {{threshold:g}} %",
    )


# What `netmon run` watches when no rules file is given: LibreNMS' default alert rules,
# more or less (device down, port down, port utilisation), plus failing polls.
BUILTIN_RULES: tuple[RuleSpec, ...] = (
    RuleSpec(
        name="device-unreachable",
        kind="state",
        state="device_unreachable",
        severity="critical",
        description="No answer to SNMP polls: the device or the path to it is down.",
    ),
    RuleSpec(
        name="interface-down",
        kind="state",
        state="interface_down",
        severity="major",
        description="Operational status is not up while the interface is administratively up.",
    ),
    *(_utilisation(direction) for direction in ("in", "out")),
    RuleSpec(
        name="device-rebooted",
        kind="event",
        event="device.rebooted",
        for_=timedelta(minutes=15),
        severity="warning",
        summary="{device} rebooted",
        description="{message}",
    ),
    RuleSpec(
        name="poll-failing",
        kind="state",
        state="poll_failing",
        for_=timedelta(minutes=3),
        severity="minor",
        description="The device answers, but polls end in errors (see poll health).",
    ),
    RuleSpec(
        name="inventory-sync",
        kind="event",
        event="inventory.sync_failed",
        # A failing source fails again at every round; the alert ends an hour after the
        # last failure (the full reconcile's default interval).
        for_=timedelta(hours=1),
        severity="warning",
        summary="{device}: inventory sync failed or held",
        description="{message}",
    ),
)
