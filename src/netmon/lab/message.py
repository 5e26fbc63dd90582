"""The SNMPv3 message wrapper (RFC 3412 section 6, RFC 3414 section 2.4).

::

    SEQUENCE { msgVersion INTEGER (3),
               msgGlobalData SEQUENCE { msgID, msgMaxSize, msgFlags OCTET STRING,
                                        msgSecurityModel },
               msgSecurityParameters OCTET STRING (a BER SEQUENCE of the USM fields),
               msgData: a ScopedPDU SEQUENCE, or an OCTET STRING when encrypted }

Parsing records where msgAuthenticationParameters sits in the buffer, because the HMAC
is computed over the whole message with that field zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass

from netmon.lab.ber import (
    INTEGER,
    OCTET_STRING,
    SEQUENCE,
    BerError,
    Pdu,
    decode_integer,
    decode_pdu,
    encode_integer,
    expect,
    read_tlv,
    tlv,
)

__all__ = [
    "FLAG_AUTH",
    "FLAG_PRIV",
    "FLAG_REPORTABLE",
    "USM_SECURITY_MODEL",
    "Message",
    "ScopedPdu",
    "build_message",
    "encode_scoped_pdu",
    "parse_message",
    "parse_scoped_pdu",
]

FLAG_AUTH = 0x01
FLAG_PRIV = 0x02
FLAG_REPORTABLE = 0x04
USM_SECURITY_MODEL = 3
_MAX_INT32 = 2**31 - 1


@dataclass(slots=True)
class Message:
    version: int
    msg_id: int
    max_size: int
    flags: int
    security_model: int
    engine_id: bytes
    engine_boots: int
    engine_time: int
    user: bytes
    auth_params: bytes
    auth_offset: int  # index of msgAuthenticationParameters' first byte in the message
    priv_params: bytes
    data_tag: int  # SEQUENCE: plaintext ScopedPDU; OCTET STRING: encrypted
    data_pos: int  # where the msgData TLV starts
    data_start: int  # where its content starts
    data_end: int


def _int(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    start, stop = expect(buf, pos, end, INTEGER)
    return decode_integer(buf, start, stop), stop


def _octets(buf: bytes, pos: int, end: int) -> tuple[bytes, int, int]:
    start, stop = expect(buf, pos, end, OCTET_STRING)
    return buf[start:stop], start, stop


def parse_message(data: bytes) -> Message:
    """The header fields of an SNMPv3 message; raises BerError for anything else."""
    try:
        start, end = expect(data, 0, len(data), SEQUENCE)
        version, pos = _int(data, start, end)
        if version != 3:
            raise BerError(f"SNMP version {version + 1}, not SNMPv3")
        gstart, gend = expect(data, pos, end, SEQUENCE)
        msg_id, p = _int(data, gstart, gend)
        max_size, p = _int(data, p, gend)
        flags, _, p = _octets(data, p, gend)
        model, _ = _int(data, p, gend)
        if len(flags) != 1:
            raise BerError("msgFlags must be one byte")
        sstart, pos = expect(data, gend, end, OCTET_STRING)
        sp, send = expect(data, sstart, pos, SEQUENCE)
        engine_id, _, sp = _octets(data, sp, send)
        boots, sp = _int(data, sp, send)
        time, sp = _int(data, sp, send)
        user, _, sp = _octets(data, sp, send)
        auth_params, auth_offset, sp = _octets(data, sp, send)
        priv_params, _, _ = _octets(data, sp, send)
        data_tag, data_start, data_end = read_tlv(data, pos, end)
        if not (0 <= boots <= _MAX_INT32 and 0 <= time <= _MAX_INT32):
            # RFC 3414: both are INTEGER (0..2147483647); the AES IV needs them in 4 bytes.
            raise BerError("msgAuthoritativeEngineBoots/Time out of range")
    except IndexError:  # defensive: every slice above is bounds-checked by read_tlv
        raise BerError("truncated") from None
    return Message(
        version,
        msg_id,
        max_size,
        flags[0],
        model,
        engine_id,
        boots,
        time,
        user,
        auth_params,
        auth_offset,
        priv_params,
        data_tag,
        pos,
        data_start,
        data_end,
    )


@dataclass(slots=True)
class ScopedPdu:
    context_engine_id: bytes
    context_name: bytes
    pdu: Pdu


def parse_scoped_pdu(buf: bytes, pos: int, end: int) -> ScopedPdu:
    """The ScopedPDU at ``pos``; bytes after it (cipher padding) are ignored."""
    start, stop = expect(buf, pos, end, SEQUENCE)
    engine_id, _, p = _octets(buf, start, stop)
    name, _, p = _octets(buf, p, stop)
    return ScopedPdu(engine_id, name, decode_pdu(buf, p, stop))


def encode_scoped_pdu(context_engine_id: bytes, context_name: bytes, pdu: bytes) -> bytes:
    return tlv(
        SEQUENCE, tlv(OCTET_STRING, context_engine_id) + tlv(OCTET_STRING, context_name) + pdu
    )


def build_message(
    msg_id: int,
    max_size: int,
    flags: int,
    engine_id: bytes,
    boots: int,
    time: int,
    user: bytes,
    auth_length: int,
    priv_params: bytes,
    msg_data: bytes,
) -> tuple[bytes, int]:
    """The message with ``auth_length`` zero bytes as msgAuthenticationParameters, and
    where they start, so the caller can compute the HMAC and put it there."""
    before_auth = (
        tlv(OCTET_STRING, engine_id)
        + encode_integer(boots)
        + encode_integer(time)
        + tlv(OCTET_STRING, user)
    )
    usm_content = (
        before_auth + tlv(OCTET_STRING, bytes(auth_length)) + tlv(OCTET_STRING, priv_params)
    )
    usm = tlv(SEQUENCE, usm_content)
    security = tlv(OCTET_STRING, usm)
    head = b"\x02\x01\x03" + tlv(
        SEQUENCE,
        encode_integer(msg_id)
        + encode_integer(max_size)
        + bytes((OCTET_STRING, 1, flags))
        + encode_integer(USM_SECURITY_MODEL),
    )
    body = head + security + msg_data
    message = tlv(SEQUENCE, body)
    auth_offset = (
        (len(message) - len(body))
        + len(head)
        + (len(security) - len(usm))
        + (len(usm) - len(usm_content))
        + len(before_auth)
        + 2  # the OCTET STRING tag and its one-byte length (auth_length < 128)
    )
    return message, auth_offset
