"""Agent-side USM crypto: keys (RFC 3414 A.2), HMAC auth (RFC 3414, RFC 7860), AES (RFC 3826).

A pass phrase becomes a master key Ku by hashing it repeated to 1 MB; that costs a few
milliseconds, so it is cached and a lab of 5,000 devices computes it once. Each device then
localizes Ku to its engine ID (one more hash), which is cheap.

The privacy key is derived with the *authentication* protocol's hash (RFC 3826 section
1.2) and truncated to 16 bytes for AES-128, so SHA-256/AES-128 and SHA-1/AES-128 differ.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import os
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # before cryptography 47 CFB sat with the other modes
    from cryptography.hazmat.primitives.ciphers.modes import CFB

__all__ = [
    "AUTH_PROTOCOLS",
    "SHA1",
    "SHA256",
    "AuthProtocol",
    "AuthProtocolName",
    "LocalizedUser",
    "UsmUser",
    "aes_cfb_decrypt",
    "aes_cfb_encrypt",
    "localize_key",
    "next_salt",
    "password_to_key",
]

AuthProtocolName = Literal["sha1", "sha256"]
MIN_PASSWORD_LENGTH = 8  # RFC 3414 section 11.2
_EXPANSION = 1_048_576  # RFC 3414 A.2: the pass phrase repeated to one megabyte


@dataclass(frozen=True, slots=True)
class AuthProtocol:
    name: AuthProtocolName
    hash_name: str
    mac_length: int  # bytes of HMAC output carried in msgAuthenticationParameters


SHA1 = AuthProtocol("sha1", "sha1", 12)  # usmHMACSHAAuthProtocol, HMAC-SHA-96
SHA256 = AuthProtocol("sha256", "sha256", 24)  # usmHMAC192SHA256AuthProtocol
AUTH_PROTOCOLS: dict[str, AuthProtocol] = {"sha1": SHA1, "sha256": SHA256}


@functools.lru_cache(maxsize=32)
def password_to_key(password: bytes, hash_name: str) -> bytes:
    """Ku: the hash of the pass phrase repeated to 1 MB (RFC 3414 A.2.2, RFC 7860 9.3)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"an SNMPv3 pass phrase needs at least {MIN_PASSWORD_LENGTH} characters")
    repeated = password * (_EXPANSION // len(password) + 1)
    return hashlib.new(hash_name, repeated[:_EXPANSION]).digest()


def localize_key(master: bytes, engine_id: bytes, hash_name: str) -> bytes:
    """Kul = H(Ku || snmpEngineID || Ku)."""
    return hashlib.new(hash_name, master + engine_id + master).digest()


def _iv(boots: int, time: int, salt: bytes) -> bytes:
    # RFC 3826 3.1.2.1: the IV is the authoritative engine's boots and time, then the salt.
    return boots.to_bytes(4, "big") + time.to_bytes(4, "big") + salt


def aes_cfb_encrypt(key: bytes, boots: int, time: int, salt: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), CFB(_iv(boots, time, salt))).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def aes_cfb_decrypt(key: bytes, boots: int, time: int, salt: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), CFB(_iv(boots, time, salt))).decryptor()
    return decryptor.update(data) + decryptor.finalize()


# RFC 3826 3.1.2.1: a 64-bit counter, started at a random value, so no (key, IV) pair is
# used twice. One counter for the whole process is enough: it is unique per message.
_salts = itertools.count(int.from_bytes(os.urandom(8), "big"))


def next_salt() -> bytes:
    return (next(_salts) & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class LocalizedUser:
    """A user's keys localized to one engine ID: what an agent checks messages with."""

    name: bytes
    auth: AuthProtocol
    auth_key: bytes = field(repr=False)
    priv_key: bytes = field(repr=False)  # AES-128: the first 16 bytes of the localized key

    def mac(self, message: bytes) -> bytes:
        return hmac.digest(self.auth_key, message, self.auth.hash_name)[: self.auth.mac_length]


@dataclass(frozen=True, slots=True)
class UsmUser:
    """An authPriv user with master keys (Ku), ready to be localized per engine."""

    name: bytes
    auth: AuthProtocol
    auth_master: bytes = field(repr=False)
    priv_master: bytes = field(repr=False)

    @classmethod
    def from_passwords(
        cls, name: str, auth_protocol: AuthProtocolName, auth_key: str, priv_key: str
    ) -> UsmUser:
        auth = AUTH_PROTOCOLS[auth_protocol]
        return cls(
            name.encode(),
            auth,
            password_to_key(auth_key.encode(), auth.hash_name),
            password_to_key(priv_key.encode(), auth.hash_name),
        )

    def localize(self, engine_id: bytes) -> LocalizedUser:
        hash_name = self.auth.hash_name
        return LocalizedUser(
            self.name,
            self.auth,
            localize_key(self.auth_master, engine_id, hash_name),
            localize_key(self.priv_master, engine_id, hash_name)[:16],
        )
