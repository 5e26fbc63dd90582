"""The NETCONF tasks as the poller runs them: a real Nornir inventory, the poller's
``run_poll``, and real servers on loopback.

- ``netconf_interfaces`` and ``netconf_config`` against yuma123 netconfd behind OpenSSH
  (tests/netconf_peer.py): the SNMP task's series keys, IF-MIB status numbers, counters
  that move and become rates in the ingest pipeline, stable configuration text, facts
  once per session.
- A hostile device: a real SSH server (paramiko) speaking NETCONF 1.0 framing whose
  replies are garbage, a billion-laughs document or an XXE; each fails that device's poll
  with a CollectionError subclass, and the next device's poll works.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from lxml import etree
from nornir.core import Nornir

from netmon.config import PollerSettings
from netmon.errors import (
    CollectionError,
    ConfigError,
    NetconfMalformedReplyError,
    NetconfReplyTooLargeError,
    NetconfUnsafeXmlError,
)
from netmon.ingest.pipeline import IngestPipeline
from netmon.netconf.hosts import forget_netconf_targets, netconf_target
from netmon.netconf.shared import close_shared_pool, shared_pool
from netmon.netconf.target import PinnedHostKey
from netmon.poller.inventory import PollPlan, load_inventory, plan_polls
from netmon.poller.registry import TaskRegistry
from netmon.poller.scheduler import PollResult, run_poll
from netmon.records import ConfigSnapshot, DeviceFacts, Record, Sample, SeriesKey
from netmon.tasks import interfaces as snmp_interfaces
from netmon.tasks._interface_keys import OPER_STATUS
from tests.netconf_peer import NetconfPeer, netconf_peer

__all__ = ["netconf_peer"]  # the fixture, used by name

TASKS = ["netconf_interfaces", "netconf_config"]
# /sys/class/net/*/operstate (RFC 2863 names without the dashes) -> ietf/IF-MIB names
LINUX_OPERSTATE = {
    "up": "up",
    "down": "down",
    "unknown": "unknown",
    "dormant": "dormant",
    "testing": "testing",
    "notpresent": "not-present",
    "lowerlayerdown": "lower-layer-down",
}


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    close_shared_pool()
    forget_netconf_targets()
    yield
    close_shared_pool()
    forget_netconf_targets()


def registry() -> TaskRegistry:
    tasks = TaskRegistry()
    tasks.add_module("netmon.tasks.netconf_interfaces")
    tasks.add_module("netmon.tasks.netconf_config")
    return tasks


def write_inventory(folder: Path, hosts: dict[str, Any]) -> Nornir:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.yaml").write_text(yaml.safe_dump(hosts))
    return load_inventory(folder)


def peer_host(peer: NetconfPeer, **netconf: Any) -> dict[str, Any]:
    login = peer.login
    settings = {
        "port": login.port,
        "username": login.username,
        "key_file": str(login.key_filename),
        "host_key": {"pinned": login.host_key_b64},
        "connect_timeout": "10s",
        "rpc_timeout": "10s",
        **netconf,
    }
    return {"hostname": login.host, "data": {"tasks": TASKS, "netconf": settings}}


def plans(nr: Nornir) -> dict[str, PollPlan]:
    return {p.name: p for p in plan_polls(nr, PollerSettings(), registry())}


@pytest.fixture
def peer_plan(netconf_peer: NetconfPeer, tmp_path: Path) -> tuple[Nornir, PollPlan]:
    nr = write_inventory(tmp_path / "inventory", {"r1": peer_host(netconf_peer)})
    return nr, plans(nr)["r1"]


def poll(nr: Nornir, plan: PollPlan) -> PollResult:
    result = run_poll(nr, plan)
    assert result.error is None, result.error
    return result


def samples(records: list[Record]) -> dict[SeriesKey, int | float]:
    return {r.series: r.value for r in records if isinstance(r, Sample)}


def facts(records: list[Record], key: str) -> list[Any]:
    return [r.facts[key] for r in records if isinstance(r, DeviceFacts) and key in r.facts]


def kernel_interfaces() -> dict[str, str]:
    return {p.name: (p / "operstate").read_text().strip() for p in Path("/sys/class/net").iterdir()}


# -- against netconfd -------------------------------------------------------------------


def test_interfaces_are_the_snmp_series(peer_plan: tuple[Nornir, PollPlan]) -> None:
    nr, plan = peer_plan
    records = poll(nr, plan).records
    values = samples(records)
    kernel = kernel_interfaces()
    labelled = {k.label_map["interface"] for k in values}
    assert labelled == set(kernel)
    # Every counter is a key the SNMP task makes too: same metric, unit and width.
    snmp_counters = set(snmp_interfaces._COUNTERS.values())
    counters = {k for k in values if k.kind == "counter"}
    assert counters
    for key in counters:
        assert (key.metric, key.unit, key.bits) in snmp_counters, key
    lo = {k.metric: k for k in values if k.label_map == {"interface": "lo"}}
    assert lo["ifHCInOctets"] == SeriesKey.of(
        "r1", "ifHCInOctets", {"interface": "lo"}, kind="counter", unit="bytes", bits=64
    )
    assert lo["ifInErrors"] == SeriesKey.of(
        "r1", "ifInErrors", {"interface": "lo"}, kind="counter", unit="packets", bits=32
    )
    # Status as IF-MIB numbers, as the kernel reports it.
    for name, operstate in kernel.items():
        key = SeriesKey.of("r1", "ifOperStatus", {"interface": name})
        assert values[key] == OPER_STATUS[LINUX_OPERSTATE[operstate]], name
    # netconfd reports an unknown Linux speed as 2**64 - 10**6 bit/s: not a speed.
    for key, value in values.items():
        if key.metric == "ifSpeed":
            assert key.unit == "bit/s"
            assert 0 <= value < 2**52
    (interfaces,) = facts(records, "interfaces")
    assert set(interfaces) == set(kernel)
    assert interfaces["lo"] == {"index": None, "alias": ""}


def test_counters_move_and_become_rates(peer_plan: tuple[Nornir, PollPlan]) -> None:
    nr, plan = peer_plan
    octets = SeriesKey.of(
        "r1", "ifHCInOctets", {"interface": "lo"}, kind="counter", unit="bytes", bits=64
    )
    pipeline = IngestPipeline()
    first = poll(nr, plan).records
    pipeline.process("r1", first)
    # netconfd reads /proc/net/dev at most about once a second: poll until it has.
    for _attempt in range(20):
        send_on_loopback(64 * 1024)
        time.sleep(0.25)
        last = poll(nr, plan).records
        out = pipeline.process("r1", last)
        if samples(last)[octets] != samples(first)[octets]:
            break
    assert samples(last)[octets] > samples(first)[octets]
    rates = {k.metric: v for k, v in samples(out).items() if k.label_map == {"interface": "lo"}}
    assert rates["ifHCInOctets:rate"] > 0
    # One session served every poll; its hello became facts once.
    assert shared_pool().opened == 1
    assert len(facts(first, "netconf")) == 1
    assert facts(last, "netconf") == []


def send_on_loopback(size: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(size // 1024):
            udp.sendto(b"x" * 1024, ("127.0.0.1", 9))  # discard port; nothing need listen


def test_capabilities_and_modules_are_facts(peer_plan: tuple[Nornir, PollPlan]) -> None:
    nr, plan = peer_plan
    (netconf,) = facts(poll(nr, plan).records, "netconf")
    assert "urn:ietf:params:netconf:base:1.1" in netconf["capabilities"]
    assert not any("module=" in uri for uri in netconf["capabilities"])
    modules = {m["name"]: m for m in netconf["modules"]}
    assert modules["ietf-interfaces"]["revision"] == "2014-05-08"
    assert "if-mib" in modules["ietf-interfaces"]["features"]
    assert [m["name"] for m in netconf["modules"]] == sorted(modules)


def test_config_snapshot_is_stable(peer_plan: tuple[Nornir, PollPlan]) -> None:
    nr, plan = peer_plan
    reads = []
    for _ in range(2):
        configs = [r for r in poll(nr, plan).records if isinstance(r, ConfigSnapshot)]
        # netconfd runs with "target running": no :candidate, so running only.
        assert [(c.source, c.protocol, c.format) for c in configs] == [
            ("running", "netconf", "xml")
        ]
        reads.append(configs[0])
    assert reads[0].content == reads[1].content
    content = reads[0].content
    assert content.endswith("</data>\n")
    root = etree.fromstring(content.encode())
    assert root.tag == "{urn:ietf:params:xml:ns:netconf:base:1.0}data"
    assert "xmlns:nc" not in content  # the RPC's own declaration is not configuration
    assert str(len(content)) in repr(reads[0])
    assert content not in repr(reads[0])


# -- inventory ---------------------------------------------------------------------------


def test_inventory_keys_merge_and_validate(netconf_peer: NetconfPeer, tmp_path: Path) -> None:
    login = netconf_peer.login
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "groups.yaml").write_text(
        yaml.safe_dump(
            {
                "nc": {
                    "data": {
                        "netconf": {
                            "username": login.username,
                            "key_file": str(login.key_filename),
                            "host_key": {"pinned": login.host_key_b64},
                        }
                    }
                }
            }
        )
    )
    hosts = {"r1": {"hostname": "127.0.0.1", "groups": ["nc"], "data": {"tasks": TASKS}}}
    hosts["r1"]["data"]["netconf"] = {"port": login.port}
    nr = write_inventory(folder, hosts)
    plan = plans(nr)["r1"]
    target = netconf_target(plan.host)
    assert (target.port, target.username) == (login.port, login.username)  # merged by key
    assert target.host_key == PinnedHostKey(login.host_key_b64)
    assert (target.connect_timeout, target.rpc_timeout) == (10.0, 30.0)
    assert netconf_target(plan.host) is target  # cached per Host object


@pytest.mark.parametrize(
    ("netconf", "message"),
    [
        ({"port": "x"}, r"inventory host r1: netconf\.port: "),
        ({"username": ""}, r"netconf\.username: required"),
        ({"key_file": None, "password": "hunter2"}, r"netconf\.password: secrets are not"),
        ({"key_file": None, "password": {"env": "NETMON_UNSET_9"}}, r"NETMON_UNSET_9"),
        ({"key_file": "/nonexistent/id"}, r"netconf\.key_file: "),
        ({"host_key": "yes"}, r"netconf\.host_key: "),
        ({"rpc_timeout": "0s"}, r"netconf\.rpc_timeout: "),
        ({"max_reply_bytes": 10}, r"netconf\.max_reply_bytes: "),
        ({"prot": 830}, r"netconf\.prot: unknown key"),
    ],
)
def test_bad_netconf_settings_fail_at_load(
    netconf_peer: NetconfPeer, tmp_path: Path, netconf: dict[str, Any], message: str
) -> None:
    host = peer_host(netconf_peer)
    host["data"]["netconf"].update(netconf)
    host["data"]["netconf"] = {k: v for k, v in host["data"]["netconf"].items() if v is not None}
    nr = write_inventory(tmp_path / "inventory", {"r1": host})
    with pytest.raises(ConfigError, match=message) as caught:
        plans(nr)
    assert "hunter2" not in str(caught.value)


# -- a hostile device --------------------------------------------------------------------

HELLO = (
    '<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
    "<capability>urn:ietf:params:netconf:base:1.0</capability>"
    "<capability>urn:ietf:params:xml:ns:yang:ietf-interfaces?module=ietf-interfaces"
    "&amp;revision=2014-05-08</capability>"
    "</capabilities><session-id>7</session-id></hello>"
)
_REPLY_HEAD = '<rpc-reply message-id="{id}" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n"
    + _REPLY_HEAD
    + "<data><x>&lol9;</x></data></rpc-reply>"
)


ENDLESS = "(a reply without end)"


def xxe(secret_file: Path) -> str:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{secret_file}">]>\n'
        + _REPLY_HEAD
        + "<data><x>&xxe;</x></data></rpc-reply>"
    )


class _Auth(paramiko.ServerInterface):
    def __init__(self) -> None:
        self.subsystem = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        ok = kind == "session"
        return paramiko.OPEN_SUCCEEDED if ok else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "netconf":
            return False
        self.subsystem.set()
        return True


class HostileNetconf:
    """A NETCONF 1.0 (end-of-message framing) server over SSH, on 127.0.0.1, that answers
    every RPC with ``reply`` (``{id}`` becomes the request's message-id)."""

    def __init__(self, reply: str, key_file: Path) -> None:
        self.reply = reply
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)],
            check=True,
            capture_output=True,
        )
        self.key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.sessions = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._transports: list[paramiko.Transport] = []

    def __enter__(self) -> HostileNetconf:
        self._spawn(self._accept)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for transport in self._transports:
            transport.close()
        for thread in self._threads:
            thread.join(5)
        self.listener.close()

    def _spawn(self, fn: Any, *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        self._transports.append(transport)
        transport.add_server_key(self.key)
        auth = _Auth()
        try:
            transport.start_server(server=auth)
            channel = transport.accept(10)
            if channel is None or not auth.subsystem.wait(10):
                return
            self.sessions += 1
            channel.sendall((HELLO + "]]>]]>").encode())
            buffer = b""
            while not self._stop.is_set():
                data = channel.recv(65536)
                if not data:
                    return
                buffer += data
                while b"]]>]]>" in buffer:
                    message, buffer = buffer.split(b"]]>]]>", 1)
                    found = re.search(rb'message-id="([^"]*)"', message)
                    if found is None:
                        continue  # the client's hello
                    message_id = found.group(1).decode()
                    if self.reply == ENDLESS:
                        self._stream(channel, message_id)
                        return
                    reply = self.reply.replace("{id}", message_id)
                    channel.sendall((reply + "]]>]]>").encode())
        except (EOFError, OSError, paramiko.SSHException):
            return
        finally:
            transport.close()

    def _stream(self, channel: paramiko.Channel, message_id: str) -> None:
        """A reply that never ends: data until the client gives up or the test ends."""
        channel.sendall((_REPLY_HEAD.replace("{id}", message_id) + "<data>").encode())
        chunk = b"<x>" + b"y" * 65536 + b"</x>"
        while not self._stop.is_set() and not channel.closed:
            channel.sendall(chunk)


@pytest.mark.parametrize(
    ("reply", "error", "error_class"),
    [
        ("this is not XML at all", NetconfMalformedReplyError, "netconf_malformed"),
        (
            _REPLY_HEAD + "<data><interfaces-state><oops></data></rpc-reply>",
            NetconfMalformedReplyError,
            "netconf_malformed",
        ),
        (BILLION_LAUGHS, NetconfUnsafeXmlError, "netconf_unsafe_xml"),
        ("XXE", NetconfUnsafeXmlError, "netconf_unsafe_xml"),
        (ENDLESS, NetconfReplyTooLargeError, "netconf_too_large"),
    ],
    ids=["not-xml", "not-well-formed", "billion-laughs", "xxe", "endless"],
)
def test_a_hostile_device_fails_its_poll_only(
    netconf_peer: NetconfPeer,
    tmp_path: Path,
    reply: str,
    error: type[CollectionError],
    error_class: str,
) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("TOP-SECRET-MARKER\n")
    if reply == "XXE":
        reply = xxe(secret_file)
    with HostileNetconf(reply, tmp_path / "hostile_host_key") as bad:
        login = netconf_peer.login
        bad_host = peer_host(
            netconf_peer,
            port=bad.port,
            host_key={"pinned": bad.key.get_base64()},
            rpc_timeout="5s",  # the endless reply is cut by size: a timeout would fail it
            max_reply_bytes=65536,
        )
        nr = write_inventory(
            tmp_path / "inventory", {"bad": bad_host, "r1": peer_host(netconf_peer)}
        )
        by_name = plans(nr)
        failed = run_poll(nr, by_name["bad"])
        good = run_poll(nr, by_name["r1"])
        assert bad.sessions == 1
    assert isinstance(failed.error, error), repr(failed.error)
    assert isinstance(failed.error, CollectionError)
    assert failed.error.error_class == error_class
    assert failed.records == []
    assert "TOP-SECRET-MARKER" not in str(failed.error)
    assert login.username not in str(failed.error) or "authentication" not in str(failed.error)
    assert shared_pool().dropped == 1  # the bad session is not kept for the next poll
    # The next device is polled as if nothing happened.
    assert good.error is None
    assert any(isinstance(r, ConfigSnapshot) for r in good.records)
    assert samples(good.records)
