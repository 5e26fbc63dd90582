"""The simulated device: identity, interfaces, traffic over (simulated) time, faults."""

from __future__ import annotations

import pytest

from netmon.lab import Device
from netmon.lab.ber import Counter32, Counter64, Gauge32, Oid, TimeTicks, Value, encode_value
from netmon.lab.mib import IF_ENTRY, IFX_ENTRY, mib_table

M32 = 2**32


class Clock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def get(device: Device, oid: Oid) -> Value:
    t = device.tick()
    table = device.table
    n = table.position[oid]
    return table.getters[n](device, table.args[n], t)


def column(device: Device, entry: Oid, col: int, index: int) -> Value:
    return get(device, (*entry, col, index))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_identity_follows_from_the_name(clock):
    a, b = Device("lab-0042", now=clock), Device("lab-0042", now=clock)
    other = Device("lab-0043", now=clock)
    assert a.engine_id == b"\x80\x00\x1f\x88\x04netmon-lab-0042"
    assert a.engine_id != other.engine_id
    assert [(i.descr, i.alias, i.mac, i.in_rate) for i in a.interfaces] == [
        (i.descr, i.alias, i.mac, i.in_rate) for i in b.interfaces
    ]
    assert a.uptime() == b.uptime()
    assert (a.role, a.sys_location) == (b.role, b.sys_location)
    assert a.boots == 1
    assert get(a, (1, 3, 6, 1, 2, 1, 1, 5, 0)) == "lab-0042"


def test_interface_count_from_name_or_argument(clock):
    counts = {len(Device(f"lab-{i:04d}", now=clock).interfaces) for i in range(1, 60)}
    assert min(counts) >= 8
    assert max(counts) <= 48
    assert len(counts) > 10
    assert len(Device("lab-0001", 8, now=clock).interfaces) == 8
    with pytest.raises(ValueError, match="interfaces"):
        Device("lab-0001", 0, now=clock)


def test_ports_uplinks_and_admin_down(clock):
    device = Device("lab-0001", 24, uptime=0, now=clock)
    names = [i.name for i in device.interfaces]
    assert names[:20] == [f"Gi1/0/{n}" for n in range(1, 21)]
    assert names[20:] == [f"Te1/1/{n}" for n in range(1, 5)]
    assert device.interfaces[20].descr == "TenGigabitEthernet1/1/1"
    assert [i.index for i in device.interfaces] == list(range(1, 25))
    # 10G: ifSpeed is capped at the Gauge32 maximum, ifHighSpeed says 10000.
    assert column(device, IF_ENTRY, 5, 21) == Gauge32(M32 - 1)
    assert column(device, IFX_ENTRY, 15, 21) == Gauge32(10_000)
    assert str(column(device, IFX_ENTRY, 18, 21)).startswith("uplink to dist-")
    down = [i.index for i in device.interfaces if not i.admin_up]
    assert len(down) == 2
    clock.advance(600)
    for index in down:
        assert column(device, IF_ENTRY, 7, index) == 2
        assert column(device, IF_ENTRY, 8, index) == 2
        assert column(device, IFX_ENTRY, 6, index) == Counter64(0)
    up = next(i.index for i in device.interfaces if i.admin_up)
    assert column(device, IF_ENTRY, 8, up) == 1
    assert column(device, IFX_ENTRY, 6, up) > 0
    macs = {i.mac for i in device.interfaces}
    assert len(macs) == 24
    assert all(len(m) == 6 and m[0] & 0x02 for m in macs)


def test_counters_grow_monotonically_at_a_varying_plausible_rate(clock):
    device = Device("lab-0007", 16, uptime=0, now=clock)
    up = [i for i in device.interfaces if i.admin_up]
    previous = {i.index: 0 for i in up}
    rates: dict[int, list[float]] = {i.index: [] for i in up}
    for _ in range(120):
        clock.advance(30)
        for iface in up:
            octets = column(device, IFX_ENTRY, 6, iface.index)
            assert isinstance(octets, Counter64)
            assert octets >= previous[iface.index]
            rates[iface.index].append((octets - previous[iface.index]) / 30)
            previous[iface.index] = octets
    for iface in up:
        observed = rates[iface.index]
        assert all(0.69 * iface.in_rate <= r <= 1.31 * iface.in_rate for r in observed)
        assert max(observed) / min(observed) > 1.1  # it does vary
        assert 0.01 <= iface.in_rate * 8 / iface.speed <= 0.6
        # Errors and discards: slow, and never ahead of the packets.
        assert column(device, IF_ENTRY, 14, iface.index) < 0.1 * 3600
        assert column(device, IF_ENTRY, 13, iface.index) <= column(
            device, IFX_ENTRY, 7, iface.index
        )


def test_32_bit_counters_are_the_64_bit_ones_mod_2_32_and_wrap(clock):
    device = Device("lab-0001", 8, uptime=0, now=clock)
    uplink = device.interfaces[-1]
    assert uplink.speed == 10**10
    wrapped = False
    previous = 0
    for _ in range(600):
        clock.advance(1)
        hc = column(device, IFX_ENTRY, 6, uplink.index)
        low = column(device, IF_ENTRY, 10, uplink.index)
        assert isinstance(low, Counter32)
        assert low == hc % M32
        assert column(device, IF_ENTRY, 11, uplink.index) == (
            column(device, IFX_ENTRY, 7, uplink.index) % M32
        )
        wrapped |= low < previous
        previous = low
    assert wrapped


