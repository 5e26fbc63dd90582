"""BER codec of the lab agent: known encodings, round trips, and refusal of bad input."""

from __future__ import annotations

import pytest

from netmon.lab.ber import (
    END_OF_MIB_VIEW,
    GET_BULK,
    NO_SUCH_INSTANCE,
    NO_SUCH_OBJECT,
    RESPONSE,
    BerError,
    Counter32,
    Counter64,
    Gauge32,
    IpAddress,
    Pdu,
    TimeTicks,
    decode_pdu,
    decode_value,
    encode_integer,
    encode_oid,
    encode_pdu,
    encode_value,
    parse_oid,
    read_tlv,
    tlv,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "020100"),
        (127, "02017f"),
        (128, "02020080"),
        (256, "02020100"),
        (-1, "0201ff"),
        (-128, "020180"),
        (-129, "0202ff7f"),
        (2**31 - 1, "02047fffffff"),
        (-(2**31), "020480000000"),
    ],
)
def test_integer_known_encodings(value, encoded):
    assert encode_integer(value).hex() == encoded
    assert decode_value(bytes.fromhex(encoded), 0x02, 2, len(encoded) // 2) == value


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (Counter32(0), "410100"),
        (Counter32(2**32 - 1), "410500ffffffff"),
        (Gauge32(1_000_000_000), "42043b9aca00"),
        (TimeTicks(100), "430164"),
        (
            Counter64(2**64 - 1),
            "46090000ffffffffffffffff"[4:].rjust(0) and "460900ffffffffffffffff",
        ),
        (IpAddress(b"\x7f\x00\x00\x01"), "40047f000001"),
        (b"lab", "04036c6162"),
        ("lab", "04036c6162"),
        (None, "0500"),
        ((1, 3, 6, 1, 2, 1, 1, 1, 0), "06082b06010201010100"),
        ((1, 3, 6, 1, 4, 1, 8072, 3, 2, 10), "060a2b06010401bf0803020a"),
        (NO_SUCH_OBJECT, "8000"),
        (NO_SUCH_INSTANCE, "8100"),
        (END_OF_MIB_VIEW, "8200"),
    ],
)
def test_value_known_encodings(value, encoded):
    assert encode_value(value).hex() == encoded
    raw = bytes.fromhex(encoded)
    tag, start, end = read_tlv(raw, 0, len(raw))
    decoded = decode_value(raw, tag, start, end)
    assert decoded == (value.encode() if isinstance(value, str) else value)
    assert type(decoded) is (bytes if isinstance(value, str) else type(value))


@pytest.mark.parametrize(
    "value", [Counter32(2**32), Counter32(-1), Counter64(2**64), TimeTicks(-5)]
)
def test_unsigned_types_refuse_values_out_of_range(value):
    with pytest.raises(BerError):
        encode_value(value)


def test_long_lengths():
    for size in (127, 128, 255, 256, 65535, 65536):
        encoded = tlv(0x04, bytes(size))
        tag, start, end = read_tlv(encoded, 0, len(encoded))
        assert (tag, end - start, end) == (0x04, size, len(encoded))
    assert tlv(0x04, bytes(200))[:3].hex() == "0481c8"
    assert tlv(0x04, bytes(300))[:4].hex() == "0482012c"


def test_oid_arcs_of_any_size_round_trip():
    oid = (2, 999, 0, 127, 128, 16383, 16384, 2**32 - 1, 2**40)
    encoded = encode_oid(oid)
    tag, start, end = read_tlv(encoded, 0, len(encoded))
    assert decode_value(encoded, tag, start, end) == oid
    assert parse_oid(".1.3.6.1.2.1") == (1, 3, 6, 1, 2, 1)


@pytest.mark.parametrize("oid", [(1,), (3, 1), (1, 40), (1, 3, -1)])
def test_invalid_oids_refused(oid):
    with pytest.raises(BerError):
        encode_oid(oid)


def test_pdu_round_trip():
    pdu = Pdu(
        RESPONSE,
        0x7FFFFFFF,
        0,
        0,
        [
            ((1, 3, 6, 1, 2, 1, 1, 3, 0), TimeTicks(12345)),
            ((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 1), Counter64(2**63)),
            ((1, 3, 6, 1, 2, 1, 2, 2, 1, 2, 1), b"x" * 300),
            ((1, 3, 6, 1, 2, 1, 2, 2, 1, 2, 99), NO_SUCH_INSTANCE),
        ],
    )
    encoded = encode_pdu(pdu)
    assert decode_pdu(encoded, 0, len(encoded)) == pdu
    bulk = Pdu(GET_BULK, -5, 1, 25, [((1, 3, 6, 1), None)])
    encoded = encode_pdu(bulk)
    assert decode_pdu(encoded, 0, len(encoded)) == bulk


def test_every_truncation_of_a_pdu_is_refused():
    encoded = encode_pdu(Pdu(RESPONSE, 1, 0, 0, [((1, 3, 6, 1, 2, 1, 1, 5, 0), b"lab-0001")]))
    for cut in range(len(encoded)):
        with pytest.raises(BerError):
            decode_pdu(encoded[:cut], 0, cut)


def _pdu_with(varbinds: bytes, head: bytes = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00") -> bytes:
    return tlv(0xA0, head + tlv(0x30, varbinds))


SYS_DESCR = encode_oid((1, 3, 6, 1, 2, 1, 1, 1, 0))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xa0", "no length"),
        (b"\xa0\x85" + bytes(5), "five length bytes"),
        (b"\xa0\x80" + bytes(4), "indefinite length, not allowed in SNMP"),
        (b"\x30\x00", "not a PDU tag"),
        (tlv(0xA0, b"\x02\x01\x01\x02\x01\x00"), "error-index missing"),
        (tlv(0xA0, b"\x02\x00\x02\x01\x00\x02\x01\x00\x30\x00"), "empty INTEGER"),
        (_pdu_with(tlv(0x30, SYS_DESCR)), "varbind without a value"),
        (_pdu_with(tlv(0x30, SYS_DESCR + b"\x0c\x00")), "unknown value tag"),
        (_pdu_with(tlv(0x30, b"\x06\x02\x2b\x86\x05\x00")), "OID ends inside an arc"),
        (_pdu_with(tlv(0x30, b"\x04\x01x\x05\x00")), "name is not an OID"),
    ],
)
def test_malformed_pdus_raise_ber_error(raw, why):
    with pytest.raises(BerError):
        decode_pdu(raw, 0, len(raw))


def test_the_malformed_cases_are_one_defect_away_from_a_valid_pdu():
    raw = _pdu_with(tlv(0x30, SYS_DESCR + b"\x05\x00"))
    assert decode_pdu(raw, 0, len(raw)).varbinds == [((1, 3, 6, 1, 2, 1, 1, 1, 0), None)]
