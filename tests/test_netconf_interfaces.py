"""Parser tests: canned replies of the real shapes (ietf-interfaces RFC 7223 and RFC 8343,
openconfig-interfaces) mapped to the SNMP interfaces task's records, and <get-config>
text normalisation. The same code runs against netconfd in test_tasks_netconf.py; these
cover the shapes netconfd does not send (NMDA, openconfig, every leaf filled in).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from netmon.errors import NetconfMalformedReplyError
from netmon.ingest.pipeline import IngestPipeline
from netmon.netconf import xml
from netmon.netconf.client import Capabilities
from netmon.netconf.config import normalise
from netmon.netconf.facts import capability_facts
from netmon.netconf.interfaces import (
    MAX_SPEED,
    choose_model,
    interface_records,
    parse_ietf,
    parse_openconfig,
)
from netmon.records import DeviceFacts, Record, Sample, SeriesKey

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
IF_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
OC_NS = "http://openconfig.net/yang/interfaces"
ETH_NS = "http://openconfig.net/yang/interfaces/ethernet"
IANA = "urn:ietf:params:xml:ns:yang:iana-if-type"


def data(body: str) -> xml.Element:
    root = xml.parse(
        '<rpc-reply message-id="1" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
        f"<data>{body}</data></rpc-reply>"
    )
    return root[0]


def values(records: list[Record]) -> dict[tuple[str, str], int | float]:
    return {
        (r.series.label_map["interface"], r.series.metric): r.value
        for r in records
        if isinstance(r, Sample)
    }


def ticks(when: str) -> int:
    return int(datetime.fromisoformat(when).timestamp() * 100)


STATS_7223 = """
<statistics>
  <discontinuity-time>2026-11-20T08:15:30.25Z</discontinuity-time>
  <in-octets>18446744073709551615</in-octets><in-unicast-pkts>2000</in-unicast-pkts>
  <in-broadcast-pkts>3</in-broadcast-pkts><in-multicast-pkts>4</in-multicast-pkts>
  <in-discards>5</in-discards><in-errors>6</in-errors><in-unknown-protos>7</in-unknown-protos>
  <out-octets>8000</out-octets><out-unicast-pkts>900</out-unicast-pkts>
  <out-broadcast-pkts>10</out-broadcast-pkts><out-multicast-pkts>11</out-multicast-pkts>
  <out-discards>12</out-discards><out-errors>13</out-errors>
</statistics>"""

RFC7223 = f"""
<interfaces xmlns="{IF_NS}">
  <interface><name>eth0</name><description>uplink to core</description>
    <enabled>true</enabled></interface>
  <interface><name>eth9</name><description>pre-provisioned</description></interface>
</interfaces>
<interfaces-state xmlns="{IF_NS}" xmlns:ianaift="{IANA}">
  <interface>
    <name>eth0</name><type>ianaift:ethernetCsmacd</type>
    <admin-status>up</admin-status><oper-status>lower-layer-down</oper-status>
    <if-index>2</if-index><speed>10000000000</speed>{STATS_7223}
  </interface>
  <interface>
    <name>lo</name><admin-status>testing</admin-status><oper-status>dormant</oper-status>
    <if-index>1</if-index>
  </interface>
