"""Where and how to reach one agent: what every SNMP engine is handed."""

from __future__ import annotations

from dataclasses import dataclass

from netmon.snmp.credentials import SnmpCredentials

__all__ = ["SnmpTarget"]


@dataclass(frozen=True, slots=True)
class SnmpTarget:
    device: str
    address: str
    credentials: SnmpCredentials

    @property
    def request_deadline(self) -> float:
        """Seconds after which an engine must have answered, retries included (plus
        slack)."""
        c = self.credentials
        return c.timeout.total_seconds() * (c.retries + 1) + 5.0
