"""`netmon run` keeps the API out of the poller's process: under API load, no poll fails
and none starts late.

Inside one process the API, poller, lab, writer and alerting once shared one event loop:
under API load the lab's CLI devices failed 10 of 288 polls ("no prompt within 10s"), and
401 answers that do no I/O took up to 2 s. Now the API is processes of their own (at a
lower CPU priority), and what it asks of the core goes over the core's control socket.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from netmon.core_control import RemoteCore
from tests.api_helpers import api_database_url, make_api_settings, running_api
from tests.test_cli import _logged, _wait_for, netmon, netmon_run

__all__ = ["api_database_url"]

WRK = shutil.which("wrk")


# Twelve times the default rate, the lab's SSH devices backing their configurations up at
# every poll: about 40 % of a CPU for the core, with or without the API's load.
INTERVAL_S = 5


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "NETMON_DATA_DIR": str(tmp_path / "data"),
        "NETMON_LOG__FORMAT": "json",
        "NETMON_LAB__BASE_PORT": "0",
        "NETMON_POLLER__INTERVAL": f"{INTERVAL_S}s",
        **extra,
    }
    env.pop("NETMON_DATABASE__URL", None)  # the embedded server, as `./dev run`
    return env


def _figures(url: str, headers: dict[str, str]) -> dict[str, float]:
    """`name{labels}` -> value of a /metrics page."""
    page = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    out: dict[str, float] = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _polls(figures: dict[str, float]) -> tuple[float, float, float]:
    ok = figures.get('netmon_polls_total{outcome="success"}', 0.0)
    failed = figures.get('netmon_polls_total{outcome="failure"}', 0.0)
    return ok, failed, figures.get("netmon_polls_late_total", 0.0)


def _wait_polling(url: str, headers: dict[str, str], polls: int) -> dict[str, float]:
    deadline = time.monotonic() + 90
    while True:
        figures = _figures(url, headers)
        if _polls(figures)[0] >= polls:
            return figures
        assert time.monotonic() < deadline, _polls(figures)
        time.sleep(1)


def _token(env: dict[str, str], role: str = "admin") -> dict[str, str]:
    made = netmon("token", "create", "--role", role, "--name", f"t-{role}", env=env)
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


def _nice(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat, counted from after the command name


@pytest.mark.slow
@pytest.mark.skipif(WRK is None and not os.environ.get("NETMON_REQUIRE_PEERS"), reason="no wrk")
def test_api_load_neither_fails_nor_delays_a_poll(tmp_path: Path) -> None:
    assert WRK is not None, "wrk is needed (Debian package wrk)"
    env = _env(tmp_path)
    with netmon_run(env, "--lab", "--lab-devices", "20") as proc:
        _wait_for(proc, "poller started", timeout=120)
        api = _logged(proc, "api processes started")
        url, pids = api["url"], api["pids"]
        core = proc.pid
        assert pids
        assert core not in pids  # the API is not the poller's process
        assert all(_nice(pid) == 10 for pid in pids)
        headers = _token(env)
        before = _wait_polling(url, headers, polls=20)
        ok0, failed0, late0 = _polls(before)
        # Two loads at once for 30 s: cheap refusals (no token: 401) and database reads.
        # The load generators stand for clients on other machines: they run niced, so that
        # on this one they do not take the CPU from the system they measure.
        loads = [
            subprocess.Popen(
                [
                    "nice", "-n", "10",
                    WRK, "-t", "1", "-c", "64", "-d", "30s", "--latency", f"{url}/api/v1/devices",
                ],
                stdout=subprocess.PIPE,
                text=True,
            ),
            subprocess.Popen(
                [
                    "nice", "-n", "10",
                    WRK, "-t", "1", "-c", "64", "-d", "30s",
                    "-H", f"Authorization: {headers['Authorization']}",
                    f"{url}/api/v1/metrics/last?device=lab-0003&limit=1000",
                ],
                stdout=subprocess.PIPE,
                text=True,
            ),
        ]  # fmt: skip
        served = 0
        for load in loads:
            out, _ = load.communicate(timeout=120)
            found = re.search(r"(\d+) requests in", out)
            assert found, out
            served += int(found.group(1))
        after = _figures(url, headers)
        ok1, failed1, late1 = _polls(after)
        assert served > 3000, served  # it was load: the API answered thousands of requests
        assert ok1 - ok0 >= 20 * 30 / INTERVAL_S * 0.9, (ok0, ok1)  # every device, on time
        errors = {k: v for k, v in after.items() if k.startswith("netmon_poll_errors_total")}
        assert failed1 - failed0 == 0, (failed0, failed1, errors)
        assert late1 - late0 == 0, (late0, late1, errors)
        assert after["netmon_core_up"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    for pid in pids:  # the API processes went with it
        assert not Path(f"/proc/{pid}").exists() or "zombie" in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return "zombie"


@pytest.mark.slow
def test_the_api_process_asks_the_core_and_comes_back_when_killed(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with netmon_run(env, "--lab", "--lab-devices", "4") as proc:
        _wait_for(proc, "poller started", timeout=120)
        api: dict[str, Any] = _logged(proc, "api processes started")
        url = api["url"]
        headers = _token(env)
        figures = _wait_polling(url, headers, polls=4)
        assert figures["netmon_core_up"] == 1
        assert 'netmon_poller_devices{reachability="reachable"}' in figures
        assert "netmon_core_process_cpu_seconds_total" in figures
        reloaded = httpx.post(f"{url}/api/v1/inventory/reload", headers=headers, timeout=60)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["here"] is True
        assert reloaded.json()["devices"] == 4
        # A worker killed hard is replaced; the API answers again on the same port.
        os.kill(api["pids"][0], signal.SIGKILL)
        _wait_for(proc, "api process died", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"{url}/api/v1/devices", headers=headers, timeout=5)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert len(json.loads(r.text)["items"]) == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


async def test_a_core_that_does_not_answer_is_a_503_and_a_missing_figure(
    api_database_url: str, tmp_path: Path
) -> None:
    settings = make_api_settings(api_database_url, tmp_path / "data")
    core = RemoteCore(tmp_path / "nobody.sock")  # a core that is gone (stopping, killed)
    async with running_api(settings, core) as api, api.client("admin") as c:
        reload = await c.post("/api/v1/inventory/reload")
        assert reload.status_code == 503, reload.text
        assert reload.headers["content-type"].startswith("application/problem+json")
        assert "the core did not answer reload" in reload.json()["detail"]
        assert reload.headers["retry-after"] == "5"
        page = (await c.get("/metrics")).text
        assert "\nnetmon_core_up 0.0\n" in page
