"""Shapes and checks shared by every resource: names, cursors, limits, times."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeAlias, TypeVar

import msgspec
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.openapi.spec import Example, OpenAPIFormat
from litestar.params import (
    BodyKwarg,
    KwargDefinition,
    ParameterKwarg,
    PathParameter,
    QueryParameter,
)

from netmon.times import bounded_utc

__all__ = [
    "ID_MAX",
    "Id",
    "IdCursorQuery",
    "Label",
    "LabelQuery",
    "Limit",
    "LimitQuery",
    "Name",
    "NameCursorQuery",
    "StrictJSONBody",
    "TimeCursorQuery",
    "id_cursor",
    "name_cursor",
    "next_id_cursor",
    "next_name_cursor",
    "next_time_cursor",
    "parse_time",
    "time_cursor",
    "time_query",
    "to_utc",
]

T = TypeVar("T")

# Names as inventories spell them: letters, digits and . _ - : / @ (no spaces, no control
# characters), so they can be path segments, label values and file names alike.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"
# msgspec checks the Meta; the KwargDefinition repeats it for the OpenAPI document, as
# Litestar reads Meta only on a Struct's own fields, not on list items (`tags: list[Label]`).
Name = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=200, pattern=NAME_PATTERN, examples=["core-1"]),
    KwargDefinition(min_length=1, max_length=200, pattern=NAME_PATTERN),
]
Label = Name
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]


# The same constraints for query and path parameters (Litestar reads Parameter there).
LimitQuery = Annotated[
    int,
    QueryParameter(
        ge=1, le=1000, description="Items per page (1 to 1000).", examples=[Example(value=100)]
    ),
]
# Cursors: what the previous page's last item was, in a form whose every value the
# pattern admits is a valid place to go on from (a client may send any of them: "0" is
# "before id 0", an empty page, not an error). `next_cursor` gives the one to send.
_NEXT = "`next_cursor` of the previous page; omit for the first page."
IdCursorQuery = Annotated[
    str | None,
    QueryParameter(
        max_length=15, pattern=r"^[0-9]{1,15}$", description=f"{_NEXT} (the last item's id)"
    ),
]
NameCursorQuery = Annotated[
    str | None,
    QueryParameter(
        max_length=400,
        pattern=r"^[A-Za-z0-9_-]+$",
        description=f"{_NEXT} (the last name, base64url)",
    ),
]
TimeCursorQuery = Annotated[
    str | None,
    QueryParameter(
        max_length=33,
        pattern=r"^(-[0-9]{1,16}|[0-9]{1,17})_[0-9]{1,15}$",
        description=f"{_NEXT} (the last item's time, µs since 1970, and id)",
    ),
]
LabelQuery = Annotated[
    str | None, QueryParameter(min_length=1, max_length=200, pattern=NAME_PATTERN)
]
# At most 2**53 - 1: the largest integer every JSON reader holds exactly (I-JSON, RFC 7493).
# 2**63 - 1 was published as 9223372036854776000 (a float), which clients then took to
# allow ids above PostgreSQL's bigint.
ID_MAX = 2**53 - 1
Id = Annotated[
    int, PathParameter(ge=1, le=ID_MAX, description="Numeric id.", examples=[Example(value=1)])
]

# A JSON body of a Struct with forbid_unknown_fields: the document says so too
# (`additionalProperties: false`), which Litestar does not derive from the Struct.
StrictJSONBody: TypeAlias = Annotated[
    T,
    BodyKwarg(media_type=RequestEncodingType.JSON, schema_extra={"additionalProperties": False}),
]


def id_cursor(cursor: str | None) -> int | None:
    return int(cursor) if cursor is not None else None


def next_id_cursor(item_id: int) -> str:
    return str(item_id)


def name_cursor(cursor: str | None) -> str | None:
    """The name a name cursor holds. Any base64url text is one: bytes that are no UTF-8,
    or hold NUL (which no name can), still give a string that sorts somewhere."""
    if cursor is None:
        return None
    usable = cursor[: len(cursor) - 1] if len(cursor) % 4 == 1 else cursor
    raw = base64.urlsafe_b64decode(usable + "=" * (-len(usable) % 4))
    return raw.decode("utf-8", "replace").replace("\x00", "")


def next_name_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What the pattern holds: about 1653 to 5138. Times outside are paged from the nearest end.
_CURSOR_US = (-(10**16) + 1, 10**17 - 1)


def time_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    if cursor is None:
        return None
    micros, _, item_id = cursor.rpartition("_")
    return _EPOCH + timedelta(microseconds=int(micros)), int(item_id)


def next_time_cursor(time: datetime, item_id: int) -> str:
    micros = (time - _EPOCH) // timedelta(microseconds=1)
    low, high = _CURSOR_US
    return f"{min(max(micros, low), high)}_{item_id}"


def time_query(description: str) -> ParameterKwarg:
    """A time as a query parameter: RFC 3339 text, read by ``parse_time``. (A ``datetime``
    parameter would also take a bare number, as a Unix time: Litestar converts query values
    leniently.)"""
    return QueryParameter(
        format=OpenAPIFormat.DATE_TIME, max_length=64, description=f"RFC 3339; {description}"
    )


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC, within netmon's time range (``netmon.times``)."""
    return bounded_utc(value)


def parse_time(name: str, text: str | None) -> datetime | None:
    """The time of a ``time_query`` parameter, in UTC; 400 unless RFC 3339 with an offset."""
    if text is None:
        return None
    try:
        value = msgspec.convert(text, datetime)  # strict: text only, no Unix times
    except msgspec.ValidationError as exc:
        raise ValidationException(
            f"{name}: not an RFC 3339 time (2026-11-27T10:00:00Z)",
            extra=[{"key": name, "message": str(exc)}],
        ) from exc
    if value.tzinfo is None:
        raise ValidationException(
            f"{name} needs a timezone (2026-11-27T10:00:00Z)",
            extra=[{"key": name, "message": "timezone required"}],
        )
    return to_utc(value)
