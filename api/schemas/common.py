"""Shapes and checks shared by every resource: names, cursors, limits, times."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
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

__all__ = [
    "ID_MAX",
    "Cursor",
    "CursorId",
    "CursorName",
    "CursorQuery",
    "Id",
    "Label",
    "LabelQuery",
    "Limit",
    "LimitQuery",
    "Name",
    "StrictJSONBody",
    "decode_cursor",
    "encode_cursor",
    "parse_time",
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
Cursor = Annotated[str, msgspec.Meta(max_length=400, pattern=r"^[A-Za-z0-9_-]*$")]
# What cursors hold, bounded as the database's columns are (a cursor is the client's input):
# row ids (bigint) and names (text, which cannot hold NUL).
CursorId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
CursorName = Annotated[str, msgspec.Meta(max_length=1000, pattern=r"^[^\x00]*$")]


# The same constraints for query and path parameters (Litestar reads Parameter there).
LimitQuery = Annotated[
    int,
    QueryParameter(
        ge=1, le=1000, description="Items per page (1 to 1000).", examples=[Example(value=100)]
    ),
]
CursorQuery = Annotated[
    str | None,
    QueryParameter(
        max_length=400,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="`next_cursor` of the previous page; omit for the first page.",
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


def encode_cursor(value: object) -> str:
    """An opaque cursor: clients pass it back, they need not read it."""
    raw = msgspec.json.encode(value)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, kind: type[T]) -> T:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationException(
            "cursor: not a cursor this API gave out", extra=[{"key": "cursor", "message": str(exc)}]
        ) from exc


def time_query(description: str) -> ParameterKwarg:
    """A time as a query parameter: RFC 3339 text, read by ``parse_time``. (A ``datetime``
    parameter would also take a bare number, as a Unix time: Litestar converts query values
    leniently.)"""
    return QueryParameter(
        format=OpenAPIFormat.DATE_TIME, max_length=64, description=f"RFC 3339; {description}"
    )


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; within a day of the calendar's ends (0001-01-01, 9999-12-31), where
    the offset would carry it past them, the end itself."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


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
