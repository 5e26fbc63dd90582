"""Label matchers in Alertmanager's syntax: ``site="lon1"``, ``role!="access"``,
``interface=~"eth[0-3]"``, ``severity!~"info|warning"``. Rules, silences, webhook filters
and /ws/alerts subscriptions use them alike. The name ``tag`` matches a device's tags (any
of them); every other name matches one label, and a missing label matches as the empty
string (as in Alertmanager: ``site=""`` selects alerts without a site).

Regular expressions are RE2's syntax (Go's, which Alertmanager and Prometheus use) and are
anchored (``eth1`` does not match ``eth10``). RE2 runs in time linear in the value's length
for every pattern: it has no lookaround and no backreferences, and those are refused when
a matcher is read. The API evaluates a viewer's matchers on its event loop for every alert
change, so what one list of matchers may cost is bounded when it is read:

- ``MAX_MATCHERS`` matchers in a list;
- ``MAX_PATTERN`` characters in a regular expression, and ``MAX_TEXT`` in a matcher;
- ``MAX_PROGRAM`` RE2 instructions for a list's regular expressions together (RE2 refuses
  any repetition count over 1000, nested ones multiplied, itself);

and when it runs: a value longer than ``MAX_VALUE`` bytes (UTF-8) matches no regular
expression (``=~`` is false, ``!~`` true). Work is then at most about program size times
value length: see docs/alerts.md ("Matchers") for the measured worst case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import re2  # type: ignore[import-untyped]

__all__ = [
    "MAX_MATCHERS",
    "MAX_PATTERN",
    "MAX_PROGRAM",
    "MAX_TEXT",
    "MAX_VALUE",
    "Matcher",
    "MatcherError",
    "matches_all",
    "parse_matchers",
]

Op = Literal["=", "!=", "=~", "!~"]

# The API's bound on one matcher, and the schema's on a list (api/schemas/alerts.py): the
# rules file and the feed take no more than the API does.
MAX_MATCHERS = 50
MAX_PATTERN = 1_000
# The parser's own guard (the API's is tighter): a regular expression's text may hold an
# escape for each of its characters, and a value printed back gains quotes.
MAX_TEXT = 4_096
# Twice what the longest literal takes (one instruction a character): room for classes
# and alternations of names, not for a thousand nested wildcards. A list shares it, so
# one alert change costs a subscription at most one such program's work.
MAX_PROGRAM = 2_000
# Bytes of UTF-8, which RE2 steps through: four times SNMP's DisplayString (255 octets)
# and a hostname (253), so no real label comes near it.
MAX_VALUE = 1_024
# RE2's memory per expression (program and DFA cache): 50 of them per list stay small.
# RE2 falls back to its NFA (linear too) when the DFA would need more.
_RE2_MAX_MEM = 128 * 1024

_MATCHER = re.compile(
    r"""^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>=~|!~|!=|=)\s*"""
    r"""(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^"\s][^\s]*)?)\s*$"""
)

# What RE2 refuses that a backtracking engine takes: the start of RE2's complaint about
# it, and the name to give it.
_UNSUPPORTED = (
    ("invalid perl operator: (?=", "lookahead (?=...)"),
    ("invalid perl operator: (?!", "lookahead (?!...)"),
    ("invalid perl operator: (?<=", "lookbehind (?<=...)"),
    ("invalid perl operator: (?<!", "lookbehind (?<!...)"),
    ("invalid perl operator: (?>", "an atomic group (?>...)"),
    ("invalid perl operator: (?(", "a conditional (?(...)"),
    ("invalid perl operator: (?R", "a recursion (?R)"),
    ("bad repetition operator: *+", "a possessive quantifier *+"),
    ("bad repetition operator: ++", "a possessive quantifier ++"),
    ("bad repetition operator: ?+", "a possessive quantifier ?+"),
    ("bad repetition operator: }+", "a possessive quantifier {n}+"),
)
_BACKREFERENCE = re.compile(r"invalid escape sequence: (\\[1-9]|\\g|\\k)")
_NOT_SUPPORTED = (
    "is not supported: matchers use RE2 syntax, which runs in linear time and has no "
    "lookaround, backreferences, atomic groups or possessive quantifiers"
)


class MatcherError(ValueError):
    """A matcher that cannot be read; the message says which and why."""


class _Regex(Protocol):
    """What netmon uses of a compiled ``re2`` expression."""

    @property
    def programsize(self) -> int: ...

    def fullmatch(self, text: bytes) -> object | None: ...


def _options() -> object:
    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM
    options.log_errors = False  # the error is ours to report, not RE2's to print
    options.never_capture = True  # only whether it matches: RE2's DFA alone answers
    return options


