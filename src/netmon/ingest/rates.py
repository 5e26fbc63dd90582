"""Per-second rates from raw SNMP counters, without the spikes that give them a bad name.

netmon stores the raw counters; rates are derived. The derivation is where other collectors
go wrong (snmpcollector and snmp_exporter users report it): a device reboot, an interface
module re-seated or an agent restart resets counters, and a naive ``(new - old) / dt``, or a
wrap assumed on every decrease, draws a spike of petabytes per second. So a rate is only
given when the interval is known to be continuous:

* the device did not restart in between: its sysUpTime advanced about as far as the wall
  clock did between the two sysUpTime readings (each reading's own time, not the
  counters': under CPU load the counter walk may come many seconds after sysUpTime was
  read, and that must not look like a restart). sysUpTime is 32 bits of hundredths of a
  second and wraps itself after ~497 days, which is not a restart;
* ifCounterDiscontinuityTime, where the device has it, did not change;
* a decrease is taken as one wrap only when that is plausible: a 32-bit counter whose
  wrapped delta stays under the cap (or there is no cap to judge by); a 64-bit counter
  cannot wrap within a polling interval, so its decrease is a reset;
* the rate stays under the cap, typically derived from ifSpeed/ifHighSpeed.

Otherwise the result says why there is no rate, and the state restarts from the new sample,
so the next interval is measured cleanly. Deltas are exact integers (counters reach
2**64-1, far past the 2**53 a float holds exactly); only the final division rounds.

After a restart the state can be seeded (:meth:`RateCalculator.seed`) from the last raw
values stored, so the first poll of the new process already gives rates.

Pure: no I/O, no clock; times come from the samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from netmon.records import Sample, SeriesKey

__all__ = [
    "CounterBits",
    "RateCalculator",
    "RateReason",
    "RateResult",
    "RateSeed",
    "octet_rate_cap",
]

CounterBits = Literal[32, 64]
RateReason = Literal[
    "first", "reboot", "discontinuity", "wrap_implausible", "over_cap", "time_not_advancing"
]

UPTIME_MODULUS = 2**32  # sysUpTime is TimeTicks: 32 bits of 1/100 s
# How far sysUpTime may drift from the collector's clock over one interval (poll latency,
# retries, clock skew) before the interval counts as a restart: 10 s or 10 %.
UPTIME_SLACK_TICKS = 1_000
UPTIME_SLACK_FRACTION = 10
_MICROSECONDS = timedelta(microseconds=1)


def octet_rate_cap(speed_bps: int | None, margin: float = 1.05) -> float | None:
    """Bytes per second an octet counter can plausibly grow by on a link of ``speed_bps``.

    ``None`` when the speed is unknown (ifSpeed 0, or absent): then no cap is applied.
    """
    if not speed_bps or speed_bps <= 0:
        return None
    return speed_bps / 8 * margin


@dataclass(frozen=True, slots=True)
class RateResult:
    """A rate in units per second, or ``None`` and the reason there is none.

    ``delta`` is the exact counter increase over the interval when one was measured.
    """

    rate: float | None
    reason: RateReason | None = None
    delta: int | None = None


class _Seen(NamedTuple):
    # A tuple: made for every counter of every poll, and a tuple is the cheapest record.
    value: int
    time: datetime
    uptime_ticks: int | None
    discontinuity: int | None
    bits: CounterBits
    uptime_at: datetime | None = None  # when uptime_ticks was read


class RateSeed(NamedTuple):
    """The last stored raw value of a counter series (a restart's starting point): its
    identity without width (the store keeps none; the next sample's key has it), value and
    time, and the device's sysUpTime reading of that time, if known, with its own time."""

    device: str
    metric: str
    labels: tuple[tuple[str, str], ...]
    value: int
    time: datetime
    uptime_ticks: int | None = None
    uptime_at: datetime | None = None


class RateCalculator:
    """Keeps the last sample of each counter series and turns the next one into a rate.

    One instance per collector; not thread-safe (give each poller thread its own, or lock).
    """

    def __init__(self) -> None:
        self._last: dict[SeriesKey, _Seen] = {}
        # Seeds not yet claimed by a sample, by (device, metric, labels).
        self._seeds: dict[tuple[str, str, tuple[tuple[str, str], ...]], RateSeed] = {}

    def __len__(self) -> int:
        return len(self._last)

    def forget(self, key: SeriesKey) -> None:
        """Drop a series' state (interface removed, device decommissioned)."""
        self._last.pop(key, None)
        self._seeds.pop((key.device, key.metric, key.labels), None)

    def seed(self, seeds: Iterable[RateSeed]) -> int:
        """Start series from stored values (after a restart): the next sample of each is
        judged against its seed as against a sample of this process. A series that has
        state already keeps it. Returns how many seeds were taken."""
        taken = 0
        for s in seeds:
            if s.uptime_ticks is not None and not 0 <= s.uptime_ticks < UPTIME_MODULUS:
                continue
            if not isinstance(s.value, int) or s.value < 0:
                continue
            self._seeds[(s.device, s.metric, s.labels)] = s
            taken += 1
        return taken

    def _from_seed(self, key: SeriesKey) -> _Seen | None:
        if not self._seeds:
            return None
        s = self._seeds.pop((key.device, key.metric, key.labels), None)
        if s is None or s.value >= 2**key.bits:
            return None
        return _Seen(s.value, s.time, s.uptime_ticks, None, key.bits, s.uptime_at)

    def observe(
        self,
        sample: Sample,
        *,
        uptime_ticks: int | None = None,
        discontinuity: int | None = None,
        counter_bits: CounterBits = 64,
        max_rate: float | None = None,
        uptime_at: datetime | None = None,
    ) -> RateResult:
        """Take the next raw value of a counter and return the rate since the previous one.

        ``uptime_ticks`` is the device's sysUpTime and ``discontinuity`` the interface's
        ifCounterDiscontinuityTime, both read in the same poll; ``uptime_at`` is when that
        sysUpTime was read (without it, the counter's time stands in); ``max_rate`` is the
        largest believable rate in units per second (see :func:`octet_rate_cap`).
        """
        value = sample.value
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{sample.series.metric}: a counter value must be an int")
        if not 0 <= value < 2**counter_bits:
            raise ValueError(f"{sample.series.metric}: {value} is not a {counter_bits}-bit counter")
        if uptime_ticks is not None and not 0 <= uptime_ticks < UPTIME_MODULUS:
            raise ValueError(f"sysUpTime {uptime_ticks} is not 32-bit TimeTicks")
        seen = _Seen(value, sample.time, uptime_ticks, discontinuity, counter_bits, uptime_at)
        previous = self._last.get(sample.series)
        if previous is None:
            previous = self._from_seed(sample.series)
        # Whatever the verdict, the next interval is measured from this sample.
        self._last[sample.series] = seen
        if previous is None:
            return RateResult(None, "first")
        return _judge(previous, seen, max_rate)

    def rate(
        self,
        key: SeriesKey,
        value: int,
        time: datetime,
        uptime_ticks: int | None,
        discontinuity: int | None,
        counter_bits: CounterBits,
        max_rate: float | None,
        uptime_at: datetime | None = None,
    ) -> float | None:
        """``observe(...).rate`` for the ingest pipeline's hot path (every counter of every
        poll): positional, no Sample or RateResult made, the common interval (continuous,
        increasing) judged inline. Same verdicts and errors as ``observe``."""
        if (
            type(value) is not int
            or not 0 <= value < _COUNTER_LIMIT[counter_bits]
            or (uptime_ticks is not None and not 0 <= uptime_ticks < UPTIME_MODULUS)
        ):
            sample = Sample(key, time, value)
            return self.observe(
                sample,
                uptime_ticks=uptime_ticks,
                discontinuity=discontinuity,
                counter_bits=counter_bits,
                max_rate=max_rate,
                uptime_at=uptime_at,
            ).rate
        seen = _Seen(value, time, uptime_ticks, discontinuity, counter_bits, uptime_at)
        last = self._last
        old = last.get(key)
        if old is None:
            old = self._from_seed(key)
        last[key] = seen
        if old is None:
            return None
        micros = (time - old.time) // _MICROSECONDS
        if (
            micros > 0
            and value >= old.value
            and old.bits == counter_bits
            and (old.discontinuity is None or old.discontinuity == discontinuity)
            and not _restarted(old, seen, micros)
        ):
            rate = (value - old.value) * 1_000_000 / micros
            return None if max_rate is not None and rate > max_rate else rate
        return _judge(old, seen, max_rate).rate


_COUNTER_LIMIT = {32: 2**32, 64: 2**64}


def _judge(old: _Seen, new: _Seen, max_rate: float | None) -> RateResult:
    micros = (new.time - old.time) // _MICROSECONDS
    if micros <= 0:
        return RateResult(None, "time_not_advancing")
    if _restarted(old, new, micros):
        return RateResult(None, "reboot")
    if old.bits != new.bits or (
        old.discontinuity is not None
        and new.discontinuity is not None
        and old.discontinuity != new.discontinuity
    ):
        return RateResult(None, "discontinuity")
    if new.value >= old.value:
        delta = new.value - old.value
        rate = delta * 1_000_000 / micros  # int / int: exact until this one rounding
        if max_rate is not None and rate > max_rate:
            return RateResult(None, "over_cap", delta)
        return RateResult(rate, None, delta)
    # A decrease: one wrap, or a reset the uptime checks could not see.
    if max_rate is None and new.bits == 64:
        return RateResult(None, "wrap_implausible")
    delta = new.value + 2**new.bits - old.value
    rate = delta * 1_000_000 / micros
    if max_rate is not None and rate > max_rate:
        return RateResult(None, "wrap_implausible")
    return RateResult(rate, None, delta)


def _restarted(old: _Seen, new: _Seen, micros: int) -> bool:
    """Whether sysUpTime says the device restarted between two polls.

    sysUpTime's advance is compared with the advance of the times the two sysUpTime
    readings were taken at (``micros``, the counters' interval, only when a reading's time
    is unknown): readings taken together, so a counter walk that comes long after the
    sysUpTime read (CPU starvation) is no restart. Going backwards is a restart unless it
    is sysUpTime's own wrap at 2**32 ticks; so is advancing much less than the clock (it
    restarted and has run for less than the interval). Modular arithmetic handles the
    wrap: across it, the elapsed ticks still match the clock; across a restart they do not.
    """
    old_ticks, new_ticks = old.uptime_ticks, new.uptime_ticks
    if old_ticks is None or new_ticks is None:
        return False
    if old.uptime_at is not None and new.uptime_at is not None:
        micros = (new.uptime_at - old.uptime_at) // _MICROSECONDS
    wall_ticks = micros // 10_000
    elapsed = (new_ticks - old_ticks) % UPTIME_MODULUS
    slack = max(UPTIME_SLACK_TICKS, wall_ticks // UPTIME_SLACK_FRACTION)
    return abs(elapsed - wall_ticks) > slack
