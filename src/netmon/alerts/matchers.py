"""Label matchers in Alertmanager's syntax: ``site="lon1"``, ``role!="access"``,
``interface=~"eth[0-3]"``, ``severity!~"info|warning"``. Rules, silences and webhook
filters use them alike. The name ``tag`` matches a device's tags (any of them); every
other name matches one label, and a missing label matches as the empty string (as in
Alertmanager: ``site=""`` selects alerts without a site).

Regular expressions are anchored (``eth1`` does not match ``eth10``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Matcher", "MatcherError", "matches_all", "parse_matchers"]

Op = Literal["=", "!=", "=~", "!~"]

_MATCHER = re.compile(
    r"""^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>=~|!~|!=|=)\s*"""
    r"""(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^"\s][^\s]*)?)\s*$"""
)


class MatcherError(ValueError):
    """A matcher that cannot be read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if m is None:
            raise MatcherError(
                f'{text!r} is not a matcher: write name="value", name!="value", '
                'name=~"regex" or name!~"regex"'
            )
        quoted = m.group("quoted")
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (m.group("bare") or "")
        op: Op = m.group("op")  # type: ignore[assignment]
        return cls.of(m.group("name"), op, value)

    @classmethod
    def of(cls, name: str, op: Op, value: str) -> Matcher:
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"(?:{value})")
            except re.error as exc:
                raise MatcherError(f"{name}{op}{value!r}: not a regular expression: {exc}") from exc
        return cls(name, op, value, regex)

    def _one(self, value: str) -> bool:
        if self._regex is not None:
            return self._regex.fullmatch(value) is not None
        return value == self.value

    def matches(self, labels: Mapping[str, str], tags: Sequence[str] = ()) -> bool:
        negative = self.op in ("!=", "!~")
        if self.name == "tag":
            hit = any(self._one(t) for t in tags) if tags else self._one("")
        else:
            hit = self._one(labels.get(self.name, ""))
        return hit != negative

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matchers(spec: Iterable[str] | Mapping[str, str] | None) -> list[Matcher]:
    """A list of matcher strings, or a mapping of names to values (equality)."""
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        return [Matcher.of(str(k), "=", str(v)) for k, v in spec.items()]
    if isinstance(spec, str):
        raise MatcherError("matchers must be a list of strings or a mapping, not one string")
    return [Matcher.parse(str(s)) for s in spec]


def matches_all(
    matchers: Sequence[Matcher], labels: Mapping[str, str], tags: Sequence[str] = ()
) -> bool:
    return all(m.matches(labels, tags) for m in matchers)
