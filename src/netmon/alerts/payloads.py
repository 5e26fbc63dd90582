"""A group notification rendered as webhook bodies: netmon's own JSON, Alertmanager's
webhook v4 body, or one Nokia NSP / NFM-P style alarm per alert (docs/webhooks.md maps
every field).

Rendering is pure: the caller gives the group, its alerts and the clock, and stores the
returned text as the outbox payload, which is then signed and sent byte for byte on every
attempt. Bodies are encoded by msgspec with sorted mapping keys, so the same input always
gives the same bytes. Times are ISO-8601 in UTC (``...Z``); a naive datetime is taken as
UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import msgspec

from netmon.alerts.model import AlertView

__all__ = [
    "AM_ZERO_TIME",
    "FORMATS",
    "Format",
    "GroupInfo",
    "Message",
    "affected_object",
    "alarm_type",
    "alertmanager_group_key",
    "render",
]

Format = Literal["netmon", "alertmanager", "nsp"]
FORMATS: tuple[Format, ...] = ("netmon", "alertmanager", "nsp")

# Go's zero time.Time, which Alertmanager sends as endsAt of an alert still firing.
AM_ZERO_TIME = "0001-01-01T00:00:00Z"

_ENCODER = msgspec.json.Encoder(order="deterministic")


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The webhook and notification group a message is for."""

    webhook_id: int
    webhook_name: str
    group_key: str
    group_labels: dict[str, str]


class Message(NamedTuple):
    """One outbox row to be: the alerts it reports and the exact body."""

    alert_ids: list[int]
    payload: str


def render(
    fmt: Format,
    group: GroupInfo,
    alerts: Sequence[AlertView],
    *,
    external_url: str,
    now: datetime,
) -> list[Message]:
    """The messages for one flush of ``group``: one for netmon and alertmanager, one per
    alert for nsp; none when there are no alerts."""
    if not alerts:
        return []
    if fmt == "netmon":
        return [_netmon(group, alerts, now)]
    if fmt == "alertmanager":
        return [_alertmanager(group, alerts, external_url)]
    if fmt == "nsp":
        return [_nsp(alert, now) for alert in alerts]
    raise ValueError(f"unknown webhook format {fmt!r}: use one of {', '.join(FORMATS)}")


def _encode(body: msgspec.Struct) -> str:
    return _ENCODER.encode(body).decode()


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _utc_or_none(t: datetime | None) -> datetime | None:
    return None if t is None else _utc(t)


def _iso(t: datetime) -> str:
    """The text msgspec writes for ``t`` in UTC (for fields that are not always a time)."""
    return _ENCODER.encode(_utc(t)).decode().strip('"')


def _status(alerts: Sequence[AlertView]) -> Literal["firing", "resolved"]:
    return "resolved" if all(a.state == "resolved" for a in alerts) else "firing"


# --- netmon --------------------------------------------------------------------------


