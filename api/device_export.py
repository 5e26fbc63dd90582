"""Devices' latest samples on ``/metrics`` (``api.metrics_device_samples``): the query,
Prometheus names for netmon's metric and label names, and the Collector that turns the rows
of one scrape into families. ``MetricsExporter`` in ``prometheus.py`` runs the query and
adds the families to its page."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from netmon.api.context import ApiContext
from netmon.store.database import Database

__all__ = [
    "DeviceRow",
    "DeviceSampleCollector",
    "device_lookback",
    "device_metric_name",
    "fetch_device_samples",
]

# A scrape times out after 10 s by default; the device query must end well before.
DEVICE_QUERY_TIMEOUT_S = 8.0
# Only devices' metrics use this prefix, so their families cannot meet netmon's own.
DEVICE_PREFIX = "netmon_device_"

_LATEST = """
SELECT d.name, d.site, d.role, s.metric, s.labels::text AS labels, s.kind, s.unit,
       l.value::float8 AS value
FROM series s
JOIN devices d ON d.id = s.device_id
CROSS JOIN LATERAL (
    SELECT value FROM samples
    WHERE series_id = s.id AND time >= $1 AND time <= $2
    ORDER BY time DESC LIMIT 1
) l
WHERE $3::text[] IS NULL OR d.site = ANY($3::text[])
"""


_labels_decoder = msgspec.json.Decoder(dict[str, Any])

# One row of _LATEST: device, site, role, metric, labels (JSON text), kind, unit, value.
DeviceRow = Sequence[Any]


async def fetch_device_samples(
    db: Database,
    lookback: timedelta,
    sites: frozenset[str] | None = None,
    now: datetime | None = None,
) -> list[DeviceRow]:
    """The newest sample of every series with one within ``lookback``, one query for all:
    an index probe per series on (series_id, time), bounded in time so that only the
    partitions of the lookback are searched. ``sites`` limits it to those sites' devices.
    Rows come back as the driver decoded them: turning them into families is left to
    ``collect()``, which may run in a worker thread."""
    now = now or datetime.now(UTC)
    async with db.pool.acquire(timeout=DEVICE_QUERY_TIMEOUT_S) as conn:
        rows: list[DeviceRow] = await conn.fetch(
            _LATEST,
            now - lookback,
            now,
            sorted(sites) if sites is not None else None,
            timeout=DEVICE_QUERY_TIMEOUT_S,
        )
    return rows


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]+")
# Label names netmon sets itself, and those histograms and summaries reserve.
_RESERVED_LABELS = frozenset({"device", "site", "role", "le", "quantile"})

# Words that promtool's linter (promlint) objects to in a metric name: type names, unit
# abbreviations, units that are not base units. A device metric's name comes from
# whoever wrote its task, so such a word is fused with its neighbour
# (ifCounterDiscontinuityTime -> ifcounter_discontinuity_time, errorCount -> errorcount)
# rather than let a scrape fail `promtool check metrics`.
# fmt: off
_BASE_UNITS = ("amperes", "bytes", "candela", "grams", "celsius", "kelvin", "kelvins", "meters",
               "metres", "moles", "seconds", "joules")
_OTHER_UNITS = ("minutes", "hours", "days", "fahrenheit", "rankine", "inches", "yards", "miles",
                "bits", "calories", "pounds", "ounces")
_UNIT_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo",
                  "kibi", "mega", "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi")
# fmt: on
_LINTED_WORDS = frozenset(
    {"counter", "gauge", "histogram", "summary", "untyped"}
    | {"s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"}
    | {*_OTHER_UNITS}
    | {p + u for p in _UNIT_PREFIXES for u in (*_BASE_UNITS, *_OTHER_UNITS)}
)
# Suffixes of histogram and summary series; "total" is for counters, which get it anyway.
_LINTED_LAST = frozenset({"bucket", "count", "sum", "total"})


def _words(name: str) -> list[str]:
    return [w for w in _NOT_NAME.sub("_", _CAMEL.sub("_", name)).lower().split("_") if w]


def _fuse_linted(words: list[str]) -> list[str]:
    out: list[str] = []
    for i, word in enumerate(words):
        last = i == len(words) - 1
        if word == "total" and last and out:
            continue
        if word in _LINTED_WORDS or (last and word in _LINTED_LAST):
            if out:
                out[-1] += word
                continue
            if not last:
                words[i + 1] = word + words[i + 1]
                continue
            word += "value"  # alone: nothing to fuse with
        out.append(word)
    return out


@lru_cache(maxsize=4096)
def device_metric_name(metric: str) -> str:
    """netmon's metric name as a Prometheus family name: ``ifHCInOctets`` ->
    ``netmon_device_if_hc_in_octets``; a derived rate (``ifHCInOctets:rate``) ->
    ``netmon_device_if_hc_in_octets_per_second`` (colons are for recording rules)."""
    rate = metric.endswith(":rate")
    words = _fuse_linted(_words(metric.removesuffix(":rate"))) or ["unnamed"]
    if rate:
        words += ["per", "second"]
    return DEVICE_PREFIX + "_".join(words)


@lru_cache(maxsize=4096)
def _label_name(name: str) -> str:
    clean = "_".join(_words(name)) or "label"
    if clean[0].isdigit():
        clean = "_" + clean
    return "exported_" + clean if clean in _RESERVED_LABELS else clean


def _help(metric: str, unit: str, counter: bool) -> str:
    in_unit = f" ({unit})" if unit else ""
    if metric.endswith(":rate"):
        return (
            f"Per-second rate of {metric.removesuffix(':rate')}{in_unit} as netmon derived "
            "it at ingest (counter wraps and reboots make no spikes), newest per series."
        )
    if counter:
        return (
            f"{metric}{in_unit}: the device's own counter as last polled, exported as a "
            "counter (use rate(); a reset is a device reboot or a counter wrap)."
        )
    return f"{metric}{in_unit}: the newest value netmon polled from the device."


class DeviceSampleCollector:
    """The rows of one scrape as gauge and counter families, one per metric, labelled
    device, site, role and the series' own labels (interface, cpu, storage, ...).

    Device counters (ifHCInOctets, ...) are exported as counters with their raw value, as
    snmp_exporter does, so PromQL's rate() applies. Names that clash after sanitising
    share the family of the first kind seen; a second series with the very same labels
    is left out (Prometheus would reject the duplicate)."""

    def __init__(self, rows: Sequence[DeviceRow], ok: bool = True) -> None:
        self.rows = rows
        self.ok = ok

    def collect(self) -> Iterable[Metric]:
        families: dict[str, tuple[bool, str, list[tuple[dict[str, str], float]]]] = {}
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        # Series of one interface share their labels: decode each distinct text once.
        decoded: dict[str, dict[str, str]] = {}
        for device, site, role, metric, labels_json, kind, unit, value in self.rows:
            series_labels = decoded.get(labels_json)
            if series_labels is None:
                raw = _labels_decoder.decode(labels_json)
                series_labels = decoded[labels_json] = {
                    _label_name(str(k)): str(v) for k, v in raw.items()
                }
            name = device_metric_name(metric)
            labels = {**series_labels, "device": device, "site": site or "", "role": role or ""}
            identity = (name, tuple(sorted(labels.items())))
            if identity in seen:
                continue
            seen.add(identity)
            family = families.get(name)
            if family is None:
                counter = kind == "counter"
                family = families[name] = (counter, _help(metric, unit, counter), [])
            family[2].append((labels, value))
        for name, (counter, doc, series) in sorted(families.items()):
            names = sorted({k for labels, _ in series for k in labels})
            out: GaugeMetricFamily | CounterMetricFamily
            if counter:
                out = CounterMetricFamily(name, doc, labels=names)
            else:
                out = GaugeMetricFamily(name, doc, labels=names)
            for labels, value in series:
                # An absent label and an empty one are the same series to Prometheus.
                out.add_metric([labels.get(k, "") for k in names], value)
            yield out
        yield GaugeMetricFamily(
            "netmon_exported_device_series",
            "Device series on this page (api.metrics_device_samples): each has a sample "
            "newer than the lookback of three poll intervals (at least 10 minutes).",
            value=len(seen),
        )
        yield GaugeMetricFamily(
            "netmon_exported_device_samples_ok",
            "1 if the device samples could be read from PostgreSQL for this scrape; 0 if "
            "not (database away or query past its timeout): they are missing from it.",
            value=1 if self.ok else 0,
        )


def device_lookback(ctx: ApiContext) -> timedelta:
    """How old the newest sample of a series may be to be exported: a device that stopped
    answering must not go on looking current."""
    interval: timedelta = ctx.settings.poller.interval
    return max(3 * interval, timedelta(minutes=10))
