"""The lab's IOS-like CLI (netmon.lab.cli_shell) over a real SSH server, driven by
netmiko's cisco_ios driver and asyncssh's client.

The fixture ``lab_cli`` (also used by tests/test_tasks_cli.py and test_tasks_napalm.py)
runs a one-device Lab (SNMP agent) on a clock the test moves, and an asyncssh server on
127.0.0.1 whose sessions are ``serve_shell`` on that same Device: SNMP and CLI answer
from one simulation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from netmiko import ConnectHandler

from netmon.lab import AUTH_KEY_ENV, DEFAULT_AUTH_KEY, DEFAULT_PRIV_KEY, PRIV_KEY_ENV, Lab
from netmon.lab.cli_shell import CliSession, serve_shell
from netmon.lab.device import Device
from netmon.ssh.drivers import napalm_pool
from netmon.ssh.session import cli_pool
from netmon.store.configs import redact

USER = "netmon"
PASSWORD = "lab-cli-test-password"  # a test server's own
PASSWORD_ENV = "NETMON_TEST_CLI_PASSWORD"
DEVICE = "lab-0001"


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 50_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class _PasswordServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USER and password == PASSWORD


@dataclass
class LabCli:
    lab: Lab
    device: Device
    clock: Clock
    ssh_port: int
    host_key_b64: str

    def netmiko(self, **options: object) -> dict[str, object]:
        return {
            "device_type": "cisco_ios",
            "host": "127.0.0.1",
            "port": self.ssh_port,
            "username": USER,
            "password": PASSWORD,
            "ssh_strict": False,
            "system_host_keys": False,
            "alt_host_keys": False,
            "allow_agent": False,
            "use_keys": False,
            **options,
        }

    def inventory(self, folder: Path, tasks: list[str], cli: str = "") -> Path:
        """A Nornir inventory of the one device with SNMP and CLI settings."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.yaml").write_text(
            f"{self.device.name}:\n"
            "  hostname: 127.0.0.1\n"
            "  platform: ios\n"
            "  data:\n"
            f"    tasks: {tasks}\n"
            f"    snmp: {{port: {self.lab.port(self.device.name)}}}\n"
            "    cli:\n"
            f"      port: {self.ssh_port}\n"
            f"      username: {USER}\n"
            f"      password: {{env: {PASSWORD_ENV}}}\n"
            f"      host_key: {{pinned: {self.host_key_b64}}}\n"
            "      timeout: 5s\n" + cli
        )
        (folder / "groups.yaml").write_text("{}\n")
        (folder / "defaults.yaml").write_text(
            "data:\n"
            "  snmp:\n"
            f"    user: {USER}\n"
            f"    auth: {{protocol: sha1, key: {{env: {AUTH_KEY_ENV}}}}}\n"
            f"    priv: {{protocol: aes128, key: {{env: {PRIV_KEY_ENV}}}}}\n"
            "    timeout: 2s\n"
            "    retries: 0\n"
        )
        return folder


@asynccontextmanager
async def serve_lab_cli(devices: int = 1, name: str = DEVICE) -> AsyncIterator[LabCli]:
    """A Lab of ``devices`` (SNMP) and an SSH server whose shell is device ``name``'s."""
    clock = Clock()
    async with Lab(devices=devices, base_port=0, interfaces=8, now=clock) as lab:
        device = lab.device(name)
        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.create_server(
            _PasswordServer,
            "127.0.0.1",
            0,
            server_host_keys=[key],
            process_factory=lambda process: serve_shell(device, process),
        )
        port = server.sockets[0].getsockname()[1]
        b64 = key.export_public_key("openssh").split()[1].decode()
        try:
            yield LabCli(lab, device, clock, port, b64)
        finally:
            # Sessions log out while the server still answers, then the server goes.
            await asyncio.to_thread(cli_pool().close_all)
            await asyncio.to_thread(napalm_pool().close_all)
            server.close()
            await server.wait_closed()


@pytest.fixture
def lab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets an inventory of ``LabCli.inventory`` refers to."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv(AUTH_KEY_ENV, DEFAULT_AUTH_KEY)
    monkeypatch.setenv(PRIV_KEY_ENV, DEFAULT_PRIV_KEY)


@pytest.fixture
async def lab_cli(lab_env: None) -> AsyncIterator[LabCli]:
    async with serve_lab_cli() as running:
        yield running


@pytest.fixture(autouse=True)
def _no_sessions_left() -> Iterator[None]:
    yield
    cli_pool().close_all()
    napalm_pool().close_all()


