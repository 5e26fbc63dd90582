"""A ``<get-config>`` reply as stable text: the same configuration gives the same bytes.

The store deduplicates configuration versions on their sha256 and diffs them line by
line, so the text must not change when the configuration did not. :func:`normalise`:

* keeps the elements, their order (YANG ``ordered-by user`` lists are meaningful) and
  every leaf's text exactly;
* drops the whitespace between elements and inside empty containers (each server
  indents its own way), comments and processing instructions (the safe
  parser already drops those);
* drops namespace declarations nothing uses (the RPC's ``xmlns:nc``), and writes
  attributes in sorted order;
* indents two spaces per level under one ``<data>`` element in the NETCONF base
  namespace, UTF-8 text with a final newline.
"""

from __future__ import annotations

import copy

from lxml import etree

from netmon.netconf import xml

__all__ = ["normalise"]


def normalise(data: xml.Element) -> str:
    """``data`` (a reply's ``<data>``) as deterministic, indented XML text."""
    root = etree.Element(f"{{{xml.BASE_NS}}}data", nsmap={None: xml.BASE_NS})
    for child in data:
        if isinstance(child.tag, str):  # elements only: no comments or PIs
            root.append(copy.deepcopy(child))
    for element in root.iter():
        if element.text is not None and _layout(element.text, has_children=len(element) > 0):
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None  # between elements: always layout
        if len(element.attrib) > 1:
            items = sorted(element.attrib.items())
            element.attrib.clear()
            for name, value in items:
                element.set(name, value)
    etree.cleanup_namespaces(root)
    etree.indent(root, space="  ")
    text: str = etree.tostring(root, encoding="unicode")
    return text + "\n"


def _layout(text: str, *, has_children: bool) -> bool:
    """Whether ``text`` is indentation, not a value: whitespace between child elements,
    or an empty container's whitespace with a line break (a string leaf of spaces, with
    no line break, is kept)."""
    if text.strip():
        return False
    return has_children or "\n" in text
