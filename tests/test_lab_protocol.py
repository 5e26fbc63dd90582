"""The lab agent's SNMPv3 behaviour, byte by byte, from a raw manager over real UDP.

Interop with Net-SNMP and pysnmp (test_lab_interop.py) shows the lab is understood; this
file checks what those clients hide: the exact Report sent for each USM failure, the
counters behind them, msgID and security level of responses, size limits.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import pytest

from netmon.lab import DEFAULT_AUTH_KEY, DEFAULT_PRIV_KEY, Lab, UsmUser
from netmon.lab.ber import (
    END_OF_MIB_VIEW,
    GET,
    GET_BULK,
    GET_NEXT,
    NO_SUCH_INSTANCE,
    NO_SUCH_OBJECT,
    OCTET_STRING,
    REPORT,
    RESPONSE,
    SET,
    BerError,
    Counter32,
    Pdu,
    encode_pdu,
    tlv,
)
from netmon.lab.message import (
    FLAG_AUTH,
    FLAG_PRIV,
    FLAG_REPORTABLE,
    Message,
    ScopedPdu,
    build_message,
    encode_scoped_pdu,
    parse_message,
    parse_scoped_pdu,
)
from netmon.lab.usm import aes_cfb_decrypt, aes_cfb_encrypt, next_salt

USM_STATS = (1, 3, 6, 1, 6, 3, 15, 1, 1)
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
IF_DESCR = (1, 3, 6, 1, 2, 1, 2, 2, 1, 2)

LEVELS = {"noAuthNoPriv": 0, "authNoPriv": FLAG_AUTH, "authPriv": FLAG_AUTH | FLAG_PRIV}


@dataclass
class Reply:
    message: Message
    scoped: ScopedPdu
    authentic: bool  # HMAC present and correct

    @property
    def pdu(self) -> Pdu:
        return self.scoped.pdu

    @property
    def level(self) -> int:
        return self.message.flags & 3


class RawManager:
    """A manager that builds every field itself, so tests can get each one wrong."""

    def __init__(
        self,
        port: int,
        auth_protocol: str = "sha1",
        auth_key: str = DEFAULT_AUTH_KEY,
        priv_key: str = DEFAULT_PRIV_KEY,
        user: str = "netmon",
    ) -> None:
        self.port = port
        self.master = UsmUser.from_passwords(user, auth_protocol, auth_key, priv_key)  # type: ignore[arg-type]
        self.msg_id = 1000
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(("127.0.0.1", port))

    def close(self) -> None:
        self.sock.close()

    def encode(
        self,
        pdu: Pdu,
        *,
        engine_id: bytes,
        boots: int = 0,
        time: int = 0,
        level: str = "authPriv",
        reportable: bool = True,
        max_size: int = 65507,
        corrupt_mac: bool = False,
    ) -> bytes:
        self.msg_id += 1
        user = self.master.localize(engine_id)
        flags = LEVELS[level] | (FLAG_REPORTABLE if reportable else 0)
        scoped = encode_scoped_pdu(engine_id, b"", encode_pdu(pdu))
        priv = b""
        if flags & FLAG_PRIV:
            priv = next_salt()
            scoped = tlv(OCTET_STRING, aes_cfb_encrypt(user.priv_key, boots, time, priv, scoped))
        length = user.auth.mac_length if flags & FLAG_AUTH else 0
        message, offset = build_message(
            self.msg_id, max_size, flags, engine_id, boots, time, user.name, length, priv, scoped
        )
        if length:
            mac = user.mac(message)
            if corrupt_mac:
                mac = bytes(b ^ 1 for b in mac)
            message = message[:offset] + mac + message[offset + length :]
        return message

    def decode(self, data: bytes) -> Reply:
        message = parse_message(data)
        user = self.master.localize(message.engine_id)
        authentic = False
        if message.flags & FLAG_AUTH:
            n, at = user.auth.mac_length, message.auth_offset
            authentic = message.auth_params == user.mac(data[:at] + bytes(n) + data[at + n :])
        if message.flags & FLAG_PRIV:
            plain = aes_cfb_decrypt(
                user.priv_key,
                message.engine_boots,
                message.engine_time,
                message.priv_params,
                data[message.data_start : message.data_end],
            )
            scoped = parse_scoped_pdu(plain, 0, len(plain))
        else:
            scoped = parse_scoped_pdu(data, message.data_pos, message.data_end)
        return Reply(message, scoped, authentic)

    async def exchange(self, data: bytes, timeout: float = 1.0) -> Reply | None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.sock, data)
        try:
            raw = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
        except TimeoutError:
            return None
        return self.decode(raw)

    async def discover(self) -> Reply:
        reply = await self.exchange(self.encode(Pdu(GET, 1), engine_id=b"", level="noAuthNoPriv"))
        assert reply is not None
        return reply

    async def request(self, pdu: Pdu, **options: object) -> Reply | None:
        """Discover, then send ``pdu`` in the engine's time window unless told otherwise."""
        found = (await self.discover()).message
        fields: dict[str, object] = {
            "engine_id": found.engine_id,
            "boots": found.engine_boots,
            "time": found.engine_time,
        }
        fields.update(options)
        return await self.exchange(self.encode(pdu, **fields))  # type: ignore[arg-type]


