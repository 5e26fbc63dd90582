"""Rates from raw counters: wraps, restarts, caps and exact deltas, on real-looking sequences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from netmon.ingest.rates import RateCalculator, RateResult, octet_rate_cap
from netmon.records import Sample, SeriesKey

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
IN_OCTETS = SeriesKey.of(
    "edge1", "ifHCInOctets", {"ifName": "xe-0/0/1"}, kind="counter", unit="bytes"
)
IN_OCTETS_32 = SeriesKey.of(
    "access7", "ifInOctets", {"ifName": "Fa0/12"}, kind="counter", unit="bytes"
)
ONE_DAY_TICKS = 8_640_000
GIG = octet_rate_cap(1_000_000_000)  # 131.25 MB/s
FAST_ETHERNET = octet_rate_cap(100_000_000)  # 13.125 MB/s


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def poll(
    calc: RateCalculator,
    value: int,
    seconds: float,
    key: SeriesKey = IN_OCTETS,
    **kwargs: object,
) -> RateResult:
    return calc.observe(Sample(key, at(seconds), value), **kwargs)  # type: ignore[arg-type]


def test_steady_64_bit_octets_give_steady_rates():
    calc = RateCalculator()
    start = 184_467_440_737_095  # a router up for months
    results = [
        poll(calc, start + i * 7_500_000, 60 * i, uptime_ticks=ONE_DAY_TICKS + 6_000 * i)
        for i in range(5)
    ]
    assert results[0] == RateResult(None, "first")
    assert [r.rate for r in results[1:]] == [125_000.0] * 4
    assert all(r.delta == 7_500_000 and r.reason is None for r in results[1:])


def test_32_bit_wrap_with_a_plausible_rate():
    calc = RateCalculator()
    kw = {"counter_bits": 32, "max_rate": FAST_ETHERNET}
    poll(calc, 2**32 - 1_000_000, 0, IN_OCTETS_32, **kw)
    result = poll(calc, 5_000_000, 60, IN_OCTETS_32, **kw)
    assert result.delta == 6_000_000
    assert result.rate == 100_000.0


def test_32_bit_wrap_without_a_cap_is_assumed():
    calc = RateCalculator()
    poll(calc, 2**32 - 10, 0, IN_OCTETS_32, counter_bits=32)
    result = poll(calc, 50, 10, IN_OCTETS_32, counter_bits=32)
    assert result == RateResult(6.0, None, 60)


def test_32_bit_wrap_over_the_cap_is_a_reset_and_the_next_interval_is_clean():
    calc = RateCalculator()
    kw = {"counter_bits": 32, "max_rate": octet_rate_cap(10_000_000)}
    poll(calc, 3_000_000_000, 0, IN_OCTETS_32, **kw)
    # A wrap would mean 1.29 GB in 60 s on a 10 Mb/s port: the counter was reset.
    assert poll(calc, 1_000, 60, IN_OCTETS_32, **kw) == RateResult(None, "wrap_implausible")
    assert poll(calc, 601_000, 120, IN_OCTETS_32, **kw).rate == 10_000.0


def test_reboot_with_counters_reset_shows_no_spike():
    calc = RateCalculator()
    poll(calc, 9_000_000_000, 0, uptime_ticks=40 * ONE_DAY_TICKS, max_rate=GIG)
    poll(calc, 9_007_500_000, 60, uptime_ticks=40 * ONE_DAY_TICKS + 6_000, max_rate=GIG)
    # Rebooted: up 30 s, counters restarted from zero.
    rebooted = poll(calc, 50_000, 120, uptime_ticks=3_000, max_rate=GIG)
    assert rebooted == RateResult(None, "reboot")
    after = poll(calc, 7_550_000, 180, uptime_ticks=9_000, max_rate=GIG)
    assert after.rate == 125_000.0


def test_reboot_is_seen_even_when_the_counter_went_up():
    calc = RateCalculator()
    # Polled 10 s after boot, then rebooted again and busy: the counter alone looks fine.
    poll(calc, 20_000, 0, uptime_ticks=1_000)
    result = poll(calc, 3_000_000_000, 3_600, uptime_ticks=120_000)
    assert result == RateResult(None, "reboot")


def test_sysuptime_wrap_at_2_32_ticks_is_not_a_reboot():
    calc = RateCalculator()
    poll(calc, 1_000_000, 0, uptime_ticks=2**32 - 3_000)  # 497 days up, 30 s before wrap
    result = poll(calc, 8_500_000, 60, uptime_ticks=3_000)
    assert result == RateResult(125_000.0, None, 7_500_000)


def test_uptime_a_little_off_the_wall_clock_is_not_a_reboot():
    calc = RateCalculator()
    poll(calc, 0, 0, uptime_ticks=ONE_DAY_TICKS)
    # A retried poll: sampled 4 s later than the agent's clock says.
    assert poll(calc, 6_000, 64, uptime_ticks=ONE_DAY_TICKS + 6_000).reason is None


def test_counter_discontinuity_time_change():
    calc = RateCalculator()
    poll(calc, 5_000_000, 0, discontinuity=1_234)
    assert poll(calc, 6_000_000, 60, discontinuity=1_234).rate == pytest.approx(16_666.67, 1e-4)
    # Line card re-seated: its counters restarted, the device stayed up.
    assert poll(calc, 6_500_000, 120, discontinuity=987_654) == RateResult(None, "discontinuity")
    assert poll(calc, 7_100_000, 180, discontinuity=987_654).rate == 10_000.0


def test_64_bit_decrease_is_a_reset_not_a_wrap():
    calc = RateCalculator()
    poll(calc, 123_456_789_012, 0)
    assert poll(calc, 1_000, 60) == RateResult(None, "wrap_implausible")
    assert poll(calc, 7_501_000, 120).rate == 125_000.0
    poll(calc, 123_456_789_012, 180, max_rate=GIG)
    assert poll(calc, 1_000, 240, max_rate=GIG) == RateResult(None, "wrap_implausible")


def test_over_the_cap_without_a_wrap():
    calc = RateCalculator()
    poll(calc, 0, 0, max_rate=GIG)
    result = poll(calc, 10**12, 60, max_rate=GIG)
    assert result == RateResult(None, "over_cap", 10**12)


def test_exact_delta_at_the_top_of_64_bits():
    calc = RateCalculator()
    poll(calc, 2**64 - 2, 0)
    result = poll(calc, 2**64 - 1, 1)
    assert result == RateResult(1.0, None, 1)
    assert float(2**64 - 1) - float(2**64 - 2) == 0.0  # what a float path would have said


def test_exact_delta_past_2_53():
    calc = RateCalculator()
    poll(calc, 2**53 + 1, 0)
    result = poll(calc, 2**53 + 4, 3)
    assert result.delta == 3
    assert result.rate == 1.0
    assert float(2**53 + 4) - float(2**53 + 1) == 4.0  # float would have lost a byte


def test_time_not_advancing():
    calc = RateCalculator()
    poll(calc, 1_000, 0)
    assert poll(calc, 1_500, 0) == RateResult(None, "time_not_advancing")  # re-polled
    assert poll(calc, 1_600, -5) == RateResult(None, "time_not_advancing")  # clock stepped back
    assert poll(calc, 2_600, 5).rate == 100.0


def test_series_are_independent_and_can_be_forgotten():
    calc = RateCalculator()
    out = SeriesKey.of("edge1", "ifHCOutOctets", {"ifName": "xe-0/0/1"}, kind="counter")
    poll(calc, 100, 0)
    assert poll(calc, 5, 0, out).reason == "first"
    assert poll(calc, 700, 60).rate == 10.0
    calc.forget(IN_OCTETS)
    assert len(calc) == 1
    assert poll(calc, 800, 120).reason == "first"


def test_width_change_is_a_discontinuity():
    calc = RateCalculator()
    poll(calc, 4_000_000_000, 0, counter_bits=32)
    assert poll(calc, 9_000_000_000, 60).reason == "discontinuity"


def test_bad_values_are_refused():
    calc = RateCalculator()
    with pytest.raises(ValueError, match="32-bit"):
        poll(calc, 2**32, 0, counter_bits=32)
    with pytest.raises(ValueError, match="64-bit"):
        poll(calc, -1, 0)
    with pytest.raises(TypeError):
        poll(calc, 1.5, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TimeTicks"):
        poll(calc, 1, 0, uptime_ticks=2**32)


def test_octet_rate_cap():
    assert octet_rate_cap(1_000_000_000) == pytest.approx(131_250_000.0)
    assert octet_rate_cap(0) is None
    assert octet_rate_cap(None) is None
