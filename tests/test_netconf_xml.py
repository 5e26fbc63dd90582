"""netmon.netconf.xml: device XML is parsed without trusting it (no network, no server)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from netmon.errors import (
    CollectionError,
    NetconfMalformedReplyError,
    NetconfReplyTooLargeError,
    NetconfUnsafeXmlError,
)
from netmon.netconf import xml

IF_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
NS = {"nc": xml.BASE_NS, "if": IF_NS}

INTERFACES_REPLY = f"""<?xml version="1.0" encoding="UTF-8"?>
<rpc-reply xmlns="{xml.BASE_NS}" message-id="101">
  <data>
    <interfaces xmlns="{IF_NS}" xmlns:ianaift="urn:ietf:params:xml:ns:yang:iana-if-type">
      <interface>
        <name>eth0</name>
        <description>uplink — core</description>
        <type>ianaift:ethernetCsmacd</type>
        <enabled>true</enabled>
      </interface>
      <interface>
        <name>lo</name>
        <description/>
        <type>ianaift:softwareLoopback</type>
        <enabled>false</enabled>
      </interface>
    </interfaces>
  </data>
</rpc-reply>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rpc-reply xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><data>&lol9;</data></rpc-reply>
"""


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-CONTENT")
    return path


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = b'<!ENTITY leak "FETCHED-FROM-URL">'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback that records every request it gets."""
    hits: list[str] = []
    handler = type("Handler", (_Counter,), {"hits": hits})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def xxe_payloads(secret: Path, url: str) -> dict[str, str]:
    body = '<rpc-reply xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><data>{}</data></rpc-reply>'
    return {
        "file entity": f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>' + body.format("&x;"),
        "url entity": f'<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/entity">]>' + body.format("&x;"),
        "external dtd": f'<!DOCTYPE r SYSTEM "{url}/dtd">' + body.format("&leak;"),
        "parameter entity": (
            f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{url}/param"> %p;]>' + body.format("&leak;")
        ),
        "xinclude-free lowercase": f'<!doctype r [<!ENTITY x SYSTEM "file://{secret}">]><r/>',
    }


