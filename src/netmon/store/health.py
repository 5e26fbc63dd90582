"""Poll health per device, and reachability changes as device events.

The poller reports every poll's outcome here. Health rows are state (one per device,
overwritten) and are written in batches a second apart; a failed write is retried with
the next batch (the latest outcome per device wins). Reachability (did the device answer
at all?) is tracked in memory, seeded from the table at start so a restart does not
announce every device again; a change becomes a ``device.unreachable`` /
``device.reachable`` event, which the caller stores with the poll's samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from netmon.records import DeviceEvent
from netmon.store.database import Database

__all__ = ["PollHealthStore", "PollOutcome"]

# Error classes that mean "no answer": the device (or the path to it) is down. Any other
# error means it answered, even if wrongly, so it is reachable.
UNREACHABLE = frozenset({"timeout"})

_UPSERT = """
INSERT INTO poll_health AS h (device_id, last_poll, last_success, last_error_class, last_error,
    last_error_at, duration_ms, consecutive_failures, overruns, reachable)
SELECT d.id, i.last_poll, i.last_success, i.error_class, i.error, i.error_at,
       i.duration_ms, i.failures, i.overruns, i.reachable
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[],
            $6::timestamptz[], $7::float8[], $8::int[], $9::bigint[], $10::bool[])
     AS i(name, last_poll, last_success, error_class, error, error_at, duration_ms, failures,
          overruns, reachable)
JOIN devices d ON d.name = i.name
ON CONFLICT (device_id) DO UPDATE SET
    last_poll = excluded.last_poll,
    last_success = coalesce(excluded.last_success, h.last_success),
    last_error_class = coalesce(excluded.last_error_class, h.last_error_class),
    last_error = coalesce(excluded.last_error, h.last_error),
    last_error_at = coalesce(excluded.last_error_at, h.last_error_at),
    duration_ms = excluded.duration_ms,
    -- failures counts this batch's failures since its last success; a success resets.
    consecutive_failures = CASE WHEN excluded.last_success IS NOT NULL
                                 AND excluded.last_success >= excluded.last_poll
                                THEN 0
                                WHEN excluded.last_success IS NOT NULL
                                THEN excluded.consecutive_failures
                                ELSE h.consecutive_failures + excluded.consecutive_failures END,
    overruns = h.overruns + excluded.overruns,
    reachable = excluded.reachable
"""

_LOAD = """
SELECT d.name, h.reachable FROM poll_health h JOIN devices d ON d.id = h.device_id
"""


@dataclass(frozen=True, slots=True)
class PollOutcome:
    device: str
    time: datetime
    duration_ms: float
    error_class: str | None = None  # None: success
    error: str | None = None
    overrun: bool = False  # the poll was skipped because the previous one still ran

    @property
    def reachable(self) -> bool:
        return self.error_class not in UNREACHABLE


_OVERRUNS = """
UPDATE poll_health h SET overruns = h.overruns + i.overruns
FROM unnest($1::text[], $2::bigint[]) AS i(name, overruns)
JOIN devices d ON d.name = i.name
WHERE h.device_id = d.id
"""


@dataclass
class _Pending:
    last: PollOutcome | None  # None: only overruns since the last flush
    last_success: datetime | None
    failures: int
    overruns: int
    error_class: str | None
    error: str | None
    error_at: datetime | None = None


class PollHealthStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._reachable: dict[str, bool] = {}
        self._pending: dict[str, _Pending] = {}

    async def load(self) -> None:
        for row in await self.db.pool.fetch(_LOAD):
            self._reachable[row["name"]] = row["reachable"]

    def record(self, outcome: PollOutcome) -> list[DeviceEvent]:
        """Note one outcome; return the reachability event it causes, if any."""
        p = self._pending.get(outcome.device)
        if p is None:
            p = self._pending[outcome.device] = _Pending(None, None, 0, 0, None, None)
        if outcome.overrun:
            p.overruns += 1
            return []
        p.last = outcome
        if outcome.error_class is None:
            p.last_success, p.failures = outcome.time, 0
        else:
            p.failures += 1
            p.error_class, p.error = outcome.error_class, outcome.error
            p.error_at = outcome.time
        return self._reachability(outcome)

    def _reachability(self, outcome: PollOutcome) -> list[DeviceEvent]:
        before = self._reachable.get(outcome.device)
        now = outcome.reachable
        self._reachable[outcome.device] = now
        if before is None and now:
            return []  # first sight of a device that answers: nothing changed
        if before == now:
            return []
        if now:
            back = DeviceEvent(outcome.device, outcome.time, "device.reachable", "answering again")
            return [back]
        return [
            DeviceEvent(
                outcome.device,
                outcome.time,
                "device.unreachable",
                outcome.error or "no answer",
                severity="critical",
                attributes={"error_class": outcome.error_class or ""},
            )
        ]

    def is_reachable(self, device: str) -> bool | None:
        return self._reachable.get(device)

    async def flush(self) -> int:
        """Write what changed since the last flush; keep it for the next one on failure."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        rows = [(name, p) for name, p in batch.items() if p.last is not None]
        overruns = [(name, p.overruns) for name, p in batch.items() if p.last is None]
        try:
            if overruns:
                await self.db.pool.execute(
                    _OVERRUNS, [n for n, _ in overruns], [c for _, c in overruns]
                )
            await self._upsert(rows)
        except BaseException:
            for name, p in batch.items():
                self._pending.setdefault(name, p)
            raise
        return len(batch)

    async def _upsert(self, rows: list[tuple[str, _Pending]]) -> None:
        if not rows:
            return
        lasts = [p.last for _, p in rows if p.last is not None]
        await self.db.pool.execute(
            _UPSERT,
            [name for name, _ in rows],
            [last.time for last in lasts],
            [p.last_success for _, p in rows],
            [p.error_class for _, p in rows],
            [p.error for _, p in rows],
            [p.error_at for _, p in rows],
            [last.duration_ms for last in lasts],
            [p.failures for _, p in rows],
            [p.overruns for _, p in rows],
            [last.reachable for last in lasts],
        )
