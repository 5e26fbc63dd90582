"""A PostgreSQL cluster of the experiment's own, so its faults never touch a server it did
not start: initdb in a folder of the rig, ``pg_ctl`` to start and stop it, SIGSTOP and
SIGCONT of its processes to freeze and thaw it.

Debian's server binaries (``/usr/lib/postgresql/<version>/bin``) are used as they are;
fsync stays on (the experiments are about data loss), the server listens on 127.0.0.1
only, and its unix socket lives inside the folder.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PrivatePostgres", "server_bin"]


def server_bin() -> Path:
    """The newest Debian PostgreSQL server's ``bin`` folder."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise FileNotFoundError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (Debian: postgresql)"
        )
    return found[-1].parent


def _alive(pid: int) -> bool:
    """``pid`` exists and is no zombie (a killed child of ours may linger as one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivatePostgres:
    """The cluster whose state lives under ``root`` (its port in ``root/port``, so a new
    object for the same root finds the same server). Every call is synchronous and bounded
    in time. As root the server runs as ``postgres`` and its data lives in a folder of its
    own (see ``_make_cluster``); ``destroy`` removes only that."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self._port_file = root / "port"
        self._where = root / "cluster"  # the cluster's folder (see _cluster)
        if port == 0 and self._port_file.exists():
            port = int(self._port_file.read_text())
        self.port = port or _free_port()
        self._bin = server_bin()
        self.cluster = Path(self._where.read_text()) if self._where.exists() else None
        self._stopped: set[int] = set()  # what freeze stopped, for thaw

    @property
    def data(self) -> Path:
        assert self.cluster is not None, "not started yet"
        return self.cluster / "data"

    def _make_cluster(self) -> Path:
        """As root, the server runs as ``postgres``, which cannot enter a folder private to
        root (pytest's, a user's temp dir): the cluster then lives in a folder of its own,
        named in ``root/cluster``, and ``destroy`` removes it."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            base = Path(tempfile.mkdtemp(prefix="netmon-chaos-pg-"))
            base.chmod(0o755)
            shutil.chown(base, "postgres", "postgres")
        else:
            base = self.root
        self._where.write_text(str(base))
        return base

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/netmon"

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        done = subprocess.run(  # noqa: S603 - Debian's binaries, our own arguments
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self._user(),
        )
        if done.returncode != 0:
            why = done.stderr.strip()[-500:]
            log = self.cluster / "postgres.log" if self.cluster else None
            with contextlib.suppress(OSError):
                if log is not None:
                    why += "\n" + "\n".join(log.read_text().splitlines()[-5:])
            raise RuntimeError(f"{Path(args[0]).name} failed: {why}")

    def _user(self) -> str | None:
        # initdb and the server refuse to run as root: the postgres account runs them.
        return "postgres" if os.geteuid() == 0 else None

    def start(self) -> None:
        if self.cluster is None:
            self.cluster = self._make_cluster()
        fresh = not (self.data / "PG_VERSION").exists()
        stale = self._postmaster()
        if stale is not None and Path(f"/proc/{stale}").exists() and not _alive(stale):
            # Killed, and not yet reaped by init: its lock file would stop the new server.
            (self.data / "postmaster.pid").unlink(missing_ok=True)
        if fresh:
            self._run(
                str(self._bin / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(self.data)
            )
        self._port_file.write_text(str(self.port))
        options = self._options()
        self._run(
            str(self._bin / "pg_ctl"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "-l",
            str(self.cluster / "postgres.log"),
            "-D",
            str(self.data),
            "start",
        )
        if fresh:
            self._run(
                str(self._bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "netmon",
            )

    def _options(self) -> str:
        return (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.cluster} -c fsync=on -c max_connections=100"
        )

    def start_command(self) -> str:
        """The shell command that starts this (stopped) cluster again."""
        command = shlex.join(
            [str(self._bin / "pg_ctl"), "-w", "-o", self._options(), "-D", str(self.data), "start"]
        )
        user = self._user()
        return command if user is None else f"su {user} -c {shlex.quote(command)}"

    def stop(self, mode: str = "fast") -> None:
        if not self.is_running():
            return
        self.thaw()
        self._run(
            str(self._bin / "pg_ctl"), "-w", "-t", "60", "-m", mode, "-D", str(self.data), "stop"
        )

    def is_running(self) -> bool:
        pid = self._postmaster()
        return pid is not None and _alive(pid)

    def _postmaster(self) -> int | None:
        if self.cluster is None:
            return None
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def processes(self) -> list[int]:
        """The postmaster and every process it started."""
        root = self._postmaster()
        if root is None:
            return []
        found = [root]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == root:
                    found.append(int(entry.name))
        return found

    def freeze(self) -> None:
        """SIGSTOP the server and all its processes: connections hang instead of failing."""
        # The postmaster first, so it starts no new child while the others are stopped.
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self._stopped.add(pid)

    def thaw(self) -> None:
        """SIGCONT what ``freeze`` stopped, and the server's processes now (another object
        for the same root may have frozen it)."""
        for pid in self._stopped | set(self.processes()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._stopped.clear()

    def kill(self) -> None:
        """SIGKILL the postmaster and every child, as a crash or an OOM kill would: the next
        ``start`` recovers from the WAL."""
        pids = self.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._stopped.clear()
        # Until they are reaped too: a zombie postmaster still "exists" for the next
        # server's lock file check, which would then refuse to start.
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def destroy(self) -> None:
        """Stop the server and remove its cluster (its log is kept in ``root``)."""
        self.stop("immediate")
        if self.cluster is not None:
            with contextlib.suppress(OSError):
                shutil.copy(self.cluster / "postgres.log", self.root / "postgres.log")
            if self.cluster != self.root:
                shutil.rmtree(self.cluster, ignore_errors=True)
            else:
                shutil.rmtree(self.data, ignore_errors=True)
            self._where.unlink(missing_ok=True)
            self.cluster = None
