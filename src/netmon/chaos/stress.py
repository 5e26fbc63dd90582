"""CPU, memory and disk stress with Debian's ``stress-ng``, always bounded.

Every ``stress-ng`` gets ``--timeout``, so it ends by itself even if netmon chaos dies,
and runs in a process group of its own that ``stop`` ends by its own PID. Memory is taken
in steps (a ramp): each step is computed from ``MemAvailable`` at that moment, so the
machine never goes past the target however much else it runs; 80 % of this VM's memory
could not be reached in one go within 60 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

__all__ = ["HARD_MARGIN", "Stress", "memory", "used_memory_fraction"]

HARD_MARGIN = 0.05  # the memory stress never holds the machine past target + this


def memory() -> tuple[int, int]:
    """(total, available) bytes, from /proc/meminfo."""
    fields: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0]) * 1024
    return fields["MemTotal"], fields["MemAvailable"]


def used_memory_fraction() -> float:
    total, available = memory()
    return (total - available) / total


def _stress_ng() -> str:
    found = shutil.which("stress-ng")
    if found is None:
        raise FileNotFoundError("stress-ng is not installed (Debian: apt-get install stress-ng)")
    return found


class Stress:
    """One stress: one or more ``stress-ng`` processes, each in its own process group."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._ramp: threading.Thread | None = None
        self._stopping = threading.Event()
        self.peak_memory_fraction = used_memory_fraction()

    def _spawn(self, *args: str, seconds: float) -> None:
        proc = subprocess.Popen(  # noqa: S603 - stress-ng with our own arguments
            [_stress_ng(), *args, "--timeout", f"{max(1, round(seconds))}s", "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs.append(proc)

    @classmethod
    def cpu(cls, workers: int, seconds: float) -> Stress:
        s = cls()
        s._spawn("--cpu", str(workers), seconds=seconds)
        return s

    @classmethod
    def disk(cls, path: Path, workers: int, seconds: float, bytes_each: str = "256M") -> Stress:
        """``workers`` writers of ``bytes_each`` in files under ``path`` only."""
        path.mkdir(parents=True, exist_ok=True)
        s = cls()
        s._spawn(
            "--hdd", str(workers), "--hdd-bytes", bytes_each, "--temp-path", str(path),
            "--hdd-write-size", "64K",
            seconds=seconds,
        )  # fmt: skip
        return s

    @classmethod
    def memory(
        cls, target_fraction: float, seconds: float, ramp_s: float, steps: int = 6
    ) -> Stress:
        """Take the machine to ``target_fraction`` of its memory used, in ``steps`` steps
        over ``ramp_s``, and hold it until ``seconds`` from now."""
        if not 0 < target_fraction < 0.95:
            raise ValueError("a memory target is a fraction of the total, below 0.95")
        s = cls()
        ends = time.monotonic() + seconds

        def ramp() -> None:
            for step in range(steps):
                if s._stopping.is_set():
                    return
                total, available = memory()
                used = total - available
                # What is left to take, spread over the remaining steps.
                want = (target_fraction * total - used) / (steps - step)
                if want > 64 << 20:
                    left = ends - time.monotonic()
                    # --vm-hang 0: touch the pages once, then sleep holding them (no CPU
                    # burnt re-writing them; the CPU faults are a different experiment).
                    s._spawn(
                        "--vm", "1", "--vm-bytes", f"{int(want) >> 20}M", "--vm-keep",
                        "--vm-populate", "--vm-hang", "0",
                        seconds=left,
                    )  # fmt: skip
                pause = ramp_s / steps
                deadline = time.monotonic() + pause
                while time.monotonic() < deadline and not s._stopping.is_set():
                    s._watch(target_fraction)
                    time.sleep(0.2)
            while time.monotonic() < ends and not s._stopping.is_set():
                s._watch(target_fraction)
                time.sleep(0.5)

        s._ramp = threading.Thread(target=ramp, name="chaos-memory-ramp", daemon=True)
        s._ramp.start()
        return s

    def _watch(self, target_fraction: float) -> None:
        """Note the peak; past target + 5 % (something else grew too), give back the
        newest step."""
        used = used_memory_fraction()
        self.peak_memory_fraction = max(self.peak_memory_fraction, used)
        if used > target_fraction + HARD_MARGIN:
            for p in reversed(self._procs):
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait(10)
                    return

    @property
    def running(self) -> bool:
        ramping = self._ramp is not None and self._ramp.is_alive()
        return ramping or any(p.poll() is None for p in self._procs)

    def wait(self) -> None:
        if self._ramp is not None:
            self._ramp.join()
        for p in self._procs:
            p.wait()

    def stop(self) -> None:
        self._stopping.set()
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)  # its own group: stress-ng's workers
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        if self._ramp is not None:
            self._ramp.join(5)
