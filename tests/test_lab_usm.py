"""USM crypto of the lab agent against published vectors (RFC 3414 A.3, NIST SP 800-38A)."""

from __future__ import annotations

import hashlib

import pytest

from netmon.lab.usm import (
    SHA1,
    SHA256,
    UsmUser,
    aes_cfb_decrypt,
    aes_cfb_encrypt,
    localize_key,
    next_salt,
    password_to_key,
)

RFC3414_ENGINE = bytes.fromhex("000000000000000000000002")


def test_rfc3414_a31_sha1_password_to_key_and_localization():
    master = password_to_key(b"maplesyrup", "sha1")
    assert master.hex() == "9fb5cc0381497b3793528939ff788d5d79145211"
    localized = localize_key(master, RFC3414_ENGINE, "sha1")
    assert localized.hex() == "6695febc9288e36282235fc7151f128497b38f3f"


def test_sha256_password_to_key_and_localization():
    # The "maplesyrup" vector as published for the SHA-2 USM protocols (RFC 7860 keys).
    master = password_to_key(b"maplesyrup", "sha256")
    assert master.hex() == "ab51014d1e077f6017df2b12bee5f5aa72993177e9bb569c4dff5a4ca0b4afac"
    localized = localize_key(master, RFC3414_ENGINE, "sha256")
    assert localized.hex() == "8982e0e549e866db361a6b625d84cccc11162d453ee8ce3a6445c2d6776f0f8b"


def test_password_to_key_is_hashed_once_per_password_and_hash():
    password_to_key.cache_clear()
    password_to_key(b"netmon-lab-auth-key", "sha1")
    password_to_key(b"netmon-lab-auth-key", "sha1")
    password_to_key(b"netmon-lab-auth-key", "sha256")
    info = password_to_key.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def test_short_pass_phrases_are_refused():
    with pytest.raises(ValueError, match="at least 8"):
        password_to_key(b"short", "sha1")


@pytest.mark.parametrize("protocol", [SHA1, SHA256])
def test_privacy_key_uses_the_auth_hash_truncated_to_aes128(protocol):
    user = UsmUser.from_passwords("netmon", protocol.name, "auth-pass-phrase", "priv-pass-phrase")
    local = user.localize(RFC3414_ENGINE)
    h = protocol.hash_name
    assert (
        local.priv_key
        == localize_key(password_to_key(b"priv-pass-phrase", h), RFC3414_ENGINE, h)[:16]
    )
    assert len(local.auth_key) == hashlib.new(h).digest_size
    assert len(local.mac(b"message")) == protocol.mac_length
    assert repr(local.auth_key) not in repr(local)
    assert repr(local.priv_key) not in repr(local)


def test_aes128_cfb_nist_vector():
    # NIST SP 800-38A F.3.13, CFB128-AES128: the IV is boots || time || salt in USM.
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    plain = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    salt = bytes.fromhex("08090a0b0c0d0e0f")
    cipher = aes_cfb_encrypt(key, 0x00010203, 0x04050607, salt, plain)
    assert cipher.hex() == ("3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b")
    assert aes_cfb_decrypt(key, 0x00010203, 0x04050607, salt, cipher) == plain
    # CFB needs no padding: odd lengths come back as they went.
    assert (
        aes_cfb_decrypt(key, 1, 2, salt, aes_cfb_encrypt(key, 1, 2, salt, b"x" * 21)) == b"x" * 21
    )


def test_salts_never_repeat():
    salts = {next_salt() for _ in range(1000)}
    assert len(salts) == 1000
    assert all(len(s) == 8 for s in salts)
