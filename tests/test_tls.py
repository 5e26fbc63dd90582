"""TLS to PostgreSQL down to sslmode=verify-full, against a real server with a test CA.

The test makes its own CA and server certificate (for DNS name ``localhost``), starts a
private PostgreSQL cluster of its own (Debian's server binaries, in a temporary directory)
listening on 127.0.0.1 with ``ssl=on`` and ``hostssl`` only, and stops it afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from netmon.config import load_settings
from netmon.errors import DatabaseUnavailableError
from netmon.store.database import Database
from tests.certs import certificate, new_key
from tests.peer_check import missing_peer

pytestmark = pytest.mark.slow


def _write_pem(path: Path, obj) -> None:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )


@dataclass
class TlsServer:
    port: int
    ca: Path
    other_ca: Path


def _pg_bin() -> Path | None:
    # The embedded wheel's server is built without SSL; Debian's PostgreSQL has it.
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        if (version / "bin" / "initdb").exists():
            return version / "bin"
    return None


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        missing_peer("no PostgreSQL server binaries in /usr/lib/postgresql")
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def pg(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=owner.pw_uid if owner else None)

    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="netmon-tls-"))
    base.chmod(0o755)
    pgdata = base / "pgdata"
    sockdir = base / "sock"
    sockdir.mkdir(mode=0o777)
    sockdir.chmod(0o777)
    if owner:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    pg(str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(pgdata))

    ca_key, other_key, srv_key = new_key(), new_key(), new_key()
    ca = certificate("netmon test CA", ca_key, ca_key, None, ca=True)
    other = certificate("some other CA", other_key, other_key, None, ca=True)
    localhost: list[x509.GeneralName] = [x509.DNSName("localhost")]
    srv = certificate("localhost", srv_key, ca_key, ca, ca=False, alt_names=localhost)
    _write_pem(base / "ca.pem", ca)
    _write_pem(base / "other-ca.pem", other)
    _write_pem(pgdata / "server.crt", srv)
    _write_pem(pgdata / "server.key", srv_key)
    os.chmod(pgdata / "server.key", 0o600)
    if owner:
        for name in ("server.crt", "server.key"):
            os.chown(pgdata / name, owner.pw_uid, owner.pw_gid)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    (pgdata / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
    log = base / "postgres.log"
    log.touch()
    if owner:
        os.chown(log, owner.pw_uid, owner.pw_gid)
    options = f"-h 127.0.0.1 -p {port} -k {sockdir}"
    pg(str(bin_dir / "pg_ctl"), "-w", "-o", options, "-l", str(log), "-D", str(pgdata), "start")
    try:
        yield TlsServer(port=port, ca=base / "ca.pem", other_ca=base / "other-ca.pem")
    finally:
        pg(str(bin_dir / "pg_ctl"), "-w", "-D", str(pgdata), "-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _settings(url: str, tmp_path: Path, **db):
    return load_settings(None, data_dir=tmp_path, database={"url": url, "pool_min": 1, **db})


async def test_verify_full_connects_encrypted(tls_server, tmp_path):
    s = _settings(
        f"postgresql://postgres@localhost:{tls_server.port}/postgres",
        tmp_path,
        sslmode="verify-full",
        sslrootcert=str(tls_server.ca),
    )
    db = Database(s.database, tmp_path)
    await db.start()
    try:
        async with db.pool.acquire() as conn:
            encrypted = await conn.fetchval(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
        assert encrypted is True
    finally:
        await db.stop()


async def test_verify_full_refuses_a_name_the_certificate_does_not_hold(tls_server, tmp_path):
    s = _settings(
        f"postgresql://postgres@127.0.0.1:{tls_server.port}/postgres",
        tmp_path,
        sslmode="verify-full",
        sslrootcert=str(tls_server.ca),
    )
    with pytest.raises(DatabaseUnavailableError, match=r"(?i)certificate|hostname|match"):
        await Database(s.database, tmp_path).start()


async def test_verify_ca_refuses_an_unknown_ca_and_accepts_the_right_one(tls_server, tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{tls_server.port}/postgres"
    wrong = _settings(url, tmp_path, sslmode="verify-ca", sslrootcert=str(tls_server.other_ca))
    with pytest.raises(DatabaseUnavailableError, match=r"(?i)certificate"):
        await Database(wrong.database, tmp_path).start()
    # verify-ca checks the chain but not the name: 127.0.0.1 is fine here.
    right = _settings(url, tmp_path, sslmode="verify-ca", sslrootcert=str(tls_server.ca))
    db = Database(right.database, tmp_path)
    await db.start()
    await db.stop()


async def test_plain_connection_is_refused_by_a_hostssl_only_server(tls_server, tmp_path):
    s = _settings(
        f"postgresql://postgres@127.0.0.1:{tls_server.port}/postgres", tmp_path, sslmode="disable"
    )
    with pytest.raises(DatabaseUnavailableError, match=r"(?i)pg_hba|no encryption"):
        await Database(s.database, tmp_path).start()
