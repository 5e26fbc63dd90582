"""One NETCONF-over-SSH session, blocking, with every ncclient detail kept inside.

:func:`connect` opens the TCP connection itself (so that "refused" and "timed out" are
told apart), hands the socket to ncclient, and enforces ``connect_timeout`` over the
whole of TCP, SSH handshake, authentication and hello: when it expires the socket is
shut down, which ends whatever ncclient was waiting for. Agent keys and ``~/.ssh`` keys
are never tried: only the target's password or key file.

Every message the server sends is screened (size, UTF-8, no DOCTYPE/ENTITY) before
ncclient sees it; ncclient is given only its root element's tag and attributes (to route
it), and a reply is parsed once, for the caller, by ``netmon.netconf.xml.parse``
(:class:`SafeReply`): ncclient's own parsers never read a reply. Errors are translated
here into the NETCONF classes of ``netmon.errors``; the target's secret is scrubbed from
any text that goes into a message.

ncclient costs two threads per open session (paramiko's transport and ncclient's
reader); ``netmon.netconf.shared`` bounds how many are open.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import paramiko
from lxml import etree
from ncclient import operations, transport
from ncclient.manager import make_device_handler
from ncclient.operations.rpc import RPCReply

from netmon.errors import (
    ConfigError,
    NetconfAuthError,
    NetconfCapabilityError,
    NetconfConnectionError,
    NetconfError,
    NetconfHostKeyError,
    NetconfMalformedReplyError,
    NetconfRefusedError,
    NetconfReplyTooLargeError,
    NetconfRpcError,
    NetconfTimeoutError,
)
from netmon.netconf import xml
from netmon.netconf.quiet import QuietSSHSession, quiet_transport
from netmon.netconf.target import AcceptAnyHostKey, KnownHosts, NetconfTarget

__all__ = [
    "Capabilities",
    "NetconfReply",
    "NetconfSession",
    "SafeReply",
    "Subtree",
    "YangModule",
    "connect",
]

CANDIDATE = "urn:ietf:params:netconf:capability:candidate:1.0"
XPATH = "urn:ietf:params:netconf:capability:xpath:1.0"
# A subtree filter: one top-level element, or several (read in one <get>).
Subtree = str | tuple[str, ...]
_FRAMING_SLACK = 1 << 20  # chunk headers of base:1.1 framing, and the next message's start
_KEY_PREFERENCE = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")


@dataclass(frozen=True, slots=True)
class YangModule:
    """A YANG module advertised in the server's hello (RFC 6020 §5.6.4)."""

    name: str
    revision: str | None
    namespace: str
    features: tuple[str, ...] = ()
    deviations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server said in its hello: every URI, and the YANG modules among them."""

    uris: tuple[str, ...]
    modules: tuple[YangModule, ...]
    # Looked up on every poll (the candidate datastore, the interfaces model); a large
    # router's hello lists hundreds of URIs, so they are indexed once per session.
    _bases: frozenset[str] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, YangModule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bases", frozenset(u.split("?", 1)[0] for u in self.uris))
        by_name: dict[str, YangModule] = {}
        for m in self.modules:
            by_name.setdefault(m.name, m)  # the first advertised wins, as before
        object.__setattr__(self, "_by_name", by_name)

    @classmethod
    def from_uris(cls, uris: list[str]) -> Capabilities:
        modules = []
        for uri in uris:
            parts = urlsplit(uri)
            query = parse_qs(parts.query)
            if "module" in query:
                modules.append(
                    YangModule(
                        name=query["module"][0],
                        revision=query.get("revision", [None])[0],
                        namespace=uri.split("?", 1)[0],
                        features=tuple(_split(query.get("features"))),
                        deviations=tuple(_split(query.get("deviations"))),
                    )
                )
        return cls(uris=tuple(uris), modules=tuple(modules))

    def has(self, capability: str) -> bool:
        """Whether the base URI ``capability`` (any parameters ignored) was advertised."""
        return capability in self._bases

    def module(self, name: str) -> YangModule | None:
        return self._by_name.get(name)


def _split(values: list[str] | None) -> list[str]:
    return [v for value in values or [] for v in value.split(",") if v]


@dataclass(frozen=True, slots=True)
class NetconfReply:
    """The ``<data>`` of a reply, its size on the wire (bytes) and how long it took (s)."""

    device: str
    data: xml.Element
    size: int
    duration: float


_DATA = f"{{{xml.BASE_NS}}}data"


class SafeReply(RPCReply):  # type: ignore[misc]
    """ncclient's reply, parsed once, by ``netmon.netconf.xml.parse``.

    ncclient parses every reply with its own (entity-resolving) parser to look for
    ``<rpc-error>`` anywhere in it, and netmon then parsed the same text again with the
    safe parser: two full parses per poll. This reply is parsed only by the safe parser,
    in the calling thread, when ncclient asks for it; ``<rpc-error>`` is read by
    :class:`NetconfSession` (operations run with ``RaiseMode.NONE``), so ncclient's error
    list stays empty."""

    _raw: str
    _root: xml.Element
    _parsed: bool

    def __init__(self, raw: str, *, max_bytes: int) -> None:
        super().__init__(raw)
        self._max_bytes = max_bytes
        self.size = 0  # bytes on the wire, once parsed

    def parse(self) -> None:
        if self._parsed:
            return
        data = self._raw.encode("utf-8")
        self._root = xml.parse(data, max_bytes=self._max_bytes)
        self.size = len(data)
        self._parsed = True

    @property
    def root(self) -> xml.Element:
        """The ``<rpc-reply>`` element."""
        self.parse()
        return self._root


class NetconfSession:
    """An open session to one server. Not thread-safe: one call at a time."""

    def __init__(self, target: NetconfTarget, session: Any, handler: Any, secret: str) -> None:
        self.target = target
        self._session = session
        self._handler = handler
        self._secret = secret
        self.capabilities = Capabilities.from_uris([str(u) for u in session.server_capabilities])

    def __repr__(self) -> str:
        return f"NetconfSession({self.target.device!r}, {self.target.address})"

    @property
    def connected(self) -> bool:
        return bool(self._session.connected)

    def get(
        self,
        *,
        subtree: Subtree | None = None,
        xpath: str | None = None,
        namespaces: Mapping[str, str] | None = None,
    ) -> NetconfReply:
        """``<get>`` state and configuration, optionally filtered (subtree or XPath)."""
        spec = self._filter(subtree, xpath, namespaces)
        return self._rpc(operations.Get, "get", filter=spec)

    def get_config(
        self,
        source: Literal["running", "candidate"] = "running",
        *,
        subtree: Subtree | None = None,
        xpath: str | None = None,
        namespaces: Mapping[str, str] | None = None,
    ) -> NetconfReply:
        """``<get-config>`` from running, or from candidate where :candidate is advertised."""
        if source not in ("running", "candidate"):
            raise ValueError(f"source must be running or candidate, not {source!r}")
        if source == "candidate" and not self.capabilities.has(CANDIDATE):
            raise NetconfCapabilityError(
                f"{self.target.device}: no candidate datastore (:candidate not advertised)"
            )
        spec = self._filter(subtree, xpath, namespaces)
        return self._rpc(operations.GetConfig, "get-config", source=source, filter=spec)

    def close(self) -> None:
        """Send ``<close-session>`` (briefly) and close the transport. Never raises."""
        # Errors here mean the session is already gone, which is what close asks for.
        with contextlib.suppress(Exception):
            if self._session.connected:
                operations.CloseSession(
                    self._session, self._handler, timeout=min(2.0, self.target.rpc_timeout)
                ).request()
        with contextlib.suppress(Exception):
            self._session.close()

    def _filter(
        self, subtree: Subtree | None, xpath: str | None, namespaces: Mapping[str, str] | None
    ) -> Any:
        if subtree is not None and xpath is not None:
            raise ValueError("give a subtree filter or an XPath filter, not both")
        if isinstance(subtree, str):
            return ("subtree", xml.parse(subtree))
        if subtree is not None:  # several top-level subtrees: one <filter>, one round trip
            return [xml.parse(part) for part in subtree]
        if xpath is None:
            return None
        if not self.capabilities.has(XPATH):
            raise NetconfCapabilityError(
                f"{self.target.device}: XPath filters need :xpath, which is not advertised"
            )
        return ("xpath", (dict(namespaces), xpath) if namespaces else xpath)

    def _rpc(self, op: type[Any], name: str, **kwargs: Any) -> NetconfReply:
        started = time.perf_counter()
        try:
            rpc = op(
                self._session,
                self._handler,
                timeout=self.target.rpc_timeout,
                raise_mode=operations.RaiseMode.NONE,
            )
            rpc.REPLY_CLS = self._reply_class
            reply = rpc.request(**kwargs)
        except Exception as exc:
            raise translate(self.target, exc, name, self._secret) from exc
        duration = time.perf_counter() - started
        root = reply.root
        self._raise_rpc_error(root, name)
        data = root.find(_DATA)
        if data is None:
            raise NetconfMalformedReplyError(f"{self.target.device}: {name}: reply has no <data>")
        return NetconfReply(self.target.device, data, reply.size, duration)

    def _reply_class(self, raw: str, **_ignored: Any) -> SafeReply:
        return SafeReply(raw, max_bytes=self.target.max_reply_bytes)

    def _raise_rpc_error(self, root: xml.Element, name: str) -> None:
        ns = {"nc": xml.BASE_NS}
        for error in xml.elements(root, "nc:rpc-error", ns):
            severity = xml.text(error, "nc:error-severity", ns) or "error"
            if severity != "error":
                continue  # warnings do not fail the operation
            tag = xml.text(error, "nc:error-tag", ns) or ""
            message = xml.text(error, "nc:error-message", ns) or tag or "no message"
            raise NetconfRpcError(
                f"{self.target.device}: {name}: rpc-error {tag}: {message}",
                tag=tag,
                severity=severity,
                error_type=xml.text(error, "nc:error-type", ns) or "",
            )


def connect(target: NetconfTarget) -> NetconfSession:
    """Open a session to ``target`` within ``target.connect_timeout`` seconds."""
    try:
        secret = target.password.reveal() if target.password is not None else None
    except ConfigError as exc:
        raise ConfigError(f"netconf target {target.device}: password: {exc}") from exc
    host_key = _host_key_args(target)
    deadline = time.monotonic() + target.connect_timeout
    sock = _open_socket(target)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(deadline - time.monotonic(), 0.0), expire)
    timer.daemon = True
    timer.start()
    handler = make_device_handler(None)
    session = QuietSSHSession(handler)  # ncclient's loop, without its idle wake-ups
    _screen(session, target.max_reply_bytes)
    try:
        session.connect(
            host=target.host,
            port=target.port,
            sock=sock,
            timeout=target.connect_timeout,
            username=target.username,
            password=secret,
            key_filename=str(target.key_file) if target.key_file else None,
            allow_agent=False,
            look_for_keys=False,
            ssh_config=None,
            **host_key,
        )
        if expired.is_set():
            raise NetconfTimeoutError("connect deadline passed as the hello arrived")
        quiet_transport(session)
    except Exception as exc:
        _discard(session, sock)
        if expired.is_set():
            raise NetconfTimeoutError(
                f"{target.device}: no NETCONF session with {target.address} "
                f"within {target.connect_timeout:g} s"
            ) from exc
        raise translate(target, exc, "connect", secret) from exc
    except BaseException:
        _discard(session, sock)
        raise
    finally:
        timer.cancel()
    return NetconfSession(target, session, handler, secret or "")


def _open_socket(target: NetconfTarget) -> socket.socket:
    where = f"{target.device}: {target.address}"
    try:
        return socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
    except ConnectionRefusedError as exc:
        raise NetconfRefusedError(f"{where}: connection refused") from exc
    except TimeoutError as exc:
        raise NetconfTimeoutError(
            f"{where}: no TCP connection within {target.connect_timeout:g} s"
        ) from exc
    except OSError as exc:
        raise NetconfConnectionError(f"{where}: cannot connect: {exc.strerror or exc}") from exc


def _discard(session: Any, sock: socket.socket) -> None:
    for close in (session.close, sock.close):
        with contextlib.suppress(Exception):
            close()


def _host_key_args(target: NetconfTarget) -> dict[str, Any]:
    policy = target.host_key
    if isinstance(policy, AcceptAnyHostKey):
        return {"hostkey_verify": False}
    if not isinstance(policy, KnownHosts):
        return {"hostkey_verify": True, "hostkey_b64": policy.key_b64.strip()}
    try:
        known = paramiko.HostKeys(str(policy.path))
    except (OSError, paramiko.SSHException) as exc:
        raise NetconfHostKeyError(
            f"{target.device}: cannot read known_hosts file {policy.path}: {exc}"
        ) from exc
    keys: dict[str, Any] = {}
    for name in (target.host, f"[{target.host}]:{target.port}"):
        keys.update(known.lookup(name) or {})
    for kind in (*_KEY_PREFERENCE, *sorted(keys)):
        if kind in keys:
            return {"hostkey_verify": True, "hostkey_b64": keys[kind].get_base64()}
    raise NetconfHostKeyError(
        f"{target.device}: no host key for {target.address} in {policy.path}; refusing to "
        "connect (add it with ssh-keyscan, or pin it)"
    )


def _screen(session: Any, max_bytes: int) -> None:
    """Check every message before ncclient's listeners see it; a bad one (a message
    without a parsable root element too) fails the waiting call at once.

    ncclient buffers a message until its end marker arrives, however long that takes, so
    the bytes read since the last complete message are bounded too: a server that
    streams without end has the session closed (and the waiting call failed) once it has
    sent twice the limit plus framing slack, not when memory runs out or the RPC times
    out."""
    read = session._transport_read
    unread_limit = 2 * max_bytes + _FRAMING_SLACK
    pending = 0  # bytes received since the last complete message

    def screened(raw: str) -> None:
        nonlocal pending
        pending = 0
        data = raw.encode("utf-8", "surrogateescape")
        try:
            if len(data) > max_bytes:
                raise NetconfReplyTooLargeError(
                    f"message of {len(data)} bytes is over the limit of {max_bytes} bytes"
                )
            xml.check_text(data)
            root = xml.root_of(raw)
        except NetconfMalformedReplyError as exc:
            session._dispatch_error(exc)
            return
        _dispatch(session, root, raw)

    def bounded_read() -> bytes:
        nonlocal pending
        data: bytes = read()
        pending += len(data)
        if pending > unread_limit:
            # Raised in ncclient's reader thread: it fails the waiting call with this
            # error and closes the session.
            raise NetconfReplyTooLargeError(
                f"over {unread_limit} bytes received without the end of a message "
                f"(limit {max_bytes} bytes); session closed"
            )
        return data

    session._dispatch_message = screened
    session._transport_read = bounded_read


def _dispatch(session: Any, root: tuple[str, dict[str, str]], raw: str) -> None:
    """ncclient's ``Session._dispatch_message`` given the root element already read.

    ncclient finds a message's root with ``iterparse`` over the whole message (in the
    reader thread, 4 times the CPU of parsing the message outright); the listeners only
    look at the root's tag and attributes, and the caller parses the message itself
    (:class:`SafeReply`), so only the start of the message is read here."""
    with session._lock:
        listeners = list(session._listeners)
    for listener in listeners:
        listener.callback(root, raw)


def translate(target: NetconfTarget, exc: BaseException, op: str, secret: str | None) -> Exception:
    """The netmon error for what ncclient, paramiko, lxml or the socket raised."""
    where = f"{target.device}: {op}"
    text = str(exc)
    if secret:
        text = text.replace(secret, "***")
    if isinstance(exc, NetconfError):
        return type(exc)(f"{where}: {text}")
    if isinstance(exc, transport.AuthenticationError | paramiko.AuthenticationException):
        return NetconfAuthError(f"{where}: SSH authentication failed for user {target.username!r}")
    if isinstance(exc, transport.SSHUnknownHostError):
        return NetconfHostKeyError(f"{where}: host key of {target.address} is not the trusted one")
    if isinstance(exc, operations.TimeoutExpiredError):
        return NetconfTimeoutError(f"{where}: no reply within {target.rpc_timeout:g} s")
    if isinstance(exc, transport.SessionError) and "timed out" in text:
        return NetconfTimeoutError(f"{where}: no hello within {target.connect_timeout:g} s")
    if isinstance(exc, transport.SessionCloseError):
        return NetconfConnectionError(f"{where}: the server closed the session")
    if isinstance(exc, transport.TransportError | paramiko.SSHException | EOFError):
        return NetconfConnectionError(f"{where}: {text or type(exc).__name__}")
    if isinstance(exc, ConnectionRefusedError):
        return NetconfRefusedError(f"{where}: connection refused")
    if isinstance(exc, TimeoutError):
        return NetconfTimeoutError(f"{where}: timed out")
    if isinstance(exc, OSError):
        return NetconfConnectionError(f"{where}: {exc.strerror or text}")
    if isinstance(exc, etree.XMLSyntaxError):
        return NetconfMalformedReplyError(f"{where}: reply is not well-formed XML: {text}")
    if isinstance(exc, operations.OperationError | operations.RPCError):
        return NetconfError(f"{where}: {text}")
    return NetconfError(f"{where}: unexpected {type(exc).__name__}")
