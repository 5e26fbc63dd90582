"""A real NetBox for the tests: NetBox 4.7.3 from PyPI, run by the test session.

What runs, per test session (:class:`NetBoxServer`), all children of the session and
stopped by their PIDs at its end:

- ``python -m netbox runserver --noreload 127.0.0.1:<free port>`` (Django's threaded
  development server; the REST API is all the tests need) and ``python -m netbox
  rqworker``, which delivers webhooks of event rules;
- a database ``netmon_netbox_p<pid>_<hex>`` of its own on the system PostgreSQL
  (``NETMON_TEST_DATABASE_URL``'s server, else 127.0.0.1:5432 as ``postgres``), restored
  from a cached dump of the migrated schema and dropped at the end;
- two Redis database numbers on 127.0.0.1:6379 (tasks, caching), 13 and 14 unless
  another session holds them (a lock file per pair), flushed at start;
- a superuser and two tokens made in ``netbox nbshell``: a v2 token (``nbt_<key>.<secret>``,
  sent as ``Bearer``) and a v1 token (40 characters, sent as ``Token``).

Its configuration is ``$NETBOX_ROOT/conf/configuration.py``, ``NETBOX_ROOT`` being the
session's temporary directory: a wheel install of NetBox reads it there (and keeps
media, scripts and reports beside it).

The install is cached per NetBox version in ``/var/cache/netmon-test/netbox-4.7.3/``
(``NETMON_NETBOX_CACHE``): ``venv/`` (Python 3.12, ``netbox==4.7.3``) and
``schema.dump`` (``pg_dump -Fc`` of a migrated database). Building it takes about 8
minutes on two cores, longer than one test's timeout, so ``.ci/run`` runs
``python -m tests.netbox_peer --build-cache`` before the suite, and a pytest session
that selects a NetBox test builds it after collection, before any test's timer starts
(:func:`pytest_collection_finish`). A lock file keeps two builders apart; each part is
built in a temporary name and renamed when complete, so a half-built one is never used.

With ``NETMON_NETBOX_URL`` and ``NETMON_NETBOX_TOKEN`` set, that NetBox is used instead
and nothing is started (``NETMON_NETBOX_V1_TOKEN`` optional); pause/stop need the own one.

Found the hard way (docs/testing-peers.md):

- ``netbox==4.7.3`` needs Python >= 3.12; pyenv's ``python3.12`` shim refuses without
  ``PYENV_VERSION``, so the interpreter is found under ``~/.pyenv/versions/3.12*/bin/``
  and tried (``NETMON_NETBOX_PYTHON`` overrides).
- It pins ``psycopg[c]``, which pip compiles: gcc and libpq-dev (``pg_config``).
- A venv moved after ``pip install`` keeps console scripts whose ``#!`` names the old
  path, so the renamed venv is run as ``venv/bin/python -m netbox``, never ``bin/netbox``.
- ``migrate`` on an empty database takes 5-6 CPU minutes; restoring the dump, seconds.
- 4.7's REST API generates every token's value itself; the model takes a chosen one
  only for v1, so both tokens are made in ``nbshell`` and read back from its output.
- The children must not inherit pytest's ``PYTHONPATH``: the 3.11 site-packages of the
  test venv would shadow NetBox's own.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from tests.netbox_seed import NetBoxApi, reset_inventory
from tests.peer_check import missing_peer

__all__ = [
    "NETBOX_VERSION",
    "NetBoxCache",
    "NetBoxPeer",
    "NetBoxServer",
    "PeerError",
    "PeerMissingError",
    "PgTarget",
    "ensure_cache",
    "find_python",
    "netbox",
    "netbox_peer",
    "pytest_collection_finish",
]

NETBOX_VERSION = "4.7.3"
CACHE_ROOT = Path("/var/cache/netmon-test")
PYTHON_ENV = "NETMON_NETBOX_PYTHON"
CACHE_ENV = "NETMON_NETBOX_CACHE"
URL_ENV = "NETMON_NETBOX_URL"
TOKEN_ENV = "NETMON_NETBOX_TOKEN"
V1_TOKEN_ENV = "NETMON_NETBOX_V1_TOKEN"
PG_URL_ENV = "NETMON_TEST_DATABASE_URL"

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# Pairs of Redis database numbers (tasks, caching) a session may take, in order: two
# sessions on one machine (two engineers, two CI jobs) each get their own pair, or an
# RQ worker of one would run the other's webhook jobs against the wrong database.
REDIS_DB_PAIRS = ((13, 14), (11, 12), (9, 10))
DB_PREFIX = "netmon_netbox_"
# Tables a reset empties: every inventory app, and the change log, so that a test's
# /api/core/object-changes/ starts empty too. Users, tokens and object types stay.
RESET_TABLES = (
    r"^(circuits|dcim|extras|ipam|tenancy|virtualization|vpn|wireless)_|^core_objectchange$"
)

_PIP_TIMEOUT = 1200.0  # seconds; ~75-100 s with psycopg's C build
_MIGRATE_TIMEOUT = 1800.0  # ~7 CPU minutes; 11 minutes on a busy two-core machine
_START_TIMEOUT = 120.0  # ~15 s idle, 25-35 s on a busy two-core machine (three Django starts)
_STOP_GRACE = 10.0  # rqworker's warm shutdown finishes its job (webhook timeout 10 s)
_POLL = 0.2


class PeerError(RuntimeError):
    """NetBox did not build, start or stop as asked; the message carries the log's tail."""


