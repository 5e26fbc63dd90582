"""The NETCONF server of a lab device (RFC 6241 over SSH, RFC 6242 framing).

What it serves, from the same :class:`~netmon.lab.device.Device` as the SNMP agent (same
interface names (ifName), counters, status), so a device reads alike over both:

* ``<get>``: ietf-interfaces 2018-02-20 both ways: NMDA ``/interfaces`` (configuration
  and state together) and the deprecated RFC 7223 ``/interfaces-state``, with
  ``statistics`` equal to IF-MIB's 64-bit counters (the 32-bit ones mod 2**32, as in
  SNMP); ietf-system's ``/system`` and ``/system-state``;
* ``<get-config>`` of ``running`` or ``candidate``: ``/interfaces`` with descriptions,
  ``/system`` with the hostname and local users with password hashes;
* ``<edit-config>`` of the candidate, interface descriptions only (merge, replace,
  delete, remove), ``<commit>`` (one configuration change of the device, as ``netmon lab
  config-change`` makes) and ``<discard-changes>``;
* subtree filters (RFC 6241 section 6) on both; ``lock``, ``unlock``, ``validate`` answer
  ``<ok/>``; ``close-session`` ends the session; anything else is an ``rpc-error``.

Framing is end-of-message (``]]>]]>``) until both hellos name base:1.1, then chunked.
The protocol is written sans-io (:class:`NetconfSession` takes and gives bytes) so it is
tested without SSH; :func:`serve_netconf` is the asyncssh glue. A client's malformed XML
gets an ``rpc-error``; broken framing or an oversized message closes the session. Nothing
a client sends can raise out of :func:`serve_netconf`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import itertools
import logging
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from lxml import etree

from netmon.lab.mib import BROADCAST_SHARE, MULTICAST_SHARE, UNICAST_SHARE

if TYPE_CHECKING:
    import asyncssh

    from netmon.lab.device import Device, Interface

__all__ = [
    "BASE_NS",
    "CAPABILITIES",
    "IF_NS",
    "SYSTEM_NS",
    "FramingError",
    "MessageReader",
    "NetconfSession",
    "serve_netconf",
    "subtree_filter",
]

log = logging.getLogger(__name__)

BASE_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
IF_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
IANA_IF_NS = "urn:ietf:params:xml:ns:yang:iana-if-type"
SYSTEM_NS = "urn:ietf:params:xml:ns:yang:ietf-system"
BASE_10 = "urn:ietf:params:netconf:base:1.0"
BASE_11 = "urn:ietf:params:netconf:base:1.1"
CAPABILITIES = (
    BASE_10,
    BASE_11,
    "urn:ietf:params:netconf:capability:candidate:1.0",
    "urn:ietf:params:netconf:capability:validate:1.1",
    f"{IF_NS}?module=ietf-interfaces&revision=2018-02-20",
    f"{IANA_IF_NS}?module=iana-if-type&revision=2017-01-19",
    f"{SYSTEM_NS}?module=ietf-system&revision=2014-08-06",
    "urn:ietf:params:xml:ns:yang:ietf-yang-types?module=ietf-yang-types&revision=2013-07-15",
)
EOM = b"]]>]]>"
MAX_MESSAGE = 1 << 20  # bytes; a client's rpc is a few hundred
_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
_CHUNK = 65536
_CHUNK_HEADER = re.compile(rb"\n#([1-9][0-9]{0,9})\n")
_session_ids = itertools.count(1)


class FramingError(Exception):
    """The peer broke RFC 6242 framing or sent too much: the session must end."""


class MessageReader:
    """Splits the byte stream into messages, end-of-message or chunked framed."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.chunked = False
        self.limit = limit
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The messages completed by ``data``, in order, lazily: the hello that turns
        :attr:`chunked` on may be followed by chunks in the same read, so the caller
        handles each message before the next is split off."""
        self._buffer += data
        return iter(self._chunked() if self.chunked else self._end_of_message())

    def _end_of_message(self) -> Iterable[bytes]:
        while (end := self._buffer.find(EOM)) >= 0:
            message = bytes(self._buffer[:end])
            del self._buffer[: end + len(EOM)]
            yield message
            if self.chunked:  # the hello that switched framing was just taken
                yield from self._chunked()
                return
        if len(self._buffer) > self.limit:
            raise FramingError(f"no end-of-message marker within {self.limit} bytes")

    def _chunked(self) -> Iterable[bytes]:
        while len(self._buffer) >= 4:
            if self._buffer.startswith(b"\n##\n"):
                del self._buffer[:4]
                if not self._parts:
                    raise FramingError("end-of-chunks without a chunk")
                message = b"".join(self._parts)
                self._parts, self._size = [], 0
                yield message
                continue
            match = _CHUNK_HEADER.match(self._buffer)
            if match is None:
                if len(self._buffer) >= 13 or not _could_be_header(bytes(self._buffer)):
                    raise FramingError("bad chunk header")
                return  # a header still arriving
            size = int(match.group(1))
            if self._size + size > self.limit:
                raise FramingError(f"message over {self.limit} bytes")
            start = match.end()
            if len(self._buffer) < start + size:
                return
            self._parts.append(bytes(self._buffer[start : start + size]))
            self._size += size
            del self._buffer[: start + size]


def _could_be_header(prefix: bytes) -> bool:
    """True if ``prefix`` may still become ``\\n#<size>\\n`` or ``\\n##\\n``."""
    return re.fullmatch(rb"\n(#([1-9][0-9]{0,9})?|##?)?", prefix) is not None


