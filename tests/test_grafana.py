"""The Grafana dashboards in grafana/: their structure, and every query they hold run
against the real schema filled by polling the built-in lab.

Grafana itself is not run here. Its PostgreSQL data source turns a panel's SQL into a
query in three steps, and ``expand`` below does the same for the subset the dashboards
use: the dashboard's variables (a single value, quotes doubled, as Grafana's SQL data
sources insert it), then ``$__interval_ms`` and ``$__interval``, then the macros
``$__time``, ``$__timeFilter``, ``$__timeFrom()``, ``$__timeTo()``, ``$__timeGroup`` and
``$__timeGroupAlias`` with the text Grafana's Go code gives them. Anything else left with
a ``$`` fails the test, so a dashboard cannot use a macro the expander does not know.

The lab is polled for real (SNMP, the poller, the writer, the alert engine with the
built-in rules); a reboot, an interface going down and a device that stops answering
give events and alerts. The newest sample of every series is then copied back over two
days and the real maintenance rolls it up, so the panels' rollup branches have rows.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest
import yaml

from netmon.config import load_settings
from netmon.store.database import Database
from netmon.store.maintenance import maintain
from netmon.store.partitions import ensure_partitions, list_partitions, partitioned_tables
from tests.conftest import PgServer
from tests.poller_helpers import eventually, fast_inventory, poller_settings, running_poller

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = {p.stem: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("dashboards/*.json"))}
PROVISIONED = yaml.safe_load((GRAFANA / "provisioning/datasources/netmon.yaml").read_text())

# -- Grafana's query expansion, the subset the dashboards use ---------------------------------

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")  # Grafana's $name and ${name}
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")  # as the Go data source matches them
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def rfc3339nano(t: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: fractional seconds without trailing zeros."""
    text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def format_interval(interval: timedelta) -> str:
    """gtime.FormatInterval: the largest unit that fits, truncated (integer arithmetic,
    as on Go's durations)."""
    ms = interval // timedelta(milliseconds=1)
    for unit in ("y", "d", "h", "m", "s", "ms"):
        size = int(_UNITS[unit] * 1000)
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def parse_interval(text: str) -> float:
    """gtime.ParseInterval for the units Grafana intervals come in."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", text.strip("'"))
    if match is None:
        raise ValueError(f"error parsing interval {text}")
    return int(match[1]) * _UNITS[match[2]]


def go_float(value: float) -> str:
    """Go's %v of a float64 (strconv 'g', shortest digits, an exponent from 1e6 or below
    1e-4): 300 -> 300, 0.5 -> 0.5, 1e6 -> 1e+06."""
    number = Decimal(repr(value)).normalize()
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    e = len(digits) + exponent - 1
    if e < -4 or e >= 6:
        mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if digits[1:] else "")
        return f"{'-' if sign else ''}{mantissa}e{'+' if e >= 0 else '-'}{abs(e):02d}"
    return format(number, "f")


@dataclass(frozen=True)
class Query:
    start: datetime
    end: datetime
    interval: timedelta
    variables: dict[str, str]


def expand(sql: str, q: Query) -> str:
    builtins = {
        "__interval_ms": str(q.interval // timedelta(milliseconds=1)),
        "__interval": format_interval(q.interval),
    }

    def variable(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        if name in q.variables:
            return q.variables[name].replace("'", "''")
        return builtins.get(name, m[0])  # a macro: the next step's

    sql = _VARIABLE.sub(variable, sql)

    def macro(m: re.Match[str]) -> str:
        name, args = m[1], [a.strip() for a in m[2].split(",")]
        span = f"'{rfc3339nano(q.start)}' AND '{rfc3339nano(q.end)}'"
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN {span}"
        if name == "__timeFrom":
            return f"'{rfc3339nano(q.start)}'"
        if name == "__timeTo":
            return f"'{rfc3339nano(q.end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            step = go_float(parse_interval(args[1]))
            group = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        raise AssertionError(f"unknown macro {name!r}")

    sql = _MACRO.sub(macro, sql)
    assert "$" not in sql, f"left unexpanded: {sql[sql.index('$') :][:40]!r}"
    return sql


def test_the_expander_gives_what_grafana_gives() -> None:
    # Expected texts from Grafana's own macro tests (the PostgreSQL data source).
    q = Query(
        datetime(2018, 4, 12, 18, 0, tzinfo=UTC),
        datetime(2018, 4, 12, 18, 5, tzinfo=UTC),
        timedelta(minutes=1),
        {"device": "o'neil"},
    )
    assert expand("$__timeFilter(time_column)", q) == (
        "time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
    )
    assert expand("$__timeGroup(time_column,'5m')", q) == (
        "floor(extract(epoch from time_column)/300)*300"
    )
    assert expand("$__timeGroupAlias(t, $__interval)", q) == (
        'floor(extract(epoch from t)/60)*60 AS "time"'
    )
    assert expand("$__interval_ms $__time(c) $__timeFrom()", q) == (
        "60000 c AS \"time\" '2018-04-12T18:00:00Z'"
    )
    assert expand("name = '$device' OR name = '${device}'", q) == (
        "name = 'o''neil' OR name = 'o''neil'"
    )
    assert rfc3339nano(datetime(2018, 4, 12, 18, 0, 0, 250000, tzinfo=UTC)).endswith(":00.25Z")
    assert format_interval(timedelta(seconds=90)) == "1m"
    assert format_interval(timedelta(seconds=0.5)) == "500ms"
    assert go_float(0.5) == "0.5"
    assert go_float(1_000_000) == "1e+06"
    assert go_float(86400) == "86400"
    assert go_float(1_500_000) == "1.5e+06"
    with pytest.raises(AssertionError, match="left unexpanded"):
        expand("name = '$undefined'", q)
    with pytest.raises(AssertionError, match="unknown macro"):
        expand("$__unixEpochGroup(t, 5m)", q)


# -- structure --------------------------------------------------------------------------------

_BUILTIN = {"__interval", "__interval_ms"}


def _panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, board in DASHBOARDS.items():
        for panel in board["panels"]:
            yield name, panel


def _used_variables(sql: str) -> set[str]:
    names = {m[1] or m[2] for m in _VARIABLE.finditer(sql)}
    macros = {m[1] for m in _MACRO.finditer(sql)}
    return names - macros - _BUILTIN


def test_the_four_dashboards_exist_and_are_generated_from_the_script() -> None:
    assert set(DASHBOARDS) == {"overview", "device", "interface", "alerts"}
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    generate: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for name in DASHBOARDS:
        text = (GRAFANA / "dashboards" / f"{name}.json").read_text()
        assert text == generate.render(name), f"{name}.json is stale: run grafana/generate.py"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name: str) -> None:
    board = DASHBOARDS[name]
    (source,) = PROVISIONED["datasources"]
    uid = source["uid"]
    assert board["uid"].startswith("netmon-")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    defined: set[str] = set()
    for variable in board["templating"]["list"]:
        assert variable["datasource"] == {"type": source["type"], "uid": uid}
        missing = _used_variables(variable["query"]) - defined
        assert not missing, f"variable {variable['name']} uses {missing} defined after it"
        defined.add(variable["name"])
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": source["type"], "uid": uid}
            assert target["rawQuery"]
            assert target["format"] in ("time_series", "table")
            missing = _used_variables(target["rawSql"]) - defined
            assert not missing, f"{name} / {panel['title']} uses undefined {missing}"


def test_the_provisioning_files_point_at_the_dashboards() -> None:
    (source,) = PROVISIONED["datasources"]
    assert source["type"] == "grafana-postgresql-datasource"
    for key in (source["url"], source["user"], source["jsonData"]["database"]):
        assert re.fullmatch(r"(\$\{NETMON_GRAFANA_\w+\}:?)+", key), key
    assert source["secureJsonData"]["password"] == "${NETMON_GRAFANA_DB_PASSWORD}"
    boards = yaml.safe_load((GRAFANA / "provisioning/dashboards/netmon.yaml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file"
    env = dict(
        line.split("=", 1)
        for line in (GRAFANA / "netmon.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps([PROVISIONED, boards])))
    assert used <= set(env), f"no default in grafana/netmon.env for {used - set(env)}"


# -- the queries against lab data ---------------------------------------------------------------


@dataclass(frozen=True)
class LabData:
    url: str
    now: datetime
    done_5m: datetime
    done_1h: datetime


HISTORY = timedelta(days=2)


@pytest.fixture(scope="module")
def lab_data(
    one_pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabData]:
    """One database for the module, polled from the lab once (about 15 s): the queries
    only read it."""
    from netmon.lab import LAB_SECRETS

    folder = tmp_path_factory.mktemp("grafana")
    url = asyncio.run(one_pg_server.create_database(template=one_pg_server.template))
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in LAB_SECRETS.items():
                patch.setenv(key, value)
            data = asyncio.run(_fill(url, folder))
        yield data
    finally:
        asyncio.run(one_pg_server.drop_database(url))


async def _fill(url: str, folder: Path) -> LabData:
    from netmon.alerts.service import AlertService
    from netmon.lab import Lab

    base = load_settings(
        None, data_dir=folder / "data", database={"url": url, "pool_min": 2, "pool_max": 10}
    )
    settings = poller_settings(base)  # the built-in alert rules: no rules file
    db = Database(settings.database, settings.data_dir)
    await db.start()
    try:
        async with Lab(devices=3, base_port=0, interfaces=4, ssh=False) as lab:
            inventory = fast_inventory(lab, folder / "inventory")
            async with running_poller(settings, db, inventory) as poller:
                alerts = AlertService(db, settings)
                await alerts.start()
                poller.batcher.observe = alerts.observe
                await alerts.reload_devices()
                try:
                    await _break_things(db, lab)
                finally:
                    await alerts.close()
        async with db.pool.acquire() as conn:
            await _history(conn, settings)
        await maintain(db, settings.storage)
        async with db.pool.acquire() as conn:
            marks = dict(await conn.fetch("SELECT resolution, done_through FROM rollup_state"))
            now = await conn.fetchval("SELECT max(time) FROM samples")
    finally:
        await db.stop()
    return LabData(url, now + timedelta(seconds=1), marks["5m"], marks["1h"])


async def _break_things(db: Database, lab: Any) -> None:
    """A reboot, an interface down and a device that stops answering: events and alerts
    (left firing, so the open-alert panels have rows)."""

    async def polled() -> bool:
        count: int = await db.pool.fetchval(
            "SELECT count(*) FROM samples x JOIN series s ON s.id = x.series_id"
            " WHERE s.metric = 'ifHCInOctets:rate'"
        )
        return count >= 3 * 4 * 2  # two rates per device and interface: three polls in

    await eventually(polled, 20, what="rates from every device")
    device = lab.device("lab-0002")
    index = next(n for n, i in enumerate(device.interfaces, 1) if i.admin_up)
    device.set_oper(index, False)
    lab.device("lab-0003").silence(True)
    lab.device("lab-0001").reboot()
    expected = {"interface-down", "device-unreachable", "device-rebooted"}

    async def firing() -> bool:
        rows = await db.pool.fetch("SELECT rule FROM alerts WHERE state = 'firing'")
        return expected <= {r["rule"] for r in rows}

    await eventually(firing, 20, what="the alerts firing")


async def _history(conn: asyncpg.Connection, settings: Any) -> None:
    """Every series' newest sample, copied back: each minute for the last hour, each five
    minutes before that, for two days (real values and series; only the times are made)."""
    newest: datetime = await conn.fetchval("SELECT max(time) FROM samples")
    tables = {t.name: t for t in partitioned_tables(settings.storage)}
    await ensure_partitions(
        conn, tables["samples"], newest - HISTORY, newest, settings.storage.lock_timeout
    )
    await conn.execute(
        """
        INSERT INTO samples (series_id, time, value)
        SELECT l.series_id, l.time - back, l.value
        FROM (SELECT DISTINCT ON (series_id) series_id, time, value FROM samples
              WHERE time > $1::timestamptz - interval '1 hour'
              ORDER BY series_id, time DESC) l
        CROSS JOIN (
            SELECT make_interval(mins => m) FROM generate_series(1, 60) m
            UNION ALL
            SELECT make_interval(mins => m) FROM generate_series(65, $2::int, 5) m
        ) b(back)
        ON CONFLICT DO NOTHING
        """,
        newest,
        int(HISTORY.total_seconds() // 60),
    )


@dataclass(frozen=True)
class Case:
    """A time range and the interval Grafana would give it (a 1 minute minimum, the data
    source's timeInterval), and which resolution the series panels should read."""

    span: timedelta
    interval: timedelta
    rollup: str | None


CASES = {
    "6h": Case(timedelta(hours=6), timedelta(minutes=1), None),
    "2d": Case(timedelta(days=2), timedelta(minutes=5), "5m"),
    "30d": Case(timedelta(days=30), timedelta(hours=1), "1h"),
}

QUERIES = [
    pytest.param(name, panel, case, id=f"{name}-{panel['id']}-{case}")
    for name, panel in _panels()
    for case in CASES
]


async def _variables(conn: asyncpg.Connection, board: dict[str, Any], q: Query) -> Query:
    """Each variable's query run in order; its value is the first option (Grafana's
    default), and later variables' queries see it."""
    for variable in board["templating"]["list"]:
        rows = await conn.fetch(expand(variable["query"], q))
        assert rows, f"variable {variable['name']} has no options"
        value = rows[0][0]
        q = Query(q.start, q.end, q.interval, {**q.variables, variable["name"]: value})
    return q


@pytest.mark.parametrize(("name", "panel", "case"), QUERIES)
async def test_every_panel_query_returns_rows(
    lab_data: LabData, name: str, panel: dict[str, Any], case: str
) -> None:
    c = CASES[case]
    q = Query(lab_data.now - c.span, lab_data.now, c.interval, {})
    conn = await asyncpg.connect(lab_data.url)
    try:
        q = await _variables(conn, DASHBOARDS[name], q)
        for target in panel["targets"]:
            sql = expand(target["rawSql"], q)
            rows = await conn.fetch(sql)
            assert rows, f"{name} / {panel['title']}: no rows over {case}"
            if target["format"] != "time_series":
                continue
            assert "time" in list(rows[0].keys()), f"{panel['title']}: no time column"
            times = [r["time"] for r in rows]
            assert times == sorted(times), f"{panel['title']}: not sorted by time"
            if "samples_5m" in sql and c.rollup is not None:
                # Rows older than the rollups' mark can only have come from the rollups.
                done = lab_data.done_5m if c.rollup == "5m" else lab_data.done_1h
                assert min(times) < done.timestamp(), f"{panel['title']}: rollups not read"
                assert max(times) >= done.timestamp() - c.interval.total_seconds()
            await _assert_pruned(conn, sql, q)
    finally:
        await conn.close()


async def _assert_pruned(conn: asyncpg.Connection, sql: str, q: Query) -> None:
    """The plan reads only partitions that overlap the range: the time filter reaches the
    partition key (without it, every partition of two days and a week ahead is read)."""
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}")
    scanned = set(re.findall(r'"Relation Name": "(samples\w*_p\w+)"', plan))
    bounds = {}
    for table in ("samples", "samples_5m", "samples_1h"):
        bounds.update({p.name: p for p in await list_partitions(conn, table)})
    for name in scanned:
        part = bounds[name]
        assert part.end > q.start, f"reads {name}, before the range"
        assert part.start <= q.end, f"reads {name}, after the range"


