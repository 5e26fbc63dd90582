"""What an SNMP failure tells the person who reads it: one wording for every engine.

Each engine finds out *what* went wrong in its own way (pysnmp from its error indication,
gufo-snmp from its exceptions and, for USM refusals it does not tell apart, from pysnmp);
the sentence that says what to check is written here, once.
"""

from __future__ import annotations

from netmon.errors import (
    SnmpDecryptionError,
    SnmpError,
    SnmpMalformedReplyError,
    SnmpOverloadError,
    SnmpSecurityError,
    SnmpSlowError,
    SnmpTimeoutError,
    SnmpUnknownUserError,
    SnmpWrongDigestError,
)
from netmon.snmp.target import SnmpTarget

__all__ = ["failure", "overload", "slow"]


def overload(target: SnmpTarget, lag: float) -> SnmpOverloadError:
    """The request timed out while netmon's own engine could not run for ``lag`` s."""
    timeout = target.credentials.timeout.total_seconds()
    return SnmpOverloadError(
        f"{target.device}: netmon's SNMP engine was starved (CPU): it could not run for "
        f"{lag:.2f} s of the {timeout:g} s timeout, so the answer was not read in time; "
        "the device itself may well have answered (not counted as unreachable)"
    )


def slow(target: SnmpTarget, round_trip: float) -> SnmpSlowError:
    """The device answers, but after the timeout."""
    timeout = target.credentials.timeout.total_seconds()
    return SnmpSlowError(
        f"{target.device}: answers arrive after the timeout of {timeout:g} s (typical round "
        f"trip {round_trip:.2f} s): raise snmp.timeout"
    )


def _timeout(t: SnmpTarget) -> str:
    c = t.credentials
    tried = f"{c.retries + 1} request(s) of {c.timeout.total_seconds():g} s"
    if c.version == "2c":
        return (
            f"no answer from {t.address}:{c.port} ({tried}): check that the device is up and "
            "reachable, the port, and the community (agents drop a wrong community silently)"
        )
    return (
        f"no answer from {t.address}:{c.port} ({tried}): check that the device is up and "
        f"reachable, the port, and the privacy key and protocol ({c.priv_protocol or 'none'}; "
        "agents drop what they cannot decrypt silently)"
    )


def _unknown_user(t: SnmpTarget) -> str:
    return (
        f"the agent has no SNMPv3 user {t.credentials.user!r}: check snmp.user against "
        "the agent's USM users"
    )


def _wrong_digest(t: SnmpTarget) -> str:
    c = t.credentials
    return (
        f"authentication failed for user {c.user!r}: check the auth key and auth protocol "
        f"({c.auth_protocol})"
    )


def _decryption(t: SnmpTarget) -> str:
    c = t.credentials
    return (
        f"the agent could not decrypt the request of user {c.user!r}: check the privacy key "
        f"and protocol ({c.priv_protocol}; aes192/aes256 and aes192c/aes256c are different "
        "key extensions)"
    )


_SENTENCES = {
    SnmpTimeoutError: _timeout,
    SnmpUnknownUserError: _unknown_user,
    SnmpWrongDigestError: _wrong_digest,
    SnmpDecryptionError: _decryption,
}


def failure(cls: type[SnmpError], target: SnmpTarget, detail: str = "") -> SnmpError:
    """An error of ``cls`` for ``target`` whose message says what to check; ``detail``
    (the engine's own words) is added where no sentence of ours covers the case."""
    sentence = _SENTENCES.get(cls)
    if sentence is not None:
        text = sentence(target)
    elif cls is SnmpSecurityError:
        text = f"the agent's USM refused the request ({detail or 'no reason given'})"
    elif cls is SnmpMalformedReplyError:
        text = f"the answer is not a valid SNMP reply ({detail})" if detail else "bad reply"
    else:
        text = detail or cls.__doc__ or cls.__name__
    return cls(f"{target.device}: {text}")
