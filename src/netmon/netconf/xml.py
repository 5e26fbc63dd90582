"""Parse what a NETCONF server sends, without trusting it.

Every reply goes through :func:`parse`:

* its size in bytes is checked before anything is parsed (``max_bytes``);
* NETCONF is UTF-8 (RFC 6241 §3), so the bytes must decode as UTF-8 and hold no NUL;
* any ``<!DOCTYPE`` or ``<!ENTITY`` declaration rejects the whole reply: a NETCONF
  server never needs one, and they are how entity expansion ("billion laughs") and
  external entities (XXE: local files, URLs) get in;
* lxml then parses with entities left unresolved, no DTD loaded or validated, no network
  and lxml's default depth and text-size limits (``huge_tree=False``). The parsed
  document is checked once more for a DTD, in case a declaration got past the text check.

Values are read with namespace-aware ElementPath expressions and a prefix map, e.g.
``texts(root, "if:interfaces/if:interface/if:name", {"if": IETF_INTERFACES})``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lxml import etree

from netmon.errors import (
    NetconfMalformedReplyError,
    NetconfReplyTooLargeError,
    NetconfUnsafeXmlError,
)

__all__ = [
    "BASE_NS",
    "DEFAULT_MAX_BYTES",
    "Element",
    "check_text",
    "element",
    "elements",
    "parse",
    "require_text",
    "root_of",
    "safe_parser",
    "text",
    "texts",
]

BASE_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
DEFAULT_MAX_BYTES = 64 << 20  # a large router's full get-config fits; a runaway stream does not

Element = Any  # lxml.etree._Element: lxml ships no type information
Namespaces = Mapping[str, str]

_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def safe_parser() -> Any:
    """A new lxml parser that resolves no entity, loads no DTD and never uses the network.

    (A parser object is not thread-safe, so each call builds its own; it is cheap.)
    """
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
        recover=False,
    )


def parse(reply: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Element:
    """The root element of ``reply``, or :class:`NetconfMalformedReplyError` (or one of its
    subclasses :class:`NetconfUnsafeXmlError`, :class:`NetconfReplyTooLargeError`)."""
    data = reply.encode("utf-8") if isinstance(reply, str) else bytes(reply)
    if len(data) > max_bytes:
        raise NetconfReplyTooLargeError(
            f"reply of {len(data)} bytes is over the limit of {max_bytes} bytes"
        )
    check_text(data)
    try:
        root = etree.fromstring(data, parser=safe_parser())
    except etree.XMLSyntaxError as exc:
        raise NetconfMalformedReplyError(f"reply is not well-formed XML: {exc}") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise NetconfUnsafeXmlError("reply declares a DTD; refused")
    return root


_ROOT_READ = 256  # characters fed first; the root's start tag is nearly always in them


def root_of(message: str) -> tuple[str, dict[str, str]]:
    """The root element's qualified tag and attributes, reading only as far as its start
    tag (ncclient routes a message by these alone); the message must have passed
    :func:`check_text`. Anything after the start tag is left for :func:`parse` to judge."""
    parser = etree.XMLPullParser(
        events=("start",), resolve_entities=False, no_network=True, load_dtd=False
    )
    at, size = 0, _ROOT_READ
    try:
        while at < len(message):
            parser.feed(message[at : at + size])
            for _event, element in parser.read_events():
                return element.tag, dict(element.attrib)
            at, size = at + size, 2 * size  # a long prologue or start tag: read more
    except etree.XMLSyntaxError as exc:
        raise NetconfMalformedReplyError(f"message is not well-formed XML: {exc}") from exc
    raise NetconfMalformedReplyError("the server sent a message that is not XML")


def check_text(data: bytes) -> None:
    """Refuse ``data`` unless it is UTF-8 without NUL and without DOCTYPE/ENTITY
    declarations. Cheap enough to run on every message a session receives."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NetconfMalformedReplyError(f"reply is not UTF-8: {exc.reason}") from exc
    if "\x00" in decoded:
        raise NetconfMalformedReplyError("reply contains a NUL character")
    if (m := _DECLARATION.search(decoded)) is not None:
        raise NetconfUnsafeXmlError(
            f"reply contains a <!{m.group(1).upper()}> declaration (entity expansion or "
            "external entities); refused without parsing"
        )


def element(root: Element, path: str, namespaces: Namespaces | None = None) -> Element | None:
    """The first element at ``path`` below ``root``, or None."""
    return root.find(path, namespaces=dict(namespaces or {}))


def elements(root: Element, path: str, namespaces: Namespaces | None = None) -> list[Element]:
    """Every element at ``path`` below ``root``, in document order."""
    return list(root.iterfind(path, namespaces=dict(namespaces or {})))


def text(root: Element, path: str, namespaces: Namespaces | None = None) -> str | None:
    """The stripped text of the first element at ``path``; None when there is none
    (an element that is present but empty gives ``""``)."""
    found = element(root, path, namespaces)
    if found is None:
        return None
    return (found.text or "").strip()


def texts(root: Element, path: str, namespaces: Namespaces | None = None) -> list[str]:
    """The stripped text of every element at ``path``."""
    return [(e.text or "").strip() for e in elements(root, path, namespaces)]


def require_text(root: Element, path: str, namespaces: Namespaces | None = None) -> str:
    """Like :func:`text`, but a missing element is a malformed reply."""
    value = text(root, path, namespaces)
    if value is None:
        raise NetconfMalformedReplyError(f"reply has no {path}")
    return value
