"""The reboot check compares readings taken together: sysUpTime's advance against the
advance of the times sysUpTime itself was read at, not the counters' times.

Under CPU starvation the counter walk may come many seconds after sysUpTime was read; the
check used to take that gap for a restart (more than its 10 s slack) and drop the rate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from netmon.ingest.pipeline import IngestPipeline
from netmon.ingest.rates import RateCalculator
from netmon.records import DeviceEvent, Record, Sample, SeriesKey

T = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
KEY = SeriesKey.of("r1", "ifHCInOctets", {"ifName": "eth0"}, kind="counter", unit="bytes")
UPTIME = SeriesKey.of("r1", "sysUpTime", unit="s")


def s(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def test_a_counter_walk_15_s_after_the_uptime_read_gives_a_rate() -> None:
    calc = RateCalculator()
    # Previous poll: uptime and counters read together.
    first = calc.observe(Sample(KEY, s(0), 1_000), uptime_ticks=100_000, uptime_at=s(0))
    assert first.reason == "first"
    # This poll: uptime read at 30 s (advanced 30 s), the counters only at 45 s.
    got = calc.observe(Sample(KEY, s(45), 10_000), uptime_ticks=103_000, uptime_at=s(30))
    assert got.reason is None
    assert got.rate == 9_000 / 45
    # The positional hot path agrees.
    fast = RateCalculator()
    assert fast.rate(KEY, 1_000, s(0), 100_000, None, 64, None, s(0)) is None
    assert fast.rate(KEY, 10_000, s(45), 103_000, None, 64, None, s(30)) == 9_000 / 45


def test_a_real_reboot_is_still_a_reboot() -> None:
    calc = RateCalculator()
    calc.observe(Sample(KEY, s(0), 1_000), uptime_ticks=100_000, uptime_at=s(0))
    # Went down: restarted.
    got = calc.observe(Sample(KEY, s(45), 10_000), uptime_ticks=500, uptime_at=s(30))
    assert got.reason == "reboot"
    # Advanced much less than its own read times: restarted (and has run 5 s).
    calc.observe(Sample(KEY, s(60), 20_000), uptime_ticks=2_000_000, uptime_at=s(60))
    got = calc.observe(Sample(KEY, s(120), 30_000), uptime_ticks=2_000_000 + 500, uptime_at=s(115))
    assert got.reason == "reboot"
    fast = RateCalculator()
    fast.rate(KEY, 1_000, s(0), 100_000, None, 64, None, s(0))
    assert fast.rate(KEY, 10_000, s(45), 500, None, 64, None, s(30)) is None


def _poll(at: float, uptime_s: float, counter_delay: float, value: int) -> list[Record]:
    """One task's records with sysUpTime read at ``at`` and the counters later."""
    return [
        Sample(UPTIME, s(at), uptime_s),
        Sample(KEY, s(at + counter_delay), value),
    ]


def _rates(records: list[Record]) -> list[Sample]:
    return [r for r in records if isinstance(r, Sample) and r.series.metric.endswith(":rate")]


def test_the_pipeline_passes_each_reading_with_its_own_time() -> None:
    pipeline = IngestPipeline()
    pipeline.process("r1", _poll(0, 1_000.0, 0.5, 1_000))
    out = pipeline.process("r1", _poll(30, 1_030.0, 15.0, 30_000))
    (rate,) = _rates(out)
    assert rate.value == (30_000 - 1_000) / 44.5
    # Counters in a batch of their own (the interfaces task) use the reading before them.
    out = pipeline.process("r1", [Sample(UPTIME, s(60), 1_060.0)])
    out = pipeline.process("r1", [Sample(KEY, s(76), 46_000)])
    (rate,) = _rates(out)
    assert rate.value == 16_000 / (76 - 45)


def test_the_pipeline_still_sees_a_reboot() -> None:
    pipeline = IngestPipeline()
    pipeline.process("r1", _poll(0, 1_000.0, 0.5, 1_000))
    out = pipeline.process("r1", _poll(30, 12.0, 15.0, 30_000))
    assert _rates(out) == []
    assert [e.kind for e in out if isinstance(e, DeviceEvent)] == ["device.rebooted"]
