"""A test that hangs fails after the ``timeout`` in pyproject.toml, with what it waited on.

pytest-timeout's signal method fails the test from SIGALRM and prints every thread's
stack. For an asyncio test that stack ends in the event loop's ``select``, which says
nothing; the tasks' stacks, printed here first, say which await never returned. One hung
test then costs minutes and names itself, instead of the whole CI run's time limit.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
import threading
from types import FrameType
from typing import Any

import pytest
import pytest_timeout


def tasks_report() -> str:
    """Every task of the loop running in this thread, with the stack it is waiting in."""
    loop = asyncio._get_running_loop()
    if loop is None:
        return ""
    out = io.StringIO()
    tasks = asyncio.all_tasks(loop)
    out.write(f"{len(tasks)} asyncio tasks:\n")
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"--- {task!r}\n")
        task.print_stack(limit=20, file=out)
    return out.getvalue()


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own thread method: it dumps threads and exits

    def handler(_signum: int, _frame: FrameType | None) -> None:
        __tracebackhide__ = True
        sys.stderr.write(tasks_report())
        pytest_timeout.timeout_sigalrm(item, settings)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout's name
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True
