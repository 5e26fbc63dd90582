"""Devices' latest samples on ``/metrics`` (``api.metrics_device_samples``): the query,
Prometheus names for netmon's metric and label names, and the text that the rows of one
scrape become. ``MetricsExporter`` in ``prometheus.py`` runs the query and adds the text
to its page."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from netmon.api.context import ApiContext
from netmon.store.database import Database

if TYPE_CHECKING:
    from netmon.api.last_values import LastValues

__all__ = [
    "DeviceRow",
    "device_lookback",
    "device_metric_name",
    "device_samples_page",
    "fetch_device_samples",
]

# A scrape times out after 10 s by default; the device query must end well before.
DEVICE_QUERY_TIMEOUT_S = 8.0
# Only devices' metrics use this prefix, so their families cannot meet netmon's own.
DEVICE_PREFIX = "netmon_device_"

# The newest sample of each series in a time window ({start} and {end}: its parameters).
_NEWEST = """
SELECT d.name, d.site, d.role, s.metric, s.labels::text AS labels, s.kind, s.unit,
       l.value::float8 AS value
FROM series s
JOIN devices d ON d.id = s.device_id
CROSS JOIN LATERAL (
    SELECT value FROM samples
    WHERE series_id = s.id AND time >= {start} AND time <= {end}
    ORDER BY time DESC LIMIT 1
) l
"""

_LATEST = _NEWEST.format(start="$1", end="$2") + (
    "WHERE $3::text[] IS NULL OR d.site = ANY($3::text[])\n"
)

# The same rows for some series (those the API's memory of last values cannot answer).
_LATEST_OF = _NEWEST.format(start="$2", end="$3") + (
    "WHERE s.id = ANY($1::bigint[]) OR s.device_id = ANY($4::bigint[])\n"
)

# With how many series each device has: memory that knows fewer (a series created since
# its fill, whose first sample's notification has not come) does not answer for it.
_DEVICES = """
SELECT d.id, d.name, d.site, d.role,
       (SELECT count(*) FROM series s WHERE s.device_id = d.id) AS n
