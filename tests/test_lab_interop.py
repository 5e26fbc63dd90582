"""The acceptance test of the lab: real SNMP managers read it over UDP.

pysnmp 7's hlapi client and Net-SNMP's command-line tools must both read the lab with
authPriv SHA/AES-128 and SHA-256/AES-128, and report the right error for a wrong key or
an unknown user. Net-SNMP runs without MIB files (-m "" and numeric output) and with its
configuration and persistent directories in a temporary folder, so no user setup leaks in.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest
from pysnmp.hlapi.v3arch.asyncio import (
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
    usmAesCfb128Protocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMACSHAAuthProtocol,
    walk_cmd,
)
from pysnmp.proto import errind

from netmon.lab import DEFAULT_AUTH_KEY, DEFAULT_PRIV_KEY, Lab
from netmon.lab.mib import mib_table

SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
ENGINE_BOOTS = "1.3.6.1.6.3.10.2.1.2.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
IF_HC_IN = "1.3.6.1.2.1.31.1.1.1.6"
PYSNMP_AUTH = {"sha1": usmHMACSHAAuthProtocol, "sha256": usmHMAC192SHA256AuthProtocol}
NETSNMP_AUTH = {"sha1": "SHA", "sha256": "SHA-256"}
SNMPGET = Path("/usr/bin/snmpget")


class ShiftedClock:
    """time.monotonic() plus an offset a test can change: the lab's notion of time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture(params=["sha1", "sha256"])
def auth(request) -> str:
    return request.param


@pytest.fixture
async def lab(auth):
    clock = ShiftedClock()
    async with Lab(devices=3, base_port=0, interfaces=8, auth_protocol=auth, now=clock) as running:
        running.clock = clock  # type: ignore[attr-defined]
        yield running


@pytest.fixture
async def engines():
    """SnmpEngine() factory; every engine's sockets are closed after the test."""
    made: list[SnmpEngine] = []

    def make() -> SnmpEngine:
        made.append(SnmpEngine())
        return made[-1]

    yield make
    for engine in made:
        engine.close_dispatcher()


def user(
    auth: str,
    auth_key: str = DEFAULT_AUTH_KEY,
    priv_key: str = DEFAULT_PRIV_KEY,
    name: str = "netmon",
):
    return UsmUserData(
        name,
        auth_key,
        priv_key,
        authProtocol=PYSNMP_AUTH[auth],
        privProtocol=usmAesCfb128Protocol,
    )


async def target(lab: Lab, device: str = "lab-0001", timeout: float = 1.0, retries: int = 0):
    return await UdpTransportTarget.create(
        ("127.0.0.1", lab.port(device)), timeout=timeout, retries=retries
    )


async def pysnmp_get(engine, usm, transport, *oids: str):
    error, status, _, varbinds = await asyncio.wait_for(
        get_cmd(
            engine, usm, transport, ContextData(), *(ObjectType(ObjectIdentity(o)) for o in oids)
        ),
        timeout=10,  # the manager must give up by itself, long before this
    )
    return error, status, {str(name): value for name, value in varbinds}


# --- pysnmp ---------------------------------------------------------------------------


async def test_pysnmp_get_authpriv(lab, auth, engines):
    device = lab.devices["lab-0002"]
    error, status, values = await pysnmp_get(
        engines(),
        user(auth),
        await target(lab, "lab-0002"),
        SYS_NAME,
        ENGINE_BOOTS,
        f"{IF_DESCR}.1",
        f"{IF_HC_IN}.8",
    )
    assert error is None
    assert int(status) == 0
    assert str(values[SYS_NAME]) == "lab-0002"
    assert int(values[ENGINE_BOOTS]) == 1
    assert str(values[f"{IF_DESCR}.1"]) == "GigabitEthernet1/0/1"
    hc = int(values[f"{IF_HC_IN}.8"])
    assert 0 < hc <= device.interfaces[7].in_octets(device.uptime())


