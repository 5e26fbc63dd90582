"""netmon.netconf (client, shared pool) against a real NETCONF server: yuma123 netconfd
behind a private OpenSSH sshd (tests/netconf_peer.py).

Covers what the unit tests in test_netconf_client.py cannot: the hello's capabilities and
YANG modules, <get> with subtree (one and several top-level elements) and XPath filters,
<get-config>, each host-key policy against a real host key, a refused login, and the
shared pool keeping one session across polls and replacing it after a failure.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from netmon.errors import (
    CollectionError,
    NetconfAuthError,
    NetconfCapabilityError,
    NetconfHostKeyError,
    NetconfReplyTooLargeError,
    NetconfRpcError,
)
from netmon.netconf import xml
from netmon.netconf.client import XPATH, connect
from netmon.netconf.interfaces import IETF_INTERFACES
from netmon.netconf.shared import PooledSession, SessionPool
from netmon.netconf.target import AcceptAnyHostKey, KnownHosts, NetconfTarget, PinnedHostKey, Secret
from tests.netconf_peer import NetconfPeer, netconf_peer

__all__ = ["netconf_peer"]  # the fixture, used by name

IF = {"if": IETF_INTERFACES}
SYS_NS = "urn:ietf:params:xml:ns:yang:ietf-system"
PASSWORD = "not-this-one-9f3c"  # sshd takes keys only: any password fails


def peer_target(peer: NetconfPeer, **change: Any) -> NetconfTarget:
    login = peer.login
    values: dict[str, Any] = {
        "device": "r1",
        "host": login.host,
        "port": login.port,
        "username": login.username,
        "key_file": login.key_filename,
        "host_key": PinnedHostKey(login.host_key_b64),
        "connect_timeout": 10.0,
        "rpc_timeout": 10.0,
    }
    values.update(change)
    return NetconfTarget(**values)


def kernel_interfaces() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def test_hello_capabilities_and_modules(netconf_peer: NetconfPeer) -> None:
    session = connect(peer_target(netconf_peer))
    try:
        caps = session.capabilities
        assert session.connected
        assert caps.has("urn:ietf:params:netconf:base:1.1")
        assert caps.has(XPATH)
        module = caps.module("ietf-interfaces")
        assert module is not None
        assert module.namespace == IETF_INTERFACES
        assert module.revision == "2014-05-08"  # RFC 7223
        assert "if-mib" in module.features
        assert caps.module("ietf-system") is not None
        assert caps.module("openconfig-interfaces") is None
    finally:
        session.close()
    assert not session.connected


def test_get_with_subtree_filters(netconf_peer: NetconfPeer) -> None:
    session = connect(peer_target(netconf_peer))
    try:
        reply = session.get(subtree=f'<interfaces-state xmlns="{IETF_INTERFACES}"/>')
        names = xml.texts(reply.data, "if:interfaces-state/if:interface/if:name", IF)
        assert set(names) == kernel_interfaces()
        assert reply.size > 0
        # Two top-level subtrees in one <filter>: both come back in one reply.
        both = session.get(
            subtree=(
                f'<interfaces-state xmlns="{IETF_INTERFACES}"><interface><name>lo</name>'
                "<oper-status/></interface></interfaces-state>",
                f'<system-state xmlns="{SYS_NS}"><clock/></system-state>',
            )
        )
        assert xml.texts(both.data, "if:interfaces-state/if:interface/if:name", IF) == ["lo"]
        assert xml.text(
            both.data, "sys:system-state/sys:clock/sys:current-datetime", {"sys": SYS_NS}
        )
    finally:
        session.close()


def test_get_with_an_xpath_filter(netconf_peer: NetconfPeer) -> None:
    session = connect(peer_target(netconf_peer))
    try:
        reply = session.get(
            xpath="/if:interfaces-state/if:interface[if:name='lo']/if:oper-status",
            namespaces=IF,
        )
        entries = xml.elements(reply.data, "if:interfaces-state/if:interface", IF)
        assert [xml.text(e, "if:name", IF) for e in entries] == ["lo"]
        assert xml.text(entries[0], "if:oper-status", IF) in {"up", "unknown"}
        assert xml.element(entries[0], "if:statistics", IF) is None
    finally:
        session.close()


def test_get_config_running(netconf_peer: NetconfPeer) -> None:
    session = connect(peer_target(netconf_peer))
    try:
        reply = session.get_config("running")
        assert reply.data.tag == f"{{{xml.BASE_NS}}}data"
        assert len(reply.data) >= 1  # netconfd's running has at least its nacm container
    finally:
        session.close()


def test_known_hosts_with_the_entry_connects(netconf_peer: NetconfPeer) -> None:
    login = netconf_peer.login
    session = connect(peer_target(netconf_peer, host_key=KnownHosts(login.known_hosts)))
    session.close()
    session = connect(peer_target(netconf_peer, host_key=AcceptAnyHostKey()))
    session.close()


def test_known_hosts_without_the_entry_is_refused(
    netconf_peer: NetconfPeer, tmp_path: Path
) -> None:
    login = netconf_peer.login
    other = tmp_path / "known_hosts"
    # The same key, but for another port: not this server's entry.
    other.write_text(f"[127.0.0.1]:{login.port + 1} {login.host_key_type} {login.host_key_b64}\n")
    with pytest.raises(NetconfHostKeyError, match=r"no host key for 127\.0\.0\.1") as caught:
        connect(peer_target(netconf_peer, host_key=KnownHosts(other)))
    assert caught.value.error_class == "netconf_host_key"


def test_pinned_wrong_key_is_refused(netconf_peer: NetconfPeer) -> None:
    login = netconf_peer.login
    wrong = login.key_filename.with_suffix(".pub").read_text().split()[1]  # a real key, not it
    with pytest.raises(NetconfHostKeyError, match="not the trusted one"):
        connect(peer_target(netconf_peer, host_key=PinnedHostKey(wrong)))


def test_wrong_key_file_is_an_auth_error(netconf_peer: NetconfPeer, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(NetconfAuthError, match="authentication failed") as caught:
        connect(peer_target(netconf_peer, key_file=stranger))
    assert isinstance(caught.value, PermissionError)
    assert caught.value.error_class == "netconf_auth"


def test_password_refused_without_leaking_it(
    netconf_peer: NetconfPeer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NETMON_TEST_PEER_PASSWORD", PASSWORD)
    target = peer_target(
        netconf_peer, key_file=None, password=Secret(env="NETMON_TEST_PEER_PASSWORD")
    )
    caplog.set_level(logging.DEBUG)  # ncclient's and paramiko's loggers, at their chattiest
    with pytest.raises(NetconfAuthError) as caught:
        connect(target)
    assert "paramiko" in caplog.text or "ncclient" in caplog.text  # they did log
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(target)
    seen: BaseException | None = caught.value
    while seen is not None:
        assert PASSWORD not in str(seen)
        assert PASSWORD not in repr(seen)
        seen = seen.__cause__ or seen.__context__


def test_pool_keeps_one_session_across_polls(netconf_peer: NetconfPeer) -> None:
    target = peer_target(netconf_peer)
    subtree = f'<interfaces-state xmlns="{IETF_INTERFACES}"/>'
    with SessionPool(max_sessions=2, idle_timeout=60) as pool:
        serials = []
        for _poll in range(3):
            serials.append(pool.run(target, lambda p: p.serial))
            reply = pool.get(target, subtree=subtree)
            assert "lo" in xml.texts(reply.data, "if:interfaces-state/if:interface/if:name", IF)
        assert pool.opened == 1
        assert len(set(serials)) == 1
        assert pool.open_sessions == 1
        # A changed target (a reloaded inventory) gets a new session, not the old one.
        changed = replace(target, rpc_timeout=20.0)
        assert pool.run(changed, lambda p: p.serial) != serials[0]
        assert pool.opened == 2
        assert pool.open_sessions == 1
    assert pool.open_sessions == 0


def test_pool_drops_a_session_after_a_failure(netconf_peer: NetconfPeer) -> None:
    # The hello (about 4 KB) fits; a <get> of everything (netconfd's /proc readings) does not.
    target = peer_target(netconf_peer, max_reply_bytes=16 * 1024)
    with SessionPool(max_sessions=2, idle_timeout=60) as pool:
        first = pool.run(target, lambda p: p.serial)
        with pytest.raises(NetconfReplyTooLargeError) as caught:
            pool.get(target)
        assert isinstance(caught.value, CollectionError)
        assert pool.dropped == 1
        assert pool.open_sessions == 0
        # The next poll opens a new session, which works.
        second = pool.run(target, lambda p: p.serial)
        assert second != first
        reply = pool.get(target, subtree=f'<interfaces-state xmlns="{IETF_INTERFACES}"/>')
        assert xml.texts(reply.data, "if:interfaces-state/if:interface/if:name", IF)
        assert pool.opened == 2


def test_pool_keeps_a_session_after_an_rpc_error(netconf_peer: NetconfPeer) -> None:
    target = peer_target(netconf_peer)
    with SessionPool(max_sessions=2, idle_timeout=60) as pool:
        with pytest.raises(NetconfCapabilityError):  # netconfd has no candidate datastore
            pool.get_config(target, "candidate")
        with pytest.raises(NetconfRpcError) as caught:
            pool.get(target, xpath="/if:interfaces-state/if:interface[", namespaces=IF)
        assert caught.value.error_class == "netconf_rpc_error"
        assert pool.run(target, lambda p: p.session.connected)
        assert (pool.opened, pool.dropped) == (1, 0)


def test_pool_bounds_open_sessions_and_closes_the_least_recent(netconf_peer: NetconfPeer) -> None:
    # Three devices (all the same server) through a pool of two sessions.
    targets = [peer_target(netconf_peer, device=f"r{i}") for i in range(3)]
    with SessionPool(max_sessions=2, idle_timeout=60) as pool:
        serial = {t.device: pool.run(t, lambda p: p.serial) for t in targets[:2]}
        pool.run(targets[0], lambda p: p.serial)  # r0 used last: r1 is the least recent
        pool.run(targets[2], lambda p: p.serial)
        assert pool.open_sessions == 2
        assert pool.run(targets[0], lambda p: p.serial) == serial["r0"]  # kept
        assert pool.run(targets[1], lambda p: p.serial) != serial["r1"]  # was closed
        assert pool.opened == 4
        assert pool.open_sessions == 2


def test_pool_under_threads_stays_within_its_bound(netconf_peer: NetconfPeer) -> None:
    targets = [peer_target(netconf_peer, device=f"r{i}") for i in range(4)]
    subtree = f'<interfaces-state xmlns="{IETF_INTERFACES}"><interface><name>lo</name>' + (
        "<oper-status/></interface></interfaces-state>"
    )
    active: dict[str, int] = {}
    peak = {"devices": 0, "per_device": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(pool: SessionPool, target: NetconfTarget) -> None:
        def call(p: PooledSession) -> None:
            with lock:
                active[target.device] = active.get(target.device, 0) + 1
                peak["per_device"] = max(peak["per_device"], active[target.device])
                peak["devices"] = max(peak["devices"], sum(1 for v in active.values() if v))
                assert pool.open_sessions <= 2
            try:
                p.session.get(subtree=subtree)
            finally:
                with lock:
                    active[target.device] -= 1

        try:
            for _ in range(3):
                pool.run(target, call)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    with SessionPool(max_sessions=2, idle_timeout=60) as pool:
        threads = [
            threading.Thread(target=work, args=(pool, t)) for t in targets for _copy in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert peak["per_device"] == 1  # one operation at a time on a device's session
        assert peak["devices"] <= 2
        assert pool.open_sessions <= 2


def test_pool_closes_idle_sessions(netconf_peer: NetconfPeer) -> None:
    target = peer_target(netconf_peer)
    with SessionPool(max_sessions=2, idle_timeout=0.3) as pool:
        session = pool.run(target, lambda p: p.session)
        assert session.connected
        for _ in range(100):  # the reaper looks every 0.15 s here; give it up to 10 s
            if pool.open_sessions == 0 and not session.connected:
                break
            time.sleep(0.1)
        assert pool.open_sessions == 0
        assert not session.connected
        assert pool.run(target, lambda p: p.session) is not session
