"""Table walks sized by what the device had last time.

A GETBULK asks for max-repetitions rows of every column; too few means more round trips,
too many means rows past the table's end (the next column's values, thrown away). After
the first poll the walk asks for as many rows as the table had, plus one to see the end,
so a table is read in one round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from netmon.snmp.engines import engine_for
from netmon.snmp.oids import Oid
from netmon.snmp.target import SnmpTarget
from netmon.snmp.values import VarBind

__all__ = ["known_rows", "walk_sized"]

MAX_REPETITIONS = 200
_rows_seen: dict[tuple[str, Oid], int] = {}
_lock = threading.Lock()


def walk_sized(
    target: SnmpTarget, columns: Sequence[Oid], *, first_guess: int | None = None
) -> dict[Oid, dict[Oid, VarBind]]:
    """Walk ``columns``; ``first_guess`` sizes the first walk of a table (ifNumber for
    ifTable), else the credentials' max_repetitions does."""
    key = (target.device, columns[0])
    with _lock:
        rows = _rows_seen.get(key, first_guess)
    repetitions = None if rows is None else min(rows + 1, MAX_REPETITIONS)
    table = engine_for(target).walk(target, columns, max_repetitions=repetitions)
    with _lock:
        _rows_seen[key] = max((len(v) for v in table.values()), default=0)
    return table


def known_rows(target: SnmpTarget, column: Oid) -> int | None:
    with _lock:
        return _rows_seen.get((target.device, column))
