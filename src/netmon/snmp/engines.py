"""The SNMP engines behind one small interface, and which one a device uses.

Two engines implement :class:`SnmpEngine`: gufo-snmp (``netmon.snmp.gufo_engine``,
compiled, the default) and pysnmp (``netmon.snmp.client``, pure Python, the reference:
it also speaks 3DES and SNMPv3 contexts, which gufo-snmp does not). The inventory picks
one per defaults, group or host with ``snmp.engine``; both return the same
:class:`~netmon.snmp.values.VarBind` values and raise the same ``netmon.errors``, so a
task never knows which one answered.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from netmon.snmp.oids import Oid
from netmon.snmp.target import SnmpTarget
from netmon.snmp.values import VarBind

__all__ = ["SnmpEngine", "engine_for", "engines_in_use"]


class SnmpEngine(Protocol):
    name: str
    stats: Counter[str]

    def get(self, target: SnmpTarget, oids: Sequence[Oid]) -> list[VarBind]:
        """One value (or a Missing marker) per OID, in order."""
        ...

    def walk(
        self,
        target: SnmpTarget,
        columns: Sequence[Oid],
        *,
        max_repetitions: int | None = None,
        times: dict[Oid, dict[Oid, float]] | None = None,
    ) -> dict[Oid, dict[Oid, VarBind]]:
        """Whole table columns: {column: {index: varbind}}; ``max_repetitions`` rows per
        request and column. With ``times``, ``times[column][index]`` is when the device
        answered with that cell (epoch seconds, ``values.answered_at``): a walk is many
        round trips, and counters' rates need each reading's own time.
        """
        ...


def engine_for(target: SnmpTarget) -> SnmpEngine:
    """The process-wide engine that ``target``'s credentials name."""
    name = target.credentials.engine
    engine = _made.get(name)
    if engine is None:
        engine = _made[name] = _make(name)
    return engine


_made: dict[str, SnmpEngine] = {}


def _make(name: str) -> SnmpEngine:
    # Imported here: a process whose devices all use one engine never loads the other
    # (pysnmp and its MIB modules take a second and tens of MB).
    if name == "gufo":
        from netmon.snmp.gufo_engine import shared_gufo

        return shared_gufo()
    from netmon.snmp.client import shared_client

    return shared_client()


def engines_in_use() -> list[SnmpEngine]:
    """The engines this process has made so far (an engine is made on first use)."""
    found: list[SnmpEngine] = []
    for module in ("netmon.snmp.gufo_engine", "netmon.snmp.client"):
        loaded = sys.modules.get(module)  # never import an engine just to report on it
        if loaded is not None and loaded._shared is not None:
            found.append(loaded._shared)
    return found
