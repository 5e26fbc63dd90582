"""netmon.netconf client and pool, as far as they go without a NETCONF server.

Everything here uses loopback sockets the test opens itself (tests/netconf_peer.py has
the real netconfd peers).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient import operations, transport

from netmon.errors import (
    CollectionError,
    ConfigError,
    NetconfAuthError,
    NetconfCapabilityError,
    NetconfConnectionError,
    NetconfHostKeyError,
    NetconfMalformedReplyError,
    NetconfRefusedError,
    NetconfReplyTooLargeError,
    NetconfRpcError,
    NetconfTimeoutError,
    NetconfUnsafeXmlError,
)
from netmon.netconf import client as client_module
from netmon.netconf import xml
from netmon.netconf.client import Capabilities, NetconfReply, NetconfSession, connect, translate
from netmon.netconf.target import (
    AcceptAnyHostKey,
    KnownHosts,
    NetconfTarget,
    PinnedHostKey,
    Secret,
)

PASSWORD = "hunter2-do-not-leak"
ENV = "NETMON_TEST_NETCONF_PASSWORD"


@pytest.fixture(autouse=True)
def password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)


def target(port: int = 830, **kwargs: Any) -> NetconfTarget:
    values: dict[str, Any] = {
        "device": "r1",
        "host": "127.0.0.1",
        "port": port,
        "username": "netmon",
        "password": Secret(env=ENV),
        "host_key": AcceptAnyHostKey(),
        "connect_timeout": 2.0,
    }
    values.update(kwargs)
    return NetconfTarget(**values)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def silent_listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP listener on loopback that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def assert_no_secret(exc: BaseException) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        assert PASSWORD not in str(seen)
        assert PASSWORD not in repr(seen)
        seen = seen.__cause__ or seen.__context__


# -- targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device": ""}, "device name"),
        ({"host": ""}, "host"),
        ({"host": "a b"}, "host"),
        ({"username": ""}, "username"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"password": None}, "password reference or a key_file"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"rpc_timeout": -1}, "rpc_timeout"),
        ({"max_reply_bytes": 10}, "max_reply_bytes"),
        ({"host_key": PinnedHostKey(" ")}, "pinned host key"),
    ],
)
def test_target_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        target(**change)


def test_target_with_key_file_only_is_valid(tmp_path: Path) -> None:
    t = target(password=None, key_file=tmp_path / "id_ed25519")
    assert t.key_file is not None
    assert target(host="::1", port=830).address == "[::1]:830"
    assert target().address == "127.0.0.1:830"


def test_secret_is_a_reference(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Secret()
    with pytest.raises(ConfigError):
        Secret(env="A", file=tmp_path / "x")
    assert Secret(env=ENV).reveal() == PASSWORD
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    assert Secret(file=path).reveal() == PASSWORD
    with pytest.raises(ConfigError, match="NOT_SET_HERE") as caught:
        Secret(env="NOT_SET_HERE").reveal()
    assert_no_secret(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        Secret(file=tmp_path / "missing").reveal()


def test_secret_never_in_repr_or_str(tmp_path: Path) -> None:
    t = target()
    for text in (repr(t), str(t), repr(t.password), str(t.password)):
        assert PASSWORD not in text
    assert ENV in repr(t)  # the reference is shown, so the operator knows where it comes from
    path = tmp_path / "pw"
    path.write_text(PASSWORD)
    assert PASSWORD not in repr(target(password=Secret(file=path)))


# -- connecting: refused, timeout, host keys --------------------------------------------


def test_connection_refused_on_a_closed_port() -> None:
    t = target(closed_port())
    started = time.perf_counter()
    refused = r"r1: 127\.0\.0\.1:\d+: connection refused"
    with pytest.raises(NetconfRefusedError, match=refused) as caught:
        connect(t)
    assert time.perf_counter() - started < 1.0
    assert isinstance(caught.value, ConnectionRefusedError)
    assert isinstance(caught.value, CollectionError)
    assert caught.value.error_class == "netconf_refused"
    assert_no_secret(caught.value)


def test_timeout_against_a_listener_that_never_answers(
    silent_listener: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_listener
    t = target(port, connect_timeout=0.5)
    started = time.perf_counter()
    with pytest.raises(NetconfTimeoutError, match=r"within 0\.5 s") as caught:
        connect(t)
    elapsed = time.perf_counter() - started
    assert 0.4 < elapsed < 3.0
    assert len(accepted) == 1
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.error_class == "netconf_timeout"
    assert_no_secret(caught.value)


def test_unknown_host_is_refused_before_any_connection(
    tmp_path: Path, silent_listener: tuple[int, list[socket.socket]]
) -> None:
    port, accepted = silent_listener
    known = tmp_path / "known_hosts"
    known.write_text("other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm6yqSl\n")
    with pytest.raises(NetconfHostKeyError, match="no host key"):
        connect(target(port, host_key=KnownHosts(known)))
    with pytest.raises(NetconfHostKeyError, match="cannot read known_hosts"):
        connect(target(port, host_key=KnownHosts(tmp_path / "missing")))
    time.sleep(0.1)
    assert accepted == []


def openssh_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_known_hosts_entry_is_the_only_key_accepted(
    tmp_path: Path, silent_listener: tuple[int, list[socket.socket]]
) -> None:
    port, accepted = silent_listener
    key = openssh_public_key()
    known = tmp_path / "known_hosts"
    known.write_text(f"other.example {openssh_public_key()}\n[127.0.0.1]:{port} {key}\n")
    t = target(port, host_key=KnownHosts(known), connect_timeout=0.3)
    assert client_module._host_key_args(t) == {
        "hostkey_verify": True,
        "hostkey_b64": key.split()[1],
    }
    with pytest.raises(NetconfTimeoutError):  # it did go on to connect
        connect(t)
    assert len(accepted) == 1
    assert client_module._host_key_args(target(host_key=AcceptAnyHostKey())) == {
        "hostkey_verify": False
    }


def test_missing_password_env_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"r1.*NOT_SET_HERE"):
        connect(target(closed_port(), password=Secret(env="NOT_SET_HERE")))


# -- error translation ------------------------------------------------------------------


def test_translate_maps_ncclient_errors_and_scrubs_the_secret() -> None:
    t = target()
    syntax: Exception
    try:
        etree.fromstring(b"<a>")
    except etree.XMLSyntaxError as exc:
        syntax = exc
    cases: list[tuple[BaseException, type[Exception]]] = [
        (transport.AuthenticationError(f"bad password {PASSWORD}"), NetconfAuthError),
        (transport.SSHUnknownHostError("127.0.0.1", "aa:bb"), NetconfHostKeyError),
        (operations.TimeoutExpiredError("ncclient timed out"), NetconfTimeoutError),
        (transport.SessionError("Capability exchange timed out"), NetconfTimeoutError),
        (transport.SessionCloseError("", ""), NetconfConnectionError),
        (transport.SSHError(f"Negotiation failed: {PASSWORD}"), NetconfConnectionError),
        (ConnectionRefusedError(111, "refused"), NetconfRefusedError),
        (ConnectionResetError(104, "reset"), NetconfConnectionError),
        (syntax, NetconfMalformedReplyError),
        (NetconfUnsafeXmlError("declares a DOCTYPE"), NetconfUnsafeXmlError),
        (RuntimeError(PASSWORD), client_module.NetconfError),
    ]
    for error, expected in cases:
        mapped = translate(t, error, "get", PASSWORD)
        assert type(mapped) is expected, error
        assert str(mapped).startswith("r1: get"), mapped
        assert PASSWORD not in str(mapped)


# -- a session, with ncclient's session and operations replaced -------------------------


class FakeNcSession:
    def __init__(self, capabilities: list[str]) -> None:
        self.server_capabilities = capabilities
        self.connected = True

    def close(self) -> None:
        self.connected = False


def fake_session(*capabilities: str) -> NetconfSession:
    base = ["urn:ietf:params:netconf:base:1.1"]
    return NetconfSession(target(), FakeNcSession(base + list(capabilities)), None, PASSWORD)


def reply_op(raw: str, seen: list[dict[str, Any]]) -> type:
    """An operation that answers ``raw``, handled as ncclient's ``RPC._request`` handles a
    reply: made by the operation's ``REPLY_CLS``, then parsed in the calling thread."""

    class Op:
        REPLY_CLS: Any = None

        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            pass

        def request(self, **kwargs: Any) -> Any:
            seen.append(kwargs)
            reply = self.REPLY_CLS(raw, huge_tree=False)
            reply.parse()
            return reply

    return Op


