"""netmon's SNMP client against the lab's agents: what it must survive at an address."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netmon.errors import SnmpTimeoutError
from netmon.lab import Lab
from netmon.lab.lab import AUTH_KEY_ENV, PRIV_KEY_ENV
from netmon.snmp.client import SnmpClient, SnmpTarget
from netmon.snmp.credentials import snmp_credentials
from netmon.snmp.oids import SYSTEM
from tests.test_lab_runner import free_base_port


def _target(name: str, port: int, retries: int = 0) -> SnmpTarget:
    snmp: dict[str, Any] = {
        "user": "netmon",
        "auth": {"protocol": "sha1", "key": {"env": AUTH_KEY_ENV}},
        "priv": {"protocol": "aes128", "key": {"env": PRIV_KEY_ENV}},
        "port": port,
        "timeout": "1s",
        "retries": retries,
    }
    return SnmpTarget(name, "127.0.0.1", snmp_credentials(name, snmp))


async def _name(client: SnmpClient, target: SnmpTarget) -> bytes:
    (name,) = await asyncio.to_thread(client.get, target, [SYSTEM.sysName])
    assert isinstance(name.value, bytes)
    return name.value


async def test_a_new_agent_at_a_known_address_is_discovered_again(lab_keys: None) -> None:
    """A device replaced at the same address (or a port handed to another agent) is
    another engine. pysnmp keeps the engine ID it learnt for an address for 5 minutes and
    does not take the new one from the agent's unknownEngineID report, so every request
    failed as `security` until then. The client forgets it and discovers again, within
    the same request and without using a retry (retries: 0)."""
    base = free_base_port(4)
    client = SnmpClient()
    client.start()
    try:
        async with Lab(devices=3, base_port=base, interfaces=4, ssh=False):
            assert await _name(client, _target("lab-0001", base + 1)) == b"lab-0001"
            assert await _name(client, _target("lab-0002", base + 2)) == b"lab-0002"
        # One port down: lab-0002 answers where lab-0001 did, lab-0003 where lab-0002 did.
        async with Lab(devices=3, base_port=base - 1, interfaces=4, ssh=False):
            # an engine the client knows: its report is read, the request goes through
            assert await _name(client, _target("lab-0002", base + 1)) == b"lab-0002"
            assert await _name(client, _target("lab-0002", base + 1)) == b"lab-0002"
            # an engine it has never met: pysnmp drops the report, the request times out,
            # and the next one discovers the new engine
            with pytest.raises(SnmpTimeoutError):
                await _name(client, _target("lab-0003", base + 2))
            assert await _name(client, _target("lab-0003", base + 2)) == b"lab-0003"
        assert client.stats["rediscoveries"] == 2
    finally:
        client.close()