class PeerMissingError(RuntimeError):
    """A prerequisite of the peer is not installed (skip, or fail under
    ``NETMON_REQUIRE_PEERS=1``)."""


def _log(message: str) -> None:
    print(f"netbox peer: {message}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").splitlines()
        if text:
            return "\n".join([f"--- {path.name} (last {lines} lines) ---", *text[-lines:]])
    return f"({path.name}: nothing written)"


def _version_key(path: Path) -> tuple[int, ...]:
    # ~/.pyenv/versions/3.12.10/bin/python3.12 sorts after 3.12.9
    parts = re.findall(r"\d+", path.parent.parent.name)
    return tuple(int(p) for p in parts)


def _python_usable(python: str) -> bool:
    """A Python >= 3.12 that can make a venv with pip in it (the pyenv shim exits 127)."""
    try:
        probe = subprocess.run(
            [python, "-c", "import sys, venv, ensurepip; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and probe.stdout.strip() == "True"


def find_python() -> Path:
    """The interpreter that builds NetBox's venv: ``$NETMON_NETBOX_PYTHON``, else the
    newest pyenv 3.12, else a ``python3.12``/``python3.13``/``python3`` on the PATH that
    really is >= 3.12."""
    if override := os.environ.get(PYTHON_ENV):
        if not _python_usable(override):
            raise PeerMissingError(f"{PYTHON_ENV}={override} is not a usable Python >= 3.12")
        return Path(override)
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates: list[str] = [
        str(p) for p in sorted(pyenv.glob("3.12*/bin/python3.12"), key=_version_key, reverse=True)
    ]
    candidates += [
        found for name in ("python3.12", "python3.13", "python3") if (found := shutil.which(name))
    ]
    for candidate in candidates:
        if _python_usable(candidate):
            return Path(candidate)
    raise PeerMissingError(
        f"no Python >= 3.12 for NetBox {NETBOX_VERSION} (looked in {pyenv}/3.12*/bin and "
        f"the PATH; set {PYTHON_ENV})"
    )


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of NetBox's processes: no PYTHONPATH/PYTHONHOME of the 3.11 test
    venv, no leftover NetBox/Django settings, no pyenv version pin."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "PYTHONPATH",
            "PYTHONHOME",
            "VIRTUAL_ENV",
            "DJANGO_SETTINGS_MODULE",
            "NETBOX_CONFIGURATION",
            "NETBOX_ROOT",
        }
    }
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


