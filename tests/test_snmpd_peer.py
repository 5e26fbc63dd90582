"""netmon's SNMPv3 credentials against a real Net-SNMP snmpd (tests/snmpd_agent.py).

Every request is built the way netmon builds it: inventory data -> ``snmp_credentials``
(keys by ``{env: NAME}``) -> ``usm_user`` -> pysnmp's hlapi, and sent over UDP to a
snmpd that the test started on 127.0.0.1.

What pysnmp 7.1 answers (``errorIndication`` objects are ``pysnmp.proto.errind``
instances; each compares equal to its camel-case name):

================================  =========================================================
wrong auth key / auth protocol    ``WrongDigest`` == "wrongDigest", "Wrong SNMP PDU digest"
wrong priv key / AES variant      ``RequestTimedOut`` == "requestTimedOut", "No SNMP response
                                  received before timeout": snmpd decrypts to garbage,
                                  counts snmpInASNParseErrs and drops it (no report)
unknown user                      ``UnknownUserName`` == "unknownUserName", "Unknown USM user"
silent agent (SIGSTOP)            ``RequestTimedOut`` after timeout x (retries + 1)
authPriv for an auth-only user    ``UnsupportedSecurityLevel`` == "unsupportedSecurityLevel",
                                  "Unsupported SNMP security level"
level below the user's rouser     no errorIndication: errorStatus authorizationError (16)
reboot (engineBoots went up)      nothing: pysnmp gets a notInTimeWindow report, resyncs and
                                  resends by itself (up to 4 "discovery retries", not counted
                                  in ``retries``); only snmpd's usmStatsNotInTimeWindows shows it
================================  =========================================================
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pysnmp.hlapi.v3arch.asyncio import (
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    bulk_cmd,
    get_cmd,
    walk_cmd,
)
from pysnmp.proto import errind
from pysnmp.proto.rfc1902 import Counter64, Integer32
from pysnmp.proto.rfc1905 import NoSuchInstance

from netmon.snmp.credentials import SnmpV3Credentials, snmp_credentials
from netmon.snmp.usm import usm_user
from tests.snmpd_agent import (
    DEFAULT_ENGINE_ID,
    SYS_CONTACT,
    SYS_LOCATION,
    SYS_NAME,
    Snmpd,
    SnmpdError,
    default_users,
    require_net_snmp,
)

pytestmark = pytest.mark.slow

SYS_NAME_OID = "1.3.6.1.2.1.1.5.0"
SYS_UPTIME_OID = "1.3.6.1.2.1.1.3.0"
SYS_CONTACT_OID = "1.3.6.1.2.1.1.4.0"
SYS_LOCATION_OID = "1.3.6.1.2.1.1.6.0"
ENGINE_ID_OID = "1.3.6.1.6.3.10.2.1.1.0"
ENGINE_BOOTS_OID = "1.3.6.1.6.3.10.2.1.2.0"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"
HR_STORAGE_DESCR = "1.3.6.1.2.1.25.2.3.1.3"
HR_STORAGE_UNITS = "1.3.6.1.2.1.25.2.3.1.4"
HR_STORAGE_SIZE = "1.3.6.1.2.1.25.2.3.1.5"
HR_PROCESSOR_FRW_ID = "1.3.6.1.2.1.25.3.3.1.1"
HR_PROCESSOR_LOAD = "1.3.6.1.2.1.25.3.3.1.2"
# snmpd's own counters, read with Net-SNMP's snmpget to see what it did with a request.
SNMP_IN_ASN_PARSE_ERRS = "1.3.6.1.2.1.11.6.0"
USM_STATS_NOT_IN_TIME_WINDOWS = "1.3.6.1.6.3.15.1.1.2.0"
USM_STATS_DECRYPTION_ERRORS = "1.3.6.1.6.3.15.1.1.6.0"

AUTH_PRIV_USERS = [n for n, u in default_users().items() if u.priv_protocol is not None]

Creds = Callable[..., SnmpV3Credentials]
VarBinds = list[tuple[str, Any]]


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> Creds:
    """``creds(agent, user, **changes)``: netmon's credentials for one of the agent's users,
    from inventory data whose keys are environment references; ``changes`` replace the
    user name, keys or protocols (``priv_protocol=None`` drops privacy, ``auth_protocol=
    None`` authentication too) and set ``timeout``/``retries``."""

    def make(
        agent: Snmpd,
        user: str,
        *,
        timeout: str = "1s",
        retries: int = 0,
        **changes: str | None,
    ) -> SnmpV3Credentials:
        known = agent.users.get(user, agent.users[AUTH_PRIV_USERS[0]])
        fields: dict[str, str | None] = known._asdict()
        unknown = set(changes) - set(fields)
        assert not unknown, f"unknown changes {unknown}"
        fields.update(changes)
        data: dict[str, Any] = {
            "user": user,
            "port": agent.port,
            "timeout": timeout,
            "retries": retries,
        }
        if fields["auth_protocol"] is not None:
            monkeypatch.setenv("T_SNMPD_AUTH", str(fields["auth_key"]))
            data["auth"] = {"protocol": fields["auth_protocol"], "key": {"env": "T_SNMPD_AUTH"}}
            if fields["priv_protocol"] is not None:
                monkeypatch.setenv("T_SNMPD_PRIV", str(fields["priv_key"]))
                data["priv"] = {"protocol": fields["priv_protocol"], "key": {"env": "T_SNMPD_PRIV"}}
        return snmp_credentials(f"snmpd-{agent.port}", data)

    return make


@pytest.fixture
async def engine() -> AsyncIterator[SnmpEngine]:
    snmp_engine = SnmpEngine()
    try:
        yield snmp_engine
    finally:
        snmp_engine.close_dispatcher()


async def _target(creds: SnmpV3Credentials) -> UdpTransportTarget:
    return await UdpTransportTarget.create(
        ("127.0.0.1", creds.port),
        timeout=creds.timeout.total_seconds(),
        retries=creds.retries,
    )


async def get(
    engine: SnmpEngine, creds: SnmpV3Credentials, *oids: str
) -> tuple[errind.ErrorIndication | None, Any, VarBinds]:
    error_indication, error_status, _index, var_binds = await get_cmd(
        engine,
        usm_user(creds),
        await _target(creds),
        ContextData(contextName=creds.context),
        *(ObjectType(ObjectIdentity(oid)) for oid in oids),
    )
    return error_indication, error_status, [(str(name), value) for name, value in var_binds]


async def walk(engine: SnmpEngine, creds: SnmpV3Credentials, column: str) -> dict[str, Any]:
    """The column's values by row index (the OID after ``column.``)."""
    rows: dict[str, Any] = {}
    async for error_indication, error_status, _index, var_binds in walk_cmd(
        engine,
        usm_user(creds),
        await _target(creds),
        ContextData(contextName=creds.context),
        ObjectType(ObjectIdentity(column)),
        lexicographicMode=False,
    ):
        assert error_indication is None, error_indication
        assert not error_status, error_status.prettyPrint()
        for name, value in var_binds:
            rows[str(name).removeprefix(column + ".")] = value
    return rows


