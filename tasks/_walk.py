"""Table walks sized by what the device had last time.

A GETBULK asks for max-repetitions rows of every column; too few means more round trips,
too many means rows past the table's end (the next column's values, thrown away). After
the first poll the walk asks for as many rows as the table had, plus one to see the end,
so a table is read in one round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from netmon.snmp.engines import engine_for
from netmon.snmp.oids import Oid
from netmon.snmp.target import SnmpTarget
from netmon.snmp.values import VarBind, answered_at

__all__ = ["known_rows", "read_rows", "walk_sized"]

MAX_REPETITIONS = 200
# Values in one GET of known rows: an answer about the size of a 64-repetition GETBULK's.
VALUES_PER_GET = 64
_rows_seen: dict[tuple[str, Oid], int] = {}
_lock = threading.Lock()


def walk_sized(
    target: SnmpTarget,
    columns: Sequence[Oid],
    *,
    first_guess: int | None = None,
    times: dict[Oid, dict[Oid, float]] | None = None,
) -> dict[Oid, dict[Oid, VarBind]]:
    """Walk ``columns``; ``first_guess`` sizes the first walk of a table (ifNumber for
    ifTable), else the credentials' max_repetitions does. ``times`` as for
    ``SnmpEngine.walk``."""
    key = (target.device, columns[0])
    with _lock:
        rows = _rows_seen.get(key, first_guess)
    repetitions = None if rows is None else min(rows + 1, MAX_REPETITIONS)
    table = engine_for(target).walk(target, columns, max_repetitions=repetitions, times=times)
    with _lock:
        _rows_seen[key] = max((len(v) for v in table.values()), default=0)
    return table


def read_rows(
    target: SnmpTarget,
    columns: Sequence[Oid],
    rows: Sequence[Oid],
    *,
    times: dict[Oid, dict[Oid, float]] | None = None,
) -> dict[Oid, dict[Oid, VarBind]]:
    """``columns`` of the table rows ``rows`` (indexes), by GET: what a walk of sparse
    columns returns, in fewer round trips. A walk reads column after column, one request
    each at least (seven for the ifTable columns netmon stores); a GET asks for any cells,
    so 64 at a time. A cell the agent has not is left out, as a walk would."""
    engine = engine_for(target)
    table: dict[Oid, dict[Oid, VarBind]] = {c: {} for c in columns}
    if times is not None:
        for column in columns:
            times[column] = {}
    cells = [(column, index) for index in rows for column in columns]
    for start in range(0, len(cells), VALUES_PER_GET):
        chunk = cells[start : start + VALUES_PER_GET]
        sent = time.time()
        values = engine.get(target, [(*column, *index) for column, index in chunk])
        at = answered_at(sent, time.time())
        for (column, index), vb in zip(chunk, values, strict=True):
            if vb.missing:
                continue
            table[column][index] = vb
            if times is not None:
                times[column][index] = at
    return table


def known_rows(target: SnmpTarget, column: Oid) -> int | None:
    with _lock:
        return _rows_seen.get((target.device, column))