def test_flap_freezes_counters_and_comes_back(clock):
    device = Device("lab-0001", 8, uptime=100, now=clock)
    index = next(i.index for i in device.interfaces if i.admin_up)
    before = column(device, IFX_ENTRY, 10, index)
    device.flap(index, down_for=30)
    assert column(device, IF_ENTRY, 8, index) == 2
    assert column(device, IF_ENTRY, 9, index) == TimeTicks(10_000)  # at sysUpTime 100 s
    clock.advance(29)
    assert column(device, IF_ENTRY, 8, index) == 2
    assert column(device, IFX_ENTRY, 10, index) == before
    clock.advance(2)
    assert column(device, IF_ENTRY, 8, index) == 1
    assert column(device, IF_ENTRY, 9, index) == TimeTicks(13_000)  # back at 130 s
    after = column(device, IFX_ENTRY, 10, index)
    # One second of traffic since it came back, not 31.
    assert before < after <= before + 1.31 * device.interface(index).out_rate * 1 + 1


def test_flap_without_duration_stays_down_until_set_up(clock):
    device = Device("lab-0001", 8, uptime=0, now=clock)
    index = next(i.index for i in device.interfaces if i.admin_up)
    device.flap(index)
    clock.advance(3600)
    assert column(device, IF_ENTRY, 8, index) == 2
    device.set_oper(index, True)
    assert column(device, IF_ENTRY, 8, index) == 1
    assert column(device, IF_ENTRY, 9, index) == TimeTicks(360_000)
    admin_down = next(i.index for i in device.interfaces if not i.admin_up)
    with pytest.raises(ValueError, match="administratively down"):
        device.set_oper(admin_down, True)
    with pytest.raises(ValueError, match=r"interfaces 1\.\.8"):
        device.flap(9)


def test_reboot_restarts_uptime_counters_and_bumps_boots(clock):
    device = Device("lab-0001", 8, now=clock)
    assert device.uptime() > 3600  # a fresh lab's devices have been up a while
    index = next(i.index for i in device.interfaces if i.admin_up)
    assert column(device, IFX_ENTRY, 6, index) > 0
    device.flap(index)
    device.stats.wrong_digests = 3
    device.reboot()
    assert device.boots == 2
    assert get(device, (1, 3, 6, 1, 6, 3, 10, 2, 1, 2, 0)) == 2
    assert get(device, (1, 3, 6, 1, 2, 1, 1, 3, 0)) == TimeTicks(0)
    assert get(device, (1, 3, 6, 1, 6, 3, 10, 2, 1, 3, 0)) == 0
    assert get(device, (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0)) == Counter32(0)
    assert column(device, IFX_ENTRY, 6, index) == Counter64(0)
    assert column(device, IF_ENTRY, 8, index) == 1
    assert column(device, IFX_ENTRY, 19, index) == TimeTicks(0)
    clock.advance(10)
    assert get(device, (1, 3, 6, 1, 2, 1, 1, 3, 0)) == TimeTicks(1000)
    assert get(device, (1, 3, 6, 1, 2, 1, 25, 1, 1, 0)) == TimeTicks(1000)
    assert device.engine_time() == 10


def test_silence_and_garbage_are_flags(clock):
    device = Device("lab-0001", 8, now=clock)
    device.silence(True)
    device.garbage(True)
    assert (device.is_silent, device.sends_garbage) == (True, True)
    device.silence(False)
    assert not device.is_silent


def test_host_resources_vary_within_bounds(clock):
    device = Device("lab-0001", 8, now=clock)
    loads, used = set(), set()
    for _ in range(100):
        clock.advance(120)
        for cpu in (196608, 196609):
            load = get(device, (1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 2, cpu))
            assert isinstance(load, int)
            assert 0 <= load <= 100
            loads.add(load)
        ram = get(device, (1, 3, 6, 1, 2, 1, 25, 2, 3, 1, 6, 1))
        size = get(device, (1, 3, 6, 1, 2, 1, 25, 2, 3, 1, 5, 1))
        assert isinstance(ram, int)
        assert isinstance(size, int)
        assert 0 < ram < size
        used.add(ram)
    assert len(loads) > 5
    assert len(used) > 5
    assert get(device, (1, 3, 6, 1, 2, 1, 25, 2, 3, 1, 2, 31)) == (1, 3, 6, 1, 2, 1, 25, 2, 1, 4)


@pytest.mark.parametrize("interfaces", [1, 8, 48])
def test_mib_table_is_sorted_complete_and_encodable(clock, interfaces):
    table = mib_table(interfaces)
    assert table.oids == sorted(set(table.oids))
    assert mib_table(interfaces) is table  # shared by every device with that many ports
    if_columns = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 16, 17, 19, 20}
    for col in if_columns:
        for i in range(1, interfaces + 1):
            assert (*IF_ENTRY, col, i) in table.position
    assert (*IF_ENTRY, 12, 1) not in table.position
    for col in range(1, 20):
        assert (*IFX_ENTRY, col, interfaces) in table.position
    assert len(table) == 7 + 1 + interfaces * (len(if_columns) + 19) + 1 + 12 + 2 + 4 + 6
    device = Device("lab-0001", interfaces, now=clock)
    t = device.tick()
    for n, oid in enumerate(table.oids):
        encode_value(table.getters[n](device, table.args[n], t))
        assert table.encoded[n][0] == 0x06, oid