_OPTIONS = _options()


def _shown(name: str, op: str, value: str) -> str:
    """A matcher as written, cut short: error messages name it, not copy it out."""
    if len(value) > 60:
        value = value[:60] + "…"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}{op}"{escaped}"'


def _compile(name: str, op: str, value: str) -> _Regex:
    shown = _shown(name, op, value)
    if len(value) > MAX_PATTERN:
        raise MatcherError(
            f"{shown}: the regular expression is {len(value):,} characters long; "
            f"{MAX_PATTERN:,} are allowed"
        )
    try:
        # RE2's fullmatch anchors the whole expression: no group around it, which would
        # make "a)|(b" valid and put flags such as (?i) in the middle.
        regex: _Regex = re2.compile(value.encode("utf-8"), _OPTIONS)
    except UnicodeEncodeError:
        raise MatcherError(f"{shown}: not a regular expression: not valid text") from None
    except re2.error as exc:
        raise MatcherError(f"{shown}: {_why(exc, value)}") from None
    if regex.programsize > MAX_PROGRAM:
        raise MatcherError(
            f"{shown}: too complex: it compiles to {regex.programsize:,} RE2 instructions; "
            f"{MAX_PROGRAM:,} are allowed for one list of matchers"
        )
    return regex


def _why(exc: Exception, value: str) -> str:
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    for start, what in _UNSUPPORTED:
        if text.startswith(start):
            return f"{what} {_NOT_SUPPORTED}"
    if text == "invalid perl operator: (?P" and "(?P=" in value:
        return f"a named backreference (?P=...) {_NOT_SUPPORTED}"
    backreference = _BACKREFERENCE.match(text)
    if backreference:
        return f"a backreference {backreference.group(1)} {_NOT_SUPPORTED}"
    if text.startswith("invalid repetition size"):
        return (
            f"a repetition over 1,000 (nested counts multiplied) is not allowed: "
            f"{text.partition(': ')[2]}"
        )
    if text.startswith("pattern too large"):
        return (
            f"too complex: it compiles to more than the {MAX_PROGRAM:,} RE2 instructions "
            "allowed for one list of matchers"
        )
    return f"not a regular expression (RE2 syntax): {text}"


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: _Regex | None = None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        if len(text) > MAX_TEXT:
            raise MatcherError(
                f"{text[:60]!r}…: a matcher is {len(text):,} characters long; "
                f"{MAX_TEXT:,} are allowed"
            )
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
        regex = _compile(name, op, value) if op in ("=~", "!~") else None
        return cls(name, op, value, regex)

    @property
    def program_size(self) -> int:
        """RE2 instructions of the regular expression (0 for equality): what evaluating
        it costs per character of a value, at worst."""
        return self._regex.programsize if self._regex is not None else 0

    def _one(self, value: str) -> bool:
        if self._regex is None:
            return value == self.value
        if len(value) > MAX_VALUE:  # more bytes still: not worth encoding
            return False
        # surrogatepass: a lone surrogate cannot be UTF-8, and RE2 then sees bytes that
        # match no character rather than netmon raising on a label.
        data = value.encode("utf-8", "surrogatepass")
        # RE2's work is per byte: the bound is on bytes.
        return len(data) <= MAX_VALUE and self._regex.fullmatch(data) is not None

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
    """A list of matcher strings, or a mapping of names to values (equality); at most
    ``MAX_MATCHERS``, whose regular expressions share ``MAX_PROGRAM``."""
    if spec is None:
        return []
    if isinstance(spec, str):
        raise MatcherError("matchers must be a list of strings or a mapping, not one string")
    items = list(spec.items()) if isinstance(spec, Mapping) else list(spec)
    if len(items) > MAX_MATCHERS:
        raise MatcherError(f"at most {MAX_MATCHERS} matchers are allowed, not {len(items)}")
    if isinstance(spec, Mapping):
        return [Matcher.of(str(k), "=", str(v)) for k, v in spec.items()]
    out = []
    program = 0
    for text in items:
        matcher = Matcher.parse(str(text))
        program += matcher.program_size
        if program > MAX_PROGRAM:
            raise MatcherError(
                f"{_shown(matcher.name, matcher.op, matcher.value)}: too complex together "
                f"with the matchers before it: their regular expressions compile to "
                f"{program:,} RE2 instructions; {MAX_PROGRAM:,} are allowed for one list"
            )
        out.append(matcher)
    return out


def matches_all(
    matchers: Sequence[Matcher], labels: Mapping[str, str], tags: Sequence[str] = ()
) -> bool:
    return all(m.matches(labels, tags) for m in matchers)