</interfaces-state>"""


def test_rfc7223_state_with_descriptions_from_config() -> None:
    interfaces = parse_ietf("r1", data(RFC7223))
    assert [i.name for i in interfaces] == ["eth0", "lo"]  # eth9 has no state: not there
    records = interface_records("r1", NOW, interfaces)
    got = values(records)
    assert got["eth0", "ifHCInOctets"] == 2**64 - 1
    assert got["eth0", "ifHCInUcastPkts"] == 2000
    assert got["eth0", "ifHCInBroadcastPkts"] == 3
    assert got["eth0", "ifHCInMulticastPkts"] == 4
    assert got["eth0", "ifInDiscards"] == 5
    assert got["eth0", "ifInErrors"] == 6
    assert got["eth0", "ifHCOutOctets"] == 8000
    assert got["eth0", "ifHCOutUcastPkts"] == 900
    assert got["eth0", "ifHCOutBroadcastPkts"] == 10
    assert got["eth0", "ifHCOutMulticastPkts"] == 11
    assert got["eth0", "ifOutDiscards"] == 12
    assert got["eth0", "ifOutErrors"] == 13
    assert got["eth0", "ifAdminStatus"] == 1
    assert got["eth0", "ifOperStatus"] == 7
    assert got["eth0", "ifSpeed"] == 10**10
    assert got["eth0", "ifCounterDiscontinuityTime"] == ticks("2026-11-20T08:15:30.25+00:00")
    assert got["lo", "ifAdminStatus"] == 3
    assert got["lo", "ifOperStatus"] == 5
    assert ("lo", "ifSpeed") not in got
    assert ("lo", "ifHCInOctets") not in got
    (facts,) = [r for r in records if isinstance(r, DeviceFacts)]
    assert facts.facts == {
        "interfaces": {
            "eth0": {"index": 2, "alias": "uplink to core"},
            "lo": {"index": 1, "alias": ""},
        }
    }
    keys = {r.series for r in records if isinstance(r, Sample)}
    assert (
        SeriesKey.of(
            "r1", "ifOutErrors", {"interface": "eth0"}, kind="counter", unit="packets", bits=32
        )
        in keys
    )
    assert SeriesKey.of("r1", "ifSpeed", {"interface": "eth0"}, unit="bit/s") in keys
    assert (
        SeriesKey.of("r1", "ifCounterDiscontinuityTime", {"interface": "eth0"}, unit="ticks")
        in keys
    )


def test_rfc8343_nmda_list_wins_over_deprecated_state() -> None:
    body = f"""
    <interfaces xmlns="{IF_NS}">
      <interface>
        <name>ge-0/0/1</name><description>to r2</description><enabled>false</enabled>
        <oper-status>down</oper-status><if-index>517</if-index><speed>1000000000</speed>
        <statistics><discontinuity-time>2026-11-27T09:00:00+01:00</discontinuity-time>
          <in-octets>42</in-octets></statistics>
      </interface>
    </interfaces>
    <interfaces-state xmlns="{IF_NS}">
      <interface><name>ge-0/0/1</name><oper-status>up</oper-status>
        <statistics><in-octets>1</in-octets></statistics></interface>
    </interfaces-state>"""
    got = values(interface_records("r1", NOW, parse_ietf("r1", data(body))))
    assert got["ge-0/0/1", "ifHCInOctets"] == 42
    assert got["ge-0/0/1", "ifOperStatus"] == 2
    assert got["ge-0/0/1", "ifAdminStatus"] == 2  # from enabled=false, no admin-status leaf
    assert got["ge-0/0/1", "ifCounterDiscontinuityTime"] == ticks("2026-11-27T08:00:00+00:00")


OPENCONFIG = f"""
<interfaces xmlns="{OC_NS}">
  <interface>
    <name>Ethernet1</name>
    <config><name>Ethernet1</name><description>ignored: state wins</description></config>
    <state>
      <name>Ethernet1</name><description>to spine1</description><ifindex>1001</ifindex>
      <admin-status>UP</admin-status><oper-status>LOWER_LAYER_DOWN</oper-status>
      <counters>
        <in-octets>123456789012</in-octets><in-pkts>99</in-pkts>
        <in-unicast-pkts>90</in-unicast-pkts><in-errors>4294967301</in-errors>
        <out-octets>55</out-octets><out-discards>0</out-discards>
        <last-clear>1764230400000000000</last-clear>
      </counters>
    </state>
    <ethernet xmlns="{ETH_NS}"><state>
      <port-speed xmlns:oc-eth="{ETH_NS}">oc-eth:SPEED_100GB</port-speed>
      <negotiated-port-speed xmlns:oc-eth="{ETH_NS}">oc-eth:SPEED_25GB</negotiated-port-speed>
    </state></ethernet>
    <subinterfaces><subinterface><index>0</index><state><counters>
      <in-octets>1</in-octets></counters></state></subinterface></subinterfaces>
  </interface>
  <interface>
    <name>Management1</name>
    <state><admin-status>DOWN</admin-status><oper-status>NOT_PRESENT</oper-status></state>
    <ethernet xmlns="{ETH_NS}"><state>
      <port-speed xmlns:oc-eth="{ETH_NS}">oc-eth:SPEED_UNKNOWN</port-speed>
    </state></ethernet>
  </interface>
