"""What one label matcher costs to evaluate, at worst and as usual, against the old engine.

    python bench/matchers.py [--quick] [--runs N]

No database: matchers are evaluated in this process, as the API's feed and the engine
evaluate them (``Matcher.matches`` on an alert's labels).

* figures.worst_us: the slowest evaluation found of one list of matchers that
  ``parse_matchers`` accepts, on a value of ``MAX_VALUE`` characters: patterns built to
  fill ``MAX_PROGRAM`` with instructions that all stay alive at once (RE2's DFA gives up
  on them and its NFA steps every one per byte), against values of 'a's, of random 'a'
  and 'b', and of 4-byte characters. notes.worst names the pattern and value.
* figures.typical_us: one matcher of the kind people write (``eth[0-3]``, ``core-.*``,
  an alternation of names) on a short label, per evaluation.
* figures.catastrophic_us: ``device=~"(.*.*)*X"`` on a 12-character device name.
* baseline: the same two last with the engine before RE2 (Python's ``re``, the
  expression wrapped in ``(?:...)``), same run. On an 18-character name the old engine
  takes hours; 12 keeps the run short.
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _contract import environment, parse_args, repeat, stderr

from netmon.alerts.matchers import MAX_PROGRAM, MAX_VALUE, MatcherError, parse_matchers

# Each %d is raised as far as the list still parses.
ADVERSARIAL = [
    "(a*){%d}b",
    "(a?){%d}a{1000}",
    "(a|b)*a(a|b){%d}",
    "(.*.*){%d}X",
    ".*a.{%d}",
    "(.*(a|b).*(a|b)){%d}x",
    "([ab]*a[ab]{10}x?){%d}",
    "([^x]*a[^x]{%d})",
]
TYPICAL = [
    ('interface=~"eth[0-3]"', "eth2"),
    ('device=~"core-.*"', "core-sw-0042"),
    ('severity!~"info|warning"', "critical"),
    ('device=~"' + "|".join(f"core-sw-{i:04d}" for i in range(40)) + '"', "core-sw-0039"),
    ('interface=~"[Tt]e.*0/0/[0-9]+"', "TenGigE0/0/0/12"),
]
CATASTROPHIC = ('device=~"(.*.*)*X"', "device-rebot")


def values() -> dict[str, str]:
    rng = random.Random(7)
    return {
        "a": "a" * MAX_VALUE,
        "ab": "".join(rng.choice("ab") for _ in range(MAX_VALUE)),
        "4-byte": "".join(rng.choice("a\U0001f600") for _ in range(MAX_VALUE)),
    }


def largest(template: str) -> str | None:
    """``template`` with the largest count whose list parses."""
    best, low, high = None, 1, 1000
    while low <= high:
        mid = (low + high) // 2
        text = f'x=~"{template % mid}"'
        try:
            parse_matchers([text])
        except MatcherError:
            high = mid - 1
        else:
            best, low = text, mid + 1
    return best


def timed(fn: Callable[[], object], least: float = 0.05) -> float:
    """Seconds per call: the best of three batches of at least ``least`` s."""
    best = float("inf")
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= least:
                break
        best = min(best, elapsed / n)
    return best


def old_engine(text: str) -> Callable[[str], bool]:
    (matcher,) = parse_matchers([text])  # the text, read as before
    regex = re.compile(f"(?:{matcher.value})")
    return lambda label: regex.fullmatch(label) is not None


async def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    runs = args.runs or (1 if args.quick else 3)
    patterns = [p for p in (largest(t) for t in ADVERSARIAL) if p is not None]
    inputs = values()
    worst_label = {"x": ""}

    async def once(run: int) -> tuple[dict[str, float], dict[str, float]]:
        worst, where = 0.0, ""
        for text in patterns:
            (matcher,) = parse_matchers([text])
            for kind, value in inputs.items():
                worst_label["x"] = value
                spent = timed(lambda m=matcher: m.matches(worst_label), 0.01)
                if spent > worst:
                    worst, where = spent, f"{text} ({matcher.program_size} instructions) on {kind}"
        stderr.print(f"worst: {worst * 1e6:.0f} us for {where}")
        typical = []
        old_typical = []
        for text, label in TYPICAL:
            (matcher,) = parse_matchers([text])
            labels = {matcher.name: label}
            typical.append(timed(lambda m=matcher, la=labels: m.matches(la)))
            old = old_engine(text)
            old_typical.append(timed(lambda o=old, la=label: o(la)))
        (slow,) = parse_matchers([CATASTROPHIC[0]])
        name = CATASTROPHIC[1]
        catastrophic = timed(lambda: slow.matches({"device": name}))
        start = time.perf_counter()
        old_engine(CATASTROPHIC[0])(name)
        old_catastrophic = time.perf_counter() - start
        notes["worst"] = where
        return (
            {
                "worst_us": worst * 1e6,
                "typical_us": sum(typical) / len(typical) * 1e6,
                "catastrophic_us": catastrophic * 1e6,
            },
            {
                "typical_us": sum(old_typical) / len(old_typical) * 1e6,
                "catastrophic_us": old_catastrophic * 1e6,
            },
        )

    notes: dict[str, object] = {
        "max_value": MAX_VALUE,
        "max_program": MAX_PROGRAM,
        "patterns": patterns,
        **environment(),
    }
    await repeat("matchers", runs, once, notes=notes)


if __name__ == "__main__":
    asyncio.run(main())
