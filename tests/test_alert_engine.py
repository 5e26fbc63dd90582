"""The alert engine on its own: conditions, for-durations, hysteresis, flapping, absent
series, matchers, restarts and rule changes. The database side is in test_alerts_flow.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from netmon.alerts.engine import AlertEngine, DeviceAttrs, OpenAlert, Transition, fingerprint
from netmon.alerts.rules import BUILTIN_RULES, Rule, RuleError, parse_rule
from netmon.records import DeviceEvent, Sample, SeriesKey

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def rule(**fields: Any) -> Rule:
    fields.setdefault("name", "r")
    return Rule.from_spec(parse_rule(fields), "api")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def key(device: str = "r1", metric: str = "cpu", **labels: str) -> SeriesKey:
    return SeriesKey.of(device, metric, labels)


def events(transitions: list[Transition]) -> list[str]:
    return [t.event for t in transitions]


def test_threshold_waits_for_its_duration_then_fires_and_resolves_past_the_clear_edge():
    engine = AlertEngine([rule(metric="cpu", op=">", value=80, clear=70, **{"for": "2m"})])
    k = key()
    assert events(engine.observe([Sample(k, at(0), 85)])) == ["pending"]
    assert events(engine.observe([Sample(k, at(60), 90)])) == []  # still within 2m
    fired = engine.observe([Sample(k, at(120), 91)])
    assert events(fired) == ["firing"]
    assert fired[0].since == at(0)  # pending_at: when the condition first held
    assert fired[0].value == 91
    # Between the clear edge and the threshold: still firing (hysteresis).
    assert events(engine.observe([Sample(k, at(180), 75)])) == []
    assert events(engine.observe([Sample(k, at(240), 70)])) == ["resolved"]


def test_a_pending_alert_whose_condition_clears_resolves_without_firing():
    engine = AlertEngine([rule(metric="cpu", value=80, **{"for": "5m"})])
    k = key()
    engine.observe([Sample(k, at(0), 99)])
    assert events(engine.observe([Sample(k, at(60), 10)])) == ["resolved"]
    # And a new episode starts from scratch.
    assert events(engine.observe([Sample(k, at(120), 99)])) == ["pending"]


def test_utilisation_divides_by_the_interface_speed_of_the_same_labels():
    engine = AlertEngine([r for r in map(_builtin, ["interface-utilisation-in"])])
    rate = key(metric="ifHCInOctets:rate", interface="eth0")
    speed = key(metric="ifSpeed", interface="eth0")
    other_speed = key(metric="ifSpeed", interface="eth1")
    # 100 Mbit/s link: 11.25 MB/s is 90 %. The speed arrives in the same batch, after.
    batch = [
        Sample(rate, at(0), 11_250_000),
        Sample(other_speed, at(0), 10),
        Sample(speed, at(0), 1e8),
    ]
    out = engine.observe(batch)
    assert events(out) == ["pending"]
    assert out[0].value == pytest.approx(90.0)
    assert "utilisation 90 %" in out[0].summary
    assert "eth0" in out[0].summary
    assert events(engine.observe([Sample(rate, at(300), 11_000_000)])) == ["firing"]


def test_no_speed_no_verdict():
    engine = AlertEngine([_builtin("interface-utilisation-in")])
    assert (
        engine.observe([Sample(key(metric="ifHCInOctets:rate", interface="e"), at(0), 1e12)]) == []
    )


def test_interface_down_only_while_admin_up():
    engine = AlertEngine([_builtin("interface-down")])
    oper, admin = (
        key(metric="ifOperStatus", interface="e1"),
        key(metric="ifAdminStatus", interface="e1"),
    )
    assert engine.observe([Sample(oper, at(0), 2), Sample(admin, at(0), 2)]) == []  # shut
    out = engine.observe([Sample(oper, at(60), 2), Sample(admin, at(60), 1)])
    assert events(out) == ["firing"]
    assert out[0].labels == (("interface", "e1"),)
    assert out[0].summary == "r1 e1 is down (admin up)"
    assert events(engine.observe([Sample(oper, at(120), 1), Sample(admin, at(120), 1)])) == [
        "resolved"
    ]


def test_device_unreachable_fires_on_up_zero():
    engine = AlertEngine([_builtin("device-unreachable")])
    up = key(metric="up")
    assert engine.observe([Sample(up, at(0), 1)]) == []
    out = engine.observe([Sample(up, at(60), 0)])
    assert events(out) == ["firing"]
    assert out[0].rule.severity == "critical"
    assert events(engine.observe([Sample(up, at(120), 1)])) == ["resolved"]


def test_matchers_see_labels_and_the_devices_site_role_and_tags():
    engine = AlertEngine(
        [
            rule(name="lon", metric="cpu", value=1, matchers={"site": "lon1"}),
            rule(name="core", metric="cpu", value=1, matchers=['tag="core"', 'role!="access"']),
            rule(name="eth", metric="cpu", value=1, matchers=['interface=~"eth[0-1]"']),
        ],
        devices={"a": DeviceAttrs("lon1", "core", ("core",)), "b": DeviceAttrs("par1", "access")},
    )
    out = engine.observe(
        [
            Sample(key("a"), at(0), 5),
            Sample(key("b"), at(0), 5),
            Sample(key("b", interface="eth1"), at(0), 5),
            Sample(key("b", interface="eth10"), at(0), 5),
        ]
    )
    assert sorted((t.rule.name, t.device, t.labels) for t in out) == [
        ("core", "a", ()),
        ("eth", "b", (("interface", "eth1"),)),
        ("lon", "a", ()),
    ]


def test_a_device_leaving_the_inventory_resolves_its_alerts():
    engine = AlertEngine(
        [rule(metric="cpu", value=1)], devices={"a": DeviceAttrs(), "b": DeviceAttrs()}
    )
    engine.observe([Sample(key("a"), at(0), 5), Sample(key("b"), at(0), 5)])
    out = engine.set_devices({"b": DeviceAttrs()})
    assert [(t.event, t.device) for t in out] == [("resolved", "a")]


def test_flapping_marks_the_alert_instead_of_paging_again_and_again():
    engine = AlertEngine([rule(metric="cpu", value=50)], flap_window_s=600, flap_threshold=4)
    k = key()
    seen: list[str] = []
    for i in range(12):  # up, down, up, down ... a minute apart
        seen += events(engine.observe([Sample(k, at(i * 60), 90 if i % 2 == 0 else 10)]))
    # Two real episodes, then the fourth change makes it flap; the alert stays open and
    # the rest of the flips are only counted.
    assert seen == ["firing", "resolved", "firing", "flapping"]
    # Quiet (the condition stays clear) until the window holds fewer than half the
    # threshold of changes: stable, and resolved since the condition is clear.
    later: list[Transition] = []
    for i in range(12, 40):
        later += engine.observe([Sample(k, at(i * 60), 10)])
    assert events(later) == ["stable", "resolved"]
    assert later[0].fingerprint == fingerprint("r", "r1", ())


def test_absent_series_fire_on_the_clock_and_resolve_when_seen():
    engine = AlertEngine([rule(kind="absent", metric="cpu", **{"for": "30s"})])
    k = key()
    engine.observe([Sample(k, at(0), 1)])
    seen_at = engine._tracks[("r", "r1", ())].last_seen
    assert engine.tick(seen_at + 29) == []
    out = engine.tick(seen_at + 31)
    assert events(out) == ["firing"]
    assert engine.tick(seen_at + 60) == []  # once
    assert events(engine.observe([Sample(k, at(90), 1)])) == ["resolved"]


def test_restored_alerts_do_not_fire_twice_and_pending_keeps_its_start():
    rules = [
        rule(name="hot", metric="cpu", value=80),
        rule(name="slow", metric="mem", value=1, **{"for": "5m"}),
    ]
    engine = AlertEngine(rules)
    taken = engine.restore(
        [
            OpenAlert("hot", "r1", (), "acknowledged", at(-600), False),
            OpenAlert("slow", "r1", (), "pending", at(-240), False),
            OpenAlert("gone", "r1", (), "firing", at(-240), False),  # rule deleted since
        ]
    )
    assert taken == 2
    assert engine.observe([Sample(key(metric="cpu"), at(0), 99)]) == []
    out = engine.observe([Sample(key(metric="mem"), at(60), 5)])
    assert events(out) == ["firing"]
    assert out[0].since == at(-240)


def test_a_removed_rule_resolves_its_alerts_and_a_changed_one_keeps_them():
    engine = AlertEngine(
        [rule(name="a", metric="cpu", value=1), rule(name="b", metric="cpu", value=1)]
    )
    engine.observe([Sample(key(), at(0), 5)])
    out = engine.set_rules([rule(name="a", metric="cpu", value=2)])
    assert [(t.event, t.rule.name) for t in out] == [("resolved", "b")]
    # "a" with its new threshold: 5 > 2 still holds, no new firing.
    assert engine.observe([Sample(key(), at(60), 5)]) == []
    assert events(engine.observe([Sample(key(), at(120), 1)])) == ["resolved"]


def test_nan_says_nothing():
    engine = AlertEngine([rule(metric="cpu", op="<", value=1)])
    assert engine.observe([Sample(key(), at(0), float("nan"))]) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "metric": "m"}, "rule 'x': a threshold rule needs 'value'"),
        ({"name": "x", "kind": "state", "state": "on_fire"}, "rule 'x': field 'state'"),
        ({"name": "x", "metric": "m", "value": 1, "for": "soon"}, "rule 'x': field 'for'"),
        ({"name": "x", "metric": "m", "value": 1, "for": "99999999999w"}, "longer than any"),
        ({"name": "x", "metric": "m", "value": 1, "severity": "bad"}, "rule 'x': field 'severity'"),
        (
            {"name": "x", "metric": "m", "value": 1, "matchers": ["site"]},
            "rule 'x': field 'matchers'",
        ),
        (
            {"name": "x", "metric": "m", "value": 1, "summary": "{value:.x}"},
            "rule 'x': field 'summary'",
        ),
        ({"name": "x", "kind": "absent", "metric": "m"}, "an absent rule needs 'for'"),
        ({"name": "x", "metric": "m", "value": 1, "colour": "red"}, "rule 'x': field 'colour'"),
    ],
)
def test_an_invalid_rule_names_the_rule_and_the_field(data: dict[str, Any], message: str):
    with pytest.raises(RuleError) as info:
        parse_rule(data)
    assert message in str(info.value)


def _builtin(name: str) -> Rule:
    return Rule.from_spec(next(s for s in BUILTIN_RULES if s.name == name), "builtin")


# -- event rules ------------------------------------------------------------------------------


def reboot(device: str, seconds: float) -> DeviceEvent:
    return DeviceEvent(
        device=device,
        time=at(seconds),
        kind="device.rebooted",
        message=f"{device} restarted",
        severity="warning",
        attributes={"uptime_s": "12.00"},
    )


def test_an_event_fires_its_devices_alert_which_a_repeat_extends_and_the_clock_resolves():
    engine = AlertEngine(
        [
            rule(
                kind="event",
                event="device.reboot*",
                summary="{message} ({uptime_s}s)",
                **{"for": "10m"},
            )
        ]
    )
    out = engine.observe_events([reboot("r1", 0)])
    assert events(out) == ["firing"]
    assert out[0].summary == "r1 restarted (12.00s)"
    assert out[0].labels == ()
    track = engine._tracks[("r", "r1", ())]
    assert engine.observe_events([reboot("r1", 60)]) == []  # one alert, however often
    assert engine.tick(track.last_seen + 599) == []
    assert events(engine.tick(track.last_seen + 600)) == ["resolved"]
    # Another kind, or another device's matchers: nothing.
    assert engine.observe_events([DeviceEvent("r1", at(0), "device.reachable")]) == []


def test_an_event_alert_resolves_at_its_deadline_whatever_the_clock_reads():
    """(t + 600) - t is an ulp under 600 for some t (844.717949 is one): the hold time is
    a deadline, so tick(last_seen + for) resolves for every clock value."""
    engine = AlertEngine([rule(kind="event", event="device.reboot*", **{"for": "10m"})])
    engine.observe_events([reboot("r1", 0)])
    track = engine._tracks[("r", "r1", ())]
    track.last_seen = 844.717949
    assert (track.last_seen + 600) - track.last_seen < 600
    assert events(engine.tick(track.last_seen + 600)) == ["resolved"]


def test_event_rule_matchers_see_the_event_attributes_and_the_device():
    engine = AlertEngine(
        [
            rule(
                kind="event",
                event="device.*",
                matchers={"site": "lon1", "uptime_s": "12.00"},
                **{"for": "1m"},
            )
        ],
        devices={"a": DeviceAttrs("lon1"), "b": DeviceAttrs("par1")},
    )
    out = engine.observe_events([reboot("a", 0), reboot("b", 0)])
    assert [t.device for t in out] == ["a"]


def test_event_rules_need_an_event_and_a_hold_time():
    with pytest.raises(RuleError, match="an event rule needs 'event'"):
        parse_rule({"name": "x", "kind": "event", "for": "1m"})
    with pytest.raises(RuleError, match="an event rule needs 'for'"):
        parse_rule({"name": "x", "kind": "event", "event": "device.rebooted"})
    with pytest.raises(RuleError, match="'event' belongs to event rules"):
        parse_rule({"name": "x", "metric": "m", "value": 1, "event": "device.rebooted"})


def test_a_series_label_cannot_stand_in_for_its_devices_site():
    # A rule confined to lon1 (as a token limited to lon1 makes it) binds lon1's devices
    # only: not a device elsewhere, or without a site, whose series carry a site label.
    engine = AlertEngine(
        [rule(metric="cpu", value=1, matchers=['site="lon1"'])],
        devices={"a": DeviceAttrs("lon1"), "b": DeviceAttrs("par1"), "c": DeviceAttrs()},
    )
    out = engine.observe(
        [Sample(key(device=d, site="lon1", role="core"), at(0), 5) for d in ("a", "b", "c")]
    )
    assert sorted(t.device for t in out) == ["a"]
