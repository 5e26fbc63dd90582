"""The `netmon` command, run as a user runs it: a subprocess with real databases."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

NETMON = [sys.executable, "-m", "netmon"]
MIGRATION_FILES = sorted(
    (Path(__file__).parent.parent / "migrations" / "piccolo_migrations").glob("netmon_*.py")
)


def netmon(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout=120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*NETMON, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def test_help_teaches_with_examples():
    out = netmon("--help")
    assert out.returncode == 0
    assert "Examples" in out.stdout
    assert "netmon run" in out.stdout
    db_help = netmon("db", "--help")
    assert "upgrade" in db_help.stdout
    assert "maintain" in db_help.stdout


def test_version():
    out = netmon("version")
    assert out.returncode == 0
    assert out.stdout.startswith("netmon ")


def test_bad_config_exits_2_naming_file_and_key(tmp_path):
    bad = tmp_path / "netmon.yaml"
    bad.write_text("storage:\n  raw_retention: sometimes\n")
    out = netmon("-c", str(bad), "db", "status")
    assert out.returncode == 2
    assert str(bad) in out.stderr
    assert "storage.raw_retention" in out.stderr
    assert "expected a duration" in out.stderr
    assert "Traceback" not in out.stderr


def test_each_in_process_invocation_reads_its_own_config(tmp_path, restore_logging):
    # Scripts and tests run the app twice in one process; the second must not get the
    # first's settings (a CI run's NetBox test connected to an earlier test's database).
    from typer.testing import CliRunner

    from netmon.cli.main import app

    good = tmp_path / "good.yaml"
    good.write_text(
        "database: {url: 'postgresql://postgres@127.0.0.1:1/good'}\nlog: {level: error}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage:\n  raw_retention: sometimes\n")
    runner = CliRunner()
    first = runner.invoke(app, ["-c", str(good), "db", "status"])
    assert first.exit_code == 3, first.output
    second = runner.invoke(app, ["-c", str(bad), "db", "status"])
    assert second.exit_code == 2, second.output
    assert "storage.raw_retention" in second.output


def test_alerts_check_reads_the_example_and_names_the_rule_and_field_of_a_bad_one(tmp_path):
    example = Path(__file__).parent.parent / "rules.example.yaml"
    out = netmon("alerts", "check", str(example))
    assert out.returncode == 0, out.stderr
    assert "6 rule(s), 1 silence(s): ok" in out.stdout
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - {name: hot, metric: cpu, value: 90, for: soon}\n")
    out = netmon("alerts", "check", str(bad))
    assert out.returncode == 2
    assert f"{bad}: rules[0] 'hot': field 'for'" in out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_database_exits_3_promptly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    out = netmon(
        "db", "status", env={"NETMON_DATABASE__URL": f"postgresql://postgres@127.0.0.1:{port}/x"}
    )
    assert out.returncode == 3
    assert "database unavailable" in out.stderr
    assert time.monotonic() - started < 30


async def test_upgrade_status_maintain_on_a_fresh_database(pg_server, tmp_path):
    url = await pg_server.create_database()
    env = {"NETMON_DATABASE__URL": url, "NETMON_DATA_DIR": str(tmp_path)}
    try:
        before = netmon("db", "status", "--json", env=env)
        assert before.returncode == 1
        assert json.loads(before.stdout)["current"] is False

        first = netmon("db", "upgrade", env=env)
        assert first.returncode == 0, first.stderr
        assert f"applied {len(MIGRATION_FILES)} migration" in first.stdout
        again = netmon("db", "upgrade", env=env)
        assert again.returncode == 0
        assert "schema is current" in again.stdout

        status = netmon("db", "status", "--json", env=env)
        assert status.returncode == 0
        assert json.loads(status.stdout)["current"] is True

        maintained = netmon("db", "maintain", env=env)
        assert maintained.returncode == 0, maintained.stderr
        assert "partitions created: " in maintained.stdout
    finally:
        await pg_server.drop_database(url)


async def test_newer_schema_is_refused(pg_server, tmp_path, database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO migration (name, app_name, ran_on) "
            "VALUES ('2099-01-01T00:00:00:000000', 'netmon', now())"
        )
    finally:
        await conn.close()
    env = {"NETMON_DATABASE__URL": database_url, "NETMON_DATA_DIR": str(tmp_path)}
    out = netmon("db", "upgrade", env=env)
    assert out.returncode == 4
    assert "newer netmon" in out.stderr
    assert "2099-01-01T00:00:00:000000" in out.stderr


def _wait_for(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """Lines read from the child's stderr up to the one holding ``needle``."""
    deadline = time.monotonic() + timeout
    seen = []
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    history: list[str] = proc.__dict__.setdefault("history", [])
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line:
            seen.append(line)
            history.append(line)
            if needle in line:
                return "".join(seen)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    raise AssertionError(f"{needle!r} not seen; stderr so far:\n{''.join(seen)}")


