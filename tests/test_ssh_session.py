"""netmon.ssh sessions against a real OpenSSH sshd (tests/netconf_peer.py's
``ssh_cli_peer``, a bash shell for netmiko's ``linux`` driver): host-key policies checked
before login, authentication errors, session reuse and replacement, output that does not
parse, and a poll that goes on after a failed one."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from netmiko.base_connection import BaseConnection
from nornir.core.task import Result, Task

from netmon.access import AcceptAnyHostKey, KnownHosts, PinnedHostKey, Secret
from netmon.config import PollerSettings
from netmon.errors import (
    CliAuthError,
    CliConnectionError,
    CliError,
    CliParseError,
    CliTimeoutError,
)
from netmon.poller.inventory import load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import run_poll
from netmon.records import DeviceFacts
from netmon.ssh.hosts import CliTarget, cli_target
from netmon.ssh.parse import parse
from netmon.ssh.session import SessionPool, cli_pool, connect, send_command
from tests import netconf_peer
from tests.netconf_peer import SSH_KEYGEN, SshLogin, free_tcp_port

ssh_cli_peer = netconf_peer.ssh_cli_peer  # the fixture


@pytest.fixture(autouse=True)
def _fresh_pool():
    cli_pool().close_all()
    yield
    cli_pool().close_all()


def _target(login: SshLogin, **changes: object) -> CliTarget:
    fields: dict[str, object] = {
        "device": "peer",
        "host": login.host,
        "port": login.port,
        "username": login.username,
        "device_type": "linux",
        "key_file": login.key_filename,
        "host_key": KnownHosts(login.known_hosts),
        "timeout": 5.0,
    }
    fields.update(changes)
    return CliTarget(**fields)  # type: ignore[arg-type]


def _other_key(folder: Path) -> tuple[Path, str]:
    """A fresh ed25519 key pair that this sshd knows nothing about."""
    key = folder / "other_ed25519"
    if not key.exists():
        subprocess.run(
            [str(SSH_KEYGEN), "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
    return key, key.with_suffix(".pub").read_text().split()[1]


def _sshd_log(login: SshLogin) -> str:
    return (login.known_hosts.parent / "sshd.log").read_text(errors="replace")


def test_a_command_runs_in_a_reused_session(ssh_cli_peer: SshLogin) -> None:
    target = _target(ssh_cli_peer)
    assert send_command(target, "echo netmon-$((40 + 2))").strip() == "netmon-42"
    first = cli_pool()._slot("peer").session
    assert send_command(target, "printf 'a\\nb\\n'").strip().splitlines() == ["a", "b"]
    assert cli_pool()._slot("peer").session is first  # logged in once
    assert len(cli_pool()) == 1


def test_the_output_of_a_real_command_parses_with_ntc_templates(ssh_cli_peer: SshLogin) -> None:
    target = _target(ssh_cli_peer)
    output = send_command(target, "ip link show")
    rows = parse("peer", "linux", "ip link show", output)
    assert "lo" in {row["interface"] for row in rows}


def test_a_pinned_host_key_is_trusted_and_another_is_refused_before_login(
    ssh_cli_peer: SshLogin, tmp_path: Path
) -> None:
    right = _target(ssh_cli_peer, host_key=PinnedHostKey(ssh_cli_peer.host_key_b64))
    assert send_command(right, "echo pinned").strip() == "pinned"
    cli_pool().close_all()

    _, wrong_b64 = _other_key(tmp_path)
    logins_before = _sshd_log(ssh_cli_peer).count("Accepted publickey")
    with pytest.raises(CliAuthError) as caught:
        send_command(_target(ssh_cli_peer, host_key=PinnedHostKey(wrong_b64)), "echo no")
    assert "host key" in str(caught.value)
    assert "peer" in str(caught.value)
    # Refused at key exchange: the sshd saw no login.
    assert _sshd_log(ssh_cli_peer).count("Accepted publickey") == logins_before
    assert len(cli_pool()) == 0


def test_known_hosts_without_the_server_or_missing_refuses_before_login(
    ssh_cli_peer: SshLogin, tmp_path: Path
) -> None:
    _, other_b64 = _other_key(tmp_path)
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[{ssh_cli_peer.host}]:{ssh_cli_peer.port} ssh-ed25519 {other_b64}\n")
    elsewhere = tmp_path / "known_hosts_elsewhere"
    elsewhere.write_text(f"[{ssh_cli_peer.host}]:1 {ssh_cli_peer.host_key_type} {other_b64}\n")
    logins_before = _sshd_log(ssh_cli_peer).count("Accepted publickey")
    for known_hosts in (wrong, elsewhere):
        with pytest.raises(CliAuthError, match="host key"):
            send_command(_target(ssh_cli_peer, host_key=KnownHosts(known_hosts)), "true")
    with pytest.raises(CliAuthError, match="does not exist"):
        send_command(_target(ssh_cli_peer, host_key=KnownHosts(tmp_path / "absent")), "true")
    assert _sshd_log(ssh_cli_peer).count("Accepted publickey") == logins_before


def test_accept_any_takes_whatever_key(ssh_cli_peer: SshLogin) -> None:
    target = _target(ssh_cli_peer, host_key=AcceptAnyHostKey())
    assert send_command(target, "echo any").strip() == "any"


def test_refused_credentials_are_an_auth_error_without_the_password(
    ssh_cli_peer: SshLogin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_key, _ = _other_key(tmp_path)
    with pytest.raises(CliAuthError, match="login refused for user"):
        send_command(_target(ssh_cli_peer, key_file=other_key), "true")
    # Password login (this sshd allows none): refused, and the password is nowhere.
    monkeypatch.setenv("NETMON_TEST_SSH_PW", "pw-that-must-not-leak-7731")
    target = _target(ssh_cli_peer, key_file=None, password=Secret(env="NETMON_TEST_SSH_PW"))
    with pytest.raises(CliAuthError) as caught:
        send_command(target, "true")
    chain: BaseException | None = caught.value
    while chain is not None:  # nor in anything it was raised from
        assert "pw-that-must-not-leak-7731" not in str(chain)
        chain = chain.__cause__ or chain.__context__
    assert len(cli_pool()) == 0


def test_nothing_listening_is_a_connection_error(ssh_cli_peer: SshLogin) -> None:
    target = _target(ssh_cli_peer, port=free_tcp_port(), host_key=AcceptAnyHostKey())
    with pytest.raises(CliConnectionError) as caught:
        send_command(target, "true")
    assert f"127.0.0.1:{target.port}" in str(caught.value)


def test_a_broken_session_is_dropped_and_the_next_use_logs_in_again(
    ssh_cli_peer: SshLogin,
) -> None:
    target = _target(ssh_cli_peer, timeout=2.0)
    assert send_command(target, "echo one").strip() == "one"
    broken = cli_pool()._slot("peer").session
    with pytest.raises(CliError):
        send_command(target, "exit")  # the shell ends: no prompt comes back
    assert len(cli_pool()) == 0
    assert send_command(target, "echo two").strip() == "two"
    assert cli_pool()._slot("peer").session is not broken


# --- through the poller -----------------------------------------------------------------


def uname_facts(task: Task) -> Result:
    """A user's task: one command, its output parsed with ntc-templates."""
    target = cli_target(task.host)
    output = send_command(target, "uname -a")
    rows = parse(target.device, "linux", "uname -a", output)  # no template: CliParseError
    return Result(host=task.host, result=rows)