@dataclass(frozen=True)
class PgTarget:
    """The PostgreSQL server NetBox's databases go on, and how to reach it as superuser
    (``ltree`` is an extension: restoring the schema creates it)."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""

    @classmethod
    def from_env(cls) -> PgTarget:
        url = os.environ.get(PG_URL_ENV)
        if not url:
            return cls()
        parts = urlsplit(url)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
        )

    def env(self) -> dict[str, str]:
        env = _clean_env(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
        )
        if result.returncode != 0:
            raise PeerError(f"psql {sql[:200]!r} on {database}: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        # FORCE: runserver's and rqworker's persistent connections may still be open.
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_stale_databases(self) -> list[str]:
        """Drop the databases of sessions (or builds) that died without dropping them:
        their names carry the PID, and that process is gone."""
        dropped = []
        for name in self.psql(
            f"SELECT datname FROM pg_database WHERE datname LIKE '{DB_PREFIX}%'"
        ).split():
            match = re.match(rf"{DB_PREFIX}(?:p|build_)(\d+)_", name)
            if match and not _alive(int(match.group(1))):
                self.drop_database(name)
                dropped.append(name)
        return dropped

    def as_django(self, name: str) -> dict[str, object]:
        return {
            "NAME": name,
            "USER": self.user,
            "PASSWORD": self.password,
            "HOST": self.host,
            "PORT": self.port,
            "CONN_MAX_AGE": 300,
        }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _require_tools(*names: str, package: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise PeerMissingError(
            f"{', '.join(missing)} not on the PATH (Debian package {package}; .ci/run installs it)"
        )


def _redis_flush(dbs: tuple[int, ...]) -> None:
    """FLUSHDB the given Redis database numbers (raw RESP: no Redis client needed here)."""
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=10) as sock:
            stream = sock.makefile("rwb")
            for db in dbs:
                for command in (("SELECT", str(db)), ("FLUSHDB",)):
                    parts = [f"*{len(command)}\r\n".encode()]
                    parts += [f"${len(arg)}\r\n{arg}\r\n".encode() for arg in command]
                    stream.write(b"".join(parts))
                    stream.flush()
                    reply = stream.readline()
                    if not reply.startswith(b"+OK"):
                        raise PeerError(f"Redis {' '.join(command)}: {reply!r}")
    except OSError as exc:
        raise PeerMissingError(f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({exc})") from exc


@contextlib.contextmanager
def _flock(path: Path, *, wait: bool = True) -> Iterator[IO[bytes] | None]:
    """An exclusive fcntl lock on ``path`` (None when ``wait`` is false and it is held)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _RedisClaim:
    """Holds the lock of one pair of Redis database numbers for as long as it lives."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.dbs: tuple[int, int] | None = None

    def acquire(self) -> tuple[int, int]:
        for pair in REDIS_DB_PAIRS:
            lock = Path(tempfile.gettempdir()) / f"netmon-netbox-redis-{pair[0]}-{pair[1]}.lock"
            held = self._stack.enter_context(_flock(lock, wait=False))
            if held is not None:
                self.dbs = pair
                _redis_flush(pair)
                return pair
        raise PeerError(f"every Redis database pair {REDIS_DB_PAIRS} is held by another session")

    def release(self) -> None:
        if self.dbs is not None:
            with contextlib.suppress(PeerError, PeerMissingError):
                _redis_flush(self.dbs)  # leave no RQ jobs or cache keys behind
        self.dbs = None
        self._stack.close()


def _random_secret(length: int = 64) -> str:
    return secrets.token_urlsafe(length)[:length]


def write_configuration(
    root: Path, *, pg: PgTarget, database: str, redis_dbs: tuple[int, int]
) -> Path:
    """``root/conf/configuration.py`` for a NetBox run with ``NETBOX_ROOT=root``."""
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    redis = {"HOST": REDIS_HOST, "PORT": REDIS_PORT, "PASSWORD": "", "SSL": False}
    settings: dict[str, object] = {
        # runserver listens on loopback only; the Host header carries the port.
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "::1", "[::1]"],
        "DATABASES": {"default": pg.as_django(database)},
        "REDIS": {
            "tasks": {**redis, "DATABASE": redis_dbs[0]},
            "caching": {**redis, "DATABASE": redis_dbs[1]},
        },
        "SECRET_KEY": _random_secret(64),
        # Without peppers NetBox cannot make or check v2 tokens.
        "API_TOKEN_PEPPERS": {1: _random_secret(64)},
        # No census, release check, plugin catalog or feed: the machine has no internet.
        "ISOLATED_DEPLOYMENT": True,
        "CENSUS_REPORTING_ENABLED": False,
        "RELEASE_CHECK_URL": None,
        "PLUGINS": [],
        "DEBUG": False,
        "TIME_ZONE": "UTC",
        # A webhook to a receiver a test has stopped holds the worker this long at most.
        "WEBHOOK_DEFAULT_TIMEOUT": 10,
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "loggers": {"netbox": {"handlers": ["console"], "level": "INFO"}},
        },
    }
    lines = ["# Written by tests/netbox_peer.py for one test NetBox; not a deployment."]
    lines += [f"{name} = {value!r}" for name, value in settings.items()]
    path = conf / "configuration.py"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class NetBoxCache:
    """The per-version install: ``venv/`` and ``schema.dump`` under ``root``."""

    root: Path
    version: str = NETBOX_VERSION

    @classmethod
    def default(cls) -> NetBoxCache:
        root = os.environ.get(CACHE_ENV)
        return cls(Path(root) if root else CACHE_ROOT / f"netbox-{NETBOX_VERSION}")

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def dump(self) -> Path:
        return self.root / "schema.dump"

    @property
    def build_log(self) -> Path:
        return self.root / "build.log"

    @property
    def ready(self) -> bool:
        return self.python.exists() and self.dump.is_file()

    def netbox(self, *args: str) -> list[str]:
        return [str(self.python), "-m", "netbox", *args]


def _run_logged(argv: list[str], log: Path, *, timeout: float, **kwargs: object) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=timeout, **kwargs
            )  # type: ignore[call-overload]
        except subprocess.TimeoutExpired:
            raise PeerError(f"{argv[0]} {argv[1:4]} took over {timeout}s\n{_tail(log)}") from None
    if result.returncode != 0:
        raise PeerError(f"{' '.join(argv[:5])} exited {result.returncode}\n{_tail(log)}")


def _build_venv(cache: NetBoxCache, python: Path) -> float:
    _require_tools("gcc", "pg_config", package="gcc, libpq-dev")
    started = time.monotonic()
    for stale in cache.root.glob("venv.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a build killed half-way (we hold the lock)
    tmp = cache.root / f"venv.tmp-{os.getpid()}"
    env = _clean_env()
    _run_logged([str(python), "-m", "venv", str(tmp)], cache.build_log, timeout=300, env=env)
    _run_logged(
        [
            str(tmp / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"netbox=={cache.version}",
        ],
        cache.build_log,
        timeout=_PIP_TIMEOUT,
        env=env,
    )
    tmp.rename(cache.venv)
    version = subprocess.run(
        cache.netbox("version"), capture_output=True, text=True, env=env, timeout=60
    )
    if version.stdout.strip() != cache.version:
        shutil.rmtree(cache.venv, ignore_errors=True)
        raise PeerError(f"the new venv says NetBox {version.stdout.strip()!r}: {version.stderr}")
    return time.monotonic() - started


def _build_schema(cache: NetBoxCache, pg: PgTarget) -> float:
    """Migrate an empty database once and keep ``pg_dump -Fc`` of it."""
    started = time.monotonic()
    pg.drop_stale_databases()
    database = f"{DB_PREFIX}build_{os.getpid()}_{secrets.token_hex(4)}"
    redis = _RedisClaim()
    workdir = Path(tempfile.mkdtemp(prefix="netmon-netbox-build-"))
    tmp_dump = cache.root / f"schema.dump.tmp-{os.getpid()}"
    try:
        dbs = redis.acquire()
        pg.create_database(database)
        write_configuration(workdir, pg=pg, database=database, redis_dbs=dbs)
        _run_logged(
            cache.netbox("migrate", "--no-input"),
            cache.build_log,
            timeout=_MIGRATE_TIMEOUT,
            env=_clean_env(NETBOX_ROOT=str(workdir)),
            cwd=workdir,
        )
        _run_logged(
            ["pg_dump", "-Fc", "--no-owner", "--no-privileges", "-f", str(tmp_dump), database],
            cache.build_log,
            timeout=600,
            env=pg.env(),
        )
        tmp_dump.rename(cache.dump)
    finally:
        tmp_dump.unlink(missing_ok=True)
        with contextlib.suppress(PeerError):
            pg.drop_database(database)
        redis.release()
        shutil.rmtree(workdir, ignore_errors=True)
    return time.monotonic() - started


def ensure_cache(cache: NetBoxCache | None = None, *, pg: PgTarget | None = None) -> NetBoxCache:
    """Build what is missing of the cache (under its lock) and return it."""
    cache = cache or NetBoxCache.default()
    if cache.ready:
        return cache
    pg = pg or PgTarget.from_env()
    _require_tools("psql", "pg_dump", "pg_restore", package="postgresql-client")
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PeerMissingError(
            f"cannot make the NetBox cache {cache.root} ({exc}; set {CACHE_ENV})"
        ) from exc
    with _flock(cache.root / ".lock"):
        if not cache.python.exists():  # another process may have built it while we waited
            python = find_python()
            _log(f"installing netbox=={cache.version} into {cache.venv} with {python} (~1.5 min)")
            _log(f"venv built in {_build_venv(cache, python):.0f} s")
        if not cache.dump.is_file():
            _log(f"migrating an empty database for {cache.dump} (~6 min)")
            _log(f"schema dumped in {_build_schema(cache, pg):.0f} s")
    return cache


class _Child:
    """One process of NetBox's that we started (a session of its own: a ^C to pytest
    is not its signal, and its RQ work-horse children can be killed with it)."""

    def __init__(
        self, name: str, argv: list[str], log: Path, env: dict[str, str], cwd: Path
    ) -> None:
        self.name, self.argv, self.log, self.env, self.cwd = name, argv, log, env, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerError(
                f"{self.name} exited with status {self.proc.returncode}\n{_tail(self.log)}"
            )

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to its process group after the grace period. An error if
        it had died on its own."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is not None:
            status = proc.returncode
            raise PeerError(
                f"{self.name} had exited with status {status} before stop\n{_tail(self.log)}"
            )
        proc.send_signal(signal.SIGCONT)  # a paused one would not see SIGTERM
        proc.terminate()
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            # Its whole group (rqworker's work horse too). The leader is not reaped yet,
            # so the group id is still ours and names nobody else's processes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_TOKENS_SCRIPT = """
