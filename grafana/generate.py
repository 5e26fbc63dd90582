"""Write netmon's Grafana dashboards (grafana/dashboards/*.json) from one description.

Run from the repository: ``python grafana/generate.py`` (``--check`` only compares).
The standard library is all it needs. The dashboards are generated rather than edited
by hand because their time-series queries share one long SQL shape: the choice between
raw samples and the 5-minute or 1-hour rollups, and the raw tail the rollups do not
cover yet, as ``netmon.store.queries.range_query`` makes it. Written once here, every
panel gets the same, and tests/test_grafana.py runs each of them against real data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

# Must match grafana/provisioning/datasources/netmon.yaml.
DATASOURCE: Json = {"type": "grafana-postgresql-datasource", "uid": "netmon-postgres"}

# netmon's default retention (storage.raw_retention, storage.rollup_5m_retention): a
# range that starts earlier than this is answered from the next coarser resolution, as
# the API does. With other settings, change these and regenerate.
RAW_RETENTION = "30 days"
ROLLUP_5M_RETENTION = "180 days"

# The resolution a panel reads, from Grafana's interval (range / max data points) and the
# age of the range's start: steps under 5 minutes from raw samples, under an hour from
# samples_5m, else samples_1h (netmon.store.queries.choose_resolution). Only literals and
# now(): PostgreSQL decides each branch once per query (a one-time filter), never per row.
_RAW = f"$__interval_ms < 300000 AND $__timeFrom() >= now() - interval '{RAW_RETENTION}'"
_FIVE = (
    f"NOT ({_RAW}) AND $__interval_ms < 3600000"
    f" AND $__timeFrom() >= now() - interval '{ROLLUP_5M_RETENTION}'"
)
_HOUR = f"NOT ({_RAW}) AND NOT ({_FIVE})"


def _done(resolution: str) -> str:
    return f"(SELECT done_through FROM rollup_state WHERE resolution = '{resolution}')"


def series_sql(pick: str, final: str) -> str:
    """A time-series query over the series ``pick`` selects.

    ``pick`` selects ``id`` plus what ``final`` needs (``metric``: the legend, ``name``:
    the series' metric, ``labels``) from ``series s JOIN devices d``. ``grouped`` holds
    each series' average per ``$__interval`` step (``time``, ``series_id``, ``value``):
    raw samples, or rollup buckets weighted by their count, then the raw samples after
    the rollups' ``done_through`` (so the recent end has no hole and no sample counts
    twice). ``final`` reads ``grouped`` and ``picked``. Every branch filters on its
    table's partition key with $__timeFilter, so only the range's partitions are read.
    """
    return f"""WITH picked AS (
  {pick.strip()}
),
points AS (
  SELECT x.series_id, x.time AS t, x.value::float8 AS total, 1 AS n
  FROM samples x
  WHERE x.series_id IN (SELECT id FROM picked) AND $__timeFilter(x.time)
    AND x.time >= CASE WHEN {_RAW} THEN '-infinity'::timestamptz
                       WHEN {_FIVE} THEN coalesce({_done("5m")}, '-infinity')
                       ELSE coalesce({_done("1h")}, '-infinity') END
  UNION ALL
  SELECT x.series_id, x.bucket, x.avg * x.count, x.count
  FROM samples_5m x
  WHERE {_FIVE}
    AND x.series_id IN (SELECT id FROM picked) AND $__timeFilter(x.bucket)
    AND x.bucket < {_done("5m")}
  UNION ALL
  SELECT x.series_id, x.bucket, x.avg * x.count, x.count
  FROM samples_1h x
  WHERE {_HOUR}
    AND x.series_id IN (SELECT id FROM picked) AND $__timeFilter(x.bucket)
    AND x.bucket < {_done("1h")}
),
grouped AS (
  SELECT $__timeGroupAlias(t, $__interval), series_id, sum(total) / sum(n) AS value
  FROM points
  GROUP BY 1, 2
)
{final.strip()}"""


def pick(where: str, legend: str = "s.metric") -> str:
    return (
        f"SELECT s.id, {legend} AS metric, s.metric AS name, s.labels\n"
        "  FROM series s JOIN devices d ON d.id = s.device_id\n"
        f"  WHERE {where}"
    )


def combine(aggregate: str = "avg", scale: str = "") -> str:
    """One line per legend: the series under it combined by ``aggregate`` (sum: traffic
    of several interfaces; avg: one series, or a mean)."""
    return (
        f"SELECT g.time, p.metric, {aggregate}(g.value){scale} AS value\n"
        "FROM grouped g JOIN picked p ON p.id = g.series_id\n"
        "GROUP BY 1, 2\n"
        "ORDER BY 1, 2"
    )


def ratio(whole: str, per: str, legend: str, scale: str) -> str:
    """Each series over the ``whole`` series of the same step and ``per`` group (used
    over size, bit/s over speed), times ``scale``. A window, not a self-join: joining
    two CTE scans on time costs steps x steps."""
    return (
        f"SELECT time, metric, {scale} * value / whole AS value\n"
        "FROM (\n"
        f"  SELECT g.time, {legend} AS metric, p.name, g.value,\n"
        f"         max(g.value) FILTER (WHERE p.name = '{whole}') OVER (PARTITION BY {per})"
        " AS whole\n"
        "  FROM grouped g JOIN picked p ON p.id = g.series_id\n"
        ") r\n"
        f"WHERE name <> '{whole}' AND whole > 0\n"
        "ORDER BY 1, 2"
    )


def last_value(where: str, column: str = "value") -> str:
    """The newest raw sample in the range of the one series ``where`` picks."""
    return (
        f'SELECT x.value::float8 AS "{column}"\n'
        "FROM samples x\n"
        "WHERE x.series_id = (\n"
        "  SELECT s.id FROM series s JOIN devices d ON d.id = s.device_id\n"
        f"  WHERE {where}\n"
        ") AND $__timeFilter(x.time)\n"
        "ORDER BY x.time DESC\n"
        "LIMIT 1"
    )


# -- panels ---------------------------------------------------------------------------------


class Layout:
    """Panel ids and grid positions, row by row (Grafana's grid is 24 wide)."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def add(self, panel: Json, w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def _target(sql: str, fmt: str) -> Json:
    return {
        "refId": "A",
        "datasource": DATASOURCE,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql,
    }


def timeseries(title: str, sql: str, unit: str, description: str = "", **custom: Any) -> Json:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [_target(sql, "time_series")],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"fillOpacity": 10, "showPoints": "never", **custom},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title: str, sql: str, unit: str = "none", mappings: list[Json] | None = None) -> Json:
    return {
        "type": "stat",
        "title": title,
        "datasource": DATASOURCE,
        "targets": [_target(sql, "table")],
        "fieldConfig": {
            "defaults": {"unit": unit, "mappings": mappings or []},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value_and_name",
        },
    }