def rpc_reply(body: str) -> str:
    return f'<rpc-reply xmlns="{xml.BASE_NS}" message-id="1">{body}</rpc-reply>'


def test_capabilities_and_yang_modules() -> None:
    caps = Capabilities.from_uris(
        [
            "urn:ietf:params:netconf:base:1.0",
            "urn:ietf:params:netconf:capability:candidate:1.0",
            "urn:ietf:params:xml:ns:yang:ietf-interfaces?module=ietf-interfaces"
            "&revision=2018-02-20&features=arbitrary-names,pre-provisioning",
            "http://example.com/acme?module=acme-system&deviations=acme-dev",
        ]
    )
    assert caps.has("urn:ietf:params:netconf:capability:candidate:1.0")
    assert not caps.has("urn:ietf:params:netconf:capability:xpath:1.0")
    ietf = caps.module("ietf-interfaces")
    assert ietf is not None
    assert ietf.revision == "2018-02-20"
    assert ietf.namespace == "urn:ietf:params:xml:ns:yang:ietf-interfaces"
    assert ietf.features == ("arbitrary-names", "pre-provisioning")
    acme = caps.module("acme-system")
    assert acme is not None
    assert acme.revision is None
    assert acme.deviations == ("acme-dev",)
    assert [m.name for m in caps.modules] == ["ietf-interfaces", "acme-system"]


