"""The lab's NETCONF devices: framing and sessions without SSH, then real ncclient.

ncclient is blocking, and the lab runs on the test's event loop: every ncclient call
goes through ``asyncio.to_thread``. The lab's clock is frozen, so a counter read over
NETCONF and over SNMP at the same instant must be equal.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from lxml import etree
from ncclient import manager
from ncclient.operations import RPCError
from ncclient.transport.errors import AuthenticationError, SSHError

from netmon.lab import DEFAULT_SSH_PASSWORD, Device, Lab, device_protocols
from netmon.lab.ber import GET, Pdu
from netmon.lab.control import execute
from netmon.lab.mib import IF_ENTRY, IFX_ENTRY
from netmon.lab.netconf_server import (
    BASE_NS,
    EOM,
    IF_NS,
    SYSTEM_NS,
    FramingError,
    MessageReader,
    NetconfSession,
    frame,
    subtree_filter,
)
from tests.test_lab_protocol import RawManager

NS = {"nc": BASE_NS, "if": IF_NS, "sys": SYSTEM_NS}
HELLO_11 = (
    f'<hello xmlns="{BASE_NS}"><capabilities>'
    "<capability>urn:ietf:params:netconf:base:1.0</capability>"
    "<capability>urn:ietf:params:netconf:base:1.1</capability>"
    "</capabilities></hello>"
).encode()


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 50_000.0

    def __call__(self) -> float:
        return self.t


# --- who speaks what, and config changes ---------------------------------------------------


def test_protocols_follow_the_device_number():
    assert device_protocols("lab-0001") == ("snmp",)
    assert device_protocols("lab-0002") == ("snmp", "netconf")
    assert device_protocols("lab-0003") == ("snmp", "cli")
    assert device_protocols("lab-0004") == ("snmp",)
    assert device_protocols("lab-0006") == ("snmp", "netconf")
    assert device_protocols("lab-4999") == ("snmp", "cli")


def test_config_change_moves_over_interfaces_and_rejects_bad_notes():
    device = Device("lab-0002", 4)
    before = [i.alias for i in device.interfaces]
    assert device.change_config() == 2
    assert device.interfaces[0].alias == "changed by netmon lab, revision 2"
    assert device.change_config("uplink moved") == 3
    assert device.interfaces[1].alias == "uplink moved"
    assert [i.alias for i in device.interfaces[2:]] == before[2:]
    for bad in ("", "x" * 201, "two\nlines"):
        with pytest.raises(ValueError, match="printable"):
            device.change_config(bad)
    assert device.config_revision == 3


# --- framing -------------------------------------------------------------------------------


def test_end_of_message_framing_across_reads():
    reader = MessageReader()
    assert list(reader.feed(b"<a/>]]>")) == []
    assert list(reader.feed(b"]]><b/>]]>]]><c")) == [b"<a/>", b"<b/>"]
    assert list(reader.feed(b"/>]]>]]>")) == [b"<c/>"]


def test_framing_switches_right_after_the_hello_in_the_same_read():
    reader = MessageReader()
    messages = reader.feed(b"<hello/>]]>]]>\n#4\n<a/>\n##\n")
    assert next(messages) == b"<hello/>"
    reader.chunked = True  # what the session does on seeing both say base:1.1
    assert list(messages) == [b"<a/>"]


def test_chunked_framing_across_reads_and_many_chunks():
    reader = MessageReader()
    reader.chunked = True
    wire = b"\n#3\n<a/\n#1\n>\n##\n" + frame(b"<b>" + b"x" * 70_000 + b"</b>", chunked=True)
    messages = []
    for start in range(0, len(wire), 5):  # a header, a size, an end marker split anywhere
        messages += list(reader.feed(wire[start : start + 5]))
    assert messages == [b"<a/>", b"<b>" + b"x" * 70_000 + b"</b>"]


@pytest.mark.parametrize(
    "wire", [b"\n#0\n", b"\n#x\n", b"<rpc/>]]>]]>", b"\n##\n", b"\n#12345678901\n"]
)
def test_broken_chunks_end_the_session(wire):
    reader = MessageReader()
    reader.chunked = True
    with pytest.raises(FramingError):
        list(reader.feed(wire))


def test_oversized_messages_end_the_session():
    with pytest.raises(FramingError, match="end-of-message"):
        list(MessageReader(limit=100).feed(b"x" * 101))
    reader = MessageReader(limit=100)
    reader.chunked = True
    with pytest.raises(FramingError, match="over 100 bytes"):
        list(reader.feed(b"\n#60\n" + b"x" * 60 + b"\n#60\n"))


# --- the session without SSH ---------------------------------------------------------------


def started(device: Device | None = None) -> NetconfSession:
    session = NetconfSession(device or Device("lab-0002", 4), session_id=7)
    hello = etree.fromstring(session.hello()[: -len(EOM)])
    assert hello.findtext("nc:session-id", namespaces=NS) == "7"
    assert session.receive(HELLO_11 + EOM) == b""
    assert session.reader.chunked
    return session


def rpc(session: NetconfSession, body: str, message_id: str = "101") -> etree._Element:
    reply = session.handle(
        f'<rpc xmlns="{BASE_NS}" message-id="{message_id}">{body}</rpc>'.encode()
    )
    root = etree.fromstring(reply)
    assert root.tag == f"{{{BASE_NS}}}rpc-reply"
    return root


def error_tag(reply: etree._Element) -> str | None:
    return reply.findtext("nc:rpc-error/nc:error-tag", namespaces=NS)


def test_hello_must_come_first_and_name_a_base():
    session = NetconfSession(Device("lab-0002", 2))
    with pytest.raises(FramingError, match="first message"):
        session.receive(f'<rpc xmlns="{BASE_NS}" message-id="1"><get/></rpc>'.encode() + EOM)
    session = NetconfSession(Device("lab-0002", 2))
    with pytest.raises(FramingError, match="base"):
        session.receive(f'<hello xmlns="{BASE_NS}"><capabilities/></hello>'.encode() + EOM)


def test_a_base_10_client_keeps_end_of_message_framing():
    session = NetconfSession(Device("lab-0002", 2))
    hello = HELLO_11.replace(b"<capability>urn:ietf:params:netconf:base:1.1</capability>", b"")
    get = "<get-config><source><running/></source></get-config>"
    rpc_bytes = f'<rpc xmlns="{BASE_NS}" message-id="5">{get}</rpc>'
    out = session.receive(hello + EOM + rpc_bytes.encode() + EOM)
    assert out.endswith(EOM)
    assert not out.startswith(b"\n#")
    assert b'message-id="5"' in out


def test_a_hello_read_while_silent_still_opens_the_session():
    """ncclient's connect returns on the server's hello; a test (or an operator) may
    silence the device before the lab has read the client's hello. The hello is read
    anyway, so the first rpc after the silence is answered, not taken for a bad hello."""
    device = Device("lab-0002", 2)
    session = NetconfSession(device, session_id=7)
    session.hello()
    device.silence(True)
    assert session.receive(HELLO_11 + EOM) == b""
    get = f'<rpc xmlns="{BASE_NS}" message-id="1"><get/></rpc>'.encode()
    assert session.receive(b"\n#%d\n" % len(get) + get + b"\n##\n") == b""  # silent
    device.silence(False)
    close = f'<rpc xmlns="{BASE_NS}" message-id="2"><close-session/></rpc>'.encode()
    reply = session.receive(b"\n#%d\n" % len(close) + close + b"\n##\n")
    assert b'message-id="2"' in reply
    assert b"<ok/>" in reply


def test_a_silence_drops_whole_messages_and_keeps_the_framing():
    """A silence that starts or ends while a message is half read (the bytes of one
    message can come in several reads) drops messages, never bytes: the session's
    framing survives, and the next request is answered."""
    device = Device("lab-0002", 2)
    session = started(device)
    get = f'<rpc xmlns="{BASE_NS}" message-id="1"><get/></rpc>'.encode()
    framed = b"\n#%d\n" % len(get) + get + b"\n##\n"
    device.silence(True)
    assert session.receive(framed) == b""  # dropped whole
    assert session.receive(framed[:10]) == b""  # ... half of the next one while silent
    device.silence(False)
    late = session.receive(framed[10:])  # completed after the silence: answered
    assert b'message-id="1"' in late
    close = f'<rpc xmlns="{BASE_NS}" message-id="2"><close-session/></rpc>'.encode()
    reply = session.receive(b"\n#%d\n" % len(close) + close + b"\n##\n")
    assert b'message-id="2"' in reply
    assert b"<ok/>" in reply


@pytest.mark.parametrize(
    ("message", "tag"),
    [
        (b"<rpc", "malformed-message"),
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><rpc/>', "malformed-message"),
        (f'<hello xmlns="{BASE_NS}"/>'.encode(), "unknown-element"),
        (f'<rpc xmlns="{BASE_NS}"><get/></rpc>'.encode(), "missing-attribute"),
        (f'<rpc xmlns="{BASE_NS}" message-id="1"/>'.encode(), "malformed-message"),
        (f'<rpc xmlns="{BASE_NS}" message-id="1"><get/><get/></rpc>'.encode(), "malformed-message"),
    ],
)
def test_malformed_messages_get_rpc_errors_and_the_session_goes_on(message, tag):
    session = started()
    reply = etree.fromstring(session.handle(message))
    assert error_tag(reply) == tag
    assert reply.findtext("nc:rpc-error/nc:error-severity", namespaces=NS) == "error"
    assert not session.closed
    assert rpc(session, "<get/>").find("nc:data", NS) is not None


@pytest.mark.parametrize(
    ("body", "tag"),
    [
        ("<kill-session><session-id>3</session-id></kill-session>", "operation-not-supported"),
        ('<frobnicate xmlns="urn:example"/>', "operation-not-supported"),
        (
            "<edit-config><target><running/></target><config/></edit-config>",
            "operation-not-supported",
        ),
        ("<get-config><source><startup/></source></get-config>", "invalid-value"),
        ("<get-config/>", "missing-element"),
        ('<get><filter type="xpath" select="/interfaces"/></get>', "operation-not-supported"),
    ],
)
def test_unsupported_operations_are_rpc_errors(body, tag):
    reply = rpc(started(), body, message_id="42")
    assert reply.get("message-id") == "42"
    assert error_tag(reply) == tag


def test_replies_copy_the_rpc_attributes_and_close_session_closes():
    session = started()
    message = (
        f'<rpc xmlns="{BASE_NS}" xmlns:x="urn:x" message-id="9" x:trace="abc">'
        "<lock><target><candidate/></target></lock></rpc>"
    )
    reply = session.handle(message.encode())
    root = etree.fromstring(reply)
    assert root.get("message-id") == "9"
    assert root.get("{urn:x}trace") == "abc"
    assert root.find("nc:ok", NS) is not None
    assert rpc(session, "<close-session/>").find("nc:ok", NS) is not None
    assert session.closed


def edit(name: str, leaf: str) -> str:
    return (
        f"<edit-config><target><candidate/></target><config><interfaces xmlns='{IF_NS}'>"
        f"<interface><name>{name}</name>{leaf}</interface></interfaces></config></edit-config>"
    )


def descriptions(reply: etree._Element) -> list[str | None]:
    entries = reply.findall("nc:data/if:interfaces/if:interface", NS)
    return [e.findtext("if:description", namespaces=NS) for e in entries]


def test_edit_the_candidate_then_commit_or_discard():
    device = Device("lab-0002", 3)
    device.interfaces[1].alias = "old"
    session, other = started(device), started(device)
    get = "<get-config><source><{}/></source></get-config>"
    running = descriptions(rpc(session, get.format("running")))
    assert (
        rpc(session, edit("Gi1/0/1", "<description>new desk</description>")).find("nc:ok", NS)
        is not None
    )
    assert (
        rpc(
            session, edit("Gi1/0/2", f"<description xmlns:nc='{BASE_NS}' nc:operation='delete'/>")
        ).find("nc:ok", NS)
        is not None
    )
    # The candidate is the device's, seen by its other sessions; running is untouched.
    assert descriptions(rpc(other, get.format("candidate")))[:2] == ["new desk", None]
    assert descriptions(rpc(session, get.format("running"))) == running
    assert device.config_revision == 1
    rpc(other, "<commit/>")
    assert device.config_revision == 2
    assert [i.alias for i in device.interfaces[:2]] == ["new desk", ""]
    assert descriptions(rpc(session, get.format("running")))[:2] == ["new desk", None]
    rpc(session, "<commit/>")  # nothing pending: no new revision
    assert device.config_revision == 2
    rpc(session, edit("Gi1/0/3", "<description>never</description>"))
    rpc(session, "<discard-changes/>")
    rpc(session, "<commit/>")
    assert device.interfaces[2].alias != "never"
    assert device.config_revision == 2


@pytest.mark.parametrize(
    ("body", "tag"),
    [
        (edit("Gi9/9/9", "<description>x</description>"), "invalid-value"),
        (edit("Gi1/0/1", "<enabled>false</enabled>"), "operation-not-supported"),
        (edit("Gi1/0/1", "<description>two\nlines</description>"), "invalid-value"),
        (
            edit("Gi1/0/1", f"<description xmlns:nc='{BASE_NS}' nc:operation='frob'/>"),
            "bad-attribute",
        ),
        (
            f"<edit-config><target><candidate/></target><config><system xmlns='{SYSTEM_NS}'>"
            "<hostname>x</hostname></system></config></edit-config>",
            "operation-not-supported",
        ),
        ("<edit-config><target><candidate/></target></edit-config>", "missing-element"),
    ],
)
def test_edits_the_lab_does_not_take(body, tag):
    device = Device("lab-0002", 3)
    session = started(device)
    assert error_tag(rpc(session, body)) == tag
    rpc(session, "<commit/>")
    assert device.config_revision == 1


def test_subtree_filter_selects_one_interface_and_some_leaves():
    device = Device("lab-0002", 8)
    reply = rpc(
        started(device),
        f'<get><filter type="subtree"><interfaces-state xmlns="{IF_NS}"><interface>'
        "<name>Gi1/0/2</name><oper-status/><statistics><in-octets/><out-errors/></statistics>"
        "</interface></interfaces-state></filter></get>",
    )
    [data] = reply.findall("nc:data", NS)
    assert [etree.QName(c).localname for c in data] == ["interfaces-state"]
    [entry] = data.findall("if:interfaces-state/if:interface", NS)
    assert [etree.QName(c).localname for c in entry] == ["name", "oper-status", "statistics"]
    assert [etree.QName(c).localname for c in entry.find("if:statistics", NS)] == [
        "in-octets",
        "out-errors",
    ]
    assert entry.findtext("if:name", namespaces=NS) == "Gi1/0/2"


def test_subtree_filter_rules():
    device = Device("lab-0002", 4)
    data = [etree.fromstring(f'<top xmlns="{IF_NS}"><a>1</a><b><c>2</c></b></top>')]
    q = f'<filter xmlns:i="{IF_NS}">{{}}</filter>'

    def run(spec: str) -> list[str]:
        nodes = [etree.fromstring(etree.tostring(d)) for d in data]
        picked = subtree_filter(nodes, etree.fromstring(q.format(spec)))
        return [etree.tostring(p).decode().replace(f' xmlns="{IF_NS}"', "") for p in picked]

    assert run("<i:top/>") == ["<top><a>1</a><b><c>2</c></b></top>"]
    assert run("<i:top><i:a>1</i:a></i:top>") == ["<top><a>1</a><b><c>2</c></b></top>"]
    assert run("<i:top><i:a>2</i:a></i:top>") == []  # content match fails
    assert run("<i:top><i:a>1</i:a><i:b/></i:top>") == ["<top><a>1</a><b><c>2</c></b></top>"]
    assert run("<i:top><i:b><i:c/></i:b></i:top>") == ["<top><b><c>2</c></b></top>"]
    assert run("<i:top><i:zzz><i:c/></i:zzz></i:top>") == []
    assert run('<top xmlns="urn:other"/>') == []  # another namespace
    assert run("") == []  # an empty filter selects nothing
    assert device.name == "lab-0002"


# --- over SSH with ncclient -----------------------------------------------------------------


@pytest.fixture
async def lab():
    clock = Clock()
    async with Lab(devices=6, base_port=0, interfaces=8, now=clock) as running:
        running.clock = clock  # type: ignore[attr-defined]
        yield running


def connect(lab: Lab, name: str = "lab-0002", **options: Any) -> manager.Manager:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": lab.ssh_port(name),
        "username": "netmon",
        "password": DEFAULT_SSH_PASSWORD,
        "hostkey_verify": True,
        "hostkey_b64": lab.ssh_host_key_b64,
        "allow_agent": False,
        "look_for_keys": False,
        "timeout": 10,
    }
    settings.update(options)
    return manager.connect(**settings)


async def with_session(lab: Lab, work: Callable[[manager.Manager], Any], **options: Any) -> Any:
    def run() -> Any:
        with connect(lab, **options) as session:
            return work(session)

    return await asyncio.to_thread(run)


INTERFACE_FILTER = (
    "subtree",
    f'<interfaces-state xmlns="{IF_NS}">'
    "<interface><name>{}</name></interface></interfaces-state>",
)


async def test_ncclient_reads_interfaces_alike_to_snmp(lab):
    device = lab.devices["lab-0002"]
    up = [i for i in device.interfaces if i.admin_up]  # two random ports are admin down
    iface = up[-1]  # an uplink: traffic
    device.flap(up[0].index, down_for=None)

    def work(session: manager.Manager) -> tuple[list[str], bytes, bytes]:
        caps = list(session.server_capabilities)
        spec = (INTERFACE_FILTER[0], INTERFACE_FILTER[1].format(iface.name))
        one = session.get(filter=spec).data_xml.encode()
        everything = session.get().data_xml.encode()
        return caps, one, everything

    caps, one, everything = await with_session(lab, work)
    assert "urn:ietf:params:netconf:base:1.1" in caps
    assert "urn:ietf:params:netconf:capability:candidate:1.0" in caps
    assert f"{IF_NS}?module=ietf-interfaces&revision=2018-02-20" in caps

    entries = etree.fromstring(one).findall(".//if:interface", NS)
    assert len(entries) == 1
    stats = entries[0].find("if:statistics", NS)
    netconf = {etree.QName(c).localname: c.text for c in stats}

    raw = RawManager(lab.port("lab-0002"))
    try:
        i = iface.index
        oids = [(*IFX_ENTRY, col, i) for col in (6, 7, 9, 8, 10, 11, 13, 12)]
        oids += [(*IF_ENTRY, col, i) for col in (13, 14, 19, 20)]
        reply = await raw.request(Pdu(GET, 3, varbinds=[(oid, None) for oid in oids]))
    finally:
        raw.close()
    assert reply is not None
    snmp = [int(value) for _, value in reply.pdu.varbinds]  # type: ignore[arg-type]
    names = ["in-octets", "in-unicast-pkts", "in-broadcast-pkts", "in-multicast-pkts"]
    names += ["out-octets", "out-unicast-pkts", "out-broadcast-pkts", "out-multicast-pkts"]
    names += ["in-discards", "in-errors", "out-discards", "out-errors"]
    assert [int(netconf[n]) for n in names] == snmp
    assert int(netconf["in-octets"]) > 0

    # Both views of every interface: NMDA /interfaces and RFC 7223 /interfaces-state.
    tree = etree.fromstring(everything)
    nmda = tree.findall("if:interfaces/if:interface", NS)
    state = tree.findall("if:interfaces-state/if:interface", NS)
    assert [e.findtext("if:name", namespaces=NS) for e in nmda] == [
        i.name for i in device.interfaces
    ]
    assert [e.findtext("if:name", namespaces=NS) for e in state] == [
        i.name for i in device.interfaces
    ]
    for entry, port in zip(state, device.interfaces, strict=True):
        assert entry.findtext("if:oper-status", namespaces=NS) == ("up" if port.oper_up else "down")
        assert entry.findtext("if:admin-status", namespaces=NS) == (
            "up" if port.admin_up else "down"
        )
        assert entry.findtext("if:speed", namespaces=NS) == str(port.speed)
    flapped = state[up[0].index - 1]
    assert flapped.findtext("if:oper-status", namespaces=NS) == "down"
    assert flapped.findtext("if:admin-status", namespaces=NS) == "up"
    assert nmda[iface.index - 1].findtext("if:description", namespaces=NS) == iface.alias
    assert tree.findtext("sys:system-state/sys:platform/sys:os-name", namespaces=NS) == "netmon-lab"


async def test_counters_grow_with_time_and_discontinuity_stays(lab):
    device = lab.devices["lab-0002"]
    spec = (INTERFACE_FILTER[0], INTERFACE_FILTER[1].format(device.interfaces[-1].name))

    def read(session: manager.Manager) -> tuple[int, str]:
        entry = etree.fromstring(session.get(filter=spec).data_xml.encode())
        octets = entry.findtext(".//if:in-octets", namespaces=NS)
        since = entry.findtext(".//if:discontinuity-time", namespaces=NS)
        assert octets is not None
        assert since is not None
        return int(octets), since

    first = await with_session(lab, read)
    lab.clock.t += 60
    second = await with_session(lab, read)
    assert second[0] > first[0]
    assert second[1] == first[1]
    device.reboot()
    third = await with_session(lab, read)
    assert third[0] < second[0]
    assert third[1] > second[1]


async def test_get_config_and_a_config_change_on_command(lab):
    def read(session: manager.Manager) -> tuple[str, str]:
        running = session.get_config(source="running").data_xml
        candidate = session.get_config(source="candidate").data_xml
        return running, candidate

    running, candidate = await with_session(lab, read)
    assert running == candidate
    tree = etree.fromstring(running.encode())
    assert tree.findtext("sys:system/sys:hostname", namespaces=NS) == "lab-0002"
    users = tree.findall("sys:system/sys:authentication/sys:user", NS)
    assert [u.findtext("sys:name", namespaces=NS) for u in users] == ["admin", "netops"]
    assert all((u.findtext("sys:password", namespaces=NS) or "").startswith("$6$") for u in users)
    assert tree.find("if:interfaces/if:interface/if:statistics", NS) is None  # config only
    again, _ = await with_session(lab, read)
    assert again == running  # unchanged config reads byte for byte alike

    reply = execute(lab, {"command": "config-change", "device": "lab-0002", "note": "to core-2"})
    assert reply == {
        "ok": True,
        "device": "lab-0002",
        "revision": 2,
        "protocols": ["snmp", "netconf"],
    }
    changed, _ = await with_session(lab, read)
    assert changed != running
    assert "<description>to core-2</description>" in changed
    with pytest.raises(ValueError, match="note is a text"):
        execute(lab, {"command": "config-change", "device": "lab-0002", "note": 5})


async def test_ncclient_edits_the_candidate_and_commits(lab):
    device = lab.devices["lab-0002"]
    name = device.interfaces[0].name
    config = (
        f'<config xmlns="{BASE_NS}"><interfaces xmlns="{IF_NS}"><interface>'
        f"<name>{name}</name><description>patched by ncclient</description>"
        "</interface></interfaces></config>"
    )

    def work(session: manager.Manager) -> str:
        with session.locked("candidate"):
            session.edit_config(target="candidate", config=config)
            session.commit()
        return str(session.get_config(source="running").data_xml)

    running = await with_session(lab, work)
    assert "<description>patched by ncclient</description>" in running
    assert device.interfaces[0].alias == "patched by ncclient"
    assert device.config_revision == 2


async def test_rpc_errors_reach_ncclient_and_the_session_survives(lab):
    def work(session: manager.Manager) -> list[str]:
        tags = []
        for call in (
            lambda: session.dispatch(etree.fromstring('<frobnicate xmlns="urn:example"/>')),
            lambda: session.edit_config(target="running", config=f'<config xmlns="{BASE_NS}"/>'),
            lambda: session.get_config(source="startup"),
        ):
            try:
                call()
            except RPCError as exc:
                tags.append(exc.tag)
        tags.append(session.get_config(source="running").data_xml[:1])
        return tags

    assert await with_session(lab, work) == [
        "operation-not-supported",
        "operation-not-supported",
        "invalid-value",
        "<",
    ]


async def test_wrong_password_and_wrong_host_key_are_refused(lab):
    with pytest.raises(AuthenticationError):
        await with_session(lab, lambda s: None, password="not-the-password")
    with pytest.raises(AuthenticationError):
        await with_session(lab, lambda s: None, username="admin")
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIDtF6KlQJ+EkMEsa2wzasBYNvx3t8RgjWw9MHDIPybCl"
    assert other != lab.ssh_host_key_b64
    with pytest.raises(SSHError):
        await with_session(lab, lambda s: None, hostkey_b64=other)


async def test_a_silent_device_times_the_rpc_out(lab):
    def work(session: manager.Manager) -> str:
        session.timeout = 0.5
        lab.devices["lab-0002"].silence(True)
        try:
            session.get_config(source="running")
        except Exception as exc:  # ncclient's TimeoutExpiredError
            return type(exc).__name__
        finally:
            lab.devices["lab-0002"].silence(False)
            # The close-session on the way out gets the usual time: 0.5 s was for the
            # silent request only, and a loaded machine can take longer to answer.
            session.timeout = 30
        return "answered"

    assert await with_session(lab, work) == "TimeoutExpiredError"


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_give_replies_or_framing_errors_never_anything_else(seed):
    rng = random.Random(seed)
    pieces = [b"<rpc", b"]]>]]>", b"\n#", b"\n##\n", b"<get/>", b"</rpc>", b"message-id='1'",
              b"\xff\xfe", b"<!DOCTYPE", b"\n#5\n", b"<hello", b"<filter>", b"\x00",
              b"xmlns='" + BASE_NS.encode() + b"'>", b"<interfaces-state/>"]  # fmt: skip
    replies = 0
    for _ in range(200):
        session = started() if rng.random() < 0.5 else NetconfSession(Device("lab-0002", 2))
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        if session.hello_done and rng.random() < 0.7:  # well framed: reach the XML layer
            data = frame(data, chunked=True)
        try:
            out = session.receive(data)
        except FramingError:
            continue
        for message in re.split(rb"\n#\d+\n|\n##\n|\]\]>\]\]>", out):
            if message:
                etree.fromstring(message)  # every reply is well-formed XML
                replies += 1
    assert replies > 20