def table(title: str, sql: str, overrides: list[Json] | None = None) -> Json:
    return {
        "type": "table",
        "title": title,
        "datasource": DATASOURCE,
        "targets": [_target(sql, "table")],
        "fieldConfig": {"defaults": {}, "overrides": overrides or []},
        "options": {"showHeader": True, "cellHeight": "sm"},
    }


def device_link(field: str = "device") -> Json:
    """A table's device column links to the device dashboard."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [
            {
                "id": "links",
                "value": [
                    {
                        "title": "device dashboard",
                        "url": "/d/netmon-device/netmon-device"
                        "?var-device=${__value.raw}&${__url_time_range}",
                    }
                ],
            }
        ],
    }


def _text_map(values: dict[str, tuple[str, str]]) -> list[Json]:
    return [
        {
            "type": "value",
            "options": {k: {"text": text, "color": color} for k, (text, color) in values.items()},
        }
    ]


IF_STATUS = _text_map(
    {
        "1": ("up", "green"),
        "2": ("down", "red"),
        "3": ("testing", "yellow"),
        "4": ("unknown", "orange"),
        "5": ("dormant", "blue"),
        "6": ("not present", "orange"),
        "7": ("lower layer down", "red"),
    }
)

DEVICE_VARIABLE: Json = {
    "name": "device",
    "label": "Device",
    "type": "query",
    "datasource": DATASOURCE,
    "query": "SELECT name FROM devices WHERE lifecycle <> 'retired' ORDER BY name",
    "refresh": 1,
    "sort": 0,
    "multi": False,
    "includeAll": False,
    "current": {},
    "options": [],
}

INTERFACE_VARIABLE: Json = {
    "name": "interface",
    "label": "Interface",
    "type": "query",
    "datasource": DATASOURCE,
    "query": (
        "SELECT DISTINCT s.labels->>'interface' FROM series s\n"
        "JOIN devices d ON d.id = s.device_id\n"
        "WHERE d.name = '$device' AND s.metric = 'ifOperStatus'\n"
        "ORDER BY 1"
    ),
    "refresh": 1,
    "sort": 0,
    "multi": False,
    "includeAll": False,
    "current": {},
    "options": [],
}


def dashboard(uid: str, title: str, layout: Layout, variables: list[Json], time: str) -> Json:
    return {
        "uid": uid,
        "title": title,
        "tags": ["netmon"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": time, "to": "now"},
        "links": [
            {
                "type": "dashboards",
                "tags": ["netmon"],
                "asDropdown": True,
                "title": "netmon",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": layout.panels,
    }


# -- the dashboards -------------------------------------------------------------------------

_POLLED = "d.lifecycle IN ('active', 'muted')"

_SEVERITIES = "unnest(ARRAY['critical', 'major', 'minor', 'warning', 'info'])"


def overview() -> Json:
    g = Layout()
    g.add(
        stat(
            "Devices",
            'SELECT count(*) FILTER (WHERE h.reachable AND h.consecutive_failures = 0) AS "up",\n'
            "       count(*) FILTER (WHERE h.reachable AND h.consecutive_failures > 0)"
            ' AS "polls failing",\n'
            '       count(*) FILTER (WHERE NOT h.reachable) AS "down (unreachable)",\n'
            '       count(*) FILTER (WHERE h.reachable IS NULL) AS "not polled yet"\n'
            "FROM devices d LEFT JOIN poll_health h ON h.device_id = d.id\n"
            f"WHERE {_POLLED}",
        ),
        w=12,
        h=5,
    )
    g.add(
        stat(
            "Firing alerts by severity",
            "SELECT sev.severity AS metric, count(a.id) AS value\n"
            f"FROM {_SEVERITIES} WITH ORDINALITY AS sev(severity, rank)\n"
            "LEFT JOIN alerts a ON a.severity = sev.severity AND a.state = 'firing'\n"
            "GROUP BY sev.severity, sev.rank\n"
            "ORDER BY sev.rank",
        )
        | {"options": _rows_as_stats()},
        w=12,
        h=5,
    )
    g.add(
        table(
            "Devices by site and role",
            "SELECT coalesce(d.site, '(no site)') AS site, coalesce(d.role, '(no role)') AS role,\n"
            "       count(*) FILTER (WHERE h.reachable AND h.consecutive_failures = 0) AS up,\n"
            "       count(*) FILTER (WHERE h.reachable AND h.consecutive_failures > 0)"
            ' AS "polls failing",\n'
            '       count(*) FILTER (WHERE NOT h.reachable) AS "down (unreachable)",\n'
            '       count(*) FILTER (WHERE h.reachable IS NULL) AS "not polled yet",\n'
            "       count(*) AS devices\n"
            "FROM devices d LEFT JOIN poll_health h ON h.device_id = d.id\n"
            f"WHERE {_POLLED}\n"
            "GROUP BY 1, 2\n"
            "ORDER BY 1, 2",
        ),
        w=12,
        h=8,
    )
    g.add(
        timeseries(
            "Devices answering, by site",
            series_sql(
                pick("s.metric = 'up' AND s.labels = '{}'", "coalesce(d.site, '(no site)')"),
                combine("sum"),
            ),
            "none",
            "The sum over devices of their `up` samples (1: answered the poll): per step, "
            "how many devices answered.",
        ),
        w=12,
        h=8,
    )
    g.add(
        table(
            "Poll health (failing first)",
            "SELECT d.name AS device, d.site, h.reachable, h.consecutive_failures"
            ' AS "failures in a row",\n'
            '       h.last_poll AS "last poll", h.last_success AS "last success",\n'
            '       h.duration_ms AS "duration ms", h.overruns,\n'
            '       h.last_error_class AS "error class", h.last_error AS "last error"\n'
            "FROM devices d JOIN poll_health h ON h.device_id = d.id\n"
            f"WHERE {_POLLED}\n"
            "ORDER BY h.reachable, h.consecutive_failures DESC, d.name\n"
            "LIMIT 500",
            [device_link()],
        ),
        w=24,
        h=10,
    )
    return dashboard("netmon-overview", "netmon / Overview", g, [], "now-6h")


def _rows_as_stats() -> Json:
    # One stat per row of a (metric, value) table.
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "/^value$/", "values": True},
        "colorMode": "value",
        "graphMode": "none",
        "textMode": "value_and_name",
    }


_DEVICE = "d.name = '$device'"


def device() -> Json:
    g = Layout()
    g.add(
        stat(
            "Status",
            "SELECT CASE WHEN h.reachable THEN 1 WHEN NOT h.reachable THEN 0 END AS status\n"
            "FROM devices d LEFT JOIN poll_health h ON h.device_id = d.id\n"
            f"WHERE {_DEVICE}",
            mappings=_text_map({"1": ("up", "green"), "0": ("down", "red")}),
        ),
        w=6,
        h=4,
    )
    g.add(
        stat("Uptime", last_value(f"{_DEVICE} AND s.metric = 'sysUpTime'", "uptime"), "s"),
        w=6,
        h=4,
    )
    g.add(
        stat(
            "Last poll",
            'SELECT h.duration_ms AS "duration",\n'
            '       h.consecutive_failures AS "failures in a row"\n'
            "FROM devices d JOIN poll_health h ON h.device_id = d.id\n"
            f"WHERE {_DEVICE}",
        ),
        w=12,
        h=4,
    )
    g.add(
        timeseries(
            "Traffic",
            series_sql(
                pick(
                    f"{_DEVICE} AND s.metric IN ('ifHCInOctets:rate', 'ifHCOutOctets:rate')",
                    "(s.labels->>'interface') || CASE s.metric WHEN 'ifHCInOctets:rate'"
                    " THEN ' in' ELSE ' out' END",
                ),
                combine("sum", " * 8"),
            ),
            "bps",
            "Per interface, from the 64-bit octet counters' rates.",
        ),
        w=24,
        h=9,
    )
    g.add(
        timeseries(
            "Errors and discards (all interfaces)",
            series_sql(
                pick(
                    f"{_DEVICE} AND s.metric IN ('ifInErrors:rate', 'ifOutErrors:rate',"
                    " 'ifInDiscards:rate', 'ifOutDiscards:rate')",
                    "replace(replace(s.metric, ':rate', ''), 'if', '')",
                ),
                combine("sum"),
            ),
            "pps",
        ),
        w=12,
        h=8,
    )
    g.add(
        timeseries(
            "CPU",
            series_sql(
                pick(
                    f"{_DEVICE} AND s.metric = 'hrProcessorLoad'",
                    "'cpu ' || (s.labels->>'cpu')",
                ),
                combine(),
            ),
            "percent",
        ),
        w=12,
        h=8,
    )
    g.add(
        timeseries(
            "Memory and storage used",
            series_sql(
                pick(f"{_DEVICE} AND s.metric IN ('hrStorageUsed', 'hrStorageSize')"),
                ratio("hrStorageSize", "g.time, p.labels", "p.labels->>'storage'", "100"),
            ),
            "percent",
            "HOST-RESOURCES-MIB storage areas (physical memory, flash, disks): used over size.",
        ),
        w=12,
        h=8,
    )
    g.add(
        timeseries(
            "Poll health",
            series_sql(
                pick(
                    f"{_DEVICE} AND s.metric IN ('up', 'poll_success') AND s.labels = '{{}}'",
                    "CASE s.metric WHEN 'up' THEN 'answered' ELSE 'polled without error' END",
                ),
                combine("avg", " * 100"),
            ),
            "percent",
            "Share of polls per step the device answered, and that ended without an error.",
        ),
        w=12,
        h=8,
    )
    g.add(
        table(
            "Poll state",
            'SELECT h.last_poll AS "last poll", h.last_success AS "last success",\n'
            '       h.reachable, h.duration_ms AS "duration ms",\n'
            '       h.consecutive_failures AS "failures in a row", h.overruns,\n'
            '       h.last_error_class AS "error class", h.last_error AS "last error",\n'
            '       h.last_error_at AS "last error at"\n'
            "FROM devices d JOIN poll_health h ON h.device_id = d.id\n"
            f"WHERE {_DEVICE}",
        ),
        w=12,
        h=5,
    )
    g.add(
        table(
            "Events",
            "SELECT e.time, e.severity, e.kind, e.message\n"
            "FROM device_events e JOIN devices d ON d.id = e.device_id\n"
            f"WHERE {_DEVICE} AND $__timeFilter(e.time)\n"
            "ORDER BY e.time DESC\n"
            "LIMIT 500",
        ),
        w=12,
        h=5,
    )
    return dashboard("netmon-device", "netmon / Device", g, [DEVICE_VARIABLE], "now-6h")


_INTERFACE = f"{_DEVICE} AND s.labels = jsonb_build_object('interface', '$interface')"


def interface() -> Json:
    g = Layout()
    for title, metric in (("Oper status", "ifOperStatus"), ("Admin status", "ifAdminStatus")):
        g.add(
            stat(
                title,
                last_value(f"{_INTERFACE} AND s.metric = '{metric}'", "status"),
                mappings=IF_STATUS,
            ),
            w=6,
            h=4,
        )
    speed = last_value(f"{_INTERFACE} AND s.metric = 'ifSpeed'", "speed")
    g.add(stat("Speed", speed, "bps"), w=12, h=4)
    direction = (
        "CASE WHEN s.metric LIKE 'ifIn%' OR s.metric LIKE 'ifHCIn%' THEN 'in' ELSE 'out' END"
    )
    g.add(
        timeseries(
            "Traffic",
            series_sql(
                pick(
                    f"{_INTERFACE} AND s.metric IN ('ifHCInOctets:rate', 'ifHCOutOctets:rate')",
                    direction,
                ),
                combine("avg", " * 8"),
            ),
            "bps",
        ),
        w=12,
        h=8,
    )
    g.add(
        timeseries(
            "Utilisation",
            series_sql(
                pick(
                    f"{_INTERFACE} AND s.metric IN"
                    " ('ifHCInOctets:rate', 'ifHCOutOctets:rate', 'ifSpeed')",
                    direction,
                ),
                ratio("ifSpeed", "g.time", "p.metric", "800"),
            ),
            "percent",
            "Bits per second over the interface's speed (ifHighSpeed, else ifSpeed), "
            "as the built-in utilisation alert rules compute it.",
        ),
        w=12,
        h=8,
    )
    for title, metrics in (
        ("Errors", "('ifInErrors:rate', 'ifOutErrors:rate')"),
        ("Discards", "('ifInDiscards:rate', 'ifOutDiscards:rate')"),
    ):
        g.add(
            timeseries(
                title,
                series_sql(pick(f"{_INTERFACE} AND s.metric IN {metrics}", direction), combine()),
                "pps",
            ),
            w=12,
            h=8,
        )
    return dashboard(
        "netmon-interface",
        "netmon / Interface",
        g,
        [DEVICE_VARIABLE, INTERFACE_VARIABLE],
        "now-6h",
    )


def alerts() -> Json:
    g = Layout()
    g.add(
        stat(
            "Firing by severity",
            "SELECT sev.severity AS metric, count(a.id) AS value\n"
            f"FROM {_SEVERITIES} WITH ORDINALITY AS sev(severity, rank)\n"
            "LEFT JOIN alerts a ON a.severity = sev.severity AND a.state = 'firing'\n"
            "GROUP BY sev.severity, sev.rank\n"
            "ORDER BY sev.rank",
        )
        | {"options": _rows_as_stats()},
        w=8,
        h=6,
    )
    g.add(
        timeseries(
            "Firing over time",
            # One point per step: the alerts that fired (or stayed acknowledged) at some
            # moment of it, so one that started a second ago shows at once.
            "SELECT $__time(step.t), a.severity AS metric, count(*) AS value\n"
            "FROM generate_series(\n"
            "  date_bin('$__interval'::interval, $__timeFrom()::timestamptz, 'epoch'),\n"
            "  $__timeTo()::timestamptz, '$__interval'::interval) AS step(t)\n"
            "JOIN alerts a ON a.started_at < step.t + '$__interval'::interval\n"
            "  AND (a.resolved_at IS NULL OR a.resolved_at >= step.t)\n"
            "WHERE a.started_at <= $__timeTo()\n"
            "  AND (a.resolved_at IS NULL OR a.resolved_at >= $__timeFrom())\n"
            "GROUP BY 1, 2\n"
            "ORDER BY 1, 2",
            "none",
            drawStyle="bars",
            stacking={"mode": "normal"},
        ),
        w=16,
        h=6,
    )
    g.add(
        table(
            "Open alerts",
            "SELECT a.started_at AS since, a.severity, a.state, a.rule, a.device,\n"
            "       a.labels::text AS labels, a.value, a.summary, a.acknowledged_by"
            ' AS "acknowledged by",\n'
            "       cardinality(a.silenced_by) > 0 AS silenced\n"
            "FROM alerts a\n"
            "WHERE a.state <> 'resolved'\n"
            "ORDER BY array_position(ARRAY['critical', 'major', 'minor', 'warning', 'info'],"
            " a.severity),\n"
            "         a.started_at DESC NULLS LAST\n"
            "LIMIT 500",
            [device_link()],
        ),
        w=24,
        h=8,
    )
    g.add(
        table(
            "History",
            "SELECT h.time, a.severity, h.event, a.rule, a.device, h.actor, h.value, h.detail\n"
            "FROM alert_history h JOIN alerts a ON a.id = h.alert_id\n"
            "WHERE $__timeFilter(h.time)\n"
            "ORDER BY h.time DESC, h.id DESC\n"
            "LIMIT 1000",
            [device_link()],
        ),
        w=12,
        h=10,
    )
    g.add(
        table(
            "Device events",
            "SELECT e.time, d.name AS device, e.severity, e.kind, e.message\n"
            "FROM device_events e JOIN devices d ON d.id = e.device_id\n"
            "WHERE $__timeFilter(e.time)\n"
            "ORDER BY e.time DESC, e.id DESC\n"
            "LIMIT 1000",
            [device_link()],
        ),
        w=12,
        h=10,
    )
    return dashboard("netmon-alerts", "netmon / Alerts", g, [], "now-24h")


DASHBOARDS = {"overview": overview, "device": device, "interface": interface, "alerts": alerts}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args()
    stale = []
    for name in DASHBOARDS:
        path = OUT / f"{name}.json"
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run python grafana/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
