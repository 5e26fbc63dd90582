"""Writing back to NetBox: a journal entry on a device when netmon starts or stops
monitoring it (``inventory.netbox.write_back``).

A failure is returned and logged, never raised: the sync does not depend on NetBox
accepting a note. The token needs write access to journal entries (``extras.add_
journalentry``); a read-only token gets a 403, reported once per call like any error.

Found against NetBox 4.7.3: ``assigned_object_type`` is the ``app_label.model`` text
(``dcim.device``, ``virtualization.virtualmachine``, ``dcim.virtualchassis``: a chassis
takes journal entries too), and the entry is only accepted for types with the
journaling feature (400 otherwise). The POST is not retried after it may have reached
NetBox, so a note is never written twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from netmon.inventory.netbox.client import NetBoxClient, NetBoxError
from netmon.inventory.netbox.mapping import parse_external_id
from netmon.logs import get_logger

__all__ = ["JournalResult", "journal"]

log = get_logger(__name__)

JOURNAL = "/api/extras/journal-entries/"
_OBJECT_TYPES = {
    "device": "dcim.device",
    "vm": "virtualization.virtualmachine",
    "virtualchassis": "dcim.virtualchassis",
}
# NetBox's comments field is unbounded text; a note is a sentence, not a log dump.
MAX_COMMENTS = 4000


@dataclass(frozen=True)
class JournalResult:
    """``entry_id`` of the written entry, or ``error`` saying why not."""

    entry_id: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def journal(
    client: NetBoxClient,
    host_external_id: str,
    kind: Literal["info", "success", "warning", "danger"],
    comments: str,
) -> JournalResult:
    """Add a journal entry to the NetBox object behind ``host_external_id``."""
    try:
        object_kind, object_id = parse_external_id(host_external_id)
    except ValueError as exc:
        return _failed(host_external_id, str(exc))
    body = {
        "assigned_object_type": _OBJECT_TYPES[object_kind],
        "assigned_object_id": object_id,
        "kind": kind,
        "comments": comments[:MAX_COMMENTS],
    }
    try:
        answer = await client.post(JOURNAL, body, hint="inventory.netbox.write_back")
    except NetBoxError as exc:
        return _failed(host_external_id, str(exc))
    entry_id = answer.get("id") if isinstance(answer, dict) else None
    return JournalResult(entry_id=entry_id if isinstance(entry_id, int) else None)


def _failed(ref: str, error: str) -> JournalResult:
    log.warning("netbox journal entry not written", object=ref, error=error)
    return JournalResult(error=error)