def _logged(proc: subprocess.Popen[str], needle: str) -> dict[str, Any]:
    """The JSON log line holding ``needle`` that the child wrote (waiting for it if not yet)."""
    for line in proc.__dict__.get("history", []):
        if needle in line:
            return dict(json.loads(line))
    return dict(json.loads(_wait_for(proc, needle, timeout=30).splitlines()[-1]))


@contextlib.contextmanager
def netmon_run(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """`netmon run` as a child; killed on the way out if the test did not stop it. Its API
    listens on a free port (the log line "api listening" says which)."""
    env = {"NETMON_API__PORT": "0", **env}
    proc = subprocess.Popen(
        [*NETMON, "run", *args], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_run_with_embedded_database_starts_and_stops_cleanly(tmp_path):
    env = {**os.environ, "NETMON_DATA_DIR": str(tmp_path / "data"), "NETMON_LOG__FORMAT": "json"}
    env.pop("NETMON_DATABASE__URL", None)
    with netmon_run(env) as proc:
        log = _wait_for(proc, "netmon running", timeout=90)
        assert "embedded database started" in log
        pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
        assert pid_file.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not pid_file.exists(), "embedded PostgreSQL still running after netmon stopped"
    # The data stays: a second run finds the schema current and starts again.
    with netmon_run(env) as proc:
        log = _wait_for(proc, "netmon running", timeout=90)
        assert "migration applied" not in log
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0


@pytest.mark.slow
def test_run_waits_for_an_external_database_and_stops_on_request(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "NETMON_DATA_DIR": str(tmp_path / "data"),
        "NETMON_DATABASE__URL": f"postgresql://postgres@127.0.0.1:{port}/netmon",
        "NETMON_LOG__FORMAT": "json",
    }
    with netmon_run(env) as proc:
        _wait_for(proc, "waiting for the database", timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.slow
def test_embedded_database_stops_after_a_killed_run_is_followed_by_a_clean_one(tmp_path):
    """A netmon killed with SIGKILL leaves the embedded server running (nobody can stop
    it); the next run adopts it, and that run's clean stop shuts it down."""
    env = {**os.environ, "NETMON_DATA_DIR": str(tmp_path / "data"), "NETMON_LOG__FORMAT": "json"}
    env.pop("NETMON_DATABASE__URL", None)
    pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
    with netmon_run(env) as killed:
        _wait_for(killed, "netmon running", timeout=90)
        api_pids = _logged(killed, "api processes started")["pids"]
        killed.kill()
        killed.wait()
    assert pid_file.exists()
    # Its API processes do not outlive it (they would hold the port): they stop once
    # orphaned.
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in api_pids):
        assert time.monotonic() < deadline, "an API process outlived its killed netmon"
        time.sleep(0.2)
    try:
        with netmon_run(env) as proc:
            _wait_for(proc, "netmon running", timeout=90)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    finally:
        outlived = pid_file.exists()
        if outlived:  # stop the server this test started, by its own PID
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
    assert not outlived, "embedded PostgreSQL outlived the clean stop"


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody reaped (a container's init may not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow
def test_run_with_the_lab_polls_it_and_the_lab_takes_commands(tmp_path):
    """The README's main command, small: embedded database, a lab of 3, the poller."""
    env = {
        **os.environ,
        "NETMON_DATA_DIR": str(tmp_path / "data"),
        "NETMON_LOG__FORMAT": "json",
        "NETMON_LAB__BASE_PORT": "0",
    }
    env.pop("NETMON_DATABASE__URL", None)
    with netmon_run(env, "--lab", "--lab-devices", "3") as proc:
        log = _wait_for(proc, "poller started", timeout=90)
        assert "lab started" in log
        # lab-0003's turn comes 1.7 s into each minute; the summary follows within 10 s.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = _wait_for(proc, "poller summary", timeout=15)
            if '"polls": 0' not in line.splitlines()[-1]:
                break
        summary = json.loads(line.splitlines()[-1])
        assert summary["polls"] >= 1
        assert summary["failed"] == 0
        # The API of the same process serves what was polled.
        url = _logged(proc, "api listening")["url"]
        made = netmon("token", "create", "--role", "viewer", "--name", "readme", env=env)
        assert made.returncode == 0, made.stderr
        headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
        devices = httpx.get(f"{url}/api/v1/devices", headers=headers, timeout=10).json()
        assert [d["name"] for d in devices["items"]] == ["lab-0001", "lab-0002", "lab-0003"]
        assert httpx.get(f"{url}/health/ready", timeout=10).json()["status"] == "ready"
        silence = netmon("lab", "silence", "lab-0003", env=env)
        assert silence.returncode == 0, silence.stderr
        status = netmon("lab", "status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["silenced"] == ["lab-0003"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