def manager_device_table(manager: RawManager) -> list[tuple[int, ...]]:
    from netmon.lab.mib import mib_table

    return mib_table(8).oids


@pytest.fixture
async def lab():
    async with Lab(devices=2, base_port=0, interfaces=8) as running:
        yield running


@pytest.fixture
async def manager(lab):
    raw = RawManager(lab.port("lab-0001"))
    yield raw
    raw.close()


def report_counter(reply: Reply) -> tuple[tuple[int, ...], int]:
    assert reply.pdu.tag == REPORT
    [(oid, value)] = reply.pdu.varbinds
    assert isinstance(value, Counter32)
    return oid, int(value)


async def test_discovery_report_gives_engine_id_boots_and_time(lab, manager):
    device = lab.devices["lab-0001"]
    device.reboot()
    reply = await manager.discover()
    assert reply.level == 0
    assert reply.message.engine_id == b"\x80\x00\x1f\x88\x04netmon-lab-0001"
    assert reply.message.engine_boots == 2
    assert reply.message.engine_time in (0, 1)
    assert reply.message.msg_id == manager.msg_id
    assert report_counter(reply) == ((*USM_STATS, 4, 0), 1)
    assert reply.pdu.request_id == 1
    assert device.stats.unknown_engine_ids == 1


async def test_no_report_without_the_reportable_flag(lab, manager):
    data = manager.encode(Pdu(GET, 1), engine_id=b"", level="noAuthNoPriv", reportable=False)
    assert await manager.exchange(data, timeout=0.3) is None
    assert lab.devices["lab-0001"].stats.unknown_engine_ids == 1


async def test_authpriv_get_answered_at_the_same_level(lab, manager):
    reply = await manager.request(Pdu(GET, 77, varbinds=[(SYS_NAME, None), (SYS_UPTIME, None)]))
    assert reply is not None
    assert reply.authentic
    assert reply.level == FLAG_AUTH | FLAG_PRIV
    assert reply.message.msg_id == manager.msg_id
    assert reply.message.user == b"netmon"
    assert reply.pdu.tag == RESPONSE
    assert reply.pdu.request_id == 77
    assert reply.pdu.varbinds[0] == (SYS_NAME, b"lab-0001")
    assert reply.pdu.varbinds[1][0] == SYS_UPTIME


async def test_authnopriv_get_answered_without_privacy(manager):
    reply = await manager.request(Pdu(GET, 5, varbinds=[(SYS_NAME, None)]), level="authNoPriv")
    assert reply is not None
    assert reply.authentic
    assert reply.level == FLAG_AUTH
    assert reply.pdu.varbinds == [(SYS_NAME, b"lab-0001")]


@pytest.mark.parametrize(
    ("options", "stat", "attribute"),
    [
        ({"level": "noAuthNoPriv"}, 1, "unsupported_sec_levels"),
        ({"corrupt_mac": True}, 5, "wrong_digests"),
    ],
)
async def test_usm_failures_get_their_report(lab, manager, options, stat, attribute):
    reply = await manager.request(Pdu(GET, 9, varbinds=[(SYS_NAME, None)]), **options)
    assert reply is not None
    assert reply.level == 0
    assert report_counter(reply) == ((*USM_STATS, stat, 0), 1)
    assert getattr(lab.devices["lab-0001"].stats, attribute) == 1


