"""Series, newest values and ranges as the API shows them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

import msgspec
from litestar.params import KwargDefinition

from netmon.store.queries import LastValue, RangePoint, RangeResult
from netmon.store.series import SeriesInfo

__all__ = [
    "LastValues",
    "Point",
    "RangeResponse",
    "SeriesOut",
    "SeriesPage",
    "SeriesRange",
    "SeriesValue",
    "last_values_out",
    "range_out",
    "series_out",
]


# A sample value: an int (counters, exact up to 2**64 - 1) or a float, null for NaN and the
# infinities, which JSON cannot hold. Documented as such: `int | float` was published as
# oneOf [integer, number], which every integer matches twice (so none was valid).
Number = Annotated[
    int | float,
    KwargDefinition(
        schema_extra={
            "oneOf": None,
            "type": ["number", "null"],
            "description": "null for NaN and the infinities",
        }
    ),
]


class SeriesOut(msgspec.Struct, frozen=True):
    id: int
    device: str
    metric: str
    labels: dict[str, str]
    unit: str
    kind: str


class SeriesPage(msgspec.Struct, frozen=True):
    items: list[SeriesOut]
    next_cursor: str | None


class SeriesValue(msgspec.Struct, frozen=True):
    series: SeriesOut
    time: datetime
    value: Number


class LastValues(msgspec.Struct, frozen=True):
    items: list[SeriesValue]
    next_cursor: str | None = None


class Point(msgspec.Struct, frozen=True, array_like=False):
    """One step; for raw samples (no step) min = max = avg = last and count = 1."""

    time: datetime
    avg: Number
    min: Number
    max: Number
    last: Number
    count: int


class SeriesRange(msgspec.Struct, frozen=True):
    series: SeriesOut
    points: list[Point]


class RangeResponse(msgspec.Struct, frozen=True):
    start: datetime
    end: datetime
    step_seconds: float | None
    resolution: Literal["raw", "5m", "1h"]
    items: list[SeriesRange]


def series_out(s: SeriesInfo) -> SeriesOut:
    return SeriesOut(
        id=s.id, device=s.device, metric=s.metric, labels=s.labels, unit=s.unit, kind=s.kind
    )


def last_values_out(
    series: list[SeriesInfo], values: list[LastValue], next_cursor: str | None = None
) -> LastValues:
    by_id = {s.id: s for s in series}
    return LastValues(
        items=[
            SeriesValue(series=series_out(by_id[v.series_id]), time=v.time, value=v.value)
            for v in values
        ],
        next_cursor=next_cursor,
    )


def _point(p: RangePoint) -> Point:
    return Point(p.time, p.avg, p.min, p.max, p.last, p.count)


def range_out(
    start: datetime,
    end: datetime,
    step: timedelta | None,
    series: list[SeriesInfo],
    results: list[RangeResult],
) -> RangeResponse:
    resolution = results[0].resolution if results else "raw"
    return RangeResponse(
        start=start,
        end=end,
        step_seconds=step.total_seconds() if step is not None else None,
        resolution=resolution,
        items=[
            SeriesRange(series=series_out(s), points=[_point(p) for p in r.points])
            for s, r in zip(series, results, strict=True)
        ],
    )