async def test_a_wrong_column_fails(lab_data: LabData) -> None:
    """The check above would catch a typo: a panel's SQL with one column misspelt fails."""
    panel = next(p for _, p in _panels() if "samples_5m" in p["targets"][0]["rawSql"])
    sql = panel["targets"][0]["rawSql"].replace("x.bucket", "x.buckett", 1)
    q = Query(lab_data.now - timedelta(hours=1), lab_data.now, timedelta(minutes=1), {})
    conn = await asyncpg.connect(lab_data.url)
    try:
        q = Query(q.start, q.end, q.interval, {"device": "lab-0001", "interface": "eth0"})
        with pytest.raises(asyncpg.UndefinedColumnError):
            await conn.fetch(expand(sql, q))
    finally:
        await conn.close()


async def test_the_read_only_role_runs_every_query_and_reads_no_secret(lab_data: LabData) -> None:
    """grafana/grafana-role.sql grants what every panel and variable reads, and no more."""
    role = f"netmon_grafana_{uuid.uuid4().hex[:8]}"  # roles are per server: one per run
    grants = (GRAFANA / "grafana-role.sql").read_text().replace("netmon_grafana", f'"{role}"')
    q = Query(lab_data.now - timedelta(hours=6), lab_data.now, timedelta(minutes=1), {})
    conn = await asyncpg.connect(lab_data.url)
    try:
        await conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
        try:
            await conn.execute(grants)
            await conn.execute(f'SET ROLE "{role}"')
            ran = 0
            for name, board in DASHBOARDS.items():
                filled = await _variables(conn, board, q)
                for panel in board["panels"]:
                    for target in panel["targets"]:
                        assert await conn.fetch(expand(target["rawSql"], filled)), name
                        ran += 1
            assert ran == sum(len(p["targets"]) for _, p in _panels())
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT secret FROM webhooks")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT hash FROM api_tokens")
            await conn.execute("RESET ROLE")
        finally:
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()