import json
from users.models import Token, User
user = User.objects.create_superuser({username!r}, 'netmon-tests@example.invalid', {password!r})
v2 = Token(user=user, description='netmon tests (v2)', write_enabled=True)
v2.full_clean()
v2.save()
v1 = Token(user=user, version=1, description='netmon tests (v1)', write_enabled=True)
v1.full_clean()
v1.save()
print('NETMON_TOKENS ' + json.dumps({{'v2': f'nbt_{{v2.key}}.{{v2.token}}', 'v1': v1.token}}))
"""


class NetBoxServer:
    """One NetBox (web server + RQ worker) on a free loopback port with a fresh database.

    ``workdir`` is its ``NETBOX_ROOT`` (configuration, logs, media). :meth:`close` stops
    its processes, drops its database and releases its Redis databases.
    """

    def __init__(self, workdir: Path, cache: NetBoxCache, *, pg: PgTarget | None = None) -> None:
        self.workdir = workdir
        self.cache = cache
        self.pg = pg or PgTarget.from_env()
        self.database = f"{DB_PREFIX}p{os.getpid()}_{secrets.token_hex(4)}"
        self.port = 0
        self.username = "netmon"
        self.password = _random_secret(24)
        self.token = ""
        self.v1_token: str | None = None
        self.timings: dict[str, float] = {}
        self._redis = _RedisClaim()
        self._db_made = False
        self._web: _Child | None = None
        self._worker: _Child | None = None
        self._reset_sql: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The runserver's PID (for tests that signal it themselves)."""
        return self._web.proc.pid if self._web is not None and self._web.proc else None

    @property
    def worker_pid(self) -> int | None:
        return self._worker.proc.pid if self._worker is not None and self._worker.proc else None

    def start(self) -> NetBoxServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        t0 = time.monotonic()
        dbs = self._redis.acquire()
        self.pg.drop_stale_databases()
        self.pg.create_database(self.database)
        self._db_made = True
        restore = subprocess.run(
            ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "-j", "2",
             "-d", self.database, str(self.cache.dump)],
            capture_output=True, text=True, env=self.pg.env(), timeout=600,
        )  # fmt: skip
        if restore.returncode != 0:
            raise PeerError(f"pg_restore into {self.database}: {restore.stderr.strip()}")
        self.timings["restore"] = time.monotonic() - t0
        self._reset_sql = self._make_reset_sql()
        write_configuration(self.workdir, pg=self.pg, database=self.database, redis_dbs=dbs)
        env = _clean_env(NETBOX_ROOT=str(self.workdir))

        t1 = time.monotonic()
        shell = subprocess.Popen(
            self.cache.netbox(
                "nbshell",
                "--command",
                _TOKENS_SCRIPT.format(username=self.username, password=self.password),
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self.workdir,
            text=True,
        )
        # The web server and the worker start while nbshell makes the tokens.
        self.port = _free_tcp_port()
        self._web = self._child("runserver", "runserver", "--noreload", f"127.0.0.1:{self.port}")
        self._worker = self._child("rqworker", "rqworker")
        self._worker.start()
        self._web.start()
        try:
            out, err = shell.communicate(timeout=_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            shell.kill()
            shell.communicate()
            raise PeerError(f"nbshell made no tokens in {_START_TIMEOUT}s") from None
        match = re.search(r"^NETMON_TOKENS (\{.*\})$", out, re.MULTILINE)
        if shell.returncode != 0 or match is None:
            raise PeerError(f"nbshell exited {shell.returncode} without tokens:\n{out}\n{err}")
        tokens = json.loads(match.group(1))
        self.token, self.v1_token = tokens["v2"], tokens["v1"]
        self.timings["tokens"] = time.monotonic() - t1
        self._wait_ready(t1)
        self.timings["start"] = time.monotonic() - t1

    def _child(self, name: str, *args: str) -> _Child:
        return _Child(
            name,
            self.cache.netbox(*args),
            self.workdir / f"{name}.log",
            _clean_env(NETBOX_ROOT=str(self.workdir)),
            self.workdir,
        )

    def _wait_ready(self, since: float) -> None:
        """Until ``GET /api/status/`` answers 200 to the v2 token (and the worker lives)."""
        assert self._web is not None
        deadline = since + _START_TIMEOUT
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        while True:
            self._web.check()
            if self._worker is not None:
                self._worker.check()
            with contextlib.suppress(httpx.TransportError):
                response = httpx.get(f"{self.url}/api/status/", headers=headers, timeout=5)
                if response.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise PeerError(
                    f"NetBox did not answer in {_START_TIMEOUT}s\n{_tail(self._web.log)}"
                )
            time.sleep(_POLL)

    # -- making it slow or down ---------------------------------------------------------

    def pause(self) -> None:
        """SIGSTOP the web server: connections are accepted by the kernel, never answered."""
        if self._web is not None:
            self._web.signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._web is not None:
            self._web.signal(signal.SIGCONT)

    @property
    def web_running(self) -> bool:
        return self._web is not None and self._web.running

    def stop_web(self) -> None:
        """Stop the web server (the port refuses connections); the worker, database and
        tokens stay, so :meth:`start_web` brings the same NetBox back on the same port."""
        if self._web is not None:
            self._web.stop()

    def start_web(self) -> None:
        if self._web is None or self._web.running:
            return
        self._web.start()
        self._wait_ready(time.monotonic())

    # -- between tests ------------------------------------------------------------------

    def reset(self) -> None:
        """Empty every inventory table and the change log: one DELETE per table in one
        transaction, with triggers off (no signals, no webhooks; ids keep counting, as
        NetBox's never repeat). The rows migrations put in (module type profiles) stay."""
        if self._reset_sql is None:
            self._reset_sql = self._make_reset_sql()
        self.pg.psql(self._reset_sql, self.database)

    def _make_reset_sql(self) -> str:
        # TRUNCATE would be the obvious tool, but it makes new files for every table and
        # index: 4 s for NetBox's 172 inventory tables, empty or not. DELETE from an empty
        # table costs nothing; session_replication_role=replica turns off the foreign key
        # checks and NetBox's ltree/denormalisation triggers for the wipe (everything that
        # points at these rows goes with them: no other table references them).
        tables = self.pg.psql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            f"AND tablename ~ '{RESET_TABLES}' ORDER BY tablename",
            self.database,
        ).split()
        # Made at start, before any test wrote: the tables with rows are the migrations'.
        probe = " UNION ALL ".join(f"SELECT '{t}' FROM {t} HAVING count(*) > 0" for t in tables)
        seeded: dict[str, str] = {}  # table: its highest id (extras_cachedvalue's is a UUID)
        if filled := self.pg.psql(probe, self.database).split():
            tops = " UNION ALL ".join(f"SELECT '{t}', max(id)::text FROM {t}" for t in filled)
            seeded = dict(row.split("|") for row in self.pg.psql(tops, self.database).split())
        wipe = ", ".join(f"'{t}'" for t in tables if t not in seeded)
        keep = " ".join(f"DELETE FROM {t} WHERE id > {top};" for t, top in seeded.items())
        return (
            "SET lock_timeout = '10s'; DO $$ DECLARE t text; BEGIN "
            "SET LOCAL session_replication_role = replica; "
            f"FOREACH t IN ARRAY ARRAY[{wipe}] LOOP EXECUTE format('DELETE FROM %I', t); "
            f"END LOOP; {keep} END $$"
        )

    def log_tail(self) -> str:
        return "\n".join(_tail(self.workdir / f"{n}.log") for n in ("runserver", "rqworker"))

    def close(self) -> None:
        errors: list[str] = []
        for child in (self._web, self._worker):
            if child is not None:
                try:
                    child.stop()
                except PeerError as exc:
                    errors.append(str(exc))
        self._web = self._worker = None
        if self._db_made:
            self._db_made = False
            try:
                self.pg.drop_database(self.database)
            except PeerError as exc:
                errors.append(str(exc))
        self._redis.release()
        if errors:
            raise PeerError("\n".join(errors))


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class NetBoxPeer:
    """A NetBox the tests may use: ``url``, ``token`` (v2, ``Bearer``), ``v1_token``
    (``Token``; None when unknown), ``version``, ``database`` (None for a NetBox given
    by URL), ``api`` (a :class:`tests.netbox_seed.NetBoxApi` with ``token``), and
    ``server`` (the :class:`NetBoxServer`, None for a NetBox given by URL)."""

    url: str
    token: str
    v1_token: str | None
    version: str
    database: str | None
    api: NetBoxApi
    server: NetBoxServer | None = field(default=None, repr=False)

    def _own(self) -> NetBoxServer:
        if self.server is None:
            pytest.skip(f"needs the session's own NetBox, not {self.url} ({URL_ENV})")
        return self.server

    @property
    def pid(self) -> int | None:
        return self._own().pid

    def pause(self) -> None:
        """Freeze the web server (SIGSTOP): requests hang until :meth:`resume`."""
        self._own().pause()

    def resume(self) -> None:
        self._own().resume()

    def stop(self) -> None:
        """Take the web server down: connections to ``url`` are refused."""
        self._own().stop_web()

    def start(self) -> None:
        """Bring the web server back on the same port, same database and tokens."""
        self._own().start_web()

    def reset(self) -> None:
        """Empty the inventory: TRUNCATE on the own NetBox, else :func:`reset_inventory`."""
        if self.server is not None:
            self.server.reset()
        else:
            reset_inventory(self.api)


@pytest.fixture(scope="session")
def netbox_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetBoxPeer]:
    """The session's NetBox (started once), or the one named by ``NETMON_NETBOX_URL``."""
    url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    if url and token:
        with NetBoxApi(url, token) as api:
            status = api.get("status")
            yield NetBoxPeer(
                url=url.rstrip("/"),
                token=token,
                v1_token=os.environ.get(V1_TOKEN_ENV),
                version=str(status["netbox-version"]),
                database=None,
                api=api,
            )
        return
    try:
        cache = ensure_cache()
    except PeerMissingError as exc:
        missing_peer(f"NetBox peer: {exc}")
    except PeerError:
        if _BUILD_FAILURE:  # the collection hook's attempt already failed: say so once
            pytest.fail(f"NetBox cache build failed after collection:\n{_BUILD_FAILURE[0]}")
        raise
    server = NetBoxServer(tmp_path_factory.mktemp("netbox"), cache)
    try:
        server.start()
    except PeerMissingError as exc:
        missing_peer(f"NetBox peer: {exc}")
    _log(
        f"{server.url} up: restore {server.timings['restore']:.1f} s, "
        f"start {server.timings['start']:.1f} s (database {server.database})"
    )
    api = NetBoxApi(server.url, server.token)
    try:
        yield NetBoxPeer(
            url=server.url,
            token=server.token,
            v1_token=server.v1_token,
            version=cache.version,
            database=server.database,
            api=api,
            server=server,
        )
    finally:
        api.close()
        server.close()