def test_billion_laughs_is_refused_without_expansion() -> None:
    started = time.perf_counter()
    with pytest.raises(NetconfUnsafeXmlError, match="DOCTYPE"):
        xml.parse(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.5


def test_billion_laughs_is_not_expanded_even_by_the_parser_alone() -> None:
    """Defence in depth: were the text check bypassed, the parser still expands nothing."""
    try:
        root = etree.fromstring(BILLION_LAUGHS.encode(), parser=xml.safe_parser())
    except etree.XMLSyntaxError:
        return  # libxml2's amplification guard refused it: as good as not expanding
    assert len(etree.tostring(root)) < 2000


@pytest.mark.parametrize(
    "name",
    ["file entity", "url entity", "external dtd", "parameter entity", "xinclude-free lowercase"],
)
def test_external_entities_are_refused_and_nothing_is_fetched(
    name: str, secret_file: Path, http_server: tuple[str, list[str]]
) -> None:
    url, hits = http_server
    payload = xxe_payloads(secret_file, url)[name]
    with pytest.raises(NetconfUnsafeXmlError) as caught:
        xml.parse(payload)
    assert "TOP-SECRET" not in str(caught.value)
    assert hits == []


@pytest.mark.parametrize("name", ["file entity", "url entity", "external dtd", "parameter entity"])
def test_the_parser_alone_reads_no_file_and_no_url(
    name: str, secret_file: Path, http_server: tuple[str, list[str]]
) -> None:
    url, hits = http_server
    payload = xxe_payloads(secret_file, url)[name].encode()
    try:
        root = etree.fromstring(payload, parser=xml.safe_parser())
    except etree.XMLSyntaxError:
        pass  # refusing is as good as not resolving
    else:
        text = etree.tostring(root, encoding="unicode")
        assert "TOP-SECRET" not in text
        assert "FETCHED-FROM-URL" not in text
    assert hits == []


def test_a_dtd_is_refused_even_in_another_encoding() -> None:
    payload = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'
    with pytest.raises(NetconfMalformedReplyError):
        xml.parse(payload.encode("utf-16"))


def test_undeclared_entities_and_garbage_are_malformed() -> None:
    with pytest.raises(NetconfMalformedReplyError, match="well-formed"):
        xml.parse("<r>&x;</r>")
    with pytest.raises(NetconfMalformedReplyError, match="well-formed"):
        xml.parse("<rpc-reply><data></rpc-reply>")
    with pytest.raises(NetconfMalformedReplyError, match="NUL"):
        xml.parse(b"<r>\x00</r>")
    with pytest.raises(NetconfMalformedReplyError, match="UTF-8"):
        xml.parse(b"<r>\xff\xfe</r>")


def test_oversize_replies_are_refused_before_parsing() -> None:
    reply = "<r>" + "x" * 5000 + "</r>"
    with pytest.raises(NetconfReplyTooLargeError, match="5007 bytes"):
        xml.parse(reply, max_bytes=4096)
    with pytest.raises(NetconfReplyTooLargeError):
        xml.parse(reply.encode(), max_bytes=4096)
    # The bound is in bytes, not characters: 2000 "é" are 4000 bytes.
    with pytest.raises(NetconfReplyTooLargeError):
        xml.parse("<r>" + "é" * 2100 + "</r>", max_bytes=4096)
    assert xml.parse(reply, max_bytes=len(reply)).tag == "r"


def test_too_deep_trees_are_refused() -> None:
    deep = "<a>" * 300 + "</a>" * 300  # over libxml2's 256 without huge_tree
    with pytest.raises(NetconfMalformedReplyError):
        xml.parse(deep)


def test_interfaces_reply_parses_and_values_read_by_path() -> None:
    root = xml.parse(INTERFACES_REPLY)
    assert root.tag == f"{{{xml.BASE_NS}}}rpc-reply"
    path = "nc:data/if:interfaces/if:interface"
    assert xml.texts(root, f"{path}/if:name", NS) == ["eth0", "lo"]
    assert xml.texts(root, f"{path}/if:enabled", NS) == ["true", "false"]
    first = xml.elements(root, path, NS)[0]
    assert xml.text(first, "if:description", NS) == "uplink — core"
    assert xml.text(first, "if:type", NS) == "ianaift:ethernetCsmacd"
    lo = xml.element(root, f"{path}[if:name='lo']", NS)
    assert lo is not None
    assert xml.text(lo, "if:description", NS) == ""
    assert xml.text(lo, "if:mtu", NS) is None
    assert xml.require_text(lo, "if:enabled", NS) == "false"
    with pytest.raises(NetconfMalformedReplyError, match="if:mtu"):
        xml.require_text(lo, "if:mtu", NS)
    # Without the namespace the path finds nothing: reading is namespace-aware.
    assert xml.texts(root, "data/interfaces/interface/name") == []


def test_the_netconf_errors_have_netconf_error_classes() -> None:
    from netmon import errors

    classes = [getattr(errors, n) for n in errors.__all__ if n.startswith("Netconf")]
    assert len(classes) == 11
    for cls in classes:
        assert issubclass(cls, errors.NetconfError)
        assert cls.error_class.startswith("netconf"), cls


def test_error_classes_sit_in_netmons_tree() -> None:
    err = NetconfUnsafeXmlError("x")
    assert isinstance(err, NetconfMalformedReplyError)
    assert isinstance(err, CollectionError)
    assert isinstance(err, ValueError)
    assert NetconfUnsafeXmlError.error_class == "netconf_unsafe_xml"
    assert NetconfReplyTooLargeError.error_class == "netconf_too_large"
    assert NetconfMalformedReplyError.error_class == "netconf_malformed"


def test_root_of_reads_the_root_start_tag_however_long() -> None:
    """The root's qualified tag and attributes, as ncclient's dispatch takes them, past a
    long prologue and across a start tag longer than the first read."""
    many = " ".join(f'xmlns:p{i}="urn:p{i}"' for i in range(40))
    message = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!-- ' + "c" * 600 + " -->\n"
        f'<nc:rpc-reply xmlns:nc="{xml.BASE_NS}" {many} message-id="urn:uuid:1&amp;2">'
        "<nc:data/></nc:rpc-reply>"
    )
    assert len(message.split("<nc:data")[0]) > 1500
    assert xml.root_of(message) == (f"{{{xml.BASE_NS}}}rpc-reply", {"message-id": "urn:uuid:1&2"})
    # Only the start tag is read: what follows is for parse() to judge.
    assert xml.root_of("<a b='1'><unclosed>") == ("a", {"b": "1"})


@pytest.mark.parametrize("message", ["", "   ", "not XML", "<a b='1>", "<<a/>"])
def test_root_of_refuses_a_message_without_a_root_element(message: str) -> None:
    with pytest.raises(NetconfMalformedReplyError):
        xml.root_of(message)