def link_facts(task: Task) -> Result:
    target = cli_target(task.host)
    rows = parse(target.device, "linux", "ip link show", send_command(target, "ip link show"))
    facts = DeviceFacts(target.device, datetime.now(UTC), {"links": [r["interface"] for r in rows]})
    return Result(host=task.host, result=[facts])


def test_a_poll_with_unparsable_output_fails_with_the_command_and_the_next_goes_on(
    ssh_cli_peer: SshLogin, tmp_path: Path
) -> None:
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "hosts.yaml").write_text(
        "peer:\n"
        f"  hostname: {ssh_cli_peer.host}\n"
        "  platform: linux\n"
        "  data:\n"
        "    tasks: [link_facts, uname_facts]\n"
        "    cli:\n"
        f"      port: {ssh_cli_peer.port}\n"
        f"      username: {ssh_cli_peer.username}\n"
        f"      key_file: {ssh_cli_peer.key_filename}\n"
        f"      host_key: {{known_hosts: {ssh_cli_peer.known_hosts}}}\n"
        "      timeout: 5s\n"
    )
    registry = TaskRegistry.discover()
    registry.add("link_facts", link_facts, __name__)
    registry.add("uname_facts", uname_facts, __name__)
    nr = load_inventory(folder)
    (plan,) = plan_polls(nr, PollerSettings(), registry)
    for _poll in range(2):  # the failed poll leaves the next one working
        result = run_poll(nr, plan)
        assert isinstance(result.error, CliParseError)
        assert result.error.error_class == "cli_parse"
        assert result.error.command == "uname -a"
        assert "peer" in str(result.error)
        assert result.error.sample.lstrip().startswith("Linux ")
        (facts,) = result.records  # the task before it still counts
        assert isinstance(facts, DeviceFacts)
        assert "lo" in facts.facts["links"]
    assert len(cli_pool()) == 1  # a parse error does not cost the session


def test_sessions_idle_too_long_are_closed(ssh_cli_peer: SshLogin) -> None:
    now = [0.0]
    pool: SessionPool[BaseConnection] = SessionPool(
        connect, lambda c: c.disconnect(), lambda c: True, idle_seconds=60.0, clock=lambda: now[0]
    )

    def echo(target: CliTarget, text: str) -> str:
        return pool.run(target, "echo", lambda c: c.send_command(f"echo {text}").strip())

    quiet, busy = _target(ssh_cli_peer, device="quiet"), _target(ssh_cli_peer, device="busy")
    try:
        assert echo(quiet, "q") == "q"
        assert echo(busy, "b1") == "b1"
        now[0] = 50.0
        assert echo(busy, "b2") == "b2"  # busy was used at 50 s, quiet at 0 s
        now[0] = 100.0
        assert pool.close_idle() == 1
        assert len(pool) == 1
        assert pool._slot("quiet").session is None
        assert echo(quiet, "back") == "back"  # logs in again when needed
    finally:
        pool.close_all()


def test_a_command_without_a_prompt_in_time_is_a_timeout_and_drops_the_session(
    ssh_cli_peer: SshLogin,
) -> None:
    # The timeout covers the login to sshd too, which a loaded machine can take a second
    # over; 2.5 s leaves it room and still ends long before the command would.
    target = _target(ssh_cli_peer, timeout=2.5)
    with pytest.raises(CliTimeoutError) as caught:
        send_command(target, "sleep 8")
    assert "'sleep 8'" in str(caught.value)
    assert caught.value.error_class == "cli_timeout"
    assert len(cli_pool()) == 0  # its shell is still busy: never reused