async def test_pysnmp_walk_and_bulk(lab, auth, engines):
    engine, usm, transport = engines(), user(auth), await target(lab)
    names = []
    async for error, status, _, varbinds in walk_cmd(
        engine,
        usm,
        transport,
        ContextData(),
        ObjectType(ObjectIdentity(IF_DESCR)),
        lexicographicMode=False,
    ):
        assert error is None
        assert int(status) == 0
        names.extend(str(value) for _, value in varbinds)
    assert names == [f"GigabitEthernet1/0/{n}" for n in range(1, 7)] + [
        "TenGigabitEthernet1/1/1",
        "TenGigabitEthernet1/1/2",
    ]

    error, status, _, varbinds = await bulk_cmd(
        engine, usm, transport, ContextData(), 0, 25, ObjectType(ObjectIdentity(IF_HC_IN))
    )
    assert error is None
    assert len(varbinds) == 25
    assert [str(name) for name, _ in varbinds[:8]] == [f"{IF_HC_IN}.{i}" for i in range(1, 9)]
    assert varbinds[0][1].__class__.__name__ == "Counter64"


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ({"auth_key": "not-the-lab-auth-key"}, errind.WrongDigest),
        ({"priv_key": "not-the-lab-priv-key"}, errind.DecryptionError),
        ({"name": "stranger"}, errind.UnknownUserName),
    ],
)
async def test_pysnmp_gets_the_right_error(lab, auth, engines, credentials, expected):
    error, _, values = await pysnmp_get(
        engines(), user(auth, **credentials), await target(lab), SYS_NAME
    )
    assert isinstance(error, expected), repr(error)
    assert values == {}


async def test_pysnmp_resyncs_after_time_jump_and_reboot(lab, auth, engines):
    device = lab.devices["lab-0001"]
    engine, usm, transport = engines(), user(auth), await target(lab, retries=1)
    error, _, values = await pysnmp_get(engine, usm, transport, SYS_UPTIME)
    assert error is None
    # The device's clock runs ahead by 1000 s: pysnmp's cached engine time is out of the
    # 150 s window, the agent sends an authenticated notInTimeWindows report, pysnmp
    # takes the time from it and the request goes through.
    lab.clock.offset += 1000
    error, _, values = await pysnmp_get(engine, usm, transport, SYS_UPTIME)
    assert error is None
    assert device.stats.not_in_time_windows == 1
    # A reboot: engineBoots moves on and uptime restarts.
    device.reboot()
    error, _, values = await pysnmp_get(engine, usm, transport, SYS_UPTIME, ENGINE_BOOTS)
    assert error is None
    assert int(values[ENGINE_BOOTS]) == 2
    assert int(values[SYS_UPTIME]) < 200
    assert device.stats.not_in_time_windows == 1  # counted again after the reboot's reset


async def test_pysnmp_sees_a_flap(lab, auth, engines):
    device = lab.devices["lab-0001"]
    index = next(i.index for i in device.interfaces if i.admin_up)
    device.flap(index, down_for=60)
    _, _, values = await pysnmp_get(engines(), user(auth), await target(lab), f"{IF_OPER}.{index}")
    assert int(values[f"{IF_OPER}.{index}"]) == 2


async def test_pysnmp_times_out_on_a_silent_device(lab, auth, engines):
    lab.devices["lab-0003"].silence(True)
    started = time.monotonic()
    error, _, _ = await pysnmp_get(
        engines(), user(auth), await target(lab, "lab-0003", timeout=0.5), SYS_NAME
    )
    assert isinstance(error, errind.RequestTimedOut)
    assert time.monotonic() - started < 3


async def test_pysnmp_gets_an_error_not_a_hang_from_garbage(lab, auth, engines):
    lab.devices["lab-0003"].garbage(True)
    started = time.monotonic()
    error, _, values = await pysnmp_get(
        engines(), user(auth), await target(lab, "lab-0003", timeout=0.5, retries=1), SYS_NAME
    )
    assert error is not None
    assert values == {}
    assert time.monotonic() - started < 5


# --- Net-SNMP -------------------------------------------------------------------------

netsnmp = pytest.mark.skipif(
    not SNMPGET.exists(), reason="Net-SNMP tools (Debian package snmp) not installed"
)