async def test_unknown_user_report(lab):
    stranger = RawManager(lab.port("lab-0002"), user="stranger")
    try:
        reply = await stranger.request(Pdu(GET, 3, varbinds=[(SYS_NAME, None)]))
    finally:
        stranger.close()
    assert reply is not None
    assert report_counter(reply) == ((*USM_STATS, 3, 0), 1)
    assert lab.devices["lab-0002"].stats.unknown_user_names == 1


async def test_wrong_priv_key_is_a_decryption_error(lab):
    raw = RawManager(lab.port("lab-0001"), priv_key="not-the-lab-priv-key")
    try:
        reply = await raw.request(Pdu(GET, 3, varbinds=[(SYS_NAME, None)]))
    finally:
        raw.close()
    assert reply is not None
    assert report_counter(reply) == ((*USM_STATS, 6, 0), 1)


@pytest.mark.parametrize(("boots_delta", "time_delta"), [(0, 151), (0, -151), (-1, 0), (1, 0)])
async def test_outside_time_window_gets_an_authenticated_report_with_current_time(
    lab, manager, boots_delta, time_delta
):
    found = (await manager.discover()).message
    reply = await manager.exchange(
        manager.encode(
            Pdu(GET, 4, varbinds=[(SYS_NAME, None)]),
            engine_id=found.engine_id,
            boots=found.engine_boots + boots_delta,
            time=max(found.engine_time + time_delta, 0),
        )
    )
    assert reply is not None
    assert reply.level == FLAG_AUTH
    assert reply.authentic
    assert report_counter(reply) == ((*USM_STATS, 2, 0), 1)
    assert reply.message.engine_boots == found.engine_boots
    assert abs(reply.message.engine_time - found.engine_time) <= 1


async def test_time_window_edge_is_accepted(manager):
    found = (await manager.discover()).message
    reply = await manager.exchange(
        manager.encode(
            Pdu(GET, 4, varbinds=[(SYS_NAME, None)]),
            engine_id=found.engine_id,
            boots=found.engine_boots,
            time=found.engine_time + 149,
        )
    )
    assert reply is not None
    assert reply.pdu.tag == RESPONSE


async def test_get_missing_objects_and_instances(manager):
    reply = await manager.request(
        Pdu(
            GET,
            1,
            varbinds=[((*IF_DESCR, 99), None), ((1, 3, 6, 1, 2, 1, 1, 9, 0), None), ((1, 3), None)],
        )
    )
    assert reply is not None
    assert [v for _, v in reply.pdu.varbinds] == [NO_SUCH_INSTANCE, NO_SUCH_OBJECT, NO_SUCH_OBJECT]


async def test_getnext_and_end_of_mib(manager):
    reply = await manager.request(
        Pdu(GET_NEXT, 1, varbinds=[(IF_DESCR, None), ((1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0), None)])
    )
    assert reply is not None
    assert reply.pdu.varbinds[0] == ((*IF_DESCR, 1), b"GigabitEthernet1/0/1")
    assert reply.pdu.varbinds[1] == ((1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0), END_OF_MIB_VIEW)


async def test_getbulk_repetitions_non_repeaters_and_end_of_mib(manager):
    reply = await manager.request(
        Pdu(
            GET_BULK,
            1,
            error_status=1,  # non-repeaters
            error_index=25,  # max-repetitions
            varbinds=[(SYS_UPTIME[:-1], None), (IF_DESCR, None), ((1, 3, 6, 1, 6, 3, 15, 1), None)],
        )
    )
    assert reply is not None
    varbinds = reply.pdu.varbinds
    assert varbinds[0][0] == SYS_UPTIME
    columns = varbinds[1::2], varbinds[2::2]
    # 8 interfaces: ifDescr.1..8, then the walk runs on into the next column.
    assert [oid for oid, _ in columns[0][:8]] == [(*IF_DESCR, i) for i in range(1, 9)]
    assert columns[0][8][0] == (1, 3, 6, 1, 2, 1, 2, 2, 1, 3, 1)
    # The usmStats column ends after 6 rows and says so in every later row.
    assert len(columns[0]) == len(columns[1]) == 25
    assert [oid[-2] for oid, _ in columns[1][:6]] == [1, 2, 3, 4, 5, 6]
    assert columns[1][6:] == [((*USM_STATS, 6, 0), END_OF_MIB_VIEW)] * 19