def test_candidate_and_xpath_need_their_capabilities() -> None:
    session = fake_session()
    with pytest.raises(NetconfCapabilityError, match="candidate"):
        session.get_config("candidate")
    with pytest.raises(NetconfCapabilityError, match="xpath"):
        session.get(xpath="/interfaces")
    with pytest.raises(ValueError, match="not both"):
        session.get(subtree="<a/>", xpath="/a")
    assert PASSWORD not in repr(session)


def test_get_returns_parsed_data_size_and_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    raw = rpc_reply('<data><system xmlns="urn:x"><hostname>r1</hostname></system></data>')
    monkeypatch.setattr(operations, "Get", reply_op(raw, seen))
    reply = fake_session().get(subtree='<system xmlns="urn:x"/>')
    assert isinstance(reply, NetconfReply)
    assert reply.size == len(raw.encode())
    assert reply.duration >= 0
    assert xml.text(reply.data, "x:system/x:hostname", {"x": "urn:x"}) == "r1"
    kind, element = seen[0]["filter"]
    assert kind == "subtree"
    assert element.tag == "{urn:x}system"


def test_get_config_candidate_and_xpath_when_advertised(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(operations, "GetConfig", reply_op(rpc_reply("<data/>"), seen))
    session = fake_session(client_module.CANDIDATE, client_module.XPATH)
    session.get_config("candidate", xpath="/x:a", namespaces={"x": "urn:x"})
    assert seen == [{"source": "candidate", "filter": ("xpath", ({"x": "urn:x"}, "/x:a"))}]


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        (
            rpc_reply(
                "<rpc-error><error-type>application</error-type><error-tag>invalid-value"
                "</error-tag><error-severity>error</error-severity><error-message>"
                "no such datastore</error-message></rpc-error>"
            ),
            NetconfRpcError,
            "rpc-error invalid-value: no such datastore",
        ),
        (rpc_reply("<ok/>"), NetconfMalformedReplyError, "no <data>"),
        ("<rpc-reply>", NetconfMalformedReplyError, "well-formed"),
        (
            '<!DOCTYPE r [<!ENTITY x "y">]>' + rpc_reply("<data>&x;</data>"),
            NetconfUnsafeXmlError,
            "DOCTYPE",
        ),
        (rpc_reply("<data>" + "x" * 5000 + "</data>"), NetconfReplyTooLargeError, "over"),
    ],
)
def test_bad_replies_are_mapped(
    monkeypatch: pytest.MonkeyPatch, raw: str, error: type[Exception], match: str
) -> None:
    monkeypatch.setattr(operations, "Get", reply_op(raw, []))
    session = fake_session()
    object.__setattr__(session, "target", target(max_reply_bytes=4096))
    with pytest.raises(error, match=match) as caught:
        session.get()
    assert str(caught.value).startswith("r1: get")


def test_rpc_warnings_do_not_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = rpc_reply(
        "<rpc-error><error-severity>warning</error-severity><error-tag>x</error-tag>"
        "</rpc-error><data/>"
    )
    monkeypatch.setattr(operations, "Get", reply_op(raw, []))
    assert fake_session().get().size == len(raw)


def test_every_incoming_message_is_screened_before_ncclient_parses_it() -> None:
    """ncclient's own session, its listeners told only of messages that pass the screen,
    with the root element's tag and attributes as ncclient's dispatch gives them."""
    delivered: list[tuple[tuple[str, dict[str, str]], str]] = []
    errors: list[Exception] = []

    class Listener(transport.SessionListener):  # type: ignore[misc]
        def callback(self, root: tuple[str, dict[str, str]], raw: str) -> None:
            delivered.append((root, raw))

        def errback(self, ex: Exception) -> None:
            errors.append(ex)

    session = transport.Session(capabilities=[])
    session.add_listener(Listener())
    session._transport_read = lambda: b""  # bounded too (test_tasks_netconf: endless)
    client_module._screen(session, 2048)
    session._dispatch_message(rpc_reply("<ok/>"))
    session._dispatch_message('<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>')
    session._dispatch_message("<r>" + "x" * 3000 + "</r>")
    session._dispatch_message("this is not XML at all")
    hello = '<?xml version="1.0"?>\n<!-- hi --><nc:hello xmlns:nc="urn:x" a="1">'  # truncated
    session._dispatch_message(hello)
    assert delivered == [
        ((f"{{{xml.BASE_NS}}}rpc-reply", {"message-id": "1"}), rpc_reply("<ok/>")),
        (("{urn:x}hello", {"a": "1"}), hello),
    ]
    assert [type(e) for e in errors] == [
        NetconfUnsafeXmlError,
        NetconfReplyTooLargeError,
        NetconfMalformedReplyError,
    ]