async def net_snmp(
    tool: str, lab: Lab, auth: str, *args: str, device: str = "lab-0001", **options: str
):
    """Run a Net-SNMP tool against ``device``; (exit code, stdout, stderr)."""
    settings = {
        "-l": "authPriv",
        "-u": "netmon",
        "-a": NETSNMP_AUTH[auth],
        "-A": DEFAULT_AUTH_KEY,
        "-x": "AES",
        "-X": DEFAULT_PRIV_KEY,
    }
    settings.update({f"-{k}": v for k, v in options.items()})
    home = Path(os.environ.get("PYTEST_LAB_SNMP_HOME", "/tmp/pt-lab-snmp"))
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "MIBS": "",
        "SNMPCONFPATH": str(home),
        "SNMP_PERSISTENT_DIR": str(home),
        "HOME": str(home),
    }
    command = [shutil.which(tool) or tool, "-v3", "-m", "", "-On", "-t", "1", "-r", "0"]
    for flag, value in settings.items():
        command += [flag, value]
    command += [f"udp:127.0.0.1:{lab.port(device)}", *args]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    return process.returncode, out.decode(), err.decode()


@netsnmp
@pytest.mark.slow
async def test_net_snmp_get(lab, auth):
    code, out, err = await net_snmp(
        "snmpget",
        lab,
        auth,
        SYS_NAME,
        f"{IF_DESCR}.8",
        f"{IF_HC_IN}.2",
        f"{IF_DESCR}.99",
        "1.3.6.1.2.1.1.9.0",
        device="lab-0002",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f'.{SYS_NAME} = STRING: "lab-0002"'
    assert lines[1] == f'.{IF_DESCR}.8 = STRING: "TenGigabitEthernet1/1/2"'
    assert lines[2].startswith(f".{IF_HC_IN}.2 = Counter64: ")
    assert lines[3] == f".{IF_DESCR}.99 = No Such Instance currently exists at this OID"
    assert lines[4] == ".1.3.6.1.2.1.1.9.0 = No Such Object available on this agent at this OID"


@netsnmp
@pytest.mark.slow
async def test_net_snmp_bulkwalk_reads_the_whole_device(lab, auth):
    code, out, err = await net_snmp("snmpbulkwalk", lab, auth, "-Cr25", ".1")
    assert code == 0, err
    # Long Hex-STRINGs (the engine ID) continue on lines of their own.
    lines = [line for line in out.splitlines() if line.startswith(".")]
    expected = ["." + ".".join(map(str, oid)) for oid in mib_table(8).oids]
    assert [line.split(" = ", 1)[0] for line in lines[:-1]] == expected
    # Walking from .1 ends at the end of the MIB, which Net-SNMP prints.
    assert lines[-1].startswith(f"{expected[-1]} = No more variables left in this MIB View")
    assert '.1.3.6.1.2.1.1.5.0 = STRING: "lab-0001"' in out
    assert ".1.3.6.1.2.1.25.2.3.1.2.1 = OID: .1.3.6.1.2.1.25.2.1.2" in out


@netsnmp
@pytest.mark.slow
async def test_net_snmp_walk_with_getnext(lab, auth):
    code, out, err = await net_snmp("snmpwalk", lab, auth, "1.3.6.1.2.1.31.1.1.1.1")
    assert code == 0, err
    assert [line.split('"')[1] for line in out.splitlines()] == [
        f"Gi1/0/{n}" for n in range(1, 7)
    ] + ["Te1/1/1", "Te1/1/2"]


@netsnmp
@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"A": "not-the-lab-auth-key"}, "Authentication failure"),
        ({"X": "not-the-lab-priv-key"}, "Decryption error"),
        ({"u": "stranger"}, "Unknown user name"),
        ({"l": "noAuthNoPriv"}, "Unsupported security level"),
    ],
)
async def test_net_snmp_gets_the_right_error(lab, auth, options, message):
    code, _, err = await net_snmp("snmpget", lab, auth, SYS_NAME, **options)
    assert code != 0
    assert message in err


@netsnmp
@pytest.mark.slow
async def test_net_snmp_times_out_on_a_silent_device(lab, auth):
    lab.devices["lab-0001"].silence(True)
    code, _, err = await net_snmp("snmpget", lab, auth, SYS_NAME)
    assert code != 0
    assert "Timeout" in err
