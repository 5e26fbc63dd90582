"""NetBox webhooks: the signature check, and what one event changes for netmon. Pure.

NetBox (``extras/webhooks.py``) signs the raw request body with HMAC-SHA512 keyed by the
webhook's secret and sends the hex digest in ``X-Hook-Signature``; a webhook without a
secret sends no header, and is refused here. Without a body template the body is
NetBox's context as JSON (4.7.3)::

    {"event": "created" | "updated" | "deleted",
     "timestamp": "2026-12-07T19:00:00.123456+00:00",
     "object_type": "dcim.device",
     "data": {...the REST serializer's object, "id": 42...},
     "snapshots": {"prechange": {...} | null, "postchange": {...} | null},
     "request": {"id": ..., "path": ..., "method": ..., "user": ...}}

Found the hard way: NetBox before 4.4 sent ``"model": "device"`` (the model name alone)
and ``username`` / ``request_id`` instead of ``object_type`` and ``request``; both
shapes are read. Snapshots are ``serialize_object`` output, where a foreign key is a
bare id (``"virtual_chassis": 7``), unlike ``data`` (nested objects). Job events
(``job_started``, ``job_ended``) carry no object and change nothing here. A delete's
``data`` is serialized before the row goes, so ``data.id`` is always there.

:func:`classify` is shared with the change-log reader: the same object types mean the
same thing whether a webhook or the log brought them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netmon.inventory.netbox.mapping import external_id

__all__ = [
    "FULL_TYPES",
    "HOST_TYPES",
    "Classified",
    "WebhookChange",
    "classify",
    "parse_event",
    "verify_signature",
]

# Changes to these can move many hosts at once (labels, config context, regions): a full
# reconcile, not a guess at which hosts they touch.
FULL_TYPES = frozenset(
    {
        "extras.configcontext",
        "extras.customfield",
        "extras.tag",
        "dcim.site",
        "dcim.region",
        "dcim.platform",
        "dcim.devicerole",
        "tenancy.tenant",
        "virtualization.cluster",
    }
)
HOST_TYPES: dict[str, str] = {
    "dcim.device": "device",
    "virtualization.virtualmachine": "vm",
    "dcim.virtualchassis": "virtualchassis",
}
# Everything classify() looks at: the change-log reader asks NetBox for these only.
WATCHED_TYPES = frozenset(
    {*HOST_TYPES, *FULL_TYPES, "ipam.ipaddress", "dcim.cable", "dcim.interface"}
)
# NetBox before 4.4 named the model alone.
_MODELS = {
    "device": "dcim.device",
    "virtualmachine": "virtualization.virtualmachine",
    "virtualchassis": "dcim.virtualchassis",
    "ipaddress": "ipam.ipaddress",
    "cable": "dcim.cable",
    "interface": "dcim.interface",
    "configcontext": "extras.configcontext",
    "customfield": "extras.customfield",
    "tag": "extras.tag",
    "site": "dcim.site",
    "region": "dcim.region",
    "platform": "dcim.platform",
    "devicerole": "dcim.devicerole",
    "tenant": "tenancy.tenant",
    "cluster": "virtualization.cluster",
}
_ACTIONS = {"created": "create", "updated": "update", "deleted": "delete"}


@dataclass
class Classified:
    """What some changes mean: external ids to re-read, reasons for a full reconcile,
    and updated IP addresses whose device is still to be found."""

    changed: set[str] = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)
    ip_ids: set[int] = field(default_factory=set)


def classify(
    into: Classified,
    object_type: str,
    object_id: int,
    action: str,
    prechange: Any,
    postchange: Any,
    *,
    cables: bool,
) -> None:
    """Add one change (``action`` create/update/delete, or created/updated/deleted) to
    ``into``. ``prechange``/``postchange`` are ``serialize_object`` snapshots."""
    action = _ACTIONS.get(action, action)
    if object_type in HOST_TYPES:
        into.changed.add(external_id(HOST_TYPES[object_type], object_id))
        if object_type == "dcim.device":
            # A member's change can move its chassis' host (master, address).
            for data in (prechange, postchange):
                chassis = data.get("virtual_chassis") if isinstance(data, Mapping) else None
                if isinstance(chassis, int) and not isinstance(chassis, bool):
                    into.changed.add(external_id("virtualchassis", chassis))
    elif object_type in FULL_TYPES:
        _reason(into, f"{object_type} {object_id} {action}")
    elif object_type == "ipam.ipaddress":
        # Only an edit matters: a new address is not primary yet (making it so saves the
        # device), and deleting a primary one saves the device too (clear_primary_ip).
        if action == "update":
            into.ip_ids.add(object_id)
    elif object_type == "dcim.cable" and cables:
        _reason(into, f"dcim.cable {object_id} {action}")
    elif (
        object_type == "dcim.interface"
        and cables
        and action == "update"
        and isinstance(prechange, Mapping)
        and isinstance(postchange, Mapping)
        and prechange.get("name") != postchange.get("name")
    ):
        _reason(into, f"dcim.interface {object_id} renamed (a cable end)")


def _reason(into: Classified, text: str) -> None:
    # A bulk edit of 500 sites says why in a few words, not 500.
    if len(into.reasons) < 10 and text not in into.reasons:
        into.reasons.append(text)


@dataclass(frozen=True)
class WebhookChange:
    """What one webhook event means: ``changed`` external ids to re-read; ``full`` when
    a full reconcile is due (``reason`` says why)."""

    event: str
    object_type: str
    object_id: int | None
    changed: frozenset[str]
    full: bool
    reason: str = ""


def verify_signature(body: bytes, secret: str, header: str | None) -> bool:
    """True when ``header`` is the hex HMAC-SHA512 of ``body`` keyed by ``secret``
    (constant-time compare); a missing or empty header, or an empty secret, is False."""
    if not header or not secret:
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha512).hexdigest()
    return hmac.compare_digest(expected, header.strip().lower())


def parse_event(body: bytes, *, cables: bool = True) -> WebhookChange:
    """The change a NetBox webhook body announces. ValueError, with the reason, for a
    body that is not NetBox's default webhook JSON."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(payload, Mapping):
        raise ValueError("the body is not a JSON object")
    event = payload.get("event")
    if not isinstance(event, str) or not event:
        raise ValueError("no 'event' (a custom body template? netmon needs NetBox's default)")
    object_type = payload.get("object_type")
    if not isinstance(object_type, str):
        model = payload.get("model")
        object_type = _MODELS.get(model, str(model)) if isinstance(model, str) else None
    if event.startswith("job_"):
        return WebhookChange(event, object_type or "", None, frozenset(), False)
    if event not in _ACTIONS:
        raise ValueError(f"unknown event {event[:40]!r}")
    if not object_type:
        raise ValueError("no 'object_type' (nor 'model')")
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise ValueError("no 'data' object")
    object_id = data.get("id")
    if not isinstance(object_id, int) or isinstance(object_id, bool):
        raise ValueError("no integer 'data.id'")
    snapshots = payload.get("snapshots")
    if snapshots is not None and not isinstance(snapshots, Mapping):
        raise ValueError("'snapshots' is not an object")
    snapshots = snapshots or {}
    result = Classified()
    classify(
        result,
        object_type,
        object_id,
        event,
        snapshots.get("prechange"),
        snapshots.get("postchange"),
        cables=cables,
    )
    if result.ip_ids:
        # The webhook's data is the REST object: its interface names the device or VM,
        # which is re-read whether or not the address is its primary (cheap, and right).
        host = _ip_host(data)
        if host is None:
            result.reasons.append(f"ipam.ipaddress {object_id} update (not on a device or VM)")
        elif host != "":
            result.changed.add(host)
    return WebhookChange(
        event=event,
        object_type=object_type,
        object_id=object_id,
        changed=frozenset(result.changed),
        full=bool(result.reasons),
        reason="; ".join(result.reasons),
    )


def _ip_host(data: Mapping[str, Any]) -> str | None:
    """The external id of the device/VM an address is assigned to; "" when unassigned
    (then it is nobody's primary), None when it cannot be told."""
    assigned = data.get("assigned_object")
    if assigned is None:
        return ""
    if not isinstance(assigned, Mapping):
        return None
    for key, kind in (("device", "device"), ("virtual_machine", "vm")):
        owner = assigned.get(key)
        if isinstance(owner, Mapping) and isinstance(owner.get("id"), int):
            return external_id(kind, owner["id"])
    return None
