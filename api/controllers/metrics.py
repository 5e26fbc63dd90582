"""/api/v1/metrics: newest values and ranges of the series a selector picks, and
/api/v1/devices/{id}/series: what a device measures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi.spec import Example
from litestar.params import KwargDefinition, QueryParameter

from netmon.api.auth import Principal, requires
from netmon.api.context import Ctx
from netmon.api.last_values import LastValues as LastValueCache
from netmon.api.problems import responses
from netmon.api.schemas.common import (
    Id,
    IdCursorQuery,
    LimitQuery,
    id_cursor,
    next_id_cursor,
    parse_time,
    time_query,
)
from netmon.api.schemas.metrics import (
    LastValues,
    RangeResponse,
    SeriesPage,
    last_values_out,
    range_out,
    series_out,
)
from netmon.durations import parse_duration
from netmon.errors import QueryError
from netmon.store.queries import LastValue, last_values, range_query
from netmon.store.series import SeriesInfo, select_series
from netmon.times import TIME_MIN

__all__ = ["MetricsQueryController", "SeriesController", "lookback_window", "range_window"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"
_METRIC = r"^[A-Za-z_][A-Za-z0-9_.:-]*$"
# key=value; the value is free text (interface names hold spaces and slashes) but never NUL,
# which PostgreSQL text cannot hold.
_LABEL = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}=[^\x00]{0,120}$"
_LABEL_MAX = 100 + 1 + 120
_DURATION = r"^[0-9]{1,9}(ms|s|m|h|d|w)$"
# How many of each repeated selector a request may hold: bounded so that the longest query
# the document allows fits api.max_url_bytes, percent-encoded (tests/test_api_limits.py).
_DEVICES_MAX, _METRICS_MAX, _LABELS_MAX = 50, 20, 10
RAW_SPAN_MAX = timedelta(days=1)  # raw samples without a step: at most a day per request
LOOKBACK_MAX = timedelta(days=7)

# Items of repeated parameters: msgspec checks the Meta, and the KwargDefinition repeats it
# for the OpenAPI document (Litestar reads neither a Meta nor a Parameter of list items for
# both purposes).
DevicesQuery = Annotated[
    list[
        Annotated[
            str,
            msgspec.Meta(max_length=200, pattern=_NAME),
            KwargDefinition(max_length=200, pattern=_NAME),
        ]
    ]
    | None,
    QueryParameter(
        name="device", max_items=_DEVICES_MAX, description="Device name (repeat for several)."
    ),
]
MetricsQuery = Annotated[
    list[
        Annotated[
            str,
            msgspec.Meta(max_length=200, pattern=_METRIC),
            KwargDefinition(max_length=200, pattern=_METRIC),
        ]
    ]
    | None,
    QueryParameter(
        name="metric",
        max_items=_METRICS_MAX,
        description="Metric name, e.g. ifHCInOctets:rate (repeat).",
        examples=[Example(value=["ifHCInOctets:rate"])],
    ),
]
LabelsQuery = Annotated[
    list[
        Annotated[
            str,
            msgspec.Meta(max_length=_LABEL_MAX, pattern=_LABEL),
            KwargDefinition(max_length=_LABEL_MAX, pattern=_LABEL),
        ]
    ]
    | None,
    QueryParameter(
        name="label",
        max_items=_LABELS_MAX,
        description="`key=value` a series' labels must hold, e.g. interface=eth0 (repeat).",
    ),
]


def _labels(items: list[str] | None) -> dict[str, str] | None:
    """The labels a series must hold; None for two values of one key, which no series holds
    (one label has one value), so that the selector matches nothing."""
    labels: dict[str, str] = {}
    for item in items or ():
        key, _, value = item.partition("=")
        if labels.setdefault(key, value) != value:
            return None
    return labels


async def _select(
    conn: Any,
    user: Principal,
    devices: list[str] | None,
    metrics: list[str] | None,
    labels: list[str] | None,
    *,
    limit: int,
    after_id: int = 0,
) -> list[SeriesInfo]:
    if not devices and not metrics:
        raise ValidationException(
            "give at least one device or metric",
            extra=[{"key": "device", "message": "device or metric is required"}],
        )
    wanted = _labels(labels)
    if wanted is None:
        return []
    return await select_series(
        conn,
        limit=limit,
        devices=devices,
        metrics=metrics,
        labels=wanted,
        sites=user.sites,
        after_id=after_id,
    )


async def _select_capped(
    ctx: Ctx,
    conn: Any,
    user: Principal,
    devices: list[str] | None,
    metrics: list[str] | None,
    labels: list[str] | None,
) -> list[SeriesInfo]:
    """For ranges, whose points grow with each series: at most ``api.series_max``."""
    cap = ctx.settings.api.series_max
    found = await _select(conn, user, devices, metrics, labels, limit=cap + 1)
    if len(found) > cap:
        raise ValidationException(
            f"the selector matches more than {cap} series; narrow it with device, metric or label",
            extra=[{"key": "metric", "message": f"more than {cap} series"}],
        )
    return found


class MetricsQueryController(Controller):
    path = "/api/v1/metrics"
    tags = ["metrics"]
    guards = [requires("viewer")]

    @get("/last", summary="Newest value of each selected series", responses=responses())
    async def last(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        device: DevicesQuery = None,
        metric: MetricsQuery = None,
        label: LabelsQuery = None,
        lookback: Annotated[
            str,
            QueryParameter(
                max_length=12,
                pattern=_DURATION,
                description="How far back to look for a value (max 7d).",
            ),
        ] = "1h",
        limit: LimitQuery = 1000,
        cursor: IdCursorQuery = None,
    ) -> LastValues:
        """Series with no sample within `lookback` are left out. A page covers `limit`
        selected series (so it may hold fewer values); `next_cursor` leads to the next,
        whatever the number of series a device has."""
        window = lookback_window(lookback)
        after = id_cursor(cursor) or 0
        user = request.user
        now = datetime.now(UTC)
        held = ctx.hub.last if ctx.hub is not None else None
        cache = held if held is not None and held.usable() else None
        async with held.connection() if held is not None else ctx.db.pool.acquire() as conn:
            page: list[SeriesInfo] | None = None
            more = False
            if cache is not None and device and cache.complete:
                # Which devices exist, and their sites, from the database (exact scope
                # and deletions); what they measure, from memory.
                wanted = _labels(label)
                if wanted is None:
                    return LastValues(items=[], next_cursor=None)
                rows = await conn.fetch(_DEVICE_SITES, device)
                seen = [(r[0], r[1], r[3]) for r in rows if user.sees(r[2])]
                fast = cache.last_page(
                    seen,
                    set(metric) if metric else None,
                    wanted,
                    after,
                    limit,
                    now - window,
                    now,
                )
                if fast is not None:
                    items, go_on = fast
                    return LastValues(
                        items=items,
                        next_cursor=next_id_cursor(go_on) if go_on is not None else None,
                    )
                chosen = _cached_selection(
                    cache,
                    [tuple(r) for r in rows if user.sees(r["site"])],
                    set(metric) if metric else None,
                    wanted,
                    after,
                    limit + 1,
                )
                if chosen is not None:
                    more = len(chosen) > limit
                    page = chosen[:limit]
            if page is None:
                series = await _select(
                    conn, user, device, metric, label, limit=limit + 1, after_id=after
                )
                more = len(series) > limit
                page = series[:limit]
            ids = [s.id for s in page]
            if cache is None:
                values = await last_values(conn, ids, window, now)
            else:
                found, missing = cache.values_of(ids, now - window, now)
                values = [LastValue(sid, t, v) for sid, t, v in found]
                if missing:
                    values += await last_values(conn, missing, window, now)
                    values.sort(key=_series_id)
        return last_values_out(page, values, next_id_cursor(page[-1].id) if more else None)

    @get(
        "/range", summary="Values of each selected series over a time range", responses=responses()
    )
    async def range(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        device: DevicesQuery = None,
        metric: MetricsQuery = None,
        label: LabelsQuery = None,
        start: Annotated[str | None, time_query("default: an hour before end.")] = None,
        end: Annotated[str | None, time_query("default: now.")] = None,
        step: Annotated[
            str | None,
            QueryParameter(
                max_length=12,
                pattern=_DURATION,
                description="Aggregate into steps (60s, 5m, 1h): avg/min/max/last/count "
                "per step. Without it, raw samples (at most a day).",
            ),
        ] = None,
        resolution: Annotated[
            Literal["auto", "raw", "5m", "1h"],
            QueryParameter(description="auto picks raw, 5-minute or 1-hour data by step and age."),
        ] = "auto",
    ) -> RangeResponse:
        now = datetime.now(UTC)
        start_, end_, step_ = range_window(start, end, step, ctx.settings.api.range_max, now)
        chosen = None if resolution == "auto" else resolution
        # Plain SELECTs: the read pool's, taken in turn (api/last_values.py).
        held = ctx.hub.last if ctx.hub is not None else None
        async with held.connection() if held is not None else ctx.db.pool.acquire() as conn:
            series = await _select_capped(ctx, conn, request.user, device, metric, label)
            try:
                results = [
                    await range_query(
                        conn, s.id, start_, end_, step_, ctx.settings.storage, now, chosen
                    )
                    for s in series
                ]
            except QueryError as exc:
                raise ValidationException(
                    str(exc), extra=[{"key": "step", "message": str(exc)}]
                ) from exc
        return range_out(start_, end_, step_, series, results)


# The devices a selector names, their sites, and how many series each has: the series in
# memory are used only if all of them are there (one created a moment ago may not be).
_DEVICE_SITES = """
SELECT d.id, d.name, d.site, (SELECT count(*) FROM series s WHERE s.device_id = d.id) AS n
FROM devices d WHERE d.name = ANY($1::text[])
"""


def _series_id(value: LastValue) -> int:
    return value.series_id


def _cached_selection(
    cache: LastValueCache,
    devices: list[tuple[Any, ...]],
    metrics: set[str] | None,
    labels: dict[str, str],
    after_id: int,
    limit: int,
) -> list[SeriesInfo] | None:
    """The series of ``devices`` (id, name, site, series count) that the selector picks,
    by id, at most ``limit`` after ``after_id``, as ``select_series`` would; None if some
    device's series are not all known in memory."""
    picked: list[SeriesInfo] = []
    for device_id, name, site, count in devices:
        ids = cache.device_series(device_id)
        if ids is None or len(ids) != count:
            return None
        for sid in cache.after(ids, after_id):
            meta = cache.meta(sid)
            if meta is None:
                return None
            if metrics is not None and meta.metric not in metrics:
                continue
            if labels and any(meta.labels.get(k) != v for k, v in labels.items()):
                continue
            picked.append(
                SeriesInfo(
                    sid, device_id, name, site, meta.metric, meta.labels, meta.unit, meta.kind
                )
            )
            if len(devices) == 1 and len(picked) >= limit:
                break
    if len(devices) > 1:
        picked.sort(key=_info_id)
    return picked[:limit]