def _counters(agent: Snmpd, *oids: str) -> list[int]:
    values = agent.snmpget(*oids)
    return [int(values[oid]) for oid in oids]


# -- every user reads the agent ---------------------------------------------------------


@pytest.mark.parametrize("user", AUTH_PRIV_USERS)
async def test_each_user_reads_the_system_group(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
    user: str,
) -> None:
    c = creds(snmpd, user)
    assert c.security_level == "authPriv"
    error_indication, error_status, var_binds = await get(
        engine, c, SYS_NAME_OID, SYS_LOCATION_OID, SYS_CONTACT_OID, ENGINE_ID_OID
    )
    assert error_indication is None, error_indication
    assert not error_status
    assert [(name, value.prettyPrint()) for name, value in var_binds[:3]] == [
        (SYS_NAME_OID, SYS_NAME),
        (SYS_LOCATION_OID, SYS_LOCATION),
        (SYS_CONTACT_OID, SYS_CONTACT),
    ]
    assert var_binds[3][1].asOctets() == snmpd.engine_id == DEFAULT_ENGINE_ID


async def test_auth_only_user_reads_at_auth_no_priv(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
) -> None:
    c = creds(snmpd, "sha256-authonly")
    assert c.security_level == "authNoPriv"
    error_indication, error_status, var_binds = await get(engine, c, SYS_NAME_OID)
    assert error_indication is None, error_indication
    assert not error_status
    assert var_binds[0][1].prettyPrint() == SYS_NAME