async def test_getbulk_stops_once_every_column_ended(manager):
    reply = await manager.request(
        Pdu(GET_BULK, 1, 0, 50, varbinds=[((1, 3, 6, 1, 6, 3, 15, 1), None)])
    )
    assert reply is not None
    assert [oid[-2] for oid, _ in reply.pdu.varbinds] == [1, 2, 3, 4, 5, 6, 6]
    assert reply.pdu.varbinds[-1][1] is END_OF_MIB_VIEW


async def test_getbulk_fits_the_managers_max_size(manager):
    reply = await manager.request(
        Pdu(GET_BULK, 1, 0, 1000, varbinds=[((1, 3, 6, 1), None)]), max_size=1400
    )
    assert reply is not None
    assert reply.pdu.error_status == 0
    assert 20 < len(reply.pdu.varbinds) < 60
    full = await manager.request(Pdu(GET_BULK, 1, 0, 1000, varbinds=[((1, 3, 6, 1), None)]))
    assert full is not None
    # The whole MIB of a device with 8 interfaces fits in 64 KB: all of it, then the end.
    assert len(full.pdu.varbinds) == len(manager_device_table(manager)) + 1
    assert full.pdu.varbinds[-1][1] is END_OF_MIB_VIEW


async def test_get_too_big_for_the_manager(manager):
    many = [(SYS_NAME, None)] * 40  # 40 * ~20 bytes of response > 484
    reply = await manager.request(Pdu(GET, 1, varbinds=many), max_size=484)
    assert reply is not None
    assert reply.pdu.error_status == 1  # tooBig
    assert reply.pdu.varbinds == []


async def test_set_is_refused_read_only(manager):
    reply = await manager.request(Pdu(SET, 1, varbinds=[(SYS_NAME, b"renamed")]))
    assert reply is not None
    assert (reply.pdu.error_status, reply.pdu.error_index) == (17, 1)  # notWritable


async def test_malformed_and_foreign_messages_are_dropped(lab, manager):
    loop = asyncio.get_running_loop()
    v2c = bytes.fromhex(
        "302602010104067075626c6963a019020101020100020100300e300c06082b060102010101000500"
    )
    for data in (b"", b"\x30\x03\x02\x01", b"\xff" * 40, v2c):
        await loop.sock_sendall(manager.sock, data)
    # The agent is still alive and answers the next good request.
    reply = await manager.request(Pdu(GET, 1, varbinds=[(SYS_NAME, None)]))
    assert reply is not None
    assert reply.pdu.varbinds == [(SYS_NAME, b"lab-0001")]


async def test_silence_and_garbage(lab, manager):
    device = lab.devices["lab-0001"]
    device.silence(True)
    assert (
        await manager.exchange(
            manager.encode(Pdu(GET, 1), engine_id=b"", level="noAuthNoPriv"), 0.3
        )
        is None
    )
    device.silence(False)
    device.garbage(True)
    loop = asyncio.get_running_loop()
    for _ in range(4):
        await loop.sock_sendall(
            manager.sock, manager.encode(Pdu(GET, 1), engine_id=b"", level="noAuthNoPriv")
        )
        raw = await asyncio.wait_for(loop.sock_recv(manager.sock, 65536), 1)
        with pytest.raises(BerError):
            manager.decode(raw)
    device.garbage(False)
    assert (await manager.discover()).pdu.tag == REPORT


async def test_engine_time_out_of_range_is_dropped(lab, manager):
    found = (await manager.discover()).message
    data = manager.encode(
        Pdu(GET, 1, varbinds=[(SYS_NAME, None)]),
        engine_id=found.engine_id,
        boots=found.engine_boots,
        time=-5,
        level="authNoPriv",
    )
    assert await manager.exchange(data, timeout=0.3) is None
    reply = await manager.request(Pdu(GET, 2, varbinds=[(SYS_NAME, None)]))
    assert reply is not None
    assert reply.pdu.varbinds == [(SYS_NAME, b"lab-0001")]
