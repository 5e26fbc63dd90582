"""What an alert is, as every consumer sees it: the WebSocket feed, the webhook payload
formats and the API all map from :class:`AlertView`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from netmon.store.notify import PAYLOAD_LIMIT

__all__ = [
    "ALERT_SELECT",
    "SEVERITIES",
    "AlertChange",
    "AlertEvent",
    "AlertState",
    "AlertView",
    "Severity",
    "alert_view",
    "encode_alert_change",
    "from_jsonb",
    "severity_rank",
    "to_jsonb",
]

Severity = Literal["critical", "major", "minor", "warning", "info"]
AlertState = Literal["pending", "firing", "acknowledged", "resolved"]
# What happened to an alert (alert_history.event, AlertChange.event): its state changes,
# and flapping / stable, silenced, and notified (a webhook message was queued for it).
AlertEvent = Literal[
    "pending",
    "firing",
    "acknowledged",
    "resolved",
    "flapping",
    "stable",
    "silenced",
    "notified",
]

# Most severe first (NSP / X.733 order, less "indeterminate" and "cleared").
SEVERITIES: tuple[Severity, ...] = ("critical", "major", "minor", "warning", "info")


def severity_rank(severity: str) -> int:
    """0 for critical, growing as severity falls."""
    return SEVERITIES.index(severity)


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    """One alert row, with the device's inventory attributes for routing and display."""

    id: int
    fingerprint: str
    rule: str
    device: str
    labels: dict[str, str]
    severity: Severity
    state: AlertState
    flapping: bool
    value: float | None
    summary: str
    description: str
    pending_at: datetime
    started_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    updated_at: datetime
    silenced_by: list[int] = []
    site: str | None = None
    role: str | None = None
    tags: list[str] = []
    # What raised it: the rule's kind and the metric it watches (NSP's alarm type).
    kind: Literal["threshold", "state", "absent", "event"] = "threshold"
    metric: str = ""

    def match_labels(self) -> dict[str, str]:
        """What matchers (silences, webhook filters, group_by) see: the alert's labels plus
        rule, device, severity, and the device's site and role where it has them. The
        device's always win over a series label of the same name, and stand for it when
        the device has none (a missing label matches as ""): a silence or webhook
        confined to ``site="lon1"`` must not reach a device elsewhere whose series
        happen to carry a ``site`` label."""
        out = dict(self.labels)
        out["rule"] = self.rule
        out["device"] = self.device
        out["severity"] = self.severity
        for name, value in (("site", self.site), ("role", self.role)):
            if value is None:
                out.pop(name, None)
            else:
                out[name] = value
        return out


class AlertChange(msgspec.Struct, frozen=True, kw_only=True):
    """One change of one alert, as the ``netmon_alerts`` channel and /ws/alerts carry it."""

    event: AlertEvent
    time: datetime
    alert: AlertView


_encoder = msgspec.json.Encoder()

# An alert row with its device's inventory attributes, as every reader selects it.
ALERT_SELECT = """
SELECT a.id, a.fingerprint, a.rule, a.kind, a.metric, a.device, a.labels, a.severity,
       a.state, a.flapping, a.value, a.summary, a.description, a.pending_at, a.started_at,
       a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.updated_at, a.silenced_by,
       d.site, d.role, coalesce(d.tags, '{}') AS tags
FROM alerts a LEFT JOIN devices d ON d.name = a.device
"""


def from_jsonb(value: Any) -> Any:
    """A jsonb column's value: asyncpg hands jsonb over as text unless a codec is set."""
    return json.loads(value) if isinstance(value, str) else value


def to_jsonb(value: object) -> str:
    """The text a ``$n::jsonb`` parameter takes."""
    return _encoder.encode(value).decode()


def alert_view(row: Mapping[str, Any]) -> AlertView:
    """An :data:`ALERT_SELECT` row as an AlertView (``labels`` may arrive as JSON text)."""
    labels = from_jsonb(row["labels"])
    return AlertView(
        id=row["id"],
        fingerprint=row["fingerprint"],
        rule=row["rule"],
        kind=row["kind"],
        metric=row["metric"],
        device=row["device"],
        labels=labels,
        severity=row["severity"],
        state=row["state"],
        flapping=row["flapping"],
        value=row["value"],
        summary=row["summary"],
        description=row["description"],
        pending_at=row["pending_at"],
        started_at=row["started_at"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        resolved_at=row["resolved_at"],
        updated_at=row["updated_at"],
        silenced_by=list(row["silenced_by"]),
        site=row["site"],
        role=row["role"],
        tags=list(row["tags"]),
    )


def encode_alert_change(change: AlertChange, limit: int = PAYLOAD_LIMIT) -> str:
    """The ``netmon_alerts`` payload of ``change``, under PostgreSQL's limit: a long
    description, then summary, is cut (marked with an ellipsis) rather than the change
    lost."""
    data = _encoder.encode(change)
    alert = change.alert
    for name in ("description", "summary"):
        text: str = getattr(alert, name)
        while len(data) > limit and text:
            text = text[: len(text) * 3 // 4]
            alert = msgspec.structs.replace(alert, **{name: text + "…" if text else ""})
            data = _encoder.encode(msgspec.structs.replace(change, alert=alert))
    if len(data) > limit:
        raise ValueError(f"alert {alert.id}: its change takes {len(data)} bytes, over {limit}")
    return data.decode()
