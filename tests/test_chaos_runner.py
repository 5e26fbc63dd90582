"""SIGTERM during an experiment stops the run, not only the fault it interrupted.

chaoslib turns SIGTERM into an InterruptExecution raised wherever the main thread is; in
a Python action (a fault holding for ten minutes) that fails the action, and chaoslib then
calls the whole run "failed", not "interrupted". ``netmon chaos run`` went on with the next
experiment, and a second SIGTERM only ended that one's fault. Here a real chaoslib run of
a one-action experiment gets a real SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from netmon.chaos.runner import verdict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def hold(seconds: float) -> None:
    time.sleep(seconds)


EXPERIMENT: dict[str, Any] = {
    "version": "1.0.0",
    "title": "a fault that holds",
    "description": "sleeps, as a fault's hold does",
    "method": [
        {
            "type": "action",
            "name": "hold",
            "provider": {
                "type": "python",
                "module": "tests.test_chaos_runner",
                "func": "hold",
                "arguments": {"seconds": 30},
            },
        }
    ],
}


def test_sigterm_during_a_fault_is_an_interrupted_run() -> None:
    from chaoslib.experiment import run_experiment

    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        journal = run_experiment(EXPERIMENT, settings={})
    finally:
        timer.cancel()
    # chaoslib's word for such a run is "failed", or "completed" when there is no
    # hypothesis to deviate from: never "interrupted".
    assert journal["status"] != "interrupted"
    outcome = verdict("hold", journal)
    assert outcome.status == "interrupted"
    assert not outcome.passed
    assert signal.getsignal(signal.SIGTERM) is not None  # chaoslib put the handler back