def frame(message: bytes, chunked: bool) -> bytes:
    if not chunked:
        return message + EOM
    out = bytearray()
    for start in range(0, len(message), _CHUNK):
        piece = message[start : start + _CHUNK]
        out += b"\n#%d\n" % len(piece) + piece
    return bytes(out + b"\n##\n")


# --- the data a device serves ------------------------------------------------------------


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _leaf(parent: etree._Element, ns: str, name: str, value: object) -> etree._Element:
    element = etree.SubElement(parent, _q(ns, name))
    element.text = value if isinstance(value, str) else str(value)
    return element


def _datetime(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iftype(parent: etree._Element) -> None:
    element = etree.SubElement(parent, _q(IF_NS, "type"), nsmap={"ianaift": IANA_IF_NS})
    element.text = "ianaift:ethernetCsmacd"


def _statistics(parent: etree._Element, iface: Interface, t: float, boot: str) -> None:
    stats = etree.SubElement(parent, _q(IF_NS, "statistics"))
    errors, discards = iface.errors(t), iface.discards(t)
    for name, value in (
        ("discontinuity-time", boot),  # counters restart only at a reboot
        ("in-octets", iface.in_octets(t) & _M64),
        ("in-unicast-pkts", iface.in_packets(t, UNICAST_SHARE) & _M64),
        ("in-broadcast-pkts", iface.in_packets(t, BROADCAST_SHARE) & _M64),
        ("in-multicast-pkts", iface.in_packets(t, MULTICAST_SHARE) & _M64),
        ("in-discards", discards & _M32),
        ("in-errors", errors & _M32),
        ("in-unknown-protos", 0),
        ("out-octets", iface.out_octets(t) & _M64),
        ("out-unicast-pkts", iface.out_packets(t, UNICAST_SHARE) & _M64),
        ("out-broadcast-pkts", iface.out_packets(t, BROADCAST_SHARE) & _M64),
        ("out-multicast-pkts", iface.out_packets(t, MULTICAST_SHARE) & _M64),
        ("out-discards", discards // 2 & _M32),
        ("out-errors", errors // 3 & _M32),
    ):
        _leaf(stats, IF_NS, name, value)


def _interface_state(entry: etree._Element, device: Device, iface: Interface, t: float) -> None:
    _leaf(entry, IF_NS, "admin-status", "up" if iface.admin_up else "down")
    _leaf(entry, IF_NS, "oper-status", "up" if iface.oper_up else "down")
    _leaf(entry, IF_NS, "last-change", _datetime(device.wall_time(iface.last_change)))
    _leaf(entry, IF_NS, "if-index", iface.index)
    _leaf(entry, IF_NS, "phys-address", ":".join(f"{b:02x}" for b in iface.mac))
    _leaf(entry, IF_NS, "speed", iface.speed)
    _statistics(entry, iface, t, _datetime(device.boot_time()))


def interfaces(
    device: Device, t: float | None, pending: Mapping[int, str] | None = None
) -> etree._Element:
    """NMDA ``/interfaces``: configuration only when ``t`` is None, else with state;
    ``pending`` descriptions (by ifIndex) stand for the candidate's."""
    root = etree.Element(_q(IF_NS, "interfaces"), nsmap={None: IF_NS})
    for iface in device.interfaces:
        entry = etree.SubElement(root, _q(IF_NS, "interface"))
        _leaf(entry, IF_NS, "name", iface.name)
        description = pending.get(iface.index, iface.alias) if pending else iface.alias
        if description:
            _leaf(entry, IF_NS, "description", description)
        _iftype(entry)
        _leaf(entry, IF_NS, "enabled", "true" if iface.admin_up else "false")
        if t is not None:
            _interface_state(entry, device, iface, t)
    return root


def interfaces_state(device: Device, t: float) -> etree._Element:
    """RFC 7223's ``/interfaces-state`` (deprecated by NMDA, still what many clients ask)."""
    root = etree.Element(_q(IF_NS, "interfaces-state"), nsmap={None: IF_NS})
    for iface in device.interfaces:
        entry = etree.SubElement(root, _q(IF_NS, "interface"))
        _leaf(entry, IF_NS, "name", iface.name)
        _iftype(entry)
        _interface_state(entry, device, iface, t)
    return root


def system(device: Device) -> etree._Element:
    root = etree.Element(_q(SYSTEM_NS, "system"), nsmap={None: SYSTEM_NS})
    _leaf(root, SYSTEM_NS, "contact", device.sys_contact)
    _leaf(root, SYSTEM_NS, "hostname", device.hostname)
    _leaf(root, SYSTEM_NS, "location", device.sys_location)
    authentication = etree.SubElement(root, _q(SYSTEM_NS, "authentication"))
    for user in device.users:
        entry = etree.SubElement(authentication, _q(SYSTEM_NS, "user"))
        _leaf(entry, SYSTEM_NS, "name", user.name)
        _leaf(entry, SYSTEM_NS, "password", user.password_hash)
    return root


def system_state(device: Device, t: float) -> etree._Element:
    root = etree.Element(_q(SYSTEM_NS, "system-state"), nsmap={None: SYSTEM_NS})
    platform = etree.SubElement(root, _q(SYSTEM_NS, "platform"))
    _leaf(platform, SYSTEM_NS, "os-name", "netmon-lab")
    _leaf(platform, SYSTEM_NS, "os-release", device.software_version)
    _leaf(platform, SYSTEM_NS, "os-version", device.sys_descr)
    _leaf(platform, SYSTEM_NS, "machine", f"NL-{len(device.interfaces)}P")
    clock = etree.SubElement(root, _q(SYSTEM_NS, "clock"))
    _leaf(clock, SYSTEM_NS, "current-datetime", _datetime(device.wall_time(t)))
    _leaf(clock, SYSTEM_NS, "boot-datetime", _datetime(device.boot_time()))
    return root


def running_config(
    device: Device, pending: Mapping[int, str] | None = None
) -> list[etree._Element]:
    """The configuration datastore's top-level nodes (the candidate's with ``pending``)."""
    return [interfaces(device, None, pending), system(device)]


# Uncommitted edits per device (descriptions by ifIndex): a candidate datastore is shared
# by the device's sessions. Weak, so a lab's devices take theirs with them.
_candidates: weakref.WeakKeyDictionary[Device, dict[int, str]] = weakref.WeakKeyDictionary()


def operational(device: Device) -> list[etree._Element]:
    t = device.tick()
    return [
        interfaces(device, t),
        interfaces_state(device, t),
        system(device),
        system_state(device, t),
    ]


# --- subtree filtering (RFC 6241 section 6) ---------------------------------------------


def _matches(data: etree._Element, spec: etree._Element) -> bool:
    """Same local name, and the same namespace when the filter names one."""
    want, have = etree.QName(spec), etree.QName(data)
    return want.localname == have.localname and want.namespace in (None, have.namespace)


def _select(data: etree._Element, spec: etree._Element) -> etree._Element | None:
    """What of ``data`` (matching ``spec``) the filter node ``spec`` selects, or None."""
    children = [c for c in spec if isinstance(c.tag, str)]
    if not children:  # a selection node: all of it
        return data
    content = [c for c in children if len(c) == 0 and (c.text or "").strip()]
    for match in content:  # content-match nodes: every one must hold
        wanted = (match.text or "").strip()
        if not any(_matches(d, match) and (d.text or "").strip() == wanted for d in data):
            return None
    others = [c for c in children if c not in content]
    result = etree.Element(data.tag, attrib=dict(data.attrib), nsmap=data.nsmap)
    result.text = data.text
    if not others:  # only content matches: the whole matching entry
        for child in data:
            result.append(_copy(child))
        return result
    for child in data:
        if any(_matches(child, c) for c in content):
            result.append(_copy(child))
            continue
        for sub in others:
            if _matches(child, sub) and (picked := _select(child, sub)) is not None:
                result.append(_copy(picked) if picked is child else picked)
                break
    # A containment node that matched nothing selects nothing.
    return result if len(result) or not others else None


def _copy(element: etree._Element) -> etree._Element:
    return copy.deepcopy(element)


def subtree_filter(data: list[etree._Element], spec: etree._Element | None) -> list[etree._Element]:
    """The parts of the top-level ``data`` nodes that the ``<filter>`` element selects."""
    if spec is None:
        return data
    out = []
    for node in data:
        for top in spec:
            if isinstance(top.tag, str) and _matches(node, top):
                picked = _select(node, top)
                if picked is not None:
                    out.append(picked)
                break
    return out


# --- the protocol ------------------------------------------------------------------------

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
)


class RpcError(Exception):
    """An ``<rpc-error>`` to send back (RFC 6241 appendix A)."""

    def __init__(self, tag: str, message: str, kind: str = "protocol", **info: str) -> None:
        super().__init__(message)
        self.tag = tag
        self.kind = kind
        self.info = info


class NetconfSession:
    """One NETCONF session of ``device``, sans-io: :meth:`receive` takes bytes off the
    wire and returns the bytes to send back."""

    def __init__(self, device: Device, session_id: int | None = None) -> None:
        self.device = device
        self.session_id = session_id if session_id is not None else next(_session_ids)
        self.reader = MessageReader()
        self.hello_done = False
        self.closed = False
        self._chunked = False

    def hello(self) -> bytes:
        root = etree.Element(_q(BASE_NS, "hello"), nsmap={None: BASE_NS})
        caps = etree.SubElement(root, _q(BASE_NS, "capabilities"))
        for uri in CAPABILITIES:
            _leaf(caps, BASE_NS, "capability", uri)
        _leaf(root, BASE_NS, "session-id", self.session_id)
        return frame(_serialize(root), chunked=False)

    def receive(self, data: bytes) -> bytes:
        """Replies to the messages ``data`` completes; raises FramingError to close."""
        out = bytearray()
        for message in self.reader.feed(data):
            if self.closed:
                break
            if not self.hello_done:
                # Read even while silent: it has no answer, and a hello dropped would turn
                # the first rpc after the silence into a "hello" that closes the session
                # (a client can silence the device before the lab has read its hello).
                self._client_hello(message)
                continue
            if self.device.is_silent:
                # A dead device: the client's rpc-timeout is what it gets. Whole messages
                # are dropped, never bytes, so the framing outlives a silence that starts
                # or ends while a message is half read.
                continue
            reply = self.handle(message)
            out += frame(reply, self._chunked)
        return bytes(out)

    def _client_hello(self, message: bytes) -> None:
        try:
            root = _parse(message)
        except RpcError as exc:
            raise FramingError(f"bad client hello: {exc}") from None
        if root.tag != _q(BASE_NS, "hello"):
            raise FramingError("the first message must be a <hello>")
        uris = {(c.text or "").strip() for c in root.iter(_q(BASE_NS, "capability"))}
        if BASE_10 not in uris and BASE_11 not in uris:
            raise FramingError("the client's hello names no base capability")
        if root.find(_q(BASE_NS, "session-id")) is not None:
            raise FramingError("a client's hello must not carry a session-id")
        self.hello_done = True
        # RFC 6242 section 4.1: chunked framing from the next message on, when both say 1.1.
        self._chunked = BASE_11 in uris
        self.reader.chunked = self._chunked

    def handle(self, message: bytes) -> bytes:
        """The reply to one framed message (after the hellos)."""
        attrib: dict[str, str] = {}
        try:
            root = _parse(message)
            if root.tag != _q(BASE_NS, "rpc"):
                raise RpcError(
                    "unknown-element",
                    "expected <rpc>",
                    "rpc",
                    **{"bad-element": etree.QName(root).localname},
                )
            attrib = {str(k): str(v) for k, v in root.attrib.items()}
            if "message-id" not in attrib:
                raise RpcError(
                    "missing-attribute",
                    "<rpc> needs a message-id",
                    "rpc",
                    **{"bad-attribute": "message-id", "bad-element": "rpc"},
                )
            operations = [c for c in root if isinstance(c.tag, str)]
            if len(operations) != 1:
                raise RpcError("malformed-message", "an <rpc> holds exactly one operation", "rpc")
            body = self._operation(operations[0])
        except RpcError as exc:
            body = [_error(exc)]
        except Exception as exc:  # a bug here must not take the lab down
            log.exception("lab NETCONF: %s: rpc failed", self.device.name)
            body = [
                _error(
                    RpcError(
                        "operation-failed", f"internal error: {type(exc).__name__}", "application"
                    )
                )
            ]
        reply = etree.Element(_q(BASE_NS, "rpc-reply"), nsmap={None: BASE_NS})
        for key, value in attrib.items():
            with contextlib.suppress(ValueError):
                reply.set(key, value)
        for element in body:
            reply.append(element)
        return _serialize(reply)

    def _operation(self, op: etree._Element) -> list[etree._Element]:
        name = etree.QName(op)
        if name.namespace != BASE_NS:
            raise RpcError(
                "operation-not-supported",
                f"unknown operation {name.localname!r} in {name.namespace}",
            )
        kind = name.localname
        if kind == "get":
            return [_data(subtree_filter(operational(self.device), _filter(op)))]
        if kind == "get-config":
            source = _datastore(op, "source")
            pending = _candidates.get(self.device) if source == "candidate" else None
            return [_data(subtree_filter(running_config(self.device, pending), _filter(op)))]
        if kind in ("lock", "unlock"):
            _datastore(op, "target")
            return [_ok()]
        if kind == "validate":
            _datastore(op, "source")
            return [_ok()]
        if kind == "commit":
            pending = _candidates.pop(self.device, None)
            if pending:
                self.device.set_descriptions(pending)  # checked by edit-config
            return [_ok()]
        if kind == "discard-changes":
            _candidates.pop(self.device, None)
            return [_ok()]
        if kind == "close-session":
            self.closed = True
            return [_ok()]
        if kind == "edit-config":
            if _datastore(op, "target") != "candidate":
                raise RpcError(
                    "operation-not-supported", "no :writable-running: edit the candidate, commit"
                )
            config = op.find(_q(BASE_NS, "config"))
            if config is None:
                raise RpcError(
                    "missing-element", "<edit-config> needs a <config>", **{"bad-element": "config"}
                )
            edits = _description_edits(self.device, config)
            _candidates.setdefault(self.device, {}).update(edits)
            return [_ok()]
        raise RpcError("operation-not-supported", f"operation {kind!r} is not supported")


def _description_edits(device: Device, config: etree._Element) -> dict[int, str]:
    """The interface descriptions an ``<edit-config>``'s ``<config>`` sets, by ifIndex;
    the only thing the lab lets a client edit."""
    only = "only /interfaces/interface/description can be edited in the lab"
    by_name = {i.name: i for i in device.interfaces}
    edits: dict[int, str] = {}
    for top in config:
        if not isinstance(top.tag, str):
            continue
        if top.tag != _q(IF_NS, "interfaces"):
            raise RpcError("operation-not-supported", only, "application")
        for entry in top:
            if not isinstance(entry.tag, str):
                continue
            if entry.tag != _q(IF_NS, "interface"):
                raise RpcError("operation-not-supported", only, "application")
            name = (entry.findtext(_q(IF_NS, "name")) or "").strip()
            iface = by_name.get(name)
            if iface is None:
                raise RpcError("invalid-value", f"no interface {name!r} (none can be created)")
            for leaf in entry:
                if not isinstance(leaf.tag, str) or leaf.tag == _q(IF_NS, "name"):
                    continue
                if leaf.tag != _q(IF_NS, "description"):
                    raise RpcError("operation-not-supported", only, "application")
                operation = leaf.get(_q(BASE_NS, "operation"), "merge")
                if operation in ("delete", "remove"):
                    text = ""
                elif operation in ("merge", "replace", "create"):
                    text = leaf.text or ""
                else:
                    raise RpcError(
                        "bad-attribute",
                        f"operation {operation!r}",
                        **{"bad-attribute": "operation"},
                    )
                if len(text) > 200 or not text.isprintable():
                    raise RpcError(
                        "invalid-value", "a description is 0 to 200 printable characters"
                    )
                edits[iface.index] = text
    return edits


def _parse(message: bytes) -> etree._Element:
    # No DTDs at all: entity expansion is the classic way to make a server choke.
    if b"<!DOCTYPE" in message or b"<!ENTITY" in message:
        raise RpcError("malformed-message", "DTDs are not accepted", "rpc")
    try:
        return etree.fromstring(message.strip(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise RpcError("malformed-message", f"not well-formed XML: {exc}", "rpc") from None


def _filter(op: etree._Element) -> etree._Element | None:
    spec = op.find(_q(BASE_NS, "filter"))
    if spec is None:
        return None
    if spec.get("type", "subtree") != "subtree":
        raise RpcError("operation-not-supported", "only subtree filters are supported (no :xpath)")
    return spec


def _datastore(op: etree._Element, role: str) -> str:
    holder = op.find(_q(BASE_NS, role))
    names = (
        [str(etree.QName(c).localname) for c in holder if isinstance(c.tag, str)]
        if holder is not None
        else []
    )
    if len(names) != 1:
        raise RpcError(
            "missing-element",
            f"<{role}> must name one datastore",
            "protocol",
            **{"bad-element": role},
        )
    if names[0] not in ("running", "candidate"):
        raise RpcError(
            "invalid-value", f"no datastore {names[0]!r} (running and candidate only)", "protocol"
        )
    return names[0]


def _data(nodes: list[etree._Element]) -> etree._Element:
    data = etree.Element(_q(BASE_NS, "data"))
    for node in nodes:
        data.append(node)
    return data


def _ok() -> etree._Element:
    return etree.Element(_q(BASE_NS, "ok"))


def _error(exc: RpcError) -> etree._Element:
    error = etree.Element(_q(BASE_NS, "rpc-error"))
    _leaf(error, BASE_NS, "error-type", exc.kind)
    _leaf(error, BASE_NS, "error-tag", exc.tag)
    _leaf(error, BASE_NS, "error-severity", "error")
    message = _leaf(error, BASE_NS, "error-message", str(exc))
    message.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    if exc.info:
        info = etree.SubElement(error, _q(BASE_NS, "error-info"))
        for key, value in exc.info.items():
            _leaf(info, BASE_NS, key, value)
    return error


def _serialize(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


# --- over SSH ----------------------------------------------------------------------------


async def serve_netconf(device: Device, process: asyncssh.SSHServerProcess[str]) -> None:
    """Run one NETCONF session on an SSH ``netconf`` subsystem channel until it ends.

    The channel is UTF-8 text (the CLI on the same connection needs that); RFC 6242
    chunk sizes count octets, so text is turned back into bytes here, losslessly (a
    client's invalid UTF-8 makes asyncssh drop the connection)."""
    session = NetconfSession(device)
    stdin, stdout = process.stdin, process.stdout
    try:
        stdout.write(session.hello().decode())
        while not session.closed:
            text = await stdin.read(_CHUNK)
            if not text:
                break
            reply = session.receive(text.encode())
            if reply:
                if device.sends_garbage:
                    reply = b"\x00not xml at all" + reply
                stdout.write(reply.decode())
                await stdout.drain()
    except FramingError as exc:
        log.info("lab NETCONF %s: closing session %d: %s", device.name, session.session_id, exc)
    except (OSError, EOFError):
        pass  # the client went away
    except Exception:  # nothing a client does may take the lab down
        log.exception("lab NETCONF %s: session %d failed", device.name, session.session_id)
    finally:
        process.exit(0)
