"""The ingest pipeline gets a poll's records task by task: counters read by one task are
judged with the sysUpTime another task read just before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from netmon.ingest.pipeline import IngestPipeline
from netmon.records import Sample, SeriesKey

T0 = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
UPTIME = SeriesKey("r1", "sysUpTime", unit="s")
OCTETS = SeriesKey("r1", "ifHCInOctets", (("interface", "e0"),), "counter", "bytes")


def poll(pipeline: IngestPipeline, at: datetime, uptime: float, octets: int) -> list[Sample]:
    """The system task's records, then the interfaces task's, as the processor hands them
    over; the rates derived."""
    out = pipeline.process("r1", [Sample(UPTIME, at, uptime)])
    out += pipeline.process("r1", [Sample(OCTETS, at + timedelta(milliseconds=20), octets)])
    return [s for s in out if isinstance(s, Sample) and s.series.metric.endswith(":rate")]


def test_a_reboot_between_polls_gives_no_rate_though_the_counter_grew():
    pipeline = IngestPipeline()
    assert poll(pipeline, T0, 100_000.0, 1_000) == []
    (rate,) = poll(pipeline, T0 + timedelta(seconds=60), 100_060.0, 7_000)
    assert rate.value == 100.0
    # Restarted 30 s ago: the counter started again from 0 and reads more than before.
    assert poll(pipeline, T0 + timedelta(seconds=120), 30.0, 9_000) == []
    (rate,) = poll(pipeline, T0 + timedelta(seconds=180), 90.0, 15_000)
    assert rate.value == 100.0


def test_an_old_reading_does_not_stand_in():
    pipeline = IngestPipeline()
    pipeline.process("r1", [Sample(UPTIME, T0, 100_000.0)])
    later = T0 + timedelta(hours=1)
    pipeline.process("r1", [Sample(OCTETS, later, 1_000)])
    out = pipeline.process("r1", [Sample(OCTETS, later + timedelta(seconds=60), 7_000)])
    # No uptime to judge by: the rate is given on the counters alone.
    assert [s.value for s in out if s.series.metric.endswith(":rate")] == [100.0]


def test_the_pipelines_fast_path_gives_the_rates_observe_gives():
    import random

    from netmon.ingest.rates import RateCalculator

    rng = random.Random(7)
    slow, fast = RateCalculator(), RateCalculator()
    key = SeriesKey("r1", "c", kind="counter")
    value, ticks, at, disc = 0, 5_000, T0, 1
    for _ in range(5_000):
        step = rng.choice(["grow", "grow", "wrap", "reset", "reboot", "stall", "disc", "none"])
        bits = rng.choice([32, 64])
        at += timedelta(seconds=rng.choice([0, 30, 60]))
        ticks = (ticks + 6_000) % 2**32 if step != "reboot" else 100
        value = {
            "grow": value + rng.randrange(10**6),
            "wrap": (value + 2**31) % 2**bits,
            "reset": 0,
        }.get(step, value) % 2**bits
        disc += step == "disc"
        uptime = None if step == "none" else ticks
        cap = rng.choice([None, 50_000.0, 1e12])
        expected = slow.observe(
            Sample(key, at, value),
            uptime_ticks=uptime,
            discontinuity=disc,
            counter_bits=bits,  # type: ignore[arg-type]
            max_rate=cap,
        ).rate
        got = fast.rate(key, value, at, uptime, disc, bits, cap)  # type: ignore[arg-type]
        assert got == expected
