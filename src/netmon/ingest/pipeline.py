"""From one device's poll to what is stored: raw records plus derived rates and reboots.

For every counter sample the pipeline adds a ``<metric>:rate`` gauge (units per second),
using :class:`~netmon.ingest.rates.RateCalculator` with what the same poll says about the
device: ``sysUpTime`` (reboots), the interface's ``ifCounterDiscontinuityTime`` and its
``ifSpeed`` (the cap that keeps a reset from becoming a spike). An interval the calculator
cannot vouch for gives no rate at all, never a wrong one. A reboot (sysUpTime going
backwards) is also a ``device.rebooted`` event.

Records arrive task by task (``StoreProcessor``), so counters may come without the
sysUpTime the ``system`` task read a moment before: the device's last reading stands in
for it (up to ``UPTIME_REUSE_S``). Each reading goes to the calculator with its own time,
and the reboot check compares two readings' advance with their own times' advance, so a
counter walk delayed long after the sysUpTime read (CPU starvation) is no reboot.

After a restart, :meth:`IngestPipeline.seed` starts the state from what the store holds
(``netmon.ingest.seed``): the first poll then gives rates, and a reboot during the
restart is still a reboot.

Not thread-safe: the poller calls it from its event loop only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from netmon.ingest.rates import RateCalculator, RateSeed, octet_rate_cap
from netmon.records import DeviceEvent, Record, Sample, SeriesKey

__all__ = ["IngestPipeline"]

UPTIME_MODULUS = 2**32
# How long a sysUpTime reading stands in for counters read without one.
UPTIME_REUSE_S = 300.0
# Smallest Ethernet frame on the wire (64 bytes + preamble and gap): the most packets a
# link of a given speed can carry.
_MIN_FRAME_BITS = 84 * 8


class IngestPipeline:
    def __init__(self) -> None:
        self.rates = RateCalculator()
        self._rate_keys: dict[SeriesKey, SeriesKey] = {}
        self._uptime: dict[str, float] = {}
        # The device's last sysUpTime and the time it was read at.
        self._uptime_at: dict[str, tuple[float, datetime]] = {}

    def process(self, device: str, records: Sequence[Record]) -> list[Record]:
        """The poll's records followed by the rates and events derived from them."""
        uptime: float | None = None
        uptime_time: datetime | None = None
        speeds: dict[tuple[tuple[str, str], ...], float] = {}
        discontinuities: dict[tuple[tuple[str, str], ...], int] = {}
        for r in records:
            if isinstance(r, Sample) and r.series.kind == "gauge":
                metric = r.series.metric
                if metric == "sysUpTime":
                    uptime = float(r.value)
                    uptime_time = r.time
                elif metric == "ifSpeed":
                    speeds[r.series.labels] = float(r.value)
                elif metric == "ifCounterDiscontinuityTime":
                    discontinuities[r.series.labels] = int(r.value)
        out = list(records)
        ticks: int | None = None
        read_at: datetime | None = None
        if uptime is not None and uptime_time is not None:
            out.extend(self._reboot(device, uptime, records))
            self._uptime_at[device] = (uptime, uptime_time)
            ticks, read_at = int(uptime * 100) % UPTIME_MODULUS, uptime_time
        else:
            earlier = self._reading_from_earlier(device, records)
            if earlier is not None:
                ticks, read_at = earlier
        for r in records:
            if not isinstance(r, Sample) or r.series.kind != "counter":
                continue
            key = r.series
            speed = speeds.get(key.labels)
            try:
                rate = self.rates.rate(
                    key,
                    r.value,  # type: ignore[arg-type]  # checked there
                    r.time,
                    ticks,
                    discontinuities.get(key.labels),
                    key.bits,
                    _cap(key.unit, speed) if speed else None,
                    read_at,
                )
            except (TypeError, ValueError):
                # Not a counter value (a float, a negative number, too wide): no rate; the
                # writer stores or rejects the raw sample on its own terms.
                continue
            if rate is not None:
                out.append(Sample(self._rate_key(key), r.time, rate))
        return out

    def _reading_from_earlier(
        self, device: str, records: Sequence[Record]
    ) -> tuple[int, datetime] | None:
        """sysUpTime for counters that came without it: the poller (and a script) hand
        each task's records over separately, and ``system`` reads sysUpTime while
        ``interfaces`` reads the counters. The device's last reading and its own time, if
        recent: the reboot check compares readings by their own times, so it is as good
        as one read in the same poll."""
        seen = self._uptime_at.get(device)
        if seen is None:
            return None
        when = next((r.time for r in records if isinstance(r, Sample)), None)
        if when is None:
            return None
        age = (when - seen[1]).total_seconds()
        if not 0 <= age <= UPTIME_REUSE_S:
            return None
        return int(seen[0] * 100) % UPTIME_MODULUS, seen[1]

    def seed(
        self, counters: Iterable[RateSeed], uptimes: Mapping[str, tuple[float, datetime]]
    ) -> int:
        """Start from stored state after a restart: each device's last sysUpTime (seconds,
        read at) for the reboot event and check, and each counter's last raw value (with
        that reading; see ``netmon.ingest.seed``). State already held wins. Returns how
        many counters were seeded."""
        for device, reading in uptimes.items():
            self._uptime.setdefault(device, reading[0])
            self._uptime_at.setdefault(device, reading)
        return self.rates.seed(counters)

    def _reboot(self, device: str, uptime: float, records: Sequence[Record]) -> list[DeviceEvent]:
        previous = self._uptime.get(device)
        self._uptime[device] = uptime
        if previous is None or uptime >= previous:
            return []
        when = next(r.time for r in records if isinstance(r, Sample))
        return [
            DeviceEvent(
                device=device,
                time=when,
                kind="device.rebooted",
                severity="warning",
                message=f"{device} restarted (sysUpTime {previous:.0f}s -> {uptime:.0f}s)",
                attributes={"uptime_s": f"{uptime:.2f}", "previous_uptime_s": f"{previous:.2f}"},
            )
        ]

    def _rate_key(self, key: SeriesKey) -> SeriesKey:
        rate = self._rate_keys.get(key)
        if rate is None:
            unit = f"{key.unit}/s" if key.unit else "1/s"
            rate = SeriesKey(key.device, f"{key.metric}:rate", key.labels, "gauge", unit)
            self._rate_keys[key] = rate
        return rate

    def forget_device(self, device: str) -> None:
        """Drop state of a device removed from the inventory."""
        self._uptime.pop(device, None)
        self._uptime_at.pop(device, None)
        for key in [k for k in self._rate_keys if k.device == device]:
            self.rates.forget(key)
            del self._rate_keys[key]


def _cap(unit: str, speed_bps: float | None) -> float | None:
    if not speed_bps:
        return None
    if unit == "bytes":
        return octet_rate_cap(int(speed_bps))
    if unit == "packets":
        return speed_bps / _MIN_FRAME_BITS * 1.05
    return None