@pytest.fixture
def netbox(netbox_peer: NetBoxPeer) -> Iterator[NetBoxPeer]:
    """The session's NetBox, emptied for this test; running again after it (a test that
    paused or stopped it leaves it resumed and started)."""
    netbox_peer.reset()
    yield netbox_peer
    if netbox_peer.server is not None:
        netbox_peer.server.resume()
        netbox_peer.server.start_web()


_BUILD_FAILURE: list[str] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the NetBox cache before the first test when a selected test needs NetBox:
    its ~8 minutes would otherwise count against that test's timeout. A failure here is
    kept for the fixture to report; the session goes on."""
    if session.config.option.collectonly or os.environ.get(URL_ENV):
        return
    if not any("netbox_peer" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    cache = NetBoxCache.default()
    if cache.ready:
        return
    try:
        ensure_cache(cache)
    except PeerMissingError:
        pass  # the fixture skips (or fails) with the reason
    except PeerError as exc:
        _BUILD_FAILURE.append(str(exc))


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.netbox_peer",
        description=f"The NetBox {NETBOX_VERSION} test peer's cache, or a peer to try by hand.",
    )
    parser.add_argument("--build-cache", action="store_true", help="build the cache if missing")
    parser.add_argument("--serve", action="store_true", help="start a peer, print it, wait for ^C")
    args = parser.parse_args(argv)
    if not (args.build_cache or args.serve):
        parser.error("say --build-cache or --serve")
    cache = NetBoxCache.default()
    try:
        started = time.monotonic()
        ensure_cache(cache)
        _log(f"cache ready in {cache.root} ({time.monotonic() - started:.0f} s)")
        if args.serve:
            workdir = Path(tempfile.mkdtemp(prefix="netmon-netbox-"))
            server = NetBoxServer(workdir, cache).start()
            print(f"NETMON_NETBOX_URL={server.url}")
            print(f"NETMON_NETBOX_TOKEN={server.token}")
            print(f"NETMON_NETBOX_V1_TOKEN={server.v1_token}")
            print(f"# timings {server.timings}; NETBOX_ROOT {workdir}; ^C stops it", flush=True)
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
            finally:
                server.close()
                shutil.rmtree(workdir, ignore_errors=True)
    except PeerMissingError as exc:
        _log(f"missing prerequisite: {exc}")
        return 2
    except PeerError as exc:
        _log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