# -- AES-256: Blumenthal (Net-SNMP AES-256, netmon aes256) vs Reeder (AES-256-C, aes256c) ----


@pytest.mark.parametrize(
    ("user", "other_variant"),
    [("sha1-aes256", "aes256c"), ("sha1-aes256c", "aes256")],
)
async def test_aes256_variants_differ_with_a_short_auth_digest(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
    user: str,
    other_variant: str,
) -> None:
    """SHA-1 gives 20 key bytes; AES-256 needs 32, and the two drafts extend them
    differently. netmon's aes256 reads Net-SNMP's AES-256 user (previous tests), its
    aes256c the AES-256-C user; each fails against the other's user."""
    (parse_errors,) = _counters(snmpd, SNMP_IN_ASN_PARSE_ERRS)
    c = creds(snmpd, user, priv_protocol=other_variant)
    error_indication, _status, _var_binds = await get(engine, c, SYS_NAME_OID)
    assert isinstance(error_indication, errind.RequestTimedOut)
    assert _counters(snmpd, SNMP_IN_ASN_PARSE_ERRS) == [parse_errors + 1]


@pytest.mark.parametrize(
    ("user", "other_variant"),
    [("sha256-aes256", "aes256c"), ("sha256-aes256c", "aes256")],
)
async def test_aes256_variants_agree_with_a_sha256_digest(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
    user: str,
    other_variant: str,
) -> None:
    """SHA-256 already gives the 32 bytes, so no extension happens: a mismatched variant
    works here, which is why only a SHA-1 (or SHA-224, MD5) user can tell them apart."""
    c = creds(snmpd, user, priv_protocol=other_variant)
    error_indication, error_status, var_binds = await get(engine, c, SYS_NAME_OID)
    assert error_indication is None, error_indication
    assert not error_status
    assert var_binds[0][1].prettyPrint() == SYS_NAME


# -- failures, as pysnmp reports them ----------------------------------------------------


@pytest.mark.parametrize(
    ("user", "change"),
    [
        ("sha1-aes128", {"auth_key": "not-the-auth-key"}),
        ("sha512-aes256", {"auth_key": "not-the-auth-key"}),
        ("sha1-aes128", {"auth_protocol": "sha256"}),
    ],
)
async def test_wrong_auth_is_wrong_digest(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
    user: str,
    change: dict[str, str],
) -> None:
    error_indication, _status, var_binds = await get(
        engine, creds(snmpd, user, **change), SYS_NAME_OID
    )
    assert isinstance(error_indication, errind.WrongDigest)
    assert error_indication == "wrongDigest"
    assert str(error_indication) == "Wrong SNMP PDU digest"
    assert var_binds == []


async def test_wrong_priv_key_is_dropped_by_snmpd_so_times_out(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
) -> None:
    before = _counters(snmpd, SNMP_IN_ASN_PARSE_ERRS, USM_STATS_DECRYPTION_ERRORS)
    c = creds(snmpd, "sha256-aes256", priv_key="not-the-priv-key")
    started = time.monotonic()
    error_indication, _status, _var_binds = await get(engine, c, SYS_NAME_OID)
    assert isinstance(error_indication, errind.RequestTimedOut)
    assert error_indication == "requestTimedOut"
    assert str(error_indication) == "No SNMP response received before timeout"
    assert time.monotonic() - started >= c.timeout.total_seconds() * 0.9
    # AES-CFB cannot tell a wrong key: snmpd decrypts garbage, fails to parse the
    # scoped PDU and drops the message: no usmStatsDecryptionErrors report is sent.
    parse_errors, decryption_errors = before
    after = _counters(snmpd, SNMP_IN_ASN_PARSE_ERRS, USM_STATS_DECRYPTION_ERRORS)
    assert after == [parse_errors + 1, decryption_errors]


@pytest.mark.parametrize("level", ["authPriv", "noAuthNoPriv"])
async def test_unknown_user(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
    level: str,
) -> None:
    change: dict[str, str | None] = {}
    if level == "noAuthNoPriv":
        change = {"auth_protocol": None, "priv_protocol": None}
    c = creds(snmpd, "nobody-here", **change)
    assert c.security_level == level
    error_indication, _status, _var_binds = await get(engine, c, SYS_NAME_OID)
    assert isinstance(error_indication, errind.UnknownUserName)
    assert error_indication == "unknownUserName"
    assert str(error_indication) == "Unknown USM user"


