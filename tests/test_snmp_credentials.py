"""SNMPv3 credentials from the inventory: validated at load, errors name host and key."""

from __future__ import annotations

import pytest

from netmon.errors import ConfigError
from netmon.snmp.credentials import snmp_credentials
from netmon.snmp.usm import AUTH_PROTOCOLS, PRIV_PROTOCOLS, usm_user


@pytest.fixture
def keys(monkeypatch, tmp_path):
    monkeypatch.setenv("T_AUTH", "auth-secret-1")
    priv = tmp_path / "priv"
    priv.write_text("priv-secret-2\n")
    return {"auth": {"env": "T_AUTH"}, "priv": {"file": str(priv)}}


def test_auth_priv_from_env_and_file(keys):
    creds = snmp_credentials(
        "r1",
        {
            "user": "netmon",
            "auth": {"protocol": "SHA256", "key": keys["auth"]},
            "priv": {"protocol": "aes256", "key": keys["priv"]},
            "timeout": "500ms",
            "max_repetitions": 40,
        },
    )
    assert creds.security_level == "authPriv"
    assert (creds.auth_protocol, creds.priv_protocol) == ("sha256", "aes256")
    assert (creds.auth_key, creds.priv_key) == ("auth-secret-1", "priv-secret-2")
    assert creds.timeout.total_seconds() == 0.5
    assert "secret" not in repr(creds)


def test_missing_environment_variable_names_host_and_key(keys, monkeypatch):
    monkeypatch.delenv("T_AUTH")
    with pytest.raises(ConfigError, match=r"host r7: snmp\.auth\.key: .*T_AUTH is not set"):
        snmp_credentials("r7", {"user": "u", "auth": {"protocol": "sha1", "key": keys["auth"]}})


@pytest.mark.parametrize(
    ("snmp", "expected"),
    [
        (
            {"user": "u", "auth": {"protocol": "sha1", "key": "inline-key"}},
            "auth.key: keys are not accepted inline",
        ),
        (
            {"user": "u", "auth": {"protocol": "md5", "key": {"env": "T_AUTH"}}},
            "auth.protocol: md5 is broken",
        ),
        (
            {"user": "u", "auth": {"protocol": "sha3", "key": {"env": "T_AUTH"}}},
            "auth.protocol: expected one of",
        ),
        (
            {"user": "u", "priv": {"protocol": "aes128", "key": {"env": "T_AUTH"}}},
            "priv: privacy needs authentication",
        ),
        ({"user": "u", "port": 0}, "port: expected a whole number"),
        ({"user": "u", "retires": 2}, "retires: unknown key"),
        ({"auth": None}, "user: expected"),
    ],
)
def test_bad_entries_are_named(keys, snmp, expected):
    with pytest.raises(ConfigError) as info:
        snmp_credentials("edge-1", snmp)
    assert "inventory host edge-1: snmp." in str(info.value)
    assert expected in str(info.value)


def test_legacy_flag_allows_md5_and_des(keys):
    creds = snmp_credentials(
        "old",
        {
            "user": "u",
            "legacy": True,
            "auth": {"protocol": "md5", "key": keys["auth"]},
            "priv": {"protocol": "des", "key": keys["priv"]},
        },
    )
    assert (creds.auth_protocol, creds.priv_protocol) == ("md5", "des")


def test_short_keys_are_refused(monkeypatch):
    monkeypatch.setenv("T_SHORT", "short")
    with pytest.raises(ConfigError, match="at least 8 characters"):
        snmp_credentials(
            "r1", {"user": "u", "auth": {"protocol": "sha1", "key": {"env": "T_SHORT"}}}
        )


def test_aes_variants_map_to_distinct_pysnmp_protocols(keys):
    assert PRIV_PROTOCOLS["aes256"] != PRIV_PROTOCOLS["aes256c"]
    assert PRIV_PROTOCOLS["aes192"] != PRIV_PROTOCOLS["aes192c"]
    assert len({id(p) for p in AUTH_PROTOCOLS.values()}) == len(AUTH_PROTOCOLS)
    creds = snmp_credentials(
        "r1",
        {
            "user": "netmon",
            "auth": {"protocol": "sha512", "key": keys["auth"]},
            "priv": {"protocol": "aes256c", "key": keys["priv"]},
        },
    )
    user = usm_user(creds)
    assert user.userName == "netmon"
    assert user.authentication_protocol == AUTH_PROTOCOLS["sha512"]
    assert user.privacy_protocol == PRIV_PROTOCOLS["aes256c"]
    assert user.security_level == "authPriv"


def test_snmpv2c_community_by_reference(monkeypatch):
    monkeypatch.setenv("T_COMMUNITY", "ro-community")
    creds = snmp_credentials("p1", {"version": "2c", "community": {"env": "T_COMMUNITY"}})
    assert (creds.version, creds.community, creds.engine) == ("2c", "ro-community", "gufo")
    assert "ro-community" not in repr(creds)
    with pytest.raises(ConfigError, match=r"host p1: snmp\.community: keys are not accepted"):
        snmp_credentials("p1", {"version": "2c", "community": "public"})
    with pytest.raises(ConfigError, match=r"host p1: snmp\.community: SNMPv2c needs"):
        snmp_credentials("p1", {"version": "v2c"})
    with pytest.raises(ConfigError, match=r"host p1: snmp\.version: expected 2c or 3"):
        snmp_credentials("p1", {"version": "1", "community": {"env": "T_COMMUNITY"}})


def test_a_v2c_host_sets_the_inherited_v3_keys_aside(monkeypatch):
    # The defaults' v3 user and a key whose variable this host's machine lacks: unread.
    monkeypatch.setenv("T_COMMUNITY", "ro-community")
    merged = {
        "user": "netmon",
        "auth": {"protocol": "sha256", "key": {"env": "T_NOT_SET_ANYWHERE"}},
        "version": "2c",
        "community": {"env": "T_COMMUNITY"},
    }
    assert snmp_credentials("p2", merged).community == "ro-community"


def test_engine_choice_and_what_gufo_cannot_do(keys):
    base = {"user": "netmon", "auth": {"protocol": "sha1", "key": keys["auth"]}}
    assert snmp_credentials("e1", base).engine == "gufo"
    assert snmp_credentials("e1", {**base, "engine": "pysnmp"}).engine == "pysnmp"
    with pytest.raises(ConfigError, match=r"host e1: snmp\.engine: expected gufo or pysnmp"):
        snmp_credentials("e1", {**base, "engine": "net-snmp"})
    triple = {**base, "legacy": True, "priv": {"protocol": "3des", "key": keys["priv"]}}
    assert snmp_credentials("e1", triple).engine == "pysnmp"  # chosen for it
    assert snmp_credentials("e1", {**base, "context": "vrf-a"}).engine == "pysnmp"
    with pytest.raises(ConfigError, match=r"snmp\.engine: gufo-snmp does not support 3DES"):
        snmp_credentials("e1", {**triple, "engine": "gufo"})
