"""`netmon token` and `netmon api` as a user runs them: subprocesses on a real database."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import httpx
import pytest

from tests.api_helpers import api_database_url
from tests.test_cli import NETMON, netmon

__all__ = ["api_database_url"]


@pytest.fixture
def env(api_database_url: str, tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "NETMON_DATABASE__URL": api_database_url,
        "NETMON_DATA_DIR": str(tmp_path / "data"),
        "NETMON_LOG__FORMAT": "json",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_token_create_list_revoke(env) -> None:
    made = netmon(
        "token", "create", "--role", "operator", "--name", "noc", "--site", "lon1", env=env
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"nmt_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    assert "cannot show it again" in made.stderr
    listed = netmon("token", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "noc" in listed.stdout
    assert "operator" in listed.stdout
    assert "lon1" in listed.stdout
    assert token.split("_")[2] not in listed.stdout
    revoked = netmon("token", "revoke", "1", env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in netmon("token", "list", env=env).stdout
    missing = netmon("token", "revoke", "99", env=env)
    assert missing.returncode == 1
    assert "no token with id 99" in missing.stderr
    again = netmon("token", "revoke", "1", env=env)
    assert again.returncode == 0, again.stderr
    assert "revoked already" in again.stdout


def test_a_token_for_the_end_of_time_is_listed(env) -> None:
    # Taken through the API once, at the calendar's end with a negative offset: the
    # database then held 'infinity', and `token list` crashed comparing times.
    far = netmon(
        "token",
        "create",
        "--role",
        "viewer",
        "--name",
        "far",
        "--expires",
        "9999-12-31T23:59:59-14:00",
        env=env,
    )
    assert far.returncode == 0, far.stderr
    longest = netmon(
        "token", "create", "--role", "viewer", "--name", "long", "--expires", "99999999d", env=env
    )
    assert longest.returncode == 0, longest.stderr
    listed = netmon("token", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "9999-12-30" in listed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "root"], "root"),
        (["--role", "viewer", "--expires", "2001-01-01"], "in the past"),
        (["--role", "viewer", "--expires", "soon"], "--expires"),
    ],
)
def test_token_create_refuses_bad_input(env, args, message) -> None:
    made = netmon("token", "create", *args, env=env)
    assert made.returncode == 2
    assert message in made.stderr
    assert made.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_netmon_api_serves_until_sigterm(env, workers) -> None:
    token = netmon("token", "create", "--role", "viewer", env=env).stdout.strip()
    port = _free_port()
    proc = subprocess.Popen(
        [*NETMON, "api", "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"{url}/health/ready", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert ready.json()["status"] == "ready"
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(10):  # several connections, so both workers answer some
            with httpx.Client(base_url=url, headers=headers) as c:
                assert c.get("/api/v1/devices").json() == {"items": [], "next_cursor": None}
        assert httpx.get(f"{url}/api/v1/devices").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
