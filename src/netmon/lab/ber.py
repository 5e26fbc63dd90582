"""BER for the subset of ASN.1 that SNMP uses (RFC 3416 types and PDUs).

Values are plain Python objects: ``int`` is INTEGER, ``bytes`` (or ``str``, sent as UTF-8)
is OCTET STRING, ``None`` is NULL, a tuple of ints is an OBJECT IDENTIFIER. The application
types are ``int``/``bytes`` subclasses (:class:`Counter32`, :class:`Gauge32`,
:class:`TimeTicks`, :class:`Counter64`, :class:`IpAddress`), so encoding is one dict
lookup on the exact type. The three varbind exceptions are the constants
:data:`NO_SUCH_OBJECT`, :data:`NO_SUCH_INSTANCE` and :data:`END_OF_MIB_VIEW`.

Decoding works on offsets into the original buffer (no copies of nested TLVs), and every
malformed input raises :class:`BerError`, never ``IndexError``: the agent feeds this
module whatever arrives on its sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "COUNTER32",
    "COUNTER64",
    "END_OF_MIB_VIEW",
    "GAUGE32",
    "GET",
    "GET_BULK",
    "GET_NEXT",
    "INTEGER",
    "IP_ADDRESS",
    "NO_SUCH_INSTANCE",
    "NO_SUCH_OBJECT",
    "NULL",
    "OBJECT_IDENTIFIER",
    "OCTET_STRING",
    "REPORT",
    "RESPONSE",
    "SEQUENCE",
    "SET",
    "TIMETICKS",
    "BerError",
    "Counter32",
    "Counter64",
    "Gauge32",
    "IpAddress",
    "Oid",
    "Pdu",
    "Special",
    "TimeTicks",
    "Value",
    "decode_integer",
    "decode_oid",
    "decode_pdu",
    "decode_value",
    "encode_integer",
    "encode_oid",
    "encode_pdu",
    "encode_value",
    "encode_varbind",
    "expect",
    "parse_oid",
    "read_tlv",
    "tlv",
]

INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
IP_ADDRESS = 0x40
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
OPAQUE = 0x44
COUNTER64 = 0x46

GET = 0xA0
GET_NEXT = 0xA1
RESPONSE = 0xA2
SET = 0xA3
GET_BULK = 0xA5
REPORT = 0xA8

Oid = tuple[int, ...]


class BerError(ValueError):
    """The bytes are not valid BER for an SNMP message."""


class Counter32(int):
    __slots__ = ()


class Gauge32(int):
    __slots__ = ()


class TimeTicks(int):
    __slots__ = ()


class Counter64(int):
    __slots__ = ()


class IpAddress(bytes):
    __slots__ = ()


class Special:
    """One of the varbind exceptions (noSuchObject, noSuchInstance, endOfMibView)."""

    __slots__ = ("name", "tag")

    def __init__(self, tag: int, name: str) -> None:
        self.tag = tag
        self.name = name

    def __repr__(self) -> str:
        return self.name


NO_SUCH_OBJECT = Special(0x80, "noSuchObject")
NO_SUCH_INSTANCE = Special(0x81, "noSuchInstance")
END_OF_MIB_VIEW = Special(0x82, "endOfMibView")
_SPECIALS = {s.tag: s for s in (NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW)}

Value = int | bytes | str | Oid | Special | None


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    if n < 0x100:
        return bytes((tag, 0x81, n)) + content
    if n < 0x10000:
        return bytes((tag, 0x82, n >> 8, n & 0xFF)) + content
    if n < 0x1000000:
        return bytes((tag, 0x83, n >> 16, (n >> 8) & 0xFF, n & 0xFF)) + content
    raise BerError(f"content of {n} bytes is too long for SNMP")


# Small non-negative integers dominate (status columns, indexes, error codes): prebuilt.
_SMALL_INTS = [bytes((INTEGER, 1, v)) for v in range(0x80)]


def encode_integer(value: int, tag: int = INTEGER) -> bytes:
    """Minimal two's-complement encoding; the unsigned application types use it too."""
    if 0 <= value < 0x80:
        return _SMALL_INTS[value] if tag == INTEGER else bytes((tag, 1, value))
    size = (value + (value < 0)).bit_length() // 8 + 1
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def _unsigned(tag: int, limit: int) -> Callable[[int], bytes]:
    def encode(value: int) -> bytes:
        if not 0 <= value < limit:
            raise BerError(f"{value} out of range for tag 0x{tag:02x}")
        return encode_integer(value, tag)

    return encode