class _NetmonBody(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    type: str
    group_key: str
    group_labels: dict[str, str]
    webhook: str
    status: str
    alerts: list[AlertView]
    sent_at: datetime


def _in_utc(alert: AlertView) -> AlertView:
    return msgspec.structs.replace(
        alert,
        pending_at=_utc(alert.pending_at),
        started_at=_utc_or_none(alert.started_at),
        acknowledged_at=_utc_or_none(alert.acknowledged_at),
        resolved_at=_utc_or_none(alert.resolved_at),
        updated_at=_utc(alert.updated_at),
    )


def _netmon(group: GroupInfo, alerts: Sequence[AlertView], now: datetime) -> Message:
    body = _NetmonBody(
        version="1",
        type="alert.notification",
        group_key=group.group_key,
        group_labels=group.group_labels,
        webhook=group.webhook_name,
        status=_status(alerts),
        alerts=[_in_utc(a) for a in alerts],
        sent_at=_utc(now),
    )
    return Message([a.id for a in alerts], _encode(body))


# --- Alertmanager webhook v4 ----------------------------------------------------------


class _AmAlert(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str = msgspec.field(name="startsAt")
    ends_at: str = msgspec.field(name="endsAt")
    generator_url: str = msgspec.field(name="generatorURL")
    fingerprint: str


class _AmBody(msgspec.Struct, frozen=True, kw_only=True):
    # Alertmanager's own field order (notify/webhook Message, template Data).
    receiver: str
    status: str
    alerts: list[_AmAlert]
    group_labels: dict[str, str] = msgspec.field(name="groupLabels")
    common_labels: dict[str, str] = msgspec.field(name="commonLabels")
    common_annotations: dict[str, str] = msgspec.field(name="commonAnnotations")
    external_url: str = msgspec.field(name="externalURL")
    version: str
    group_key: str = msgspec.field(name="groupKey")
    truncated_alerts: int = msgspec.field(name="truncatedAlerts")


def alertmanager_group_key(group_labels: Mapping[str, str]) -> str:
    """Alertmanager's groupKey for a group under its root route: ``{}:{a="1", b="2"}``."""
    pairs = ", ".join(f"{k}={_go_quote(v)}" for k, v in sorted(group_labels.items()))
    return "{}:{" + pairs + "}"


def _go_quote(value: str) -> str:
    # Go's %q, as Alertmanager prints label values; JSON string escaping is the same for
    # the characters label values hold.
    return msgspec.json.encode(value).decode()


def _am_labels(alert: AlertView) -> dict[str, str]:
    labels = alert.match_labels()
    labels["alertname"] = alert.rule
    return labels


def _am_annotations(alert: AlertView) -> dict[str, str]:
    # Acknowledgement and flapping are annotations, not labels: labels are an alert's
    # identity in Alertmanager receivers, and acknowledging does not make a new alert.
    out: dict[str, str] = {}
    if alert.summary:
        out["summary"] = alert.summary
    if alert.description:
        out["description"] = alert.description
    if alert.state == "acknowledged":
        out["acknowledged"] = "true"
        if alert.acknowledged_by:
            out["acknowledged_by"] = alert.acknowledged_by
        if alert.acknowledged_at is not None:
            out["acknowledged_at"] = _iso(alert.acknowledged_at)
    if alert.flapping:
        out["flapping"] = "true"
    return out


def _generator_url(external_url: str, alert: AlertView) -> str:
    return f"{external_url.rstrip('/')}/api/v1/alerts/{alert.id}" if external_url else ""


def _am_alert(alert: AlertView, external_url: str) -> _AmAlert:
    resolved = alert.state == "resolved"
    ends = _iso(alert.resolved_at) if resolved and alert.resolved_at else AM_ZERO_TIME
    return _AmAlert(
        status="resolved" if resolved else "firing",
        labels=_am_labels(alert),
        annotations=_am_annotations(alert),
        starts_at=_iso(alert.started_at or alert.pending_at),
        ends_at=ends,
        generator_url=_generator_url(external_url, alert),
        fingerprint=alert.fingerprint,
    )


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    first, *rest = maps
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def _alertmanager(group: GroupInfo, alerts: Sequence[AlertView], external_url: str) -> Message:
    am_alerts = [_am_alert(a, external_url) for a in alerts]
    body = _AmBody(
        receiver=group.webhook_name,
        status=_status(alerts),
        alerts=am_alerts,
        group_labels=group.group_labels,
        common_labels=_common([a.labels for a in am_alerts]),
        common_annotations=_common([a.annotations for a in am_alerts]),
        external_url=external_url,
        version="4",
        group_key=alertmanager_group_key(group.group_labels),
        truncated_alerts=0,
    )
    return Message([a.id for a in alerts], _encode(body))


# --- Nokia NSP / NFM-P ----------------------------------------------------------------

NspSeverity = Literal["critical", "major", "minor", "warning", "info", "cleared"]

# (alarmType, probableCause) by the state a rule watches: the metric (a `metric` label,
# when the engine gives one) or the built-in rule's name.
_STATE_ALARMS: dict[str, tuple[str, str]] = {
    "up": ("communicationsAlarm", "deviceUnreachable"),
    "ifOperStatus": ("communicationsAlarm", "interfaceDown"),
    "poll_success": ("communicationsAlarm", "pollFailure"),
}
_THRESHOLD_ALARM = ("qualityOfServiceAlarm", "thresholdCrossed")
_ABSENT_ALARM = ("communicationsAlarm", "dataMissing")
_EVENT_ALARMS: dict[str, tuple[str, str]] = {
    "device.rebooted": ("equipmentAlarm", "reinitialized"),
    "device.config_changed": ("equipmentAlarm", "configurationChanged"),
    "device.unreachable": ("communicationsAlarm", "deviceUnreachable"),
}
_OTHER_ALARM = ("equipmentAlarm", "equipmentAlarm")

_INTERFACE_LABELS = ("interface", "ifName")


class _NspAlarm(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    alarm_name: str
    alarm_type: str
    probable_cause: str
    severity: NspSeverity
    alarm_state: Literal["active", "cleared"]
    affected_object: str
    affected_object_type: Literal["device", "interface"]
    affected_object_name: str
    ne_name: str
    raised_time: datetime
    cleared_time: datetime | None
    last_time_detected: datetime
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_time: datetime | None
    additional_text: str
    source_system: str
    netmon_alert_id: int
    fingerprint: str
    flapping: bool
    value: float | None
    labels: dict[str, str]
    sent_at: datetime


def alarm_type(alert: AlertView) -> tuple[str, str]:
    """``(alarmType, probableCause)`` for NSP, from the kind of rule that raised the alert
    and its metric: device and interface state, polling and missing data are
    communications alarms, thresholds quality-of-service alarms, the rest equipment
    alarms."""
    if alert.kind == "state":
        return _STATE_ALARMS.get(alert.metric, _OTHER_ALARM)
    if alert.kind == "absent":
        return _ABSENT_ALARM
    if alert.kind == "event":
        return _EVENT_ALARMS.get(alert.metric, _OTHER_ALARM)
    return _THRESHOLD_ALARM


def _interface(alert: AlertView) -> str | None:
    for name in _INTERFACE_LABELS:
        if alert.labels.get(name):
            return alert.labels[name]
    return None


def _fdn_part(name: str) -> str:
    # ':' separates the FDN's parts; escape it (and '%', the escape) inside names.
    return name.replace("%", "%25").replace(":", "%3A")


def affected_object(alert: AlertView) -> str:
    """The alarm's object as an NSP-style distinguished name: ``network:<device>`` or
    ``network:<device>:interface:<ifname>``."""
    fdn = f"network:{_fdn_part(alert.device)}"
    interface = _interface(alert)
    return fdn if interface is None else f"{fdn}:interface:{_fdn_part(interface)}"


def _additional_text(alert: AlertView) -> str:
    parts = [p for p in (alert.summary, alert.description) if p]
    if alert.flapping:
        parts.append("The alarm is flapping (its condition changes often).")
    return "\n".join(parts)


def _nsp(alert: AlertView, now: datetime) -> Message:
    cleared = alert.state == "resolved"
    kind, cause = alarm_type(alert)
    interface = _interface(alert)
    acknowledged = alert.acknowledged_at is not None or alert.state == "acknowledged"
    body = _NspAlarm(
        alarm_name=alert.rule,
        alarm_type=kind,
        probable_cause=cause,
        severity="cleared" if cleared else alert.severity,
        alarm_state="cleared" if cleared else "active",
        affected_object=affected_object(alert),
        affected_object_type="device" if interface is None else "interface",
        affected_object_name=alert.device if interface is None else interface,
        ne_name=alert.device,
        raised_time=_utc(alert.started_at or alert.pending_at),
        cleared_time=_utc_or_none(alert.resolved_at) if cleared else None,
        last_time_detected=_utc(alert.updated_at),
        acknowledged=acknowledged,
        acknowledged_by=alert.acknowledged_by if acknowledged else None,
        acknowledged_time=_utc_or_none(alert.acknowledged_at) if acknowledged else None,
        additional_text=_additional_text(alert),
        source_system="netmon",
        netmon_alert_id=alert.id,
        fingerprint=alert.fingerprint,
        flapping=alert.flapping,
        value=alert.value,
        labels=alert.match_labels(),
        sent_at=_utc(now),
    )
    return Message([alert.id], _encode(body))