async def test_privacy_for_an_auth_only_user_is_unsupported_security_level(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
) -> None:
    c = creds(snmpd, "sha256-authonly", priv_protocol="aes128", priv_key="some-priv-key")
    assert c.security_level == "authPriv"
    error_indication, _status, _var_binds = await get(engine, c, SYS_NAME_OID)
    assert isinstance(error_indication, errind.UnsupportedSecurityLevel)
    assert error_indication == "unsupportedSecurityLevel"
    assert str(error_indication) == "Unsupported SNMP security level"


@pytest.mark.parametrize(
    "change",
    [{"priv_protocol": None}, {"auth_protocol": None, "priv_protocol": None}],
    ids=["authNoPriv", "noAuthNoPriv"],
)
async def test_level_below_the_users_access_is_authorization_error(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
    change: dict[str, None],
) -> None:
    """The user exists and supports the level, but ``rouser ... priv`` grants nothing
    below authPriv: VACM refuses in the response PDU, not as an errorIndication."""
    error_indication, error_status, _var_binds = await get(
        engine, creds(snmpd, "sha1-aes128", **change), SYS_NAME_OID
    )
    assert error_indication is None
    assert error_status == 16
    assert error_status.prettyPrint() == "authorizationError"


# -- IF-MIB and HOST-RESOURCES-MIB from the host ----------------------------------------


def _host_interfaces() -> set[str]:
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines}


async def test_getbulk_ifxtable_has_lo_with_counter64_octets(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
) -> None:
    c = creds(snmpd, "sha512-aes256")
    error_indication, error_status, _index, var_binds = await bulk_cmd(
        engine,
        usm_user(c),
        await _target(c),
        ContextData(),
        0,
        c.max_repetitions,
        ObjectType(ObjectIdentity(IF_NAME)),
        ObjectType(ObjectIdentity(IF_HC_IN_OCTETS)),
    )
    assert error_indication is None, error_indication
    assert not error_status
    names: dict[str, str] = {}
    octets: dict[str, Any] = {}
    for name, value in var_binds:
        oid = str(name)
        if oid.startswith(IF_NAME + "."):
            names[oid.removeprefix(IF_NAME + ".")] = value.prettyPrint()
        elif oid.startswith(IF_HC_IN_OCTETS + "."):
            octets[oid.removeprefix(IF_HC_IN_OCTETS + ".")] = value
    assert "lo" in names.values()
    assert set(names.values()) <= _host_interfaces()
    assert octets.keys() == names.keys()
    lo = next(index for index, if_name in names.items() if if_name == "lo")
    assert isinstance(octets[lo], Counter64)
    # Our own SNMP traffic went through lo, and the agent read the kernel's counter.
    rx_bytes = int(Path("/sys/class/net/lo/statistics/rx_bytes").read_text())
    assert 0 < int(octets[lo]) <= rx_bytes


async def test_host_resources_storage_and_processors(
    snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
) -> None:
    c = creds(snmpd, "sha256-aes256")
    descr = {i: v.prettyPrint() for i, v in (await walk(engine, c, HR_STORAGE_DESCR)).items()}
    assert {"Physical memory", "/"} <= set(descr.values())
    memory = next(i for i, d in descr.items() if d == "Physical memory")
    units = await walk(engine, c, HR_STORAGE_UNITS)
    sizes = await walk(engine, c, HR_STORAGE_SIZE)
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    mem_total_bytes = int(meminfo["MemTotal"].split()[0]) * 1024
    assert int(units[memory]) * int(sizes[memory]) == mem_total_bytes

    cpus = Path("/proc/cpuinfo").read_text().count("processor\t:")
    processors = await walk(engine, c, HR_PROCESSOR_FRW_ID)
    assert len(processors) == cpus
    # hrProcessorLoad is the last minute's average: Net-SNMP answers it only once its
    # 5-second samples fill a minute (Snmpd.wait_for_processor_load waits for that).
    (_, _, uptime), (_, _, loads) = (
        await get(engine, c, SYS_UPTIME_OID),
        await get(engine, c, *(f"{HR_PROCESSOR_LOAD}.{i}" for i in processors)),
    )
    age = int(uptime[0][1]) / 100
    for _name, load in loads:
        if age < 50:
            assert isinstance(load, NoSuchInstance)
        elif age > 65:
            assert isinstance(load, Integer32)
            assert 0 <= int(load) <= 100