_OID_CACHE: dict[Oid, bytes] = {}
_OID_CACHE_MAX = 100_000


def encode_oid(oid: Oid) -> bytes:
    """The OID's complete TLV. Cached: pollers ask for the same OIDs again and again."""
    cached = _OID_CACHE.get(oid)
    if cached is not None:
        return cached
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40):
        raise BerError(f"invalid OID {oid!r}")
    out = bytearray()
    for arc in (oid[0] * 40 + oid[1], *oid[2:]):
        if arc < 0x80:
            if arc < 0:
                raise BerError(f"invalid OID {oid!r}")
            out.append(arc)
            continue
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    encoded = tlv(OBJECT_IDENTIFIER, bytes(out))
    if len(_OID_CACHE) >= _OID_CACHE_MAX:
        _OID_CACHE.clear()
    _OID_CACHE[oid] = encoded
    return encoded


def _encode_octets(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def _encode_str(value: str) -> bytes:
    return tlv(OCTET_STRING, value.encode())


def _encode_ip(value: bytes) -> bytes:
    if len(value) != 4:
        raise BerError("IpAddress needs 4 bytes")
    return tlv(IP_ADDRESS, value)


def _encode_null(_: None) -> bytes:
    return b"\x05\x00"


def _encode_special(value: Special) -> bytes:
    return bytes((value.tag, 0))


_ENCODERS: dict[type, Callable[[object], bytes]] = {
    int: encode_integer,  # type: ignore[dict-item]
    bool: encode_integer,  # type: ignore[dict-item]
    Counter32: _unsigned(COUNTER32, 1 << 32),  # type: ignore[dict-item]
    Gauge32: _unsigned(GAUGE32, 1 << 32),  # type: ignore[dict-item]
    TimeTicks: _unsigned(TIMETICKS, 1 << 32),  # type: ignore[dict-item]
    Counter64: _unsigned(COUNTER64, 1 << 64),  # type: ignore[dict-item]
    bytes: _encode_octets,  # type: ignore[dict-item]
    str: _encode_str,  # type: ignore[dict-item]
    IpAddress: _encode_ip,  # type: ignore[dict-item]
    tuple: encode_oid,  # type: ignore[dict-item]
    type(None): _encode_null,  # type: ignore[dict-item]
    Special: _encode_special,  # type: ignore[dict-item]
}


def encode_value(value: Value) -> bytes:
    try:
        encoder = _ENCODERS[type(value)]
    except KeyError:
        raise BerError(f"cannot encode {type(value).__name__} as an SNMP value") from None
    return encoder(value)


def encode_varbind(oid_tlv: bytes, value_tlv: bytes) -> bytes:
    return tlv(SEQUENCE, oid_tlv + value_tlv)


@dataclass(slots=True)
class Pdu:
    """An SNMP PDU. For GetBulk, error_status is non-repeaters, error_index max-repetitions."""

    tag: int
    request_id: int
    error_status: int = 0
    error_index: int = 0
    varbinds: list[tuple[Oid, Value]] = field(default_factory=list)


def encode_pdu(pdu: Pdu) -> bytes:
    varbinds = b"".join(
        encode_varbind(encode_oid(oid), encode_value(value)) for oid, value in pdu.varbinds
    )
    return tlv(
        pdu.tag,
        encode_integer(pdu.request_id)
        + encode_integer(pdu.error_status)
        + encode_integer(pdu.error_index)
        + tlv(SEQUENCE, varbinds),
    )


# --- decoding -------------------------------------------------------------------------


def read_tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``; must fit before ``end``."""
    if pos + 2 > end:
        raise BerError("truncated")
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > end:
            raise BerError("bad length")
        n = int.from_bytes(buf[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise BerError("truncated")
    return tag, pos, pos + n


def expect(buf: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """Content bounds of the TLV at ``pos``, which must have tag ``tag``."""
    got, start, stop = read_tlv(buf, pos, end)
    if got != tag:
        raise BerError(f"expected tag 0x{tag:02x}, got 0x{got:02x}")
    return start, stop


def decode_integer(buf: bytes, start: int, end: int) -> int:
    if start >= end:
        raise BerError("empty INTEGER")
    return int.from_bytes(buf[start:end], "big", signed=True)


_OID_DECODE_CACHE: dict[bytes, Oid] = {}


def decode_oid(buf: bytes, start: int, end: int) -> Oid:
    raw = bytes(buf[start:end])  # hashable even if a bytearray came in
    cached = _OID_DECODE_CACHE.get(raw)
    if cached is not None:
        return cached
    if not raw or raw[-1] & 0x80:
        raise BerError("bad OID")
    arcs: list[int] = []
    arc = 0
    for byte in raw:
        arc = (arc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(arc)
            arc = 0
    first = arcs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    oid = (*head, *arcs[1:])
    if len(_OID_DECODE_CACHE) >= _OID_CACHE_MAX:
        _OID_DECODE_CACHE.clear()
    _OID_DECODE_CACHE[raw] = oid
    return oid


def parse_oid(text: str) -> Oid:
    """``"1.3.6.1.2.1.1.1.0"`` (a leading dot is allowed) as a tuple."""
    try:
        return tuple(int(part) for part in text.strip().lstrip(".").split("."))
    except ValueError:
        raise BerError(f"not a numeric OID: {text!r}") from None


_UNSIGNED_TYPES: dict[int, type[int]] = {
    COUNTER32: Counter32,
    GAUGE32: Gauge32,
    TIMETICKS: TimeTicks,
    COUNTER64: Counter64,
}


def decode_value(buf: bytes, tag: int, start: int, end: int) -> Value:
    if tag == INTEGER:
        return decode_integer(buf, start, end)
    if tag in (OCTET_STRING, OPAQUE):
        return bytes(buf[start:end])
    if tag == OBJECT_IDENTIFIER:
        return decode_oid(buf, start, end)
    if tag == NULL:
        return None
    if tag in _UNSIGNED_TYPES:
        if start >= end:
            raise BerError("empty integer")
        return _UNSIGNED_TYPES[tag](int.from_bytes(buf[start:end], "big"))
    if tag == IP_ADDRESS:
        return IpAddress(buf[start:end])
    special = _SPECIALS.get(tag)
    if special is not None:
        return special
    raise BerError(f"unknown value tag 0x{tag:02x}")


def decode_pdu(buf: bytes, pos: int, end: int) -> Pdu:
    """The PDU whose TLV starts at ``pos`` (any PDU tag from 0xA0 to 0xA8)."""
    tag, start, stop = read_tlv(buf, pos, end)
    if not GET <= tag <= REPORT:
        raise BerError(f"not a PDU: tag 0x{tag:02x}")
    fields = []
    for _ in range(3):
        s, e = expect(buf, start, stop, INTEGER)
        fields.append(decode_integer(buf, s, e))
        start = e
    s, vb_end = expect(buf, start, stop, SEQUENCE)
    varbinds: list[tuple[Oid, Value]] = []
    while s < vb_end:
        vs, ve = expect(buf, s, vb_end, SEQUENCE)
        oid_start, oid_end = expect(buf, vs, ve, OBJECT_IDENTIFIER)
        vtag, value_start, value_end = read_tlv(buf, oid_end, ve)
        varbinds.append(
            (decode_oid(buf, oid_start, oid_end), decode_value(buf, vtag, value_start, value_end))
        )
        s = ve
    return Pdu(tag, fields[0], fields[1], fields[2], varbinds)
