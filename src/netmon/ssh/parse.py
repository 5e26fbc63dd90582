"""Command output to rows: TextFSM templates from ntc-templates, and what does not parse.

:func:`parse` returns ntc-templates' rows (lower-case field names, string values) or
raises, naming the device and the command:

* :class:`CliCommandError` when the device refused the command (``% Invalid input``,
  ``% Incomplete command``, ``Unknown command``, ...): there is nothing to parse;
* :class:`CliParseError` when there is no template for the platform and command, the
  template fails, or it finds no rows where rows are required.

:func:`integer` and :func:`field` check one field of a row and raise CliParseError too.
Every error keeps a bounded :func:`sample` of the output (the first 500 characters, lines
naming a password or secret blanked) for the operator to see what came back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import textfsm
from ntc_templates.parse import ParsingException, parse_output

from netmon.errors import CliCommandError, CliParseError

__all__ = ["SAMPLE_CHARS", "check_refused", "field", "integer", "parse", "sample"]

SAMPLE_CHARS = 500
Row = dict[str, str]

# What devices print instead of output when they refuse a command (IOS/NX-OS/EOS "%"
# messages, Junos, Linux shells).
_REFUSED = re.compile(
    r"^\s*(?:% ?(?:Invalid input|Incomplete command|Ambiguous command|Unknown command|"
    r"Invalid command|Unrecognized command|Permission denied|Authorization failed)"
    r"|(?:\S+: )?(?:command not found|syntax error|unknown command)"
    r"|(?:-bash|bash|sh): .*(?:not found|No such file))",
    re.IGNORECASE | re.MULTILINE,
)
_REFUSAL_LINES = 3
_SECRET_LINE = re.compile(r"^(.*\b(?:password|secret)\b).*$", re.IGNORECASE | re.MULTILINE)


def sample(output: str, limit: int = SAMPLE_CHARS) -> str:
    """The start of ``output`` for an error report, with password/secret lines cut after
    the keyword (show output should hold none, but a config or a banner might)."""
    head = output[: limit + 200]  # redact first: a cut line could hide its keyword
    redacted = _SECRET_LINE.sub(lambda m: f"{m.group(1)} <redacted>", head)
    return redacted[:limit]


def check_refused(device: str, command: str, output: str) -> None:
    """CliCommandError when ``output`` is the device refusing ``command``."""
    # A refusal is what the device prints first; further down, such words are data (a
    # banner, a description).
    head = "\n".join(output.lstrip().splitlines()[:_REFUSAL_LINES])
    match = _REFUSED.search(head)
    if match is not None:
        message = match.group(0).strip()
        raise CliCommandError(f"{device}: {command!r} refused: {message}", command=command)


def parse(
    device: str, platform: str, command: str, output: str, *, required: bool = True
) -> list[Row]:
    """ntc-templates' rows for ``command``'s ``output`` on ``platform`` (netmiko's
    device type); ``required``: no rows is an error, not an empty table."""
    check_refused(device, command, output)
    try:
        rows = parse_output(platform=platform, command=command, data=output)
    except ParsingException as exc:
        # No template for the platform and command, or the template's Error state.
        reason = str(exc).rsplit(" - ", 1)[-1].strip().splitlines()[0][:200]
        raise CliParseError(
            f"{device}: {command!r} on {platform} did not parse: {reason}",
            command=command,
            sample=sample(output),
        ) from None
    except textfsm.TextFSMError as exc:
        raise CliParseError(
            f"{device}: {command!r} output did not parse: {exc}",
            command=command,
            sample=sample(output),
        ) from None
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise CliParseError(
            f"{device}: {command!r}: the template returned no table",
            command=command,
            sample=sample(output),
        )
    if required and not rows:
        raise CliParseError(
            f"{device}: {command!r} output has none of the rows expected",
            command=command,
            sample=sample(output),
        )
    return [{str(k).lower(): _text(v) for k, v in r.items()} for r in rows]


def _text(value: object) -> str:
    if isinstance(value, list):  # List values (several matches per row)
        return " ".join(str(v) for v in value)
    return str(value)


def field(device: str, command: str, output: str, row: Mapping[str, str], name: str) -> str:
    """A non-empty text field of ``row``."""
    value = row.get(name, "")
    if not value:
        raise CliParseError(
            f"{device}: {command!r}: field {name} is missing",
            command=command,
            sample=sample(output),
        )
    return value


def integer(
    device: str,
    command: str,
    output: str,
    row: Mapping[str, str],
    name: str,
    *,
    optional: bool = False,
) -> int | None:
    """``row[name]`` as a non-negative integer; None for an empty ``optional`` field."""
    value = row.get(name, "").strip()
    if not value and optional:
        return None
    if not value.isdigit():
        raise CliParseError(
            f"{device}: {command!r}: field {name} is {value!r}, not a count",
            command=command,
            sample=sample(output),
        )
    return int(value)
