"""The NETCONF and SSH CLI peers of tests/netconf_peer.py are real and usable.

ncclient talks NETCONF over SSH to yuma123's netconfd through a private sshd (the host key
verified), and netmiko's ``linux`` driver runs commands in a shell of another one.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Iterator

import pytest
from lxml import etree
from ncclient import manager
from ncclient.manager import Manager
from ncclient.transport.errors import SSHUnknownHostError
from netmiko import ConnectHandler

from tests.netconf_peer import NetconfPeer, SshLogin, netconf_peer, ssh_cli_peer

__all__ = ["netconf_peer", "ssh_cli_peer"]  # fixtures, used by name

IF_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
IP_NS = "urn:ietf:params:xml:ns:yang:ietf-ip"
SYS_NS = "urn:ietf:params:xml:ns:yang:ietf-system"
NS = {"if": IF_NS, "ip": IP_NS, "sys": SYS_NS}


def _connect(login: SshLogin) -> Manager:
    return manager.connect(
        host=login.host,
        port=login.port,
        username=login.username,
        key_filename=str(login.key_filename),
        hostkey_b64=login.host_key_b64,  # the peer's own host key, nothing else
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )


@pytest.fixture
def session(netconf_peer: NetconfPeer) -> Iterator[Manager]:
    with _connect(netconf_peer.login) as m:
        yield m


def _data(reply: object) -> etree._Element:
    data_ele = getattr(reply, "data_ele", None)
    assert data_ele is not None, f"no <data> in {reply}"
    return data_ele


def test_hello_advertises_the_ietf_modules(session: Manager) -> None:
    caps = list(session.server_capabilities)
    assert "urn:ietf:params:netconf:base:1.1" in caps
    for module in ("ietf-interfaces", "ietf-system", "ietf-ip"):
        assert any(f"module={module}" in cap for cap in caps), (module, caps)
    assert session.session_id is not None


def test_get_interfaces_state_reads_the_kernel(session: Manager, netconf_peer: NetconfPeer) -> None:
    subtree = f'<interfaces-state xmlns="{IF_NS}"/>'
    data = _data(session.get(filter=("subtree", subtree)))
    names = data.xpath("if:interfaces-state/if:interface/if:name/text()", namespaces=NS)
    assert set(names) == set(os.listdir("/sys/class/net")), names
    lo = data.xpath("//if:interface[if:name='lo']", namespaces=NS)[0]
    assert int(lo.findtext("if:statistics/if:in-octets", namespaces=NS)) > 0
    # Written by tests/peers/get-interface-ipv4, which netconfd found on its PATH.
    assert lo.xpath("ip:ipv4/ip:address/ip:ip/text()", namespaces=NS) == ["127.0.0.1"]
    assert lo.xpath("ip:ipv4/ip:address/ip:prefix-length/text()", namespaces=NS) == ["8"]
    # netconfd is still there for a second request (without the helper it aborts).
    again = _data(session.get(filter=("subtree", subtree)))
    assert again.xpath("//if:interface[if:name='lo']", namespaces=NS)
    assert netconf_peer.netconfd is not None
    assert netconf_peer.netconfd.running


def test_get_with_a_narrow_subtree_filter(session: Manager) -> None:
    subtree = (
        f'<interfaces-state xmlns="{IF_NS}"><interface><name>lo</name>'
        "<oper-status/></interface></interfaces-state>"
    )
    data = _data(session.get(filter=("subtree", subtree)))
    interfaces = data.xpath("//if:interface", namespaces=NS)
    assert [i.findtext("if:name", namespaces=NS) for i in interfaces] == ["lo"]
    assert interfaces[0].findtext("if:oper-status", namespaces=NS) in {"up", "unknown"}
    assert interfaces[0].find("if:statistics", namespaces=NS) is None


def test_get_system_state(session: Manager) -> None:
    data = _data(session.get(filter=("subtree", f'<system-state xmlns="{SYS_NS}"/>')))
    assert data.xpath("//sys:clock/sys:current-datetime/text()", namespaces=NS)
    assert data.xpath("//*[local-name()='uname']/*[local-name()='nodename']/text()") == [
        platform.node()
    ]


def test_get_config_running(session: Manager) -> None:
    reply = session.get_config(source="running")
    assert reply.ok
    assert etree.QName(_data(reply)).localname == "data"


def test_wrong_host_key_is_refused(netconf_peer: NetconfPeer) -> None:
    login = netconf_peer.login
    other = SshLogin(**{**login.__dict__, "host_key_b64": _another_host_key(login)})
    with pytest.raises(SSHUnknownHostError):
        _connect(other).close_session()


def _another_host_key(login: SshLogin) -> str:
    # A key of the same type that is not the peer's: the client key's public half.
    return login.key_filename.with_suffix(".pub").read_text().split()[1]


def test_ssh_cli_peer_runs_commands_in_a_real_shell(ssh_cli_peer: SshLogin) -> None:
    conn = ConnectHandler(
        device_type="linux",
        host=ssh_cli_peer.host,
        port=ssh_cli_peer.port,
        username=ssh_cli_peer.username,
        use_keys=True,
        key_file=str(ssh_cli_peer.key_filename),
        allow_agent=False,
        ssh_strict=True,
        system_host_keys=False,
        alt_host_keys=True,
        alt_key_file=str(ssh_cli_peer.known_hosts),
    )
    try:
        uname = conn.send_command("uname -a").strip()
        links = conn.send_command("ip -o link")
    finally:
        conn.disconnect()
    assert uname.startswith("Linux "), uname
    assert socket.gethostname() in uname.split(), uname
    assert any(": lo: " in line for line in links.splitlines()), links
