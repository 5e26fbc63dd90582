"""The lab's SSH servers, seen by an asyncssh client: ports, host key, login, routing of
subsystem/shell requests, and NETCONF framing on the wire, malformed input included."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from lxml import etree

from netmon.lab import DEFAULT_SSH_PASSWORD, SSH_PASSWORD_ENV, Device, Lab
from netmon.lab import ssh as lab_ssh
from netmon.lab.netconf_server import BASE_NS, EOM
from netmon.lab.ssh import load_host_key
from tests.test_lab_runner import free_base_port

HELLO_10 = (
    f'<hello xmlns="{BASE_NS}"><capabilities>'
    "<capability>urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>"
)
HELLO_11 = HELLO_10.replace(
    "</capabilities>", "<capability>urn:ietf:params:netconf:base:1.1</capability></capabilities>"
)
GET_CONFIG = (
    f'<rpc xmlns="{BASE_NS}" message-id="{{}}">'
    "<get-config><source><running/></source></get-config></rpc>"
)


@pytest.fixture
async def lab():
    async with Lab(devices=4, base_port=0, interfaces=4) as running:
        yield running


def login(lab: Lab, name: str, **options: Any) -> Any:
    settings: dict[str, Any] = {
        "port": lab.ssh_port(name),
        "username": "netmon",
        "password": DEFAULT_SSH_PASSWORD,
        "known_hosts": (
            [asyncssh.import_public_key(f"ssh-ed25519 {lab.ssh_host_key_b64}")],
            [],
            [],
        ),
        "client_keys": None,
        "agent_path": None,
        "preferred_auth": "password",
        "connect_timeout": 10,
    }
    settings.update(options)
    return asyncssh.connect("127.0.0.1", **settings)


class Wire:
    """A raw NETCONF channel: bytes in, framed messages out."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.process = process
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.process.stdin.write(data)

    async def message_eom(self) -> bytes:
        while EOM not in self.buffer:
            chunk = await asyncio.wait_for(self.process.stdout.read(65536), 10)
            assert chunk, f"closed; had {self.buffer!r}"
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(EOM)
        return message

    async def message_chunked(self) -> bytes:
        while not self.buffer.endswith(b"\n##\n"):
            chunk = await asyncio.wait_for(self.process.stdout.read(65536), 10)
            assert chunk, f"closed; had {self.buffer!r}"
            self.buffer += chunk
        parts, rest = [], self.buffer
        while rest != b"\n##\n":
            assert rest.startswith(b"\n#")
            header, _, rest = rest[2:].partition(b"\n")
            size = int(header)
            parts.append(rest[:size])
            rest = rest[size:]
        self.buffer = b""
        return b"".join(parts)

    async def closed(self) -> bool:
        data = await asyncio.wait_for(self.process.stdout.read(), 10)
        return data == b"" or self.process.stdout.at_eof()


async def netconf(conn: asyncssh.SSHClientConnection) -> Wire:
    process = await conn.create_process(subsystem="netconf", encoding=None)
    wire = Wire(process)
    hello = etree.fromstring(await wire.message_eom())
    assert hello.tag == f"{{{BASE_NS}}}hello"
    return wire


async def test_ports_host_key_and_who_listens():
    base = free_base_port(4)
    async with Lab(devices=4, base_port=base, interfaces=2) as lab:
        assert lab.ssh_port("lab-0002") == lab.port("lab-0002") == base + 2
        assert lab.ssh_port("lab-0003") == base + 3
        for name in ("lab-0001", "lab-0004"):
            with pytest.raises(ValueError, match="SNMP only"):
                lab.ssh_port(name)
        # SNMP-only devices have no TCP listener.
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", base + 1)) != 0
        async with login(lab, "lab-0002") as conn:
            key = conn.get_server_host_key()
            assert key.export_public_key("openssh").split()[1].decode() == lab.ssh_host_key_b64
    with socket.socket() as probe:  # stopped: the listener is gone
        assert probe.connect_ex(("127.0.0.1", base + 2)) != 0


