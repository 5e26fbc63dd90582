"""Credentials -> pysnmp's USM user: the one place that knows pysnmp's protocol names."""

from __future__ import annotations

from typing import Any

from pysnmp.hlapi.v3arch.asyncio import (
    UsmUserData,
    usm3DESEDEPrivProtocol,
    usmAesBlumenthalCfb192Protocol,
    usmAesBlumenthalCfb256Protocol,
    usmAesCfb128Protocol,
    usmAesCfb192Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
    usmNoAuthProtocol,
    usmNoPrivProtocol,
)

from netmon.snmp.credentials import SnmpV3Credentials

__all__ = ["AUTH_PROTOCOLS", "PRIV_PROTOCOLS", "usm_user"]

AUTH_PROTOCOLS: dict[str, Any] = {
    "sha1": usmHMACSHAAuthProtocol,
    "sha224": usmHMAC128SHA224AuthProtocol,
    "sha256": usmHMAC192SHA256AuthProtocol,
    "sha384": usmHMAC256SHA384AuthProtocol,
    "sha512": usmHMAC384SHA512AuthProtocol,
    "md5": usmHMACMD5AuthProtocol,
}

# pysnmp's usmAesCfb192/256Protocol is the Reeder draft (Cisco); its "Blumenthal" ones are
# what Net-SNMP calls AES192/AES256.
PRIV_PROTOCOLS: dict[str, Any] = {
    "aes128": usmAesCfb128Protocol,
    "aes192": usmAesBlumenthalCfb192Protocol,
    "aes256": usmAesBlumenthalCfb256Protocol,
    "aes192c": usmAesCfb192Protocol,
    "aes256c": usmAesCfb256Protocol,
    "des": usmDESPrivProtocol,
    "3des": usm3DESEDEPrivProtocol,
}


def usm_user(creds: SnmpV3Credentials) -> UsmUserData:
    auth = AUTH_PROTOCOLS[creds.auth_protocol] if creds.auth_protocol else usmNoAuthProtocol
    priv = PRIV_PROTOCOLS[creds.priv_protocol] if creds.priv_protocol else usmNoPrivProtocol
    return UsmUserData(
        creds.user,
        authKey=creds.auth_key or None,
        privKey=creds.priv_key or None,
        authProtocol=auth,
        privProtocol=priv,
    )