# -- a silent agent and a rebooted one (agents of their own) ----------------------------


async def test_silent_agent_times_out_within_the_configured_timeout(
    fresh_snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
) -> None:
    c = creds(fresh_snmpd, "sha256-aes256", timeout="500ms", retries=1)
    budget = c.timeout.total_seconds() * (c.retries + 1)
    error_indication, _status, _var_binds = await get(engine, c, SYS_NAME_OID)
    assert error_indication is None, error_indication
    with fresh_snmpd.silenced():
        started = time.monotonic()
        error_indication, _status, var_binds = await get(engine, c, SYS_NAME_OID)
        elapsed = time.monotonic() - started
    assert isinstance(error_indication, errind.RequestTimedOut)
    assert error_indication == "requestTimedOut"
    assert var_binds == []
    assert budget * 0.9 <= elapsed < budget + 1.0
    error_indication, _status, var_binds = await get(engine, c, SYS_NAME_OID)
    assert error_indication is None, error_indication
    assert var_binds[0][1].prettyPrint() == SYS_NAME


async def test_client_recovers_after_reboot_and_sees_it(
    fresh_snmpd: Snmpd,
    creds: Creds,
    engine: SnmpEngine,
) -> None:
    c = creds(fresh_snmpd, "sha1-aes128")
    error_indication, _status, before = await get(engine, c, SYS_UPTIME_OID, ENGINE_BOOTS_OID)
    assert error_indication is None, error_indication
    fresh_snmpd.restart()
    (not_in_time_windows,) = _counters(fresh_snmpd, USM_STATS_NOT_IN_TIME_WINDOWS)

    # The same engine still holds the old boots/time: snmpd refuses once with a
    # notInTimeWindow report, pysnmp takes the new boots/time from it and resends.
    error_indication, error_status, after = await get(engine, c, SYS_UPTIME_OID, ENGINE_BOOTS_OID)
    assert error_indication is None, error_indication
    assert not error_status
    assert _counters(fresh_snmpd, USM_STATS_NOT_IN_TIME_WINDOWS) == [not_in_time_windows + 1]
    assert int(after[0][1]) < int(before[0][1])  # sysUpTime started again
    assert int(after[1][1]) == int(before[1][1]) + 1  # snmpEngineBoots

    # And it stays in sync: no further refusals.
    error_indication, _status, _var_binds = await get(engine, c, SYS_NAME_OID)
    assert error_indication is None, error_indication
    assert _counters(fresh_snmpd, USM_STATS_NOT_IN_TIME_WINDOWS) == [not_in_time_windows + 1]


def test_harness_restart_is_a_reboot_and_keeps_the_port(
    fresh_snmpd: Snmpd,
) -> None:
    port, boots, pid = fresh_snmpd.port, fresh_snmpd.engine_boots(), fresh_snmpd.pid
    fresh_snmpd.restart()
    assert (fresh_snmpd.port, fresh_snmpd.engine_boots()) == (port, boots + 1)
    assert fresh_snmpd.pid != pid
    values = fresh_snmpd.snmpget(SYS_NAME_OID, ENGINE_ID_OID)
    assert values[SYS_NAME_OID] == f'"{SYS_NAME}"'
    assert bytes.fromhex(values[ENGINE_ID_OID].strip('"')) == DEFAULT_ENGINE_ID


def test_harness_reports_a_failed_start_with_the_log(tmp_path: Path) -> None:
    """A port that is taken (and was given, so not replaced): snmpd exits at start and
    the error carries its log."""
    require_net_snmp()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        agent = Snmpd(tmp_path / "snmpd", start_timeout=5)
        agent.port = taken.getsockname()[1]
        with pytest.raises(SnmpdError, match=r"(?s)exited with status 1 .*specified endpoint"):
            agent.start()
    assert not agent.running
    agent.close()
