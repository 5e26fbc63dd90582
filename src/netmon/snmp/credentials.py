"""SNMP credentials as the inventory states them, validated at load time.

In a Nornir host's (or group's) ``data``, SNMPv3 (the default version)::

    snmp:
      engine: gufo           # or pysnmp (optional; see netmon.snmp.engines)
      user: netmon
      auth: {protocol: sha256, key: {env: NETMON_SNMP_AUTH}}
      priv: {protocol: aes256, key: {file: /run/secrets/snmp-priv}}
      context: ""            # optional
      port: 161
      timeout: 2s
      retries: 1
      max_repetitions: 25

SNMPv2c, where a device offers nothing better::

    snmp:
      version: 2c
      community: {env: NETMON_SNMP_COMMUNITY}

Keys and communities are references, never inline: ``{env: NAME}`` or ``{file: PATH}``.
A reference that cannot be resolved is an error at load that names the host and the key,
not a timeout at poll time.

Privacy protocol names follow Net-SNMP, so an engineer can tell the two AES-192/256
variants apart: ``aes192``/``aes256`` are the Blumenthal key extension (what Net-SNMP's
``-x AES256`` does), ``aes192c``/``aes256c`` the Reeder draft that Cisco implements
(Net-SNMP's ``AES256C``). They differ only when the authentication digest is shorter than
the AES key (MD5, SHA-1, SHA-224 for AES-256; MD5, SHA-1 for AES-192): there a mismatch
looks like a wrong key. With SHA-256 and longer the localised key already covers the AES
key and both variants give the same key. MD5, DES and 3DES are refused unless
``legacy: true`` says the device leaves no choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast, get_args

from netmon.durations import parse_duration
from netmon.errors import ConfigError

__all__ = [
    "AuthProtocol",
    "EngineName",
    "PrivProtocol",
    "SnmpCredentials",
    "SnmpV3Credentials",
    "SnmpVersion",
    "snmp_credentials",
]

AuthProtocol = Literal["sha1", "sha224", "sha256", "sha384", "sha512", "md5"]
PrivProtocol = Literal["aes128", "aes192", "aes256", "aes192c", "aes256c", "des", "3des"]
SnmpVersion = Literal["2c", "3"]
EngineName = Literal["gufo", "pysnmp"]

LEGACY_AUTH = frozenset({"md5"})
LEGACY_PRIV = frozenset({"des", "3des"})
MIN_KEY_LENGTH = 8  # RFC 3414: shorter pass phrases are refused by agents


@dataclass(frozen=True)
class SnmpCredentials:
    """How to reach one agent: SNMPv3 user and keys, or an SNMPv2c community."""

    user: str
    auth_protocol: AuthProtocol | None
    priv_protocol: PrivProtocol | None
    auth_key: str = field(default="", repr=False)
    priv_key: str = field(default="", repr=False)
    context: str = ""
    port: int = 161
    timeout: timedelta = timedelta(seconds=2)
    retries: int = 1
    max_repetitions: int = 25
    version: SnmpVersion = "3"
    community: str = field(default="", repr=False)
    engine: EngineName = "gufo"

    @property
    def security_level(self) -> Literal["noAuthNoPriv", "authNoPriv", "authPriv"]:
        if self.auth_protocol is None:
            return "noAuthNoPriv"
        return "authNoPriv" if self.priv_protocol is None else "authPriv"


SnmpV3Credentials = SnmpCredentials  # the name before SNMPv2c was added


class _Where:
    """Builds error messages that name the host and the key."""

    def __init__(self, host: str) -> None:
        self.host = host

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"inventory host {self.host}: snmp.{key}: {reason}")


def _secret(where: _Where, key: str, ref: Any, *, min_length: int = MIN_KEY_LENGTH) -> str:
    if isinstance(ref, str):
        raise where.error(key, "keys are not accepted inline; use {env: NAME} or {file: PATH}")
    if not isinstance(ref, Mapping) or len(ref) != 1 or not ({"env", "file"} & set(ref)):
        raise where.error(key, "expected {env: NAME} or {file: PATH}")
    if "env" in ref:
        value = os.environ.get(str(ref["env"]))
        if value is None:
            raise where.error(key, f"environment variable {ref['env']} is not set")
    else:
        try:
            value = Path(str(ref["file"])).read_text().strip()
        except OSError as exc:
            raise where.error(key, f"cannot read {ref['file']}: {exc.strerror}") from exc
    if len(value) < min_length:
        raise where.error(key, f"must be at least {min_length} characters")
    return value


def _protocol(where: _Where, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    name = str(value).lower()
    if name not in allowed:
        raise where.error(key, f"expected one of {', '.join(allowed)}, got {value!r}")
    return name


def _int(where: _Where, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise where.error(key, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


_COMMON = {"engine", "port", "timeout", "retries", "max_repetitions", "version"}
_V3 = {"user", "auth", "priv", "context", "legacy"}


def snmp_credentials(host: str, snmp: Mapping[str, Any]) -> SnmpCredentials:
    """Validate one host's ``snmp`` data (groups and defaults already merged)."""
    where = _Where(host)
    version = str(snmp.get("version", "3")).lower().removeprefix("v")
    if version not in get_args(SnmpVersion):
        raise where.error("version", f"expected 2c or 3, got {snmp.get('version')!r}")
    # Settings merge key by key from defaults and groups, so a v2c host inherits the
    # defaults' v3 user and keys (and a v3 host a group's community): the other version's
    # keys are set aside unread, their secrets unresolved.
    unknown = set(snmp) - _COMMON - _V3 - {"community"}
    if unknown:
        raise where.error(sorted(unknown)[0], "unknown key")
    engine = str(snmp.get("engine", "gufo")).lower()
    if engine not in get_args(EngineName):
        raise where.error("engine", f"expected gufo or pysnmp, got {snmp.get('engine')!r}")
    try:
        timeout = parse_duration(snmp.get("timeout", "2s"))
    except ValueError as exc:
        raise where.error("timeout", str(exc)) from exc
    common: dict[str, Any] = {
        "port": _int(where, "port", snmp.get("port", 161), 1, 65535),
        "timeout": timeout,
        "retries": _int(where, "retries", snmp.get("retries", 1), 0, 10),
        "max_repetitions": _int(where, "max_repetitions", snmp.get("max_repetitions", 25), 1, 200),
        "engine": engine,
        "version": version,
    }
    if version == "2c":
        if "community" not in snmp:
            raise where.error("community", "SNMPv2c needs a community: {env: NAME} or {file: PATH}")
        community = _secret(where, "community", snmp["community"], min_length=1)
        return SnmpCredentials(user="", auth_protocol=None, priv_protocol=None,
                               community=community, **common)  # fmt: skip
    user = snmp.get("user")
    if not isinstance(user, str) or not user:
        raise where.error("user", "expected the SNMPv3 user name")
    legacy = snmp.get("legacy", False) is True

    auth_protocol: str | None = None
    auth_key = ""
    if (auth := snmp.get("auth")) is not None:
        if not isinstance(auth, Mapping):
            raise where.error("auth", "expected {protocol: ..., key: {env: NAME}}")
        auth_protocol = _protocol(
            where, "auth.protocol", auth.get("protocol"), get_args(AuthProtocol)
        )
        if auth_protocol in LEGACY_AUTH and not legacy:
            raise where.error("auth.protocol", f"{auth_protocol} is broken; set legacy: true")
        auth_key = _secret(where, "auth.key", auth.get("key"))

    priv_protocol: str | None = None
    priv_key = ""
    if (priv := snmp.get("priv")) is not None:
        if auth_protocol is None:
            raise where.error("priv", "privacy needs authentication (set snmp.auth)")
        if not isinstance(priv, Mapping):
            raise where.error("priv", "expected {protocol: ..., key: {env: NAME}}")
        priv_protocol = _protocol(
            where, "priv.protocol", priv.get("protocol"), get_args(PrivProtocol)
        )
        if priv_protocol in LEGACY_PRIV and not legacy:
            raise where.error("priv.protocol", f"{priv_protocol} is broken; set legacy: true")
        priv_key = _secret(where, "priv.key", priv.get("key"))

    context = str(snmp.get("context", ""))
    if engine == "gufo" and (priv_protocol == "3des" or context):
        # gufo-snmp has neither 3DES nor context names; pysnmp has both.
        what = "3DES" if priv_protocol == "3des" else "SNMPv3 context names"
        if "engine" in snmp:
            raise where.error("engine", f"gufo-snmp does not support {what}; use engine: pysnmp")
        common["engine"] = "pysnmp"
    return SnmpCredentials(
        user=user,
        auth_protocol=cast(AuthProtocol | None, auth_protocol),
        priv_protocol=cast(PrivProtocol | None, priv_protocol),
        auth_key=auth_key,
        priv_key=priv_key,
        context=context,
        **common,
    )
