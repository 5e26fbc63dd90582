"""Every chaos experiment, in its --quick form, against one rig: a private PostgreSQL,
relays before the devices and the database, the lab, netmon run and a webhook receiver.

Each must pass: nothing missing, duplicated or partial, no false unreachable, recovered.
A failure prints the experiment's reasons and its figures; the rig's folder (logs, marks,
journals) stays under pytest's basetemp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmon.chaos.rig import Rig, RigOptions, warm_up_s
from netmon.chaos.runner import available, run_all
from netmon.chaos.target import Target
from netmon.cli.chaos import ORDER
from tests.peer_check import missing_peer

DEVICES = 20
INTERVAL_S = 20.0
# What `netmon chaos run --quick` uses (its comment says why): a 16-port device's poll is
# 11 round trips, 11 s with latency-devices' +1 s each.
INTERFACES = 16

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _postgres_bin() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if shutil.which("stress-ng") is None:
        missing_peer("stress-ng is not installed (Debian package stress-ng)")
    if not _postgres_bin():
        missing_peer("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    folder = tmp_path_factory.mktemp("chaos-rig")
    the_rig = Rig(
        RigOptions(
            workdir=folder,
            devices=DEVICES,
            interval_s=INTERVAL_S,
            quick=True,
            interfaces=INTERFACES,
        )
    )
    try:
        target = the_rig.start()
        time.sleep(warm_up_s(INTERVAL_S))
        yield target
    finally:
        the_rig.stop()


# The 10-minute outage has no quick form: it is the 60 s outage's long run.
NOT_IN_SUITE = {"database-outage-10min"}
QUICK = [n for n in ORDER if n in available() and n not in NOT_IN_SUITE]


def test_every_experiment_is_in_the_run_order() -> None:
    assert set(available()) == set(ORDER)


@pytest.mark.parametrize("name", QUICK)
def test_experiment_quick(rig: Target, name: str) -> None:
    (outcome,) = run_all(rig, [name])
    detail = json.dumps(outcome.as_json(), indent=1)
    assert outcome.passed, f"{name}: {outcome.reasons}\n{detail}"
    assert outcome.figures["produced"] > 0
    assert outcome.figures["stored_once"] == outcome.figures["produced"]


def test_netmon_chaos_run_prints_the_table_and_json(rig: Target) -> None:
    """The command a user runs, end to end, against the rig (``--target``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
    command = [sys.executable, "-m", "netmon", "chaos", "run", "--quick", "--json"]
    command += ["--target", str(rig.path), "--workdir", str(rig.workdir), "database-outage"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert line["experiment"] == "database-outage"
    assert line["passed"] is True
    for key in ("produced", "stored_once", "missing", "duplicated", "false_unreachable"):
        assert key in line
    assert line["missing"] == 0
    assert line["produced"] == line["stored_once"] > 0
    assert "stored once" in done.stderr
    assert "database-outage" in done.stderr
    assert (rig.workdir / "report.md").exists()
    assert (rig.workdir / "journal-database-outage.json").exists()
