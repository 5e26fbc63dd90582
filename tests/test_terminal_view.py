"""The terminal view of `netmon run`: one screen redrawn in place, failing devices with
their error in words, recent events.

Rendered to a recording console from figures a poller produces, and `netmon run --lab`
itself in a pseudo-terminal, its output replayed through a small terminal emulator."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from rich.console import Console

from netmon.alerts.engine import Transition
from netmon.alerts.rules import BUILTIN_RULES
from netmon.poller.scheduler import DeviceFailure, PollerStats
from netmon.poller.screen import FAILURES_SHOWN, TITLE, render
from netmon.poller.summary import RecentEvents, snapshot
from netmon.records import DeviceEvent

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TIMEOUT = (
    "no answer from 127.0.0.1:16107 (2 request(s) of 2 s): check that the device is up "
    "and reachable, the port, and the privacy key and protocol (aes128)"
)
DIGEST = (
    "lab-0003: authentication failed for user 'netmon': check the auth key and auth "
    "protocol (sha256)"
)


def _poller(devices: int, failing: dict[str, DeviceFailure], polled: int) -> SimpleNamespace:
    names = [f"lab-{i:04d}" for i in range(1, devices + 1)]
    stats = PollerStats(polls=412, failed=37, overruns=2, samples=81_000, late=1)
    stats.start_lag.observe(0.004)
    stats.failing.update(failing)
    stats.last_errors.extend((f.at.isoformat(), n, f.message) for n, f in failing.items())
    poller = SimpleNamespace(
        stats=stats,
        device_names=names,
        last_polls={n: NOW.timestamp() for n in names[:polled]},
        in_flight=3,
    )
    return SimpleNamespace(poller=poller)


def _failure(error_class: str, message: str, minutes: int, polls: int) -> DeviceFailure:
    return DeviceFailure(NOW - timedelta(minutes=minutes), NOW, error_class, message, polls)


def _recorded(renderable: object) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_view_shows_failing_devices_once_with_their_error_in_words():
    failing = {
        "lab-0003": _failure("wrong_digest", DIGEST, 12, 12),
        "lab-0007": _failure("timeout", TIMEOUT, 3, 4),
        "lab-0010": _failure("malformed", "lab-0010: walk did not end", 1, 1),
    }
    service = _poller(20, failing, polled=18)
    events = RecentEvents()
    events.device_event(DeviceEvent("lab-0005", NOW, "device.rebooted", "sysUpTime went back"))
    events.device_event(
        DeviceEvent(
            "lab-0007", NOW - timedelta(minutes=3), "device.unreachable", f"lab-0007: {TIMEOUT}"
        )
    )
    events.device_event(
        DeviceEvent("lab-0002", NOW - timedelta(seconds=30), "device.config_changed", "version 2")
    )
    snap = snapshot(service, None, events=events)  # type: ignore[arg-type]
    assert (snap.devices, snap.up, snap.failing, snap.down, snap.waiting) == (20, 15, 2, 1, 2)

    text = _recorded(render(snap, now=NOW))
    assert text.count(TITLE) == 1
    assert text.count("failing devices") == 1
    for device in ("lab-0003", "lab-0010"):
        assert text.count(device) == 1, text
    assert text.count("lab-0007") == 2  # failing, and its unreachable event
    assert "lab-0007: " not in text
    assert "lab-0003: " not in text  # the name once, in its column: not again in the message
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("lab-")}
    assert "authentication failed" in rows["lab-0003"]
    assert "authentication failed for user 'netmon'" in rows["lab-0003"]
    assert "12m00s" in rows["lab-0003"]
    assert "no answer" in rows["lab-0007"]
    assert "garbled answer" in rows["lab-0010"]
    assert "walk did not end" in rows["lab-0010"]
    # The device that answers nothing comes first, then the longest failing.
    assert list(rows)[:3] == ["lab-0007", "lab-0003", "lab-0010"]
    assert "15 up, 2 failing, 1 not answering, 2 not polled yet" in text
    assert "samples 81,000" in text
    assert "overruns 2" in text
    assert "spool empty" in text
    assert "rebooted: sysUpTime went back" in text
    assert "config changed: version 2" in text
    assert text.index("rebooted") < text.index("config changed")  # newest first
    assert all(len(line) <= 120 for line in text.splitlines())


def test_the_lists_are_bounded():
    failing = {
        f"lab-{i:04d}": _failure("timeout", TIMEOUT, i, i) for i in range(1, FAILURES_SHOWN + 6)
    }
    events = RecentEvents(kept=50)
    for i in range(60):
        events.device_event(
            DeviceEvent(f"lab-{i:04d}", NOW + timedelta(seconds=i), "device.rebooted")
        )
    snap = snapshot(_poller(40, failing, polled=40), None, events=events)  # type: ignore[arg-type]
    text = _recorded(render(snap, now=NOW))
    assert "and 5 more" in text
    assert len(snap.events) == 50
    assert text.count("rebooted") == 8
    assert len(text.splitlines()) < 40  # fits a terminal: the view is never scrolled away


def test_inventory_changes_and_alerts_become_events():
    events = RecentEvents()
    events.inventory(["lab-0001", "lab-0002"])
    events.inventory(["lab-0002", "lab-0003"])
    rule = next(r for r in BUILTIN_RULES if r.name == "interface-down")
    labels = (("ifName", "Gi0/2"),)
    for kind in ("pending", "firing", "resolved"):
        events.alerts(
            [Transition(kind, rule, "fp", "lab-0002", labels, NOW, NOW, None)]  # type: ignore[arg-type]
        )
    texts = [(e.device, e.text) for e in events.events]
    assert ("lab-0003", "added to the inventory") in texts
    assert ("lab-0001", "left the inventory") in texts
    assert ("lab-0002", "alert interface-down firing (ifName=Gi0/2)") in texts
    assert ("lab-0002", "alert interface-down resolved (ifName=Gi0/2)") in texts
    assert not any("pending" in t for _, t in texts)


# -- `netmon run --lab` in a pseudo-terminal -------------------------------------------------

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
_OSC = re.compile(r"\x1b\][^\x07]*\x07")


def replay(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw``, scrollback included: enough VT100 for
    what rich writes (CR, LF, cursor up and down, erase line; colours ignored)."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    raw = _OSC.sub("", raw)
    while i < len(raw):
        ch = raw[i]
        if ch == "\x1b":
            m = _CSI.match(raw, i)
            i = m.end() if m else i + 1
            if m is not None:
                arg, op = m.group(1), m.group(2)
                n = int(arg) if arg.isdigit() else 1
                if op == "A":
                    row = max(0, row - n)
                elif op == "B":
                    row += n
                elif op == "K":
                    lines[row][:] = [] if arg == "2" else lines[row][:col]
                elif op == "G":
                    col = n - 1
                lines.extend([] for _ in range(row + 1 - len(lines)))
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            lines.extend([] for _ in range(row + 1 - len(lines)))
        elif ch >= " ":
            line = lines[row]
            line.extend(" " for _ in range(col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    return ["".join(line).rstrip() for line in lines]


def test_replay_follows_a_redraw():
    raw = "log\nA1\nA2\r\x1b[2K\x1b[1A\x1b[2KB1\nB2"
    assert replay(raw) == ["log", "B1", "B2"]


class Pty:
    """`netmon run` on a pseudo-terminal of 120 x 40: everything it wrote, kept."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.out = bytearray()

    def read(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return
                if not chunk:
                    return
                self.out.extend(chunk)

    def wait_for(self, needle: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read(1.0)
            screen = self.screen()
            if any(needle in line for line in screen):
                return screen
            assert self.proc.poll() is None, "\n".join(screen)
        raise AssertionError(f"{needle!r} not on screen:\n" + "\n".join(self.screen()))

    def screen(self) -> list[str]:
        return replay(self.out.decode("utf-8", "replace"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read(0.5)
        self.read(0.5)
        os.close(self.master)
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()


@pytest.mark.slow
def test_netmon_run_on_a_terminal_draws_one_view_in_place(tmp_path):
    """The README's `./dev run`, small and quick: a lab of 3 polled every 5 s on a
    terminal. One device goes silent; the screen has one view, redrawn, listing it once
    with its error; log lines (the API processes' too) print above the view."""
    env = {
        **os.environ,
        "NETMON_DATA_DIR": str(tmp_path / "data"),
        "NETMON_LAB__BASE_PORT": "0",
        "NETMON_API__PORT": "0",
        "NETMON_POLLER__INTERVAL": "5s",
        "TERM": "xterm-256color",
    }
    for name in ("NETMON_DATABASE__URL", "NETMON_LOG__FORMAT", "NO_COLOR", "COLUMNS", "LINES"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "netmon", "run", "--lab", "--lab-devices", "3"]
    term = Pty(cmd, env)
    try:
        term.wait_for("3 up", timeout=120)
        lab = subprocess.run(
            [sys.executable, "-m", "netmon", "lab", "silence", "lab-0001"],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert lab.returncode == 0, lab.stderr
        term.wait_for("1 not answering", timeout=40)
        term.read(5.0)  # a few more redraws with the failure on them
    finally:
        code = term.stop()
    screen = term.screen()
    shown = "\n".join(screen)
    assert code == 0, shown
    assert sum(TITLE in line for line in screen) == 1, shown
    assert sum("failing devices" in line for line in screen) == 1, shown
    start = next(i for i, line in enumerate(screen) if TITLE in line)
    view = screen[start:]
    failing = view[next(i for i, line in enumerate(view) if "failing devices" in line) :]
    failing = failing[: next(i for i, line in enumerate(failing) if "recent events" in line)]
    rows = [line for line in failing if "lab-0001" in line]
    assert len(rows) == 1, shown
    assert "no answer from 127.0.0.1:" in rows[0], shown
    assert "lab-0001:" not in rows[0], shown
    assert any("lab-0001" in line and "unreachable" in line for line in view), shown
    assert any("alert device-unreachable firing" in line for line in view), shown
    # Log lines print above the view, the API process's included; none inside it.
    assert any("api listening" in line for line in screen[:start]), shown
    events = next(i for i, line in enumerate(view) if "recent events" in line)
    assert not any("[info" in line for line in view[:events]), shown