</interfaces>"""


def test_openconfig_maps_to_the_same_metrics() -> None:
    records = interface_records("r1", NOW, parse_openconfig("r1", data(OPENCONFIG)))
    got = values(records)
    assert got["Ethernet1", "ifHCInOctets"] == 123456789012
    assert got["Ethernet1", "ifHCInUcastPkts"] == 90
    assert got["Ethernet1", "ifInErrors"] == 5  # a 64-bit counter in a 32-bit column
    assert got["Ethernet1", "ifHCOutOctets"] == 55
    assert got["Ethernet1", "ifOutDiscards"] == 0
    assert got["Ethernet1", "ifAdminStatus"] == 1
    assert got["Ethernet1", "ifOperStatus"] == 7
    assert got["Ethernet1", "ifSpeed"] == 25 * 10**9  # negotiated beats configured
    assert got["Ethernet1", "ifCounterDiscontinuityTime"] == 176423040000
    assert got["Management1", "ifAdminStatus"] == 2
    assert got["Management1", "ifOperStatus"] == 6
    assert ("Management1", "ifSpeed") not in got
    assert {name for name, _ in got} == {"Ethernet1", "Management1"}  # no subinterfaces
    (facts,) = [r.facts for r in records if isinstance(r, DeviceFacts)]
    assert facts["interfaces"]["Ethernet1"] == {"index": 1001, "alias": "to spine1"}


def test_discontinuity_changes_exactly_when_the_counters_restarted() -> None:
    def poll(when: str, octets: int, at: datetime) -> list[Record]:
        body = f"""<interfaces-state xmlns="{IF_NS}"><interface><name>e1</name>
          <oper-status>up</oper-status><speed>1000000000</speed><statistics>
          <discontinuity-time>{when}</discontinuity-time><in-octets>{octets}</in-octets>
          </statistics></interface></interfaces-state>"""
        return interface_records("r1", at, parse_ietf("r1", data(body)))

    pipeline = IngestPipeline()
    t = [datetime(2026, 11, 27, 12, m, tzinfo=UTC) for m in range(4)]

    def rate(records: list[Record]) -> float | None:
        out = pipeline.process("r1", records)
        found = [
            r.value for r in out if isinstance(r, Sample) and r.series.metric.endswith(":rate")
        ]
        return found[0] if found else None

    assert rate(poll("2026-11-27T10:00:00Z", 1000, t[0])) is None  # first sample
    # The same instant written with another offset is no discontinuity.
    assert rate(poll("2026-11-27T11:00:00+01:00", 7000, t[1])) == 100.0
    # A reset: counters back near zero and a new discontinuity-time: no rate at all.
    assert rate(poll("2026-11-27T12:01:30Z", 500, t[2])) is None
    assert rate(poll("2026-11-27T12:01:30Z", 6500, t[3])) == 100.0


@pytest.mark.parametrize(
    ("leaf", "message"),
    [
        ("<statistics><in-octets>12abc</in-octets></statistics>", "in-octets"),
        ("<statistics><in-errors>-1</in-errors></statistics>", "in-errors"),
        ("<statistics><out-octets>18446744073709551616</out-octets></statistics>", "out-octets"),
        ("<if-index>one</if-index>", "if-index"),
        (
            "<statistics><discontinuity-time>yesterday</discontinuity-time></statistics>",
            "date-time",
        ),
    ],
)
def test_malformed_values_fail_the_poll(leaf: str, message: str) -> None:
    body = (
        f'<interfaces-state xmlns="{IF_NS}"><interface><name>e1</name>'
        f"<oper-status>up</oper-status>{leaf}</interface></interfaces-state>"
    )
    with pytest.raises(NetconfMalformedReplyError, match=message) as caught:
        parse_ietf("r1", data(body))
    assert "r1: interface e1" in str(caught.value)


def test_odd_but_harmless_values_give_no_sample() -> None:
    body = f"""<interfaces-state xmlns="{IF_NS}">
      <interface><name>e1</name><oper-status>vendor-special</oper-status>
        <speed>{MAX_SPEED + 1}</speed></interface>
      <interface><name>e2</name><oper-status>up</oper-status>
        <speed>{MAX_SPEED}</speed></interface>
    </interfaces-state>"""
    got = values(interface_records("r1", NOW, parse_ietf("r1", data(body))))
    assert got == {("e2", "ifOperStatus"): 1, ("e2", "ifSpeed"): MAX_SPEED}
    with pytest.raises(NetconfMalformedReplyError, match="without a name"):
        parse_ietf("r1", data(f'<interfaces-state xmlns="{IF_NS}"><interface/></interfaces-state>'))


def test_model_choice() -> None:
    ietf = f"{IF_NS}?module=ietf-interfaces&revision=2018-02-20"
    oc = f"{OC_NS}?module=openconfig-interfaces&revision=2021-04-06"
    base = "urn:ietf:params:netconf:base:1.1"
    assert choose_model(Capabilities.from_uris([base, ietf, oc])) == "ietf"
    assert choose_model(Capabilities.from_uris([base, oc])) == "openconfig"
    # A YANG 1.1 server lists modules in ietf-yang-library, not in its hello.
    assert choose_model(Capabilities.from_uris([base])) == "ietf"


def test_capability_facts_are_sorted_and_split() -> None:
    uris = [
        "urn:ietf:params:netconf:capability:xpath:1.0",
        f"{IF_NS}?module=ietf-interfaces&revision=2014-05-08&features=if-mib,arbitrary-names",
        "urn:ietf:params:netconf:base:1.0",
        "urn:a?module=a-mod&deviations=a-dev",
    ]
    facts = capability_facts(Capabilities.from_uris(uris))
    assert facts["capabilities"] == [
        "urn:ietf:params:netconf:base:1.0",
        "urn:ietf:params:netconf:capability:xpath:1.0",
    ]
    assert facts["modules"] == [
        {
            "name": "a-mod",
            "revision": None,
            "namespace": "urn:a",
            "features": [],
            "deviations": ["a-dev"],
        },
        {
            "name": "ietf-interfaces",
            "revision": "2014-05-08",
            "namespace": IF_NS,
            "features": ["arbitrary-names", "if-mib"],
            "deviations": [],
        },
    ]


# -- <get-config> text -------------------------------------------------------------------


def test_normalise_ignores_layout_and_keeps_values_and_order() -> None:
    sys_ns = "urn:ietf:params:xml:ns:yang:ietf-system"
    compact = data(
        f'<system xmlns="{sys_ns}"><hostname>r1</hostname>'
        '<contact> two  spaces </contact><login><user b="2" a="1"><name>zed</name></user>'
        "<user><name>amy</name></user></login><empty>\n    </empty></system>"
    )
    spread = data(
        f'\n  <system xmlns:s="{sys_ns}" xmlns="{sys_ns}">\n    <hostname>r1</hostname>\n'
        "    <contact> two  spaces </contact>\n    <login>\n"
        '      <user a="1" b="2">\n        <name>zed</name>\n      </user>\n'
        "      <user>\n        <name>amy</name>\n      </user>\n    </login>\n"
        "    <empty>\n</empty>\n  </system>\n"
    )
    text = normalise(compact)
    assert text == normalise(spread)
    assert text == (
        '<data xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">\n'
        f'  <system xmlns="{sys_ns}">\n'
        "    <hostname>r1</hostname>\n"
        "    <contact> two  spaces </contact>\n"
        "    <login>\n"
        '      <user a="1" b="2">\n'
        "        <name>zed</name>\n"
        "      </user>\n"
        "      <user>\n"
        "        <name>amy</name>\n"
        "      </user>\n"
        "    </login>\n"
        "    <empty/>\n"
        "  </system>\n"
        "</data>\n"
    )
    assert normalise(data("")) == '<data xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"/>\n'