def _info_id(series: SeriesInfo) -> int:
    return series.id


def lookback_window(lookback: str) -> timedelta:
    return _duration("lookback", lookback, LOOKBACK_MAX)


def range_window(
    start: str | None, end: str | None, step: str | None, range_max: timedelta, now: datetime
) -> tuple[datetime, datetime, timedelta | None]:
    """The range a query asks for, checked against the rules that span its parameters
    (the schemathesis hooks ask the same question of generated requests)."""
    end_ = parse_time("end", end) or now
    start_ = parse_time("start", start) or end_ - min(timedelta(hours=1), end_ - TIME_MIN)
    if end_ <= start_:
        raise ValidationException(
            "end must be after start", extra=[{"key": "end", "message": "before start"}]
        )
    span = end_ - start_
    if span > range_max:
        raise ValidationException(
            f"the range spans {span}; at most {range_max}",
            extra=[{"key": "start", "message": "range too long"}],
        )
    step_ = _duration("step", step, range_max) if step else None
    if step_ is None and span > RAW_SPAN_MAX:
        raise ValidationException(
            "raw samples are served for at most a day per request; give a step",
            extra=[{"key": "step", "message": "required for ranges over a day"}],
        )
    return start_, end_, step_


def _duration(name: str, text: str, most: timedelta) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError:  # the pattern admits it; more days than a timedelta holds
        value = timedelta.max
    if value < timedelta(seconds=1) or value > most:
        raise ValidationException(
            f"{name} must be between 1s and {most}",
            extra=[{"key": name, "message": "out of range"}],
        )
    return value


class SeriesController(Controller):
    path = "/api/v1/devices/{device_id:int}/series"
    tags = ["devices"]
    guards = [requires("viewer")]

    @get("/", summary="The series a device has", responses=responses(404))
    async def series(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        device_id: Id,
        metric: MetricsQuery = None,
        label: LabelsQuery = None,
        limit: LimitQuery = 1000,
        cursor: IdCursorQuery = None,
    ) -> SeriesPage:
        after = id_cursor(cursor) or 0
        async with ctx.db.pool.acquire() as conn:
            site = await conn.fetchrow("SELECT site FROM devices WHERE id = $1", device_id)
            if site is None or not request.user.sees(site["site"]):
                raise NotFoundException(f"device {device_id} not found")
            wanted = _labels(label)
            found = (
                await select_series(
                    conn,
                    limit=limit + 1,
                    device_id=device_id,
                    metrics=metric,
                    labels=wanted,
                    after_id=after,
                )
                if wanted is not None
                else []
            )
        items = [series_out(s) for s in found[:limit]]
        more = len(found) > limit
        return SeriesPage(items=items, next_cursor=next_id_cursor(items[-1].id) if more else None)
