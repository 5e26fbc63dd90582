"""Webhook payloads: the netmon, Alertmanager v4 and NSP bodies, field by field
(docs/webhooks.md is the reference these pin)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from netmon.alerts.model import SEVERITIES, AlertView
from netmon.alerts.payloads import (
    AM_ZERO_TIME,
    GroupInfo,
    Message,
    affected_object,
    alarm_type,
    alertmanager_group_key,
    render,
)

T0 = datetime(2026, 11, 27, 16, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
PLUS2 = timezone(timedelta(hours=2))
GROUP = GroupInfo(
    webhook_id=7,
    webhook_name="noc",
    group_key="abc123",
    group_labels={"rule": "interface-down", "device": "r1"},
)
EXTERNAL = "https://netmon.example.net/"


def alert(**changes: Any) -> AlertView:
    base = AlertView(
        id=1,
        fingerprint="0123456789abcdef0123456789abcdef",
        rule="interface-down",
        device="r1",
        labels={"interface": "ge-0/0/1"},
        severity="major",
        state="firing",
        flapping=False,
        value=2.0,
        summary="r1 ge-0/0/1 is down (admin up)",
        description="Operational status is not up.",
        pending_at=T0,
        started_at=T0 + timedelta(seconds=30),
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        updated_at=T0 + timedelta(seconds=30),
        site="lon1",
        role="core",
        tags=["backbone"],
        kind="state",
        metric="ifOperStatus",
    )
    return msgspec.structs.replace(base, **changes)


def resolved(**changes: Any) -> AlertView:
    return alert(state="resolved", resolved_at=T0 + timedelta(minutes=5), **changes)


def acknowledged(**changes: Any) -> AlertView:
    ack: dict[str, Any] = {
        "state": "acknowledged",
        "acknowledged_at": T0 + timedelta(minutes=2),
        "acknowledged_by": "alice",
    }
    return alert(**{**ack, **changes})


def one(fmt: Any, alerts: list[AlertView]) -> tuple[Message, dict[str, Any]]:
    [message] = render(fmt, GROUP, alerts, external_url=EXTERNAL, now=NOW)
    return message, json.loads(message.payload)


def test_no_alerts_no_messages() -> None:
    for fmt in ("netmon", "alertmanager", "nsp"):
        assert render(fmt, GROUP, [], external_url="", now=NOW) == []


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown webhook format"):
        render("slack", GROUP, [alert()], external_url="", now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["netmon", "alertmanager", "nsp"])
def test_bodies_are_deterministic(fmt: Any) -> None:
    a = alert(labels={"interface": "ge-0/0/1", "a": "1"})
    b = alert(labels={"a": "1", "interface": "ge-0/0/1"})  # same labels, other order
    group_b = msgspec.structs.replace(
        GROUP, group_labels={"device": "r1", "rule": "interface-down"}
    )
    first = render(fmt, GROUP, [a], external_url=EXTERNAL, now=NOW)
    second = render(fmt, group_b, [b], external_url=EXTERNAL, now=NOW)
    assert first == second


# --- netmon --------------------------------------------------------------------------


def test_netmon_body() -> None:
    a, b = alert(), alert(id=2, device="r2", severity="critical")
    message, body = one("netmon", [a, b])
    assert message.alert_ids == [1, 2]
    assert list(body) == [
        "version",
        "type",
        "group_key",
        "group_labels",
        "webhook",
        "status",
        "alerts",
        "sent_at",
    ]
    assert body["version"] == "1"
    assert body["type"] == "alert.notification"
    assert body["group_key"] == "abc123"
    assert body["group_labels"] == {"device": "r1", "rule": "interface-down"}
    assert body["webhook"] == "noc"
    assert body["status"] == "firing"
    assert body["sent_at"] == "2026-11-27T16:10:00Z"
    # Every AlertView field, as the API and /ws/alerts show it.
    assert body["alerts"][0] == json.loads(msgspec.json.encode(a))
    assert set(body["alerts"][0]) == set(AlertView.__struct_fields__)
    assert body["alerts"][1]["severity"] == "critical"


def test_netmon_times_are_utc() -> None:
    a = alert(pending_at=T0.astimezone(PLUS2), updated_at=T0.astimezone(PLUS2))
    _, body = one("netmon", [a])
    assert body["alerts"][0]["pending_at"] == "2026-11-27T16:00:00Z"
    assert body["alerts"][0]["updated_at"] == "2026-11-27T16:00:00Z"
    assert body["alerts"][0]["started_at"] == "2026-11-27T16:00:30Z"
    [message] = render("netmon", GROUP, [a], external_url="", now=NOW.astimezone(PLUS2))
    assert json.loads(message.payload)["sent_at"] == "2026-11-27T16:10:00Z"


def test_netmon_status() -> None:
    assert one("netmon", [resolved(), alert(id=2)])[1]["status"] == "firing"
    assert one("netmon", [acknowledged()])[1]["status"] == "firing"
    assert one("netmon", [resolved(), resolved(id=2)])[1]["status"] == "resolved"
    _, body = one("netmon", [acknowledged(flapping=True)])
    assert body["alerts"][0]["state"] == "acknowledged"
    assert body["alerts"][0]["acknowledged_by"] == "alice"
    assert body["alerts"][0]["flapping"] is True


# --- Alertmanager ---------------------------------------------------------------------


def test_alertmanager_body() -> None:
    a, b = alert(), alert(id=2, labels={"interface": "ge-0/0/2"}, summary="other")
    message, body = one("alertmanager", [a, b])
    assert message.alert_ids == [1, 2]
    assert list(body) == [
        "receiver",
        "status",
        "alerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "version",
        "groupKey",
        "truncatedAlerts",
    ]
    assert body["version"] == "4"
    assert body["receiver"] == "noc"
    assert body["status"] == "firing"
    assert body["truncatedAlerts"] == 0
    assert body["externalURL"] == EXTERNAL
    assert body["groupLabels"] == GROUP.group_labels
    assert body["groupKey"] == '{}:{device="r1", rule="interface-down"}'
    first = body["alerts"][0]
    assert list(first) == [
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    ]
    assert first["labels"] == {
        "alertname": "interface-down",
        "rule": "interface-down",
        "device": "r1",
        "severity": "major",
        "interface": "ge-0/0/1",
        "site": "lon1",
        "role": "core",
    }
    assert first["annotations"] == {
        "summary": "r1 ge-0/0/1 is down (admin up)",
        "description": "Operational status is not up.",
    }
    assert first["status"] == "firing"
    assert first["startsAt"] == "2026-11-27T16:00:30Z"
    assert first["endsAt"] == AM_ZERO_TIME == "0001-01-01T00:00:00Z"
    assert first["generatorURL"] == "https://netmon.example.net/api/v1/alerts/1"
    assert first["fingerprint"] == a.fingerprint
    # Common: what every alert has, with the same value.
    common = dict(first["labels"])
    del common["interface"]
    assert body["commonLabels"] == common
    assert body["commonAnnotations"] == {"description": "Operational status is not up."}


def test_alertmanager_resolved() -> None:
    _, body = one("alertmanager", [resolved(), resolved(id=2)])
    assert body["status"] == "resolved"
    assert body["alerts"][0]["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2026-11-27T16:05:00Z"
    _, mixed = one("alertmanager", [resolved(), alert(id=2)])
    assert mixed["status"] == "firing"
    assert [a["status"] for a in mixed["alerts"]] == ["resolved", "firing"]


def test_alertmanager_acknowledged_is_firing_with_annotations() -> None:
    _, body = one("alertmanager", [acknowledged()])
    [a] = body["alerts"]
    assert a["status"] == "firing"
    assert a["endsAt"] == AM_ZERO_TIME
    assert a["annotations"]["acknowledged"] == "true"
    assert a["annotations"]["acknowledged_by"] == "alice"
    assert a["annotations"]["acknowledged_at"] == "2026-11-27T16:02:00Z"
    # Labels are the alert's identity in Alertmanager receivers: unchanged by the ack.
    assert a["labels"] == one("alertmanager", [alert()])[1]["alerts"][0]["labels"]


def test_alertmanager_flapping_and_pending_start() -> None:
    _, body = one("alertmanager", [alert(flapping=True, started_at=None, description="")])
    [a] = body["alerts"]
    assert a["annotations"] == {"summary": "r1 ge-0/0/1 is down (admin up)", "flapping": "true"}
    assert a["startsAt"] == "2026-11-27T16:00:00Z"  # pending_at when it never fired


def test_alertmanager_group_key_quotes_values() -> None:
    assert alertmanager_group_key({}) == "{}:{}"
    assert alertmanager_group_key({"b": "x", "a": 'say "hi"'}) == '{}:{a="say \\"hi\\"", b="x"}'


def test_alertmanager_without_external_url() -> None:
    [message] = render("alertmanager", GROUP, [alert()], external_url="", now=NOW)
    assert json.loads(message.payload)["alerts"][0]["generatorURL"] == ""


# --- NSP ------------------------------------------------------------------------------


def test_nsp_one_message_per_alert() -> None:
    messages = render(
        "nsp", GROUP, [alert(), alert(id=2, device="r2")], external_url=EXTERNAL, now=NOW
    )
    assert [m.alert_ids for m in messages] == [[1], [2]]
    assert [json.loads(m.payload)["neName"] for m in messages] == ["r1", "r2"]


def test_nsp_alarm() -> None:
    _, body = one("nsp", [alert()])
    assert body == {
        "alarmName": "interface-down",
        "alarmType": "communicationsAlarm",
        "probableCause": "interfaceDown",
        "severity": "major",
        "alarmState": "active",
        "affectedObject": "network:r1:interface:ge-0/0/1",
        "affectedObjectType": "interface",
        "affectedObjectName": "ge-0/0/1",
        "neName": "r1",
        "raisedTime": "2026-11-27T16:00:30Z",
        "clearedTime": None,
        "lastTimeDetected": "2026-11-27T16:00:30Z",
        "acknowledged": False,
        "acknowledgedBy": None,
        "acknowledgedTime": None,
        "additionalText": "r1 ge-0/0/1 is down (admin up)\nOperational status is not up.",
        "sourceSystem": "netmon",
        "netmonAlertId": 1,
        "fingerprint": "0123456789abcdef0123456789abcdef",
        "flapping": False,
        "value": 2.0,
        "labels": {
            "device": "r1",
            "interface": "ge-0/0/1",
            "role": "core",
            "rule": "interface-down",
            "severity": "major",
            "site": "lon1",
        },
        "sentAt": "2026-11-27T16:10:00Z",
    }


@pytest.mark.parametrize("severity", SEVERITIES)
def test_nsp_severity(severity: str) -> None:
    assert one("nsp", [alert(severity=severity)])[1]["severity"] == severity
    cleared = one("nsp", [resolved(severity=severity)])[1]
    assert cleared["severity"] == "cleared"


def test_nsp_cleared() -> None:
    _, body = one("nsp", [resolved()])
    assert body["alarmState"] == "cleared"
    assert body["clearedTime"] == "2026-11-27T16:05:00Z"
    assert body["raisedTime"] == "2026-11-27T16:00:30Z"


def test_nsp_acknowledged() -> None:
    _, body = one("nsp", [acknowledged()])
    assert body["alarmState"] == "active"
    assert body["severity"] == "major"
    assert body["acknowledged"] is True
    assert body["acknowledgedBy"] == "alice"
    assert body["acknowledgedTime"] == "2026-11-27T16:02:00Z"
    # Cleared after the ack: still acknowledged, as an NSP alarm stays.
    _, later = one("nsp", [acknowledged(state="resolved", resolved_at=T0 + timedelta(hours=1))])
    assert (later["acknowledged"], later["alarmState"]) == (True, "cleared")


def test_nsp_flapping() -> None:
    _, body = one("nsp", [alert(flapping=True)])
    assert body["flapping"] is True
    assert body["additionalText"].endswith("The alarm is flapping (its condition changes often).")


@pytest.mark.parametrize(
    ("kind", "metric", "expected"),
    [
        ("state", "up", ("communicationsAlarm", "deviceUnreachable")),
        ("state", "ifOperStatus", ("communicationsAlarm", "interfaceDown")),
        ("state", "poll_success", ("communicationsAlarm", "pollFailure")),
        ("threshold", "ifHCInOctets:rate", ("qualityOfServiceAlarm", "thresholdCrossed")),
        ("threshold", "hrProcessorLoad", ("qualityOfServiceAlarm", "thresholdCrossed")),
        ("absent", "hrStorageUsed", ("communicationsAlarm", "dataMissing")),
        ("event", "device.rebooted", ("equipmentAlarm", "reinitialized")),
        ("event", "device.config_changed", ("equipmentAlarm", "configurationChanged")),
        ("event", "device.*", ("equipmentAlarm", "equipmentAlarm")),
        ("state", "entPhysicalPsu", ("equipmentAlarm", "equipmentAlarm")),
    ],
)
def test_nsp_alarm_type(kind: str, metric: str, expected: tuple[str, str]) -> None:
    assert alarm_type(alert(kind=kind, metric=metric)) == expected


def test_nsp_affected_object() -> None:
    assert affected_object(alert(labels={})) == "network:r1"
    assert affected_object(alert(labels={"ifName": "1/1/1"})) == "network:r1:interface:1/1/1"
    assert affected_object(alert(device="2001:db8::1", labels={"interface": "a:b%"})) == (
        "network:2001%3Adb8%3A%3A1:interface:a%3Ab%25"
    )
    _, body = one("nsp", [alert(labels={}, rule="device-unreachable")])
    assert body["affectedObjectType"] == "device"
    assert body["affectedObjectName"] == "r1"


def test_silences_and_webhooks_confined_to_a_site_ignore_a_series_site_label():
    from netmon.alerts.matchers import parse_matchers
    from netmon.alerts.silences import Silence

    confined = Silence(1, tuple(parse_matchers(['site="lon1"'])))
    elsewhere = alert(site=None, labels={"site": "lon1", "interface": "eth0"})
    assert "site" not in elsewhere.match_labels()
    assert not confined.silences(elsewhere)
    assert not confined.silences(alert(site="par1", labels={"site": "lon1"}))
    assert confined.silences(alert(site="lon1", labels={}))