FROM devices d
WHERE $1::text[] IS NULL OR d.site = ANY($1::text[])
ORDER BY d.id
"""

_labels_decoder = msgspec.json.Decoder(dict[str, Any])

# One row of _LATEST: device, site, role, metric, labels (JSON text), kind, unit, value.
DeviceRow = Sequence[Any]


async def fetch_device_samples(
    db: Database,
    lookback: timedelta,
    sites: frozenset[str] | None = None,
    now: datetime | None = None,
    held: LastValues | None = None,
) -> list[DeviceRow]:
    """The newest sample of every series with one within ``lookback``. ``sites`` limits
    it to those sites' devices.

    From ``held`` (the API process's memory of last values) when it can answer: the
    devices and their sites from the database (exact scope), the values from memory, the
    few it does not hold from the database. Otherwise one query for all: an index probe
    per series on (series_id, time), bounded in time so that only the partitions of the
    lookback are searched; at hundreds of thousands of series that takes seconds, which
    memory answers in a fraction. Rows are left for ``device_samples_page`` to turn into
    text, which may run in a worker thread."""
    now = now or datetime.now(UTC)
    if held is not None and held.usable() and held.complete:
        return await _from_memory(held, now - lookback, now, sites)
    async with db.pool.acquire(timeout=DEVICE_QUERY_TIMEOUT_S) as conn:
        rows: list[DeviceRow] = await conn.fetch(
            _LATEST,
            now - lookback,
            now,
            sorted(sites) if sites is not None else None,
            timeout=DEVICE_QUERY_TIMEOUT_S,
        )
    return rows


async def _from_memory(
    held: LastValues, since: datetime, now: datetime, sites: frozenset[str] | None
) -> list[DeviceRow]:
    """The rows of ``_LATEST`` from memory, and from the database what memory does not
    hold: series it has no value for, and devices it does not know every series of."""
    async with held.connection() as conn:
        devices = await conn.fetch(
            _DEVICES, sorted(sites) if sites is not None else None, timeout=DEVICE_QUERY_TIMEOUT_S
        )
        rows: list[DeviceRow] = []
        missing: list[int] = []
        unknown: list[int] = []
        # Series of the same metric and labels share one meta and one labels dict.
        texts: dict[int, str] = {}
        for device_id, name, site, role, count in devices:
            ids = held.device_series(device_id)
            if ids is None or len(ids) != count:
                unknown.append(device_id)
                continue
            found, not_held = held.values_of(ids, since, now)
            missing += not_held
            for sid, _, value in found:
                meta = held.meta(sid)
                if meta is None:
                    missing.append(sid)
                    continue
                text = texts.get(id(meta.labels))
                if text is None:
                    text = texts[id(meta.labels)] = json.dumps(meta.labels, sort_keys=True)
                rows.append((name, site, role, meta.metric, text, meta.kind, meta.unit, value))
        if missing or unknown:
            rows += await conn.fetch(
                _LATEST_OF, missing, since, now, unknown, timeout=DEVICE_QUERY_TIMEOUT_S
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


def _escape(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _value(value: Any) -> str:
    # repr() of a float is what Prometheus reads back exactly; the specials (v - v is
    # NaN for them) are spelled as the text format wants them.
    v = float(value)
    if v - v == 0:
        return repr(v)
    if v != v:
        return "NaN"
    return "+Inf" if v > 0 else "-Inf"


class _Labels(NamedTuple):
    """One distinct label text of a series, once per scrape: its Prometheus form."""

    text: str  # 'interface="Gi1/0/1",' (each pair followed by a comma), or ''
    # The cleaned pairs as a number, one per distinct set in the scrape: duplicates are
    # found by it (a tuple of tuples would be hashed again for every series).
    identity: int


def _labels(labels_json: str, identities: dict[tuple[tuple[str, str], ...], int]) -> _Labels:
    raw = _labels_decoder.decode(labels_json)
    pairs = sorted({_label_name(str(k)): str(v) for k, v in raw.items()}.items())
    kept = tuple((k, v) for k, v in pairs if v)
    identity = identities.setdefault(kept, len(identities))
    return _Labels("".join(f'{k}="{_escape(v)}",' for k, v in kept), identity)


def device_samples_page(rows: Sequence[DeviceRow], ok: bool = True) -> bytes:
    """The rows of one scrape in the text format, a gauge or counter family per metric,
    labelled device, site, role and the series' own labels (interface, cpu, storage, ...).

    Device counters (ifHCInOctets, ...) are exported as counters with their raw value, as
    snmp_exporter does, so PromQL's rate() applies. Names that clash after sanitising
    share the family of the first kind seen; a second series with the very same labels
    is left out (Prometheus would reject the duplicate). An empty label is left out, as
    Prometheus reads an empty label and an absent one alike.

    Written out directly rather than through prometheus_client's metric objects: at
    hundreds of thousands of series a sample object, a label dict and a sort per series
    cost several times the query (bench/prometheus_export.py). What repeats (a label text,
    a device's labels) is escaped once per scrape."""
    families: dict[str, tuple[bool, str, list[str]]] = {}
    seen: set[tuple[str, str, int]] = set()
    labels_of: dict[str, _Labels] = {}
    identities: dict[tuple[tuple[str, str], ...], int] = {}
    devices: dict[tuple[str, str | None, str | None], str] = {}
    for device, site, role, metric, labels_json, kind, unit, value in rows:
        labels = labels_of.get(labels_json)
        if labels is None:
            labels = labels_of[labels_json] = _labels(labels_json, identities)
        name = device_metric_name(metric)
        identity = (name, device, labels.identity)
        if identity in seen:
            continue
        seen.add(identity)
        owner = devices.get((device, site, role))
        if owner is None:
            pairs = (("device", device), ("role", role or ""), ("site", site or ""))
            owner = devices[device, site, role] = ",".join(
                f'{k}="{_escape(v)}"' for k, v in pairs if v
            )
        family = families.get(name)
        if family is None:
            counter = kind == "counter"
            family = families[name] = (counter, _help(metric, unit, counter), [])
        family[2].append(f"{{{labels.text}{owner}}} {_value(value)}\n")
    out: list[str] = []
    for name, (counter, doc, lines) in sorted(families.items()):
        sample = name + "_total" if counter else name
        kind = "counter" if counter else "gauge"
        out.append(f"# HELP {sample} {_escape_help(doc)}\n# TYPE {sample} {kind}\n")
        out.extend(sample + line for line in lines)
    out.append(
        "# HELP netmon_exported_device_series Device series on this page "
        "(api.metrics_device_samples): each has a sample newer than the lookback of three "
        "poll intervals (at least 10 minutes).\n"
        f"# TYPE netmon_exported_device_series gauge\nnetmon_exported_device_series {len(seen)}.0\n"
        "# HELP netmon_exported_device_samples_ok 1 if the device samples could be read from "
        "PostgreSQL for this scrape; 0 if not (database away or query past its timeout): "
        "they are missing from it.\n# TYPE netmon_exported_device_samples_ok gauge\n"
        f"netmon_exported_device_samples_ok {1 if ok else 0}.0\n"
    )
    return "".join(out).encode()


def device_lookback(ctx: ApiContext) -> timedelta:
    """How old the newest sample of a series may be to be exported: a device that stopped
    answering must not go on looking current."""
    interval: timedelta = ctx.settings.poller.interval
    return max(3 * interval, timedelta(minutes=10))
