"""Label matchers on their own: Alertmanager's syntax and anchored semantics, RE2 (linear
time) for regular expressions, and the limits checked when a matcher is read. The paths
through the API and the feed are in test_api_matchers.py.

Patterns that backtrack for hours in Python's ``re`` are evaluated under an alarm: ``re``
checks for signals while it backtracks, so an engine that runs away fails the test after
a few seconds instead of hanging it.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netmon.alerts.matchers import (
    MAX_MATCHERS,
    MAX_PATTERN,
    MAX_PROGRAM,
    MAX_VALUE,
    Matcher,
    MatcherError,
    matches_all,
    parse_matchers,
)
from netmon.alerts.rules import RuleError, load_rules_file

# Valid RE2 and valid Python, linear in RE2 and exponential in a backtracking engine: on
# labels of this length Python's re takes from minutes to hours.
# (As matcher text: a backslash in quotes is escaped, as in Alertmanager.)
CATASTROPHIC = ["(.*.*)*X", "(x+x+)+y", "(a|aa)*b", "(.*a){20}!", r"(\\w+\\s?)+!"]
LONG_LABELS = {
    "device": "x" * 40,
    "rule": "device-rebooted-core-sw1-lon1",
    "interface": "a" * 40,
    "description": "word " * 20,
}


@contextlib.contextmanager
def finishes_within(limit: float, alarm: float = 5.0) -> Iterator[None]:
    """The block must end within ``limit`` seconds (a generous bound: it is behaviour, not
    speed, that is asserted); an alarm breaks a runaway backtracking match at ``alarm``."""

    def ring(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still matching after {alarm} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, alarm)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    assert elapsed < limit, f"took {elapsed:.2f} s"


def one(text: str) -> Matcher:
    (m,) = parse_matchers([text])
    return m


def refused(text: str) -> str:
    with pytest.raises(MatcherError) as caught:
        parse_matchers([text])
    return str(caught.value)


# -- syntax and semantics ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('interface=~"eth1"', {"interface": "eth1"}, True),
        ('interface=~"eth1"', {"interface": "eth10"}, False),  # anchored at both ends
        ('interface=~"eth1"', {"interface": "xeth1"}, False),
        ('interface=~"eth[0-3]"', {"interface": "eth2"}, True),
        ('severity=~"info|warning"', {"severity": "warning"}, True),
        ('severity=~"info|warning"', {"severity": "infowarning"}, False),
        ('severity=~"info|warning"', {"severity": "xinfo"}, False),
        ('severity!~"info|warning"', {"severity": "critical"}, True),
        ('severity!~"info|warning"', {"severity": "info"}, False),
        ('site=""', {}, True),  # a missing label is the empty string
        ('site=~".+"', {}, False),
        ('site!=""', {"site": "lon1"}, True),
        ('device=~"(?i)CORE-.*"', {"device": "core-sw1"}, True),
        ('device=~"core-\\\\d+"', {"device": "core-12"}, True),
        (r'name=~"\\p{Greek}+"', {"name": "αβγ"}, True),
        ('name=~"é."', {"name": "éé"}, True),  # characters, not bytes
        ('name=~"a.b"', {"name": "a\nb"}, False),  # . leaves out newlines, as before
        ('name=~"(?s)a.b"', {"name": "a\nb"}, True),
        ('name=~"a$"', {"name": "a\n"}, False),  # no match before a final newline
    ],
)
def test_matchers_are_alertmanagers_anchored_ones(
    text: str, labels: dict[str, str], expected: bool
) -> None:
    assert one(text).matches(labels) is expected


def test_tag_matches_any_tag_and_no_tags_as_the_empty_string() -> None:
    core = one('tag=~"co.e"')
    assert core.matches({}, ("lab", "core"))
    assert not core.matches({}, ("lab",))
    assert one('tag=""').matches({}, ())
    assert one('tag!~"lab|core"').matches({}, ("edge",))


def test_a_matcher_reads_back_as_it_prints() -> None:
    for text in ['site="lon1"', 'd=~"a\\"b\\\\.c"', "severity!~info|warning", 'x!="" ']:
        m = one(text)
        again = one(str(m))
        assert (again.name, again.op, again.value) == (m.name, m.op, m.value)


def test_a_mapping_means_equality_and_one_string_is_refused() -> None:
    assert [str(m) for m in parse_matchers({"site": "lon1"})] == ['site="lon1"']
    with pytest.raises(MatcherError, match="list of strings"):
        parse_matchers("site=lon1")
    assert parse_matchers(None) == []


def test_the_whole_expression_is_one_group() -> None:
    # Wrapped in (?:...) the old engine read this as (?:a)|(b): two halves of nothing.
    assert "not a regular expression" in refused('x=~"a)|(b"')
    assert one('x=~"a|b"').matches({"x": "b"})


# -- linear time -------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", CATASTROPHIC)
@pytest.mark.parametrize("name", sorted(LONG_LABELS))
def test_patterns_that_backtrack_forever_elsewhere_take_no_time_here(
    pattern: str, name: str
) -> None:
    positive, negative = one(f'{name}=~"{pattern}"'), one(f'{name}!~"{pattern}"')
    with finishes_within(1.0):
        for _ in range(100):
            assert not positive.matches(LONG_LABELS)
            assert negative.matches(LONG_LABELS)


def test_the_largest_allowed_work_on_the_longest_value_is_bounded() -> None:
    # Near the program bound, on a value at the length bound: each character wakes every
    # instruction (RE2 gives up its DFA for this one and runs the NFA).
    worst = one(f'x=~"(a*){{{MAX_PROGRAM // 2 - 2}}}b"')
    assert worst.program_size <= MAX_PROGRAM
    with finishes_within(1.0):
        assert not worst.matches({"x": "a" * MAX_VALUE})


def test_a_value_past_the_length_bound_matches_no_regular_expression() -> None:
    long = {"x": "a" * (MAX_VALUE + 1)}
    assert one('x=~"a*"').matches({"x": "a" * MAX_VALUE})
    assert not one('x=~"a*"').matches(long)
    assert one('x!~"a*"').matches(long)
    assert one(f'x="{"a" * (MAX_VALUE + 1)}"').matches(long)  # equality has no bound
    # The bound is on UTF-8 bytes, which RE2 steps through: four to a character here.
    assert one('x=~".*"').matches({"x": "\U0001f600" * (MAX_VALUE // 4)})
    assert not one('x=~".*"').matches({"x": "\U0001f600" * (MAX_VALUE // 4 + 1)})


def test_values_python_cannot_encode_are_not_an_error() -> None:
    assert not one('x=~"a"').matches({"x": "\ud800"})
    assert one('x=~".*"').matches({"x": "a\ud800"}) in (True, False)
    assert "not a regular expression" in refused('x=~"\ud800"')


# -- what is refused ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        ("(?=device-reb)(.*.*)*X", "lookahead"),
        ("(?!a)b", "lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "lookbehind"),
        ("(a)\\\\1", "backreference"),
        ("(?P<n>a)(?P=n)", "backreference"),
        ("(?>a+)b", "atomic group"),
        ("a++b", "possessive"),
        ("(a)?(?(1)b|c)", "conditional"),
    ],
)
def test_what_re2_cannot_run_in_linear_time_is_refused_by_name(pattern: str, what: str) -> None:
    message = refused(f'rule=~"{pattern}"')
    assert message.startswith('rule=~"'), message  # names the matcher
    assert what in message
    assert "not supported" in message
    assert "RE2" in message


def test_a_pattern_past_the_length_bound_is_refused() -> None:
    assert one(f'x=~"{"a" * MAX_PATTERN}"').matches({"x": "a" * MAX_PATTERN})
    message = refused(f'x=~"{"a" * (MAX_PATTERN + 1)}"')
    assert f"{MAX_PATTERN + 1:,} characters" in message
    assert f"{MAX_PATTERN:,}" in message
    assert message.startswith('x=~"aaaa')
    assert len(message) < 300  # the matcher is named, not copied out in full


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(a{1000}){1000}", "repetition"),  # a million instructions, were it compiled
        ("(a{100}){100}", "repetition"),
        ("a{1001}", "repetition"),
        (".{1000}", "too complex"),  # 8,000 instructions: each . spells UTF-8 out
        (r"\\p{L}{20}", "too complex"),
        ("[^a]{300}", "too complex"),
    ],
)
def test_a_pattern_that_compiles_to_too_much_is_refused(pattern: str, why: str) -> None:
    message = refused(f'x=~"{pattern}"')
    assert message.startswith('x=~"'), message
    assert why in message


def test_the_program_bound_admits_the_longest_literal_and_long_alternations() -> None:
    names = "|".join(f"core-sw-{i:04d}" for i in range(76))
    assert len(names) <= MAX_PATTERN
    m = one(f'device=~"{names}"')
    assert m.matches({"device": "core-sw-0042"})
    assert not m.matches({"device": "core-sw-0099"})
    assert one(f'x=~"{"a" * MAX_PATTERN}"').program_size <= MAX_PROGRAM


def test_one_lists_regular_expressions_share_one_budget() -> None:
    longest = f'x=~"{"a" * MAX_PATTERN}"'
    parse_matchers([longest, 'y=~"a|b"'])
    message = refused_list([longest, longest.replace("x=", "y=")])
    assert message.startswith('y=~"aaa')
    assert f"{MAX_PROGRAM:,}" in message
    assert "together" in message


def refused_list(texts: list[str]) -> str:
    with pytest.raises(MatcherError) as caught:
        parse_matchers(texts)
    return str(caught.value)


def test_at_most_so_many_matchers_in_a_list_or_a_mapping() -> None:
    parse_matchers([f'l{i}="v"' for i in range(MAX_MATCHERS)])
    message = refused_list([f'l{i}="v"' for i in range(MAX_MATCHERS + 1)])
    assert f"at most {MAX_MATCHERS} matchers" in message
    assert f"{MAX_MATCHERS + 1}" in message
    with pytest.raises(MatcherError, match=f"at most {MAX_MATCHERS}"):
        parse_matchers({f"l{i}": "v" for i in range(MAX_MATCHERS + 1)})


def test_an_overlong_matcher_text_is_refused_before_it_is_read() -> None:
    message = refused(f'x="{"a" * 5000}"')
    assert "characters" in message
    assert len(message) < 300


def test_matches_all_is_and() -> None:
    ms = parse_matchers(['site="lon1"', 'device=~"core-.*"'])
    assert matches_all(ms, {"site": "lon1", "device": "core-1"})
    assert not matches_all(ms, {"site": "lon1", "device": "edge-1"})
    assert matches_all([], {})


# -- the rules file ----------------------------------------------------------------------


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        ("['rule=~\"(?=device-reb)(.*.*)*X\"']", "lookahead"),
        ("['device=~\"(core)-\\\\1\"']", "backreference"),
        ("['device=~\"(a{1000}){1000}\"']", "repetition"),
        (f"['device=~\"{'a' * (MAX_PATTERN + 1)}\"']", f"{MAX_PATTERN:,}"),
        ("[" + ", ".join(f"'l{i}=v'" for i in range(MAX_MATCHERS + 1)) + "]", "at most"),
    ],
)
def test_the_rules_file_refuses_such_a_rule_naming_file_rule_and_field(
    tmp_path: Path, matchers: str, expected: str
) -> None:
    path = rules_file(
        tmp_path,
        f"rules:\n  - name: cpu\n    metric: cpu\n    value: 90\n    matchers: {matchers}\n",
    )
    with pytest.raises(RuleError) as caught:
        load_rules_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert "'cpu'" in message
    assert "'matchers'" in message
    assert expected in message


def test_the_rules_file_refuses_such_a_silence(tmp_path: Path) -> None:
    path = rules_file(
        tmp_path,
        "silences:\n  - name: window\n    matchers: ['device=~\"(?<=core)-sw\"']\n"
        "    starts_at: 2026-01-01T00:00:00Z\n    ends_at: 2026-01-02T00:00:00Z\n",
    )
    with pytest.raises(RuleError, match="lookbehind") as caught:
        load_rules_file(path)
    assert "'window'" in str(caught.value)
    assert "'matchers'" in str(caught.value)


def test_the_rules_file_takes_catastrophic_but_linear_patterns(tmp_path: Path) -> None:
    path = rules_file(
        tmp_path,
        "rules:\n  - name: cpu\n    metric: cpu\n    value: 90\n"
        "    matchers: ['device=~\"(.*.*)*X\"']\n",
    )
    (spec,) = load_rules_file(path).rules
    (m,) = parse_matchers(spec.matchers)
    with finishes_within(1.0):
        assert not m.matches({"device": LONG_LABELS["device"]})