def _netmiko_session(lab_cli: LabCli) -> dict[str, str]:
    conn = ConnectHandler(**lab_cli.netmiko())
    try:
        return {
            "prompt_after_login": conn.find_prompt(),
            "version": conn.send_command("show version"),
            "brief": conn.send_command("sh ip int br"),
            "invalid": conn.send_command("show bogus"),
            "config_unprivileged": conn.send_command("show running-config"),
            "enable": str(conn.enable()),
            "prompt_after_enable": conn.find_prompt(),
            "config": conn.send_command("show running-config"),
        }
    finally:
        conn.disconnect()


async def test_netmiko_cisco_ios_drives_the_lab_shell(lab_cli: LabCli) -> None:
    out = await asyncio.to_thread(_netmiko_session, lab_cli)
    assert out["prompt_after_login"] == f"{DEVICE}>"
    assert out["prompt_after_enable"] == f"{DEVICE}#"
    assert f"{DEVICE} uptime is " in out["version"]
    assert "Processor board ID NLB" in out["version"]
    brief = out["brief"].strip().splitlines()
    assert brief[0].split() == ["Interface", "IP-Address", "OK?", "Method", "Status", "Protocol"]
    assert [line.split()[0] for line in brief[1:]] == [i.descr for i in lab_cli.device.interfaces]
    assert "% Invalid input detected at '^' marker." in out["invalid"]
    # show running-config is privileged, as on IOS.
    assert "% Invalid input detected" in out["config_unprivileged"]
    assert "hostname lab-0001" in out["config"]
    assert out["config"].rstrip().endswith("end")


async def test_the_shell_echoes_in_order_so_prompts_stand_on_their_own_lines(
    lab_cli: LabCli,
) -> None:
    # asyncssh's line editor echoed input at once: two Enters sent together came back as
    # "\n\nlab-0001>lab-0001>", which netmiko's find_prompt took for the prompt; the next
    # command then waited for that doubled prompt until its timeout ("no prompt within
    # 10s" on a lab CLI device every few hundred polls).
    async with asyncssh.connect(
        "127.0.0.1",
        lab_cli.ssh_port,
        username=USER,
        password=PASSWORD,
        known_hosts=None,
        client_keys=None,
    ) as conn:
        writer, reader, _ = await conn.open_session(term_type="vt100")
        first = await asyncio.wait_for(reader.readuntil(f"{DEVICE}>"), 5)
        writer.write("\n\nshow clock\n")
        answer = ""
        while answer.count(f"{DEVICE}>") < 3:
            answer += await asyncio.wait_for(reader.read(1024), 5)
        writer.close()
    # A terminal's line ends are CR LF.
    assert first == f"\r\n{DEVICE}>"
    lines = answer.replace("\r\n", "\n").split("\n")
    assert lines[:3] == ["", f"{DEVICE}>", f"{DEVICE}>show clock"]
    assert lines[-1] == f"{DEVICE}>"
    assert "% Invalid input detected" in answer


async def test_an_exec_request_runs_one_command(lab_cli: LabCli) -> None:
    async with asyncssh.connect(
        "127.0.0.1",
        lab_cli.ssh_port,
        username=USER,
        password=PASSWORD,
        known_hosts=None,
        client_keys=None,
    ) as conn:
        version = await conn.run("show version", check=True)
        unknown = await conn.run("reload in 5")
    assert version.exit_status == 0
    assert f"{DEVICE} uptime is " in str(version.stdout)
    assert "% Invalid input detected" in str(unknown.stdout)


def test_commands_abbreviate_and_filter() -> None:
    session = CliSession(Device(DEVICE, 4, uptime=3600.0))
    brief, more = session.run("sh ip int br | include 1/0/2")
    assert more
    assert [line.split()[0] for line in brief.splitlines()] == ["GigabitEthernet1/0/2"]
    begin, _ = session.run("show version | begin Processor")
    assert begin.startswith("Processor board ID")
    assert "% Invalid input" in session.run("show interfaces | frobnicate x")[0]
    assert session.run("")[0] == ""
    assert session.run("exit") == ("", False)


def test_the_running_config_has_secrets_for_redaction_and_follows_config_changes() -> None:
    device = Device(DEVICE, 4, uptime=3600.0)
    session = CliSession(device, enabled=True)
    before, _ = session.run("show running-config")
    assert "\nenable secret 9 $9$" in before
    assert "password 7 " in before
    redacted = redact(before)
    assert "$9$" not in redacted
    users = [line for line in redacted.splitlines() if line.startswith("username ")]
    assert users
    assert all(line.endswith("password 7 <redacted>") for line in users), users
    # Current configuration counts the bytes that follow it, as IOS does.
    header, _, body = before.partition("bytes\n")
    assert int(header.rsplit(":", 1)[1]) == len(body.encode())

    device.change_config("moved to rack 7")
    after, _ = session.run("show running-config")
    assert " description moved to rack 7" in after
    assert after != before