def test_host_key_is_kept_in_its_directory(tmp_path: Path):
    first = load_host_key(tmp_path / "keys")
    assert (tmp_path / "keys" / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    second = load_host_key(tmp_path / "keys")
    assert first.public_data == second.public_data
    assert load_host_key().public_data != first.public_data
    one = Lab(devices=2, base_port=0, host_key_dir=tmp_path / "keys")
    assert one.ssh_host_key_b64 == lab_ssh.host_key_b64(first)


@pytest.mark.parametrize(
    "options",
    [{"password": "wrong"}, {"username": "admin"}, {"password": ""}],
)
async def test_bad_logins_are_refused(lab, options):
    with pytest.raises(asyncssh.PermissionDenied):
        async with login(lab, "lab-0002", **options):
            pass


async def test_password_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(SSH_PASSWORD_ENV, "from-env")
    async with Lab(devices=2, base_port=0, interfaces=2) as lab:
        async with login(lab, "lab-0002", password="from-env"):
            pass
        with pytest.raises(asyncssh.PermissionDenied):
            async with login(lab, "lab-0002"):
                pass


async def test_netconf_only_where_enabled_and_other_subsystems_refused(lab):
    async with login(lab, "lab-0003") as conn:  # a CLI device
        result = await conn.run(subsystem="netconf", input="", timeout=10)
        assert result.exit_status == 1
        assert "subsystem 'netconf' is not enabled on lab-0003" in str(result.stderr)
    async with login(lab, "lab-0002") as conn:
        with pytest.raises(asyncssh.ChannelOpenError):  # no sftp server at all
            await conn.run(subsystem="sftp", input="", timeout=10)
        result = await conn.run(subsystem="scp", input="", timeout=10)
        assert result.exit_status == 1


async def test_shell_goes_to_the_cli_shell_or_is_refused(lab, monkeypatch):
    monkeypatch.setattr(lab_ssh, "_shell_handler", lambda: None)
    async with login(lab, "lab-0003") as conn:
        result = await conn.run("show version", timeout=10)
        assert result.exit_status == 1
        assert "lab-0003 has no CLI" in str(result.stderr)

    seen: list[str] = []

    async def fake_shell(device: Device, process: asyncssh.SSHServerProcess[str]) -> None:
        seen.append(device.name)
        process.stdout.write(f"{device.name}> {process.command}\n")

    monkeypatch.setattr(lab_ssh, "_shell_handler", lambda: fake_shell)
    async with login(lab, "lab-0003") as conn:
        result = await conn.run("show version", timeout=10)
    assert result.stdout == "lab-0003> show version\n"
    assert result.exit_status == 0
    assert seen == ["lab-0003"]

    async def broken_shell(device: Device, process: asyncssh.SSHServerProcess[str]) -> None:
        raise RuntimeError("a bug in the shell")

    monkeypatch.setattr(lab_ssh, "_shell_handler", lambda: broken_shell)
    async with login(lab, "lab-0003") as conn:
        result = await conn.run("show version", timeout=10)
    assert result.exit_status == 0  # closed, and the lab still serves:
    async with login(lab, "lab-0002") as conn:
        await netconf(conn)


async def test_end_of_message_framing_for_a_base_10_client(lab):
    async with login(lab, "lab-0002") as conn:
        wire = await netconf(conn)
        wire.send(HELLO_10.encode() + EOM + GET_CONFIG.format(1).encode() + EOM)
        reply = etree.fromstring(await wire.message_eom())
        assert reply.get("message-id") == "1"
        assert reply.find(f"{{{BASE_NS}}}data") is not None


async def test_chunked_framing_malformed_xml_and_a_broken_frame(lab):
    async with login(lab, "lab-0002") as conn:
        wire = await netconf(conn)
        wire.send(HELLO_11.encode() + EOM)
        rpc = GET_CONFIG.format(2).encode()
        # One message in three chunks.
        wire.send(b"".join(b"\n#%d\n%s" % (len(p), p) for p in (rpc[:10], rpc[10:50], rpc[50:])))
        wire.send(b"\n##\n")
        reply = etree.fromstring(await wire.message_chunked())
        assert reply.get("message-id") == "2"
        assert reply.find(f"{{{BASE_NS}}}data") is not None

        garbage = b"<rpc message-id='3'><get></rpc>"
        wire.send(b"\n#%d\n%s\n##\n" % (len(garbage), garbage))
        error = etree.fromstring(await wire.message_chunked())
        assert error.findtext(f".//{{{BASE_NS}}}error-tag") == "malformed-message"

        wire.send(b"\n#%d\n%s\n##\n" % (len(rpc), rpc))  # the session goes on
        assert etree.fromstring(await wire.message_chunked()).get("message-id") == "2"

        wire.send(b"\n#zz\n<rpc/>\n##\n")  # broken framing: the session ends
        assert await wire.closed()
    async with login(lab, "lab-0002") as conn:  # and the lab does not
        await netconf(conn)


async def test_a_client_hello_that_is_not_one_closes_the_session(lab):
    async with login(lab, "lab-0002") as conn:
        wire = await netconf(conn)
        wire.send(b"this is not xml" + EOM)
        assert await wire.closed()


async def test_close_session_ends_the_channel(lab):
    async with login(lab, "lab-0002") as conn:
        wire = await netconf(conn)
        wire.send(HELLO_10.encode() + EOM)
        wire.send(f'<rpc xmlns="{BASE_NS}" message-id="8"><close-session/></rpc>'.encode() + EOM)
        reply = etree.fromstring(await wire.message_eom())
        assert reply.find(f"{{{BASE_NS}}}ok") is not None
        assert await wire.closed()


async def test_stopping_the_lab_closes_open_sessions():
    lab = Lab(devices=2, base_port=0, interfaces=2)
    await lab.start()
    try:
        conn = await login(lab, "lab-0002")
        wire = await netconf(conn)
    finally:
        await asyncio.wait_for(lab.stop(), 10)
    assert await wire.closed()
    await asyncio.wait_for(conn.wait_closed(), 10)
