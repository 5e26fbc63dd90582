"""A counter is stamped with when the device read it, not when the poll's walk ended.

The interfaces task reads the ifXTable (the 64-bit counters) and then the ifTable column
by column: about ten round trips. Stamped when the walk ended, the counters carried ten
round trips of error, and when the round trip changed between two polls the rate was
off by that change over the interval. In a chaos run with 500 ms added each way, the
poll after the delay ended saw its interval shrink from 20 s to about 11 s: rates nearly
doubled, and those of the busiest links were dropped as faster than the link.

Here a real relay (netmon.chaos.relay) holds every datagram between the engine and an
in-process lab device 250 ms each way, and each 64-bit octet counter the task returns is
checked against the lab's own counter model: the model must give the value read at the
time the sample carries, within a tenth of a second (the walk itself lasts seconds).
Both engines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nornir import InitNornir

from netmon.chaos.relay import UdpRelay
from netmon.lab import Lab
from netmon.records import Sample
from netmon.tasks.interfaces import interfaces
from tests.test_chaos_relay import _free_udp_port

DELAY = 0.25  # each way
# How far a sample's time may be from when the lab read the value: loop and thread
# scheduling on a loaded machine, far under the 0.25 s of a one-way trip and the
# seconds the walk lasts.
TOLERANCE = 0.1
ENGINES = ["gufo", "pysnmp"]


@pytest.fixture
async def relayed(lab: Lab) -> AsyncIterator[tuple[Lab, int, UdpRelay]]:
    port = _free_udp_port()
    relay = UdpRelay({port: ("127.0.0.1", lab.port("lab-0001"))})
    await relay.start()
    try:
        yield lab, port, relay
    finally:
        await relay.close()


def poll(tmp_path: Path, engine: str, port: int) -> list[Sample]:
    hosts = tmp_path / f"hosts-{engine}.yaml"
    hosts.write_text(
        "lab-0001:\n"
        "  hostname: 127.0.0.1\n"
        "  data:\n"
        "    snmp:\n"
        f"      engine: {engine}\n"
        "      user: netmon\n"
        f"      port: {port}\n"
        "      timeout: 3s\n"
        "      auth: {protocol: sha1, key: {env: NETMON_LAB_AUTH_KEY}}\n"
        "      priv: {protocol: aes128, key: {env: NETMON_LAB_PRIV_KEY}}\n"
    )
    nr = InitNornir(
        runner={"plugin": "serial"},
        inventory={"plugin": "SimpleInventory", "options": {"host_file": str(hosts)}},
        logging={"enabled": False},
    )
    results = nr.run(task=interfaces)
    assert not results.failed, {h: r.exception for h, r in results.failed_hosts.items()}
    return [r for r in results["lab-0001"][0].result if isinstance(r, Sample)]


def time_error(lab: Lab, sample: Sample, now_wall: float, now_uptime: float) -> float | None:
    """Seconds between the sample's time and when the lab's model had the value read;
    None for a link that carries nothing (admin down)."""
    device = lab.device(sample.series.device)
    labels = dict(sample.series.labels)
    iface = next(i for i in device.interfaces if i.name == labels["interface"])
    read = iface.in_octets if sample.series.metric == "ifHCInOctets" else iface.out_octets
    t = now_uptime - (now_wall - sample.time.timestamp())
    rate = (read(t + 1) - read(t - 1)) / 2
    if rate <= 0:
        return None
    return (int(sample.value) - read(t)) / rate


@pytest.mark.lab(interfaces=12)
@pytest.mark.parametrize("engine", ENGINES)
async def test_each_counter_carries_the_time_the_device_read_it(
    relayed: tuple[Lab, int, UdpRelay], engine: str, tmp_path: Path
) -> None:
    lab, port, relay = relayed
    await asyncio.to_thread(poll, tmp_path, engine, port)  # sessions and walk sizes
    relay.set_delay(DELAY)
    started = time.time()
    samples = await asyncio.to_thread(poll, tmp_path, engine, port)
    ended = time.time()
    now_wall, now_uptime = time.time(), lab.device("lab-0001").uptime()

    octets = [s for s in samples if s.series.metric in ("ifHCInOctets", "ifHCOutOctets")]
    assert len(octets) == 2 * 12
    errors: dict[str, float] = {}
    for sample in octets:
        error = time_error(lab, sample, now_wall, now_uptime)
        if error is not None:
            name = dict(sample.series.labels)["interface"]
            errors[f"{sample.series.metric} {name}"] = error
    assert len(errors) >= 12, "the lab's links carry traffic"
    assert all(abs(e) <= TOLERANCE for e in errors.values()), errors
    # gufo-snmp walks a table column by column (pysnmp sends all columns in one
    # GETBULK): its walk lasted long enough that a stamp at its end was seconds off.
    round_trips = 5 if engine == "gufo" else 1
    assert ended - started >= round_trips * 2 * DELAY
    states = [s for s in samples if s.series.metric == "ifOperStatus"]
    assert max(s.time for s in octets) < min(s.time for s in states)
