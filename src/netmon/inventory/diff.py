"""The difference between what a source holds and the devices it owns: pure, so that a
dry run, the sync and the tests all see the same answer.

Hosts are matched to rows by ``external_id`` (a NetBox rename is a change, not a new
device). A host the source marks ``retired`` (NetBox: decommissioning) retires its row;
one without a row is not added. Two hosts of one name (NetBox allows that across sites)
keep the first; the second is skipped with its reason.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from netmon.inventory.model import InventoryHost, Skipped

__all__ = ["COMPARED", "Change", "Diff", "OwnedRow", "diff_inventory"]

# The fields of a row the source decides; a difference in any of them is a change.
COMPARED = ("name", "address", "site", "role", "platform", "tags", "labels", "lifecycle")


@dataclass(frozen=True)
class OwnedRow:
    """A device row a source owns, as the diff needs it."""

    id: int
    external_id: str
    name: str
    address: str | None
    site: str | None
    role: str | None
    platform: str | None
    tags: tuple[str, ...]
    labels: dict[str, str]
    lifecycle: str

    def values(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in COMPARED}


def host_values(host: InventoryHost) -> dict[str, Any]:
    return {
        "name": host.name,
        "address": host.address,
        "site": host.site,
        "role": host.role,
        "platform": host.platform,
        "tags": tuple(host.tags),
        "labels": dict(host.labels),
        "lifecycle": host.lifecycle,
    }


@dataclass(frozen=True)
class Change:
    host: InventoryHost
    row: OwnedRow
    fields: tuple[str, ...]  # which of COMPARED differ


@dataclass
class Diff:
    added: list[InventoryHost] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    retired: list[OwnedRow] = field(default_factory=list)
    unchanged: list[InventoryHost] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.retired)

    def summary(self) -> dict[str, Any]:
        """The dry run's JSON: names added, changed and retired, and how many are unchanged."""
        return {
            "added": sorted(h.name for h in self.added),
            "changed": sorted(c.host.name for c in self.changed),
            "retired": sorted(r.name for r in self.retired),
            "unchanged": len(self.unchanged),
        }


def diff_inventory(
    hosts: Sequence[InventoryHost],
    rows: Sequence[OwnedRow],
    *,
    complete: bool = True,
    requested: Collection[str] = (),
    kept: Collection[str] = (),
) -> Diff:
    """What to do to make ``rows`` hold ``hosts``. ``complete``: the hosts are all the
    source holds, so a row without a host is retired; otherwise only the rows whose
    external id was ``requested`` and did not come back are. ``kept``: external ids the
    source holds but could not take (a bad config context): their rows stay as they
    are, neither changed nor retired."""
    out = Diff()
    by_id = {r.external_id: r for r in rows}
    seen_ids: set[str] = set()
    seen_names: dict[str, str] = {}
    for host in hosts:
        if host.external_id in seen_ids:
            continue
        other = seen_names.get(host.name)
        if other is not None:
            out.skipped.append(
                Skipped(
                    host.name,
                    host.external_id,
                    "duplicate_name",
                    f"{host.name}: {other} has that name too; device names must be unique "
                    "in netmon (rename one, or narrow the filters)",
                )
            )
            continue
        seen_ids.add(host.external_id)
        seen_names[host.name] = host.external_id
        row = by_id.get(host.external_id)
        if host.lifecycle == "retired":
            if row is not None and row.lifecycle != "retired":
                out.retired.append(row)
            elif row is not None:
                out.unchanged.append(host)
            continue
        if row is None:
            out.added.append(host)
            continue
        want = host_values(host)
        have = row.values()
        fields = tuple(f for f in COMPARED if want[f] != have[f])
        if fields:
            out.changed.append(Change(host, row, fields))
        else:
            out.unchanged.append(host)
    gone = {r.external_id for r in rows} - seen_ids - set(kept)
    if not complete:
        gone &= set(requested)
    for row in rows:
        if row.external_id in gone and row.lifecycle != "retired":
            out.retired.append(row)
    return out
