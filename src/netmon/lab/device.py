"""A simulated access switch: identity, interfaces, traffic, and the faults a lab can inject.

Everything about a device follows from its name (``random.Random(name)``), so ``lab-0042``
looks the same in every run. Traffic is a pure function of how long an interface has been
up since boot: asking twice for the same instant gives the same counters, and counters
never go backwards. An interface's octets after ``a`` seconds up are::

    rate * (a + swing * (sin(w * a + phase) - sin(phase)))     with swing = 0.3 / w

whose slope ``rate * (1 + 0.3 * cos(...))`` stays between 0.7 and 1.3 times the rate, so
traffic varies but the counter is monotone. Seconds spent down are not counted, which
keeps counters continuous across a flap. The 32-bit columns are the 64-bit values mod
2**32 and wrap within minutes on a busy 10G port, as real ones do.

Time comes from an injectable clock (``now``, monotonic seconds) so tests can move it.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Literal

from netmon.lab.mib import MibTable, mib_table

__all__ = [
    "ENGINE_ID_PREFIX",
    "Device",
    "Interface",
    "LabUser",
    "Protocol",
    "UsmStats",
    "device_protocols",
    "device_role",
]

Protocol = Literal["snmp", "netconf", "cli"]

# RFC 3411 snmpEngineID, text format: enterprise 8072 (Net-SNMP) with the high bit set,
# format 4 (administratively assigned text).
ENGINE_ID_PREFIX = b"\x80\x00\x1f\x88\x04"
_SWING = 0.3


@dataclass(slots=True)
class UsmStats:
    """usmStats (1.3.6.1.6.3.15.1.1.N.0), in the order of their N."""

    unsupported_sec_levels: int = 0
    not_in_time_windows: int = 0
    unknown_user_names: int = 0
    unknown_engine_ids: int = 0
    wrong_digests: int = 0
    decryption_errors: int = 0

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


def device_role(name: str) -> str:
    """``access`` for most devices, ``distribution`` for about one in ten; fixed per name."""
    rng = random.Random(f"{name}/role")  # noqa: S311 -- simulation, not secrets
    return "distribution" if rng.random() < 0.1 else "access"


def device_protocols(name: str) -> tuple[Protocol, ...]:
    """What device ``name`` (``lab-NNNN``) speaks: every device answers SNMP; number n
    with n % 4 == 2 also serves NETCONF over SSH, n % 4 == 3 an SSH CLI.

    The one place that decides it: the lab's SSH listeners and its inventory both ask.
    """
    number = int(name.rsplit("-", 1)[1])
    if number % 4 == 2:
        return ("snmp", "netconf")
    if number % 4 == 3:
        return ("snmp", "cli")
    return ("snmp",)


@dataclass(frozen=True, slots=True)
class LabUser:
    """A local account in a device's configuration. The hash only looks like a
    sha512-crypt one (nothing logs in with it): it gives config redaction work to do."""

    name: str
    privilege: int
    password_hash: str


class Interface:
    """One port: static description, traffic parameters, up/down state since boot."""

    # Declared here as well as in __slots__ so mib.py's getters see the types through the
    # import cycle (mib.py builds the table device.py uses).
    index: int
    descr: str
    name: str
    alias: str
    speed: int
    mac: bytes
    admin_up: bool
    last_change: float
    down_since: float | None
    down_until: float | None
    down_total: float

    __slots__ = (
        "admin_up",
        "alias",
        "descr",
        "disc_rate",
        "down_since",
        "down_total",
        "down_until",
        "err_rate",
        "in_packet",
        "in_phase",
        "in_rate",
        "index",
        "last_change",
        "mac",
        "name",
        "omega",
        "out_packet",
        "out_phase",
        "out_rate",
        "speed",
    )

    def __init__(self, index: int, descr: str, name: str, alias: str, speed: int) -> None:
        self.index = index
        self.descr = descr
        self.name = name
        self.alias = alias
        self.speed = speed  # bits/s
        self.mac = b""
        self.admin_up = True
        self.in_rate = self.out_rate = 0.0  # octets/s
        self.in_phase = self.out_phase = 0.0
        self.omega = 2 * math.pi / 1800
        self.in_packet = self.out_packet = 800.0  # mean packet size, octets
        self.err_rate = self.disc_rate = 0.0  # per second up
        self.reset()

    def reset(self) -> None:
        """State right after a boot: up since 0 unless administratively down."""
        self.down_since = None if self.admin_up else 0.0
        self.down_until = None
        self.down_total = 0.0
        self.last_change = 0.0  # seconds since boot

    @property
    def oper_up(self) -> bool:
        return self.down_since is None

    def active(self, t: float) -> float:
        """Seconds up between boot and ``t`` (seconds since boot)."""
        if self.down_since is None:
            return t - self.down_total
        return self.down_since - self.down_total

    def _volume(self, rate: float, phase: float, a: float) -> float:
        omega = self.omega
        return rate * (a + _SWING / omega * (math.sin(omega * a + phase) - math.sin(phase)))

    def in_octets(self, t: float) -> int:
        return int(self._volume(self.in_rate, self.in_phase, self.active(t)))

    def out_octets(self, t: float) -> int:
        return int(self._volume(self.out_rate, self.out_phase, self.active(t)))

    def in_packets(self, t: float, share: float) -> int:
        return int(
            self._volume(self.in_rate, self.in_phase, self.active(t)) / self.in_packet * share
        )

    def out_packets(self, t: float, share: float) -> int:
        volume = self._volume(self.out_rate, self.out_phase, self.active(t))
        return int(volume / self.out_packet * share)

    def errors(self, t: float) -> int:
        return int(self.active(t) * self.err_rate)

    def discards(self, t: float) -> int:
        return int(self.active(t) * self.disc_rate)

    def go_down(self, t: float, until: float | None) -> None:
        if self.down_since is None:
            self.down_since = t
            self.last_change = t
        self.down_until = until

    def go_up(self, t: float) -> None:
        if self.down_since is not None:
            self.down_total += t - self.down_since
            self.down_since = None
            self.down_until = None
            self.last_change = t

    def settle(self, t: float) -> bool:
        """Bring the interface back if its flap ended by ``t``; True while still pending."""
        if self.down_until is None:
            return False
        if t < self.down_until:
            return True
        self.go_up(self.down_until)
        return False


_ALIASES = ("desk {f}-{n:02d}", "AP-{f}F-{n:02d}", "printer {f}-{n:02d}", "IP phone {n:02d}",
            "camera {f}-{n:02d}", "meeting room {f}.{n:02d}", "")  # fmt: skip


class Device:
    """A simulated switch named ``name`` with ``interfaces`` ports (else 8..48 by name)."""

    name: str
    engine_id: bytes
    boots: int
    role: str
    stats: UsmStats
    sys_descr: str
    sys_contact: str
    sys_location: str
    interfaces: list[Interface]
    ram_size: int
    flash_size: int

    def __init__(
        self,
        name: str,
        interfaces: int | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        uptime: float | None = None,
    ) -> None:
        rng = random.Random(name)  # noqa: S311 -- a reproducible simulation, not secrets
        count = interfaces if interfaces is not None else rng.randint(8, 48)
        if not 1 <= count <= 1000:
            raise ValueError(f"interfaces must be 1..1000, got {count}")
        self.name = name
        self.now = now
        self.engine_id = ENGINE_ID_PREFIX + b"netmon-" + name.encode()
        self.boots = 1
        # Started devices look like they have been running a while: counters and
        # sysUpTime are then not all near zero in a fresh lab.
        if uptime is None:
            uptime = rng.uniform(3600, 30 * 86400)
        self._boot_at = now() - uptime
        self.role = device_role(name)
        self.stats = UsmStats()
        self.is_silent = False
        self.sends_garbage = False
        self.sys_descr = (
            f"netmon lab {self.role} switch NL-{count}P, software 1.0 (simulated SNMPv3 agent)"
        )
        self.sys_contact = "noc@lab.example"
        self.sys_location = f"lab building {rng.randint(1, 4)}, rack {rng.randint(1, 40):02d}"
        self.interfaces = self._make_interfaces(rng, count)
        self.cpu = [(rng.uniform(5, 35), rng.uniform(0, 2 * math.pi)) for _ in range(2)]
        self.ram_size = rng.choice((2, 4, 8)) * 1_048_576  # 1 KiB units
        self.ram_used = rng.uniform(0.35, 0.7)
        self.flash_size = rng.choice((1, 2, 4)) * 262_144  # 4 KiB units
        self.flash_used = rng.uniform(0.2, 0.6)
        self.table: MibTable = mib_table(count)
        self._pending: set[Interface] = set()
        # Wall-clock time of monotonic 0 for this device's clock, fixed once so that
        # boot and discontinuity times read over NETCONF never jitter between requests.
        self._wall_offset = time.time() - now()
        self.hostname = name
        self.software_version = "1.0"
        self.config_revision = 1
        self.users = (
            LabUser("admin", 15, _fake_crypt(rng, name, "admin")),
            LabUser("netops", 1, _fake_crypt(rng, name, "netops")),
        )

    @staticmethod
    def _make_interfaces(rng: random.Random, count: int) -> list[Interface]:
        uplinks = min(count // 4, 2 if count < 24 else 4)
        access = count - uplinks
        floor = rng.randint(1, 9)
        result: list[Interface] = []
        for n in range(1, access + 1):
            speed = 100_000_000 if rng.random() < 0.1 else 1_000_000_000
            alias = rng.choice(_ALIASES).format(f=floor, n=n)
            result.append(Interface(n, f"GigabitEthernet1/0/{n}", f"Gi1/0/{n}", alias, speed))
        for n in range(1, uplinks + 1):
            alias = f"uplink to dist-{rng.randint(1, 8):02d} Te1/1/{n}"
            result.append(
                Interface(access + n, f"TenGigabitEthernet1/1/{n}", f"Te1/1/{n}", alias, 10**10)
            )
        mac = 0x02 << 40 | rng.getrandbits(32) << 8  # 02:...: locally administered
        down = set(rng.sample(range(access), min(2, access - 1))) if access > 2 else set()
        for position, iface in enumerate(result):
            iface.mac = (mac + iface.index).to_bytes(6, "big")
            uplink = position >= access
            low, high = (0.2, 0.6) if uplink else (0.01, 0.6)
            octets_per_s = iface.speed / 8
            iface.in_rate = octets_per_s * (low + (high - low) * rng.random() ** 2)
            iface.out_rate = octets_per_s * (low + (high - low) * rng.random() ** 2)
            iface.in_phase = rng.uniform(0, 2 * math.pi)
            iface.out_phase = rng.uniform(0, 2 * math.pi)
            iface.omega = 2 * math.pi / rng.uniform(600, 3600)
            iface.in_packet = rng.uniform(300, 1200)
            iface.out_packet = rng.uniform(300, 1200)
            noisy = rng.random() < 0.25
            iface.err_rate = rng.uniform(0.001, 0.05) if noisy else 0.0
            iface.disc_rate = rng.uniform(0.001, 0.02) if noisy else 0.0
            iface.admin_up = position not in down
            iface.reset()
        return result

    # --- time -------------------------------------------------------------------------

    def uptime(self) -> float:
        """Seconds since the last (simulated) boot."""
        return self.now() - self._boot_at

    def tick(self) -> float:
        """Uptime now, with flaps that have ended brought back up; once per request."""
        t = self.now() - self._boot_at
        if self._pending:
            self._pending = {i for i in self._pending if i.settle(t)}
        return t

    def engine_time(self) -> int:
        return int(self.uptime())

    # --- control ----------------------------------------------------------------------

    def interface(self, index: int) -> Interface:
        if not 1 <= index <= len(self.interfaces):
            raise ValueError(f"{self.name} has interfaces 1..{len(self.interfaces)}, not {index}")
        return self.interfaces[index - 1]

    def flap(self, index: int, down_for: float | None = None) -> None:
        """Take an interface down now; back up after ``down_for`` seconds, or when told."""
        iface = self.interface(index)
        if not iface.admin_up:
            raise ValueError(f"{self.name} interface {index} is administratively down")
        t = self.tick()
        iface.go_down(t, None if down_for is None else t + down_for)
        if down_for is None:
            self._pending.discard(iface)
        else:
            self._pending.add(iface)

    def set_oper(self, index: int, up: bool) -> None:
        if not up:
            self.flap(index)
            return
        iface = self.interface(index)
        if not iface.admin_up:
            raise ValueError(f"{self.name} interface {index} is administratively down")
        t = self.tick()
        self._pending.discard(iface)
        iface.go_up(t)

    def reboot(self) -> None:
        """engineBoots + 1; uptime, counters, flaps and usmStats start again from zero."""
        self.boots += 1
        self._boot_at = self.now()
        self._pending.clear()
        self.stats.reset()
        for iface in self.interfaces:
            iface.reset()

    def change_config(self, note: str | None = None) -> int:
        """Change the running configuration: the next revision sets an interface's
        description (also its ifAlias) to ``note``, else to a text naming the revision.
        Returns the revision: new, unless that port already had that description."""
        revision = self.config_revision + 1
        text = note if note is not None else f"changed by netmon lab, revision {revision}"
        if not text or len(text) > 200 or not text.isprintable():
            raise ValueError("a config note is 1 to 200 printable characters")
        # Walk the interfaces so that successive changes touch different ports.
        iface = self.interfaces[(revision - 2) % len(self.interfaces)]
        return self.set_descriptions({iface.index: text})

    def set_descriptions(self, descriptions: Mapping[int, str]) -> int:
        """Set interface descriptions (ifAlias) by ifIndex as one configuration change
        (a NETCONF commit); "" removes one. Returns the revision, new if anything changed."""
        for index, text in descriptions.items():
            self.interface(index)
            if len(text) > 200 or not text.isprintable():
                raise ValueError("a description is at most 200 printable characters")
        changed = {i: t for i, t in descriptions.items() if self.interface(i).alias != t}
        if changed:
            for index, text in changed.items():
                self.interface(index).alias = text
            self.config_revision += 1
        return self.config_revision

    def boot_time(self) -> float:
        """The last boot as a POSIX timestamp (whole seconds: it must read alike twice)."""
        return float(int(self._wall_offset + self._boot_at))

    def wall_time(self, t: float) -> float:
        """Seconds since boot ``t`` as a POSIX timestamp."""
        return self._wall_offset + self._boot_at + t

    def silence(self, on: bool) -> None:
        """Drop every request without an answer (a dead or firewalled device)."""
        self.is_silent = on

    def garbage(self, on: bool) -> None:
        """Answer every request with bytes that are not a valid SNMP message."""
        self.sends_garbage = on

    # --- derived values ---------------------------------------------------------------

    def cpu_load(self, cpu: int, t: float) -> int:
        base, phase = self.cpu[cpu]
        load = base + 15 * math.sin(t / 900 + phase) + 6 * math.sin(t / 67 + 2 * phase)
        return max(0, min(100, round(load)))

    def ram_used_units(self, t: float) -> int:
        return int(self.ram_size * (self.ram_used + 0.08 * math.sin(t / 1200 + self.cpu[0][1])))

    def flash_used_units(self, t: float) -> int:
        # Logs fill the flash slowly; a cleanup job keeps it below 90 %.
        fraction = self.flash_used + (t / 86400 * 0.01) % 0.2
        return int(self.flash_size * min(fraction, 0.9))


def _fake_crypt(rng: random.Random, name: str, user: str) -> str:
    salt = "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./")
        for _ in range(16)
    )
    digest = hashlib.sha512(f"{name}/{user}/{salt}".encode()).digest()
    body = base64.b64encode(digest).decode().rstrip("=").replace("+", ".")
    return f"$6${salt}${body[:86]}"
