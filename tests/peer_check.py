"""A real peer (snmpd, netconfd, sshd, promtool, a PostgreSQL server) that is missing.

Outside CI such a test is skipped with the reason; with ``NETMON_REQUIRE_PEERS=1`` (set by
``.ci/run``) it fails, so a missing install step cannot pass as a green run.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["missing_peer"]


def missing_peer(reason: str) -> NoReturn:
    if os.environ.get("NETMON_REQUIRE_PEERS") == "1":
        pytest.fail(f"{reason} (NETMON_REQUIRE_PEERS=1: a peer CI must have)")
    pytest.skip(reason)
