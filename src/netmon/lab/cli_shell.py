"""The lab's Cisco-IOS-like command line, served over SSH by ``netmon.lab.ssh``.

Enough of IOS for netmiko's ``cisco_ios`` driver, ntc-templates' ``cisco_ios`` parsers and
napalm's ``ios`` getters (facts, interfaces, interface counters): the prompt ``NAME>``,
``enable`` (no password asked) to ``NAME#``, ``terminal length|width``, and

* ``show version``, ``show hosts``: identity and uptime;
* ``show interfaces``, ``show interface summary``, ``show ip interface brief``: the
  device's interfaces, with the very counters its SNMP agent serves at the same instant;
* ``show running-config``: an IOS-like configuration (hostname, ``enable secret``, local
  users with ``password 7``, interface descriptions and ``shutdown``) that changes when the
  device's configuration does (``Device.change_config``); its "ntp clock-period" line
  changes on every read, as a real one drifts, so collectors must strip it;
* ``show lldp neighbors detail``: a distribution switch on each uplink (10G) that is up;
* ``show bgp all summary``, ``show ip bgp summary``, ``show bgp ipv4 unicast neighbors``:
  on distribution switches (``Device.role``) two established core peers and one shut
  down (:class:`Bgp`); elsewhere ``% BGP not active``;
* ``exit``, ``quit``, ``logout``, ``disable``.

Commands may be abbreviated word by word (``sh int``), and take a ``| include``,
``| exclude`` or ``| begin`` filter. Anything else gets IOS's ``% Invalid input detected
at '^' marker.``. An exec request (``ssh lab-0003 show version``) runs one command.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh
from asyncssh.editor import SSHLineEditorChannel

from netmon.lab.device import Device, Interface
from netmon.lab.mib import BROADCAST_SHARE, MULTICAST_SHARE, UNICAST_SHARE

__all__ = ["Bgp", "BgpPeer", "CliSession", "serve_shell"]

_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
_DOMAIN = "lab.example"
_VERSION_LINE = (
    "Cisco IOS Software, NL Software (NL-UNIVERSALK9-M), Version 15.2(7)E{v}, "
    "RELEASE SOFTWARE (fc3)"
)
_TYPE7_KEY = b"dsfd;kfoA,.iyewrkldJKDHSUBsgvca69834ncxv9873254k;fg87"  # IOS's public XOR key


@dataclass
class CliSession:
    """One login's state: the device, whether it is in privileged mode."""

    device: Device
    enabled: bool = False

    @property
    def prompt(self) -> str:
        return f"{_hostname(self.device)}{'#' if self.enabled else '>'}"

    def run(self, line: str) -> tuple[str, bool]:
        """The output of one command line (without the prompt) and whether the session
        goes on."""
        command, _, pipe = line.partition("|")
        words = command.split()
        if not words:
            return "", True
        if _matches(words, ("exit",)) or _matches(words, ("quit",)) or _matches(words, ("logout",)):
            return "", False
        if _matches(words, ("enable",)):
            self.enabled = True
            return "", True
        if _matches(words, ("disable",)):
            self.enabled = False
            return "", True
        if len(words) >= 2 and _matches(words[:1], ("terminal",)):
            return "", True  # length 0, width 511, no monitor: nothing to page anyway
        handler = _lookup(words)
        if handler is None:
            return _invalid(self.prompt, line), True
        privileged, render = handler
        if privileged and not self.enabled:
            return _invalid(self.prompt, line), True
        output = render(self.device, self.device.tick())
        if pipe:
            filtered = _filter(output, pipe.strip())
            if filtered is None:
                return _invalid(self.prompt, line), True
            output = filtered
        return output, True


async def serve_shell(device: Device, process: asyncssh.SSHServerProcess[str]) -> None:
    """Serve one SSH session: an exec request runs its one command; a shell reads command
    lines until ``exit`` or end of input. Ends the process with exit status 0."""
    session = CliSession(device)
    try:
        if process.command is not None:
            session.enabled = True  # exec has no enable step; IOS runs it at the vty's level
            output, _ = session.run(process.command)
            process.stdout.write(output)
            return
        # A device echoes what is typed in order with what it answers: the echo of an
        # Enter, then the prompt. asyncssh's line editor echoes at once instead, so two
        # Enters sent together came back as both echoes and then both prompts on one
        # line ("lab-0003#lab-0003#"); netmiko took that for the prompt and waited for
        # it after the next command until its timeout. The line editor is off and the
        # shell echoes each line itself, in order.
        editor: object = process.channel
        echo = isinstance(editor, SSHLineEditorChannel)  # a terminal: the editor is there
        if isinstance(editor, SSHLineEditorChannel):
            editor.set_line_mode(False)
        process.stdout.write(f"\n{session.prompt}")
        while True:
            try:
                line = await process.stdin.readline()
            except (asyncssh.TerminalSizeChanged, asyncssh.BreakReceived):
                continue
            if not line:
                return  # end of input
            command = line.rstrip("\r\n")
            if echo:
                process.stdout.write(f"{command}\n")
            output, more = session.run(command)
            if output:
                process.stdout.write(output if output.endswith("\n") else output + "\n")
            if not more:
                return
            process.stdout.write(session.prompt)
    except (asyncssh.Error, BrokenPipeError, ConnectionError):
        return  # the client went away
    finally:
        process.exit(0)


# --- command table ------------------------------------------------------------------

Render = Callable[[Device, float], str]


def _matches(words: list[str], keywords: tuple[str, ...]) -> bool:
    return len(words) == len(keywords) and all(
        k.startswith(w.lower()) for w, k in zip(words, keywords, strict=True)
    )


def _lookup(words: list[str]) -> tuple[bool, Render] | None:
    # The table has no two commands one abbreviation could both mean (``show interface
    # summary`` and ``show interfaces summary`` are one), so the first match is the one.
    return next((entry for keys, entry in _COMMANDS.items() if _matches(words, keys)), None)


def _invalid(prompt: str, line: str) -> str:
    # IOS points at the first character it could not take: the start, near enough.
    marker = " " * (len(prompt) + len(line) - len(line.lstrip())) + "^"
    return f"{marker}\n% Invalid input detected at '^' marker.\n"


def _filter(output: str, pipe: str) -> str | None:
    verb, _, pattern = pipe.partition(" ")
    pattern = pattern.strip()
    if not pattern:
        return None
    try:
        regex = re.compile(pattern)
    except re.error:
        return None
    lines = output.splitlines()
    if "include".startswith(verb) and verb:
        kept = [x for x in lines if regex.search(x)]
    elif "exclude".startswith(verb) and verb:
        kept = [x for x in lines if not regex.search(x)]
    elif "begin".startswith(verb) and verb:
        start = next((n for n, x in enumerate(lines) if regex.search(x)), len(lines))
        kept = lines[start:]
    else:
        return None
    return "\n".join(kept) + ("\n" if kept else "")


# --- what the commands show ---------------------------------------------------------


def _hostname(device: Device) -> str:
    return device.hostname


def _mac(iface: Interface) -> str:
    raw = iface.mac.hex() or "000000000000"
    return f"{raw[0:4]}.{raw[4:8]}.{raw[8:12]}"


def _uptime_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    weeks, minutes = divmod(minutes, 7 * 24 * 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [(weeks, "week"), (days, "day"), (hours, "hour"), (minutes, "minute")]
    shown = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts if n]
    return ", ".join(shown) or "0 minutes"


def _serial(device: Device) -> str:
    return "NLB" + hashlib.sha256(device.name.encode()).hexdigest()[:8].upper()


def _model(device: Device) -> str:
    return f"NL-{len(device.interfaces)}P"


def show_version(device: Device, t: float) -> str:
    hostname = _hostname(device)
    software = device.software_version.replace(".", "")
    gig = sum(1 for i in device.interfaces if i.descr.startswith("Gigabit"))
    ten = len(device.interfaces) - gig
    return "\n".join(
        [
            _VERSION_LINE.format(v=software),
            "Technical Support: https://lab.example/support",
            "Copyright (c) netmon lab. Simulated device.",
            "",
            "ROM: Bootstrap program is NL boot loader",
            "",
            f"{hostname} uptime is {_uptime_text(t)}",
            "System returned to ROM by power-on",
            'System image file is "flash:nl-universalk9-mz.152-7.E.bin"',
            "",
            f"cisco {_model(device)} (NL) processor (revision A0) with 524288K bytes of memory.",
            f"Processor board ID {_serial(device)}",
            f"{gig} Gigabit Ethernet interfaces",
            f"{ten} Ten Gigabit Ethernet interfaces",
            "512K bytes of flash-simulated non-volatile configuration memory.",
            "",
            "Configuration register is 0xF",
            "",
        ]
    )


def show_hosts(device: Device, t: float) -> str:
    return (
        f"Default domain is {_DOMAIN}\n"
        "Name/address lookup uses static mappings\n\n"
        "Codes: UN - unknown, EX - expired, OK - OK, ?? - revalidate\n"
        "       temp - temporary, perm - permanent\n"
        "       NA - Not Applicable None - Not defined\n\n"
        "Host                      Port  Flags      Age Type   Address(es)\n"
    )


@dataclass(frozen=True, slots=True)
class Counters:
    """An interface's counters at one instant, as its SNMP agent computes them."""

    in_octets: int
    out_octets: int
    in_ucast: int
    in_mcast: int
    in_bcast: int
    out_ucast: int
    out_mcast: int
    out_bcast: int
    in_errors: int
    out_errors: int
    in_discards: int
    out_discards: int

    @classmethod
    def of(cls, iface: Interface, t: float) -> Counters:
        # The same expressions as netmon.lab.mib's IF-MIB columns, so CLI and SNMP agree.
        return cls(
            in_octets=iface.in_octets(t) & _M64,
            out_octets=iface.out_octets(t) & _M64,
            in_ucast=iface.in_packets(t, UNICAST_SHARE) & _M64,
            in_mcast=iface.in_packets(t, MULTICAST_SHARE) & _M64,
            in_bcast=iface.in_packets(t, BROADCAST_SHARE) & _M64,
            out_ucast=iface.out_packets(t, UNICAST_SHARE) & _M64,
            out_mcast=iface.out_packets(t, MULTICAST_SHARE) & _M64,
            out_bcast=iface.out_packets(t, BROADCAST_SHARE) & _M64,
            in_errors=iface.errors(t) & _M32,
            out_errors=iface.errors(t) // 3 & _M32,
            in_discards=iface.discards(t) & _M32,
            out_discards=iface.discards(t) // 2 & _M32,
        )


def _status(iface: Interface) -> tuple[str, str]:
    if not iface.admin_up:
        return "administratively down", "down (disabled)"
    if not iface.oper_up:
        return "down", "down (notconnect)"
    return "up", "up (connected)"


def _interface_block(iface: Interface, t: float) -> list[str]:
    c = Counters.of(iface, t)
    status, protocol = _status(iface)
    ten = iface.speed >= 10**10
    hardware = "Ten Gigabit Ethernet" if ten else "Gigabit Ethernet"
    if not iface.oper_up:
        duplex = "Auto-duplex, Auto-speed"
    elif ten:
        duplex = f"Full-duplex, {iface.speed // 10**9}Gb/s, link type is auto"
    else:
        duplex = f"Full-duplex, {iface.speed // 10**6}Mb/s"
    media = "SFP-10GBase-SR" if ten else "10/100/1000BaseTX"
    up = iface.oper_up
    in_bps, out_bps = (int(iface.in_rate * 8), int(iface.out_rate * 8)) if up else (0, 0)
    in_pps = int(iface.in_rate / iface.in_packet) if up else 0
    out_pps = int(iface.out_rate / iface.out_packet) if up else 0
    lines = [
        f"{iface.descr} is {status}, line protocol is {protocol}",
        f"  Hardware is {hardware}, address is {_mac(iface)} (bia {_mac(iface)})",
    ]
    if iface.alias:
        lines.append(f"  Description: {iface.alias}")
    lines += [
        f"  MTU 1500 bytes, BW {iface.speed // 1000} Kbit/sec, DLY 10 usec,",
        "     reliability 255/255, txload 1/255, rxload 1/255",
        "  Encapsulation ARPA, loopback not set",
        "  Keepalive set (10 sec)",
        f"  {duplex}, media type is {media}",
        "  input flow-control is off, output flow-control is unsupported",
        "  ARP type: ARPA, ARP Timeout 04:00:00",
        "  Last input never, output 00:00:01, output hang never",
        '  Last clearing of "show interface" counters never',
        f"  Input queue: 0/75/{c.in_discards}/0 (size/max/drops/flushes); "
        f"Total output drops: {c.out_discards}",
        "  Queueing strategy: fifo",
        "  Output queue: 0/40 (size/max)",
        f"  5 minute input rate {in_bps} bits/sec, {in_pps} packets/sec",
        f"  5 minute output rate {out_bps} bits/sec, {out_pps} packets/sec",
        # IOS counts multicasts within "broadcasts" and all packets in "packets input".
        f"     {c.in_ucast + c.in_mcast + c.in_bcast} packets input, {c.in_octets} bytes, "
        "0 no buffer",
        f"     Received {c.in_bcast + c.in_mcast} broadcasts ({c.in_mcast} multicasts)",
        "     0 runts, 0 giants, 0 throttles",
        f"     {c.in_errors} input errors, 0 CRC, 0 frame, 0 overrun, 0 ignored",
        f"     0 watchdog, {c.in_mcast} multicast, 0 pause input",
        "     0 input packets with dribble condition detected",
        f"     {c.out_ucast + c.out_mcast + c.out_bcast} packets output, {c.out_octets} bytes, "
        "0 underruns",
        f"     {c.out_errors} output errors, 0 collisions, 0 interface resets",
        "     0 unknown protocol drops",
        "     0 babbles, 0 late collision, 0 deferred",
        "     0 lost carrier, 0 no carrier, 0 pause output",
        "     0 output buffer failures, 0 output buffers swapped out",
    ]
    return lines


def show_interfaces(device: Device, t: float) -> str:
    lines: list[str] = []
    for iface in device.interfaces:
        lines.extend(_interface_block(iface, t))
    return "\n".join(lines) + "\n"


def show_interface_summary(device: Device, t: float) -> str:
    lines = [
        " *: interface is up",
        " IHQ: pkts in input hold queue     IQD: pkts dropped from input queue",
        " OHQ: pkts in output hold queue    OQD: pkts dropped from output queue",
        " RXBS: rx rate (bits/sec)          RXPS: rx rate (pkts/sec)",
        " TXBS: tx rate (bits/sec)          TXPS: tx rate (pkts/sec)",
        " TRTL: throttle count",
        "",
        "  Interface                   IHQ       IQD       OHQ       OQD      RXBS      RXPS"
        "      TXBS      TXPS      TRTL",
        "-" * 112,
    ]
    for iface in device.interfaces:
        c = Counters.of(iface, t)
        up = iface.oper_up
        star = "*" if up else " "
        rxbs, txbs = (int(iface.in_rate * 8), int(iface.out_rate * 8)) if up else (0, 0)
        rxps = int(iface.in_rate / iface.in_packet) if up else 0
        txps = int(iface.out_rate / iface.out_packet) if up else 0
        values = (0, c.in_discards, 0, c.out_discards, rxbs, rxps, txbs, txps, 0)
        lines.append(f"{star} {iface.descr:<26}" + "".join(f"{v:>10}" for v in values))
    return "\n".join(lines) + "\n"


def show_ip_interface_brief(device: Device, t: float) -> str:
    lines = [f"{'Interface':<23}{'IP-Address':<16}{'OK?':<4}{'Method':<7}{'Status':<22}Protocol"]
    for iface in device.interfaces:
        status, protocol = _status(iface)
        lines.append(
            f"{iface.descr:<22} {'unassigned':<16}{'YES':<4}{'unset':<7}{status:<22}"
            f"{protocol.split()[0]}"
        )
    return "\n".join(lines) + "\n"


def _type7(plain: str, seed: int) -> str:
    """Cisco's reversible "password 7" encoding (a fixed public XOR key): not protection,
    which is why configuration backups must redact it."""
    seed %= 16
    body = "".join(
        f"{ord(ch) ^ _TYPE7_KEY[(seed + n) % len(_TYPE7_KEY)]:02X}" for n, ch in enumerate(plain)
    )
    return f"{seed:02d}{body}"


def _secret9(text: str) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"$9${digest[:14]}${digest[14:57]}"


def _config_body(device: Device, t: float) -> list[str]:
    hostname = _hostname(device)
    # The boot time: a stamp that stays put between reads (the revision says what changed).
    stamp = time.strftime("%H:%M:%S UTC %a %b %d %Y", time.gmtime(device.boot_time()))
    lines = [
        "!",
        f"! Last configuration change at {stamp} by netmon (revision {device.config_revision})",
        "!",
        "version 15.2",
        "no service pad",
        "service timestamps debug datetime msec",
        "service timestamps log datetime msec",
        "service password-encryption",
        "!",
        f"hostname {hostname}",
        "!",
        "boot-start-marker",
        "boot-end-marker",
        "!",
        f"enable secret 9 {_secret9(device.name + '/enable')}",
        "!",
    ]
    for n, user in enumerate(device.users):
        # A type 7 "password" made from the account's hash: something for redaction to do.
        encoded = _type7(user.password_hash[-12:], n)
        lines.append(f"username {user.name} privilege {user.privilege} password 7 {encoded}")
    lines += [
        "!",
        f"ip domain-name {_DOMAIN}",
        "!",
        # A real clock-period drifts as NTP disciplines the clock: a line that changes on
        # every read without any configuration change.
        f"ntp clock-period {17179869 + int(time.time() * 1000) % 997}",
        "ntp server 192.0.2.123",
        "!",
    ]
    for iface in device.interfaces:
        lines.append(f"interface {iface.descr}")
        if iface.alias:
            lines.append(f" description {iface.alias}")
        lines.append(
            " switchport mode access" if iface.speed < 10**10 else " switchport mode trunk"
        )
        if not iface.admin_up:
            lines.append(" shutdown")
        lines.append("!")
    lines += [
        f"snmp-server location {device.sys_location}",
        f"snmp-server contact {device.sys_contact}",
        "!",
        "line con 0",
        "line vty 0 15",
        " login local",
        " transport input ssh",
        "!",
        "end",
    ]
    return lines


def show_running_config(device: Device, t: float) -> str:
    body = "\n".join(_config_body(device, t)) + "\n"
    return (
        f"Building configuration...\n\nCurrent configuration : {len(body.encode())} bytes\n{body}"
    )


def _lldp_neighbor(device: Device, iface: Interface) -> tuple[str, str] | None:
    """The distribution switch and port an uplink (10G) sees, fixed per device and port."""
    if iface.speed < 10**10:
        return None
    spread = zlib.crc32(f"{device.name}/{iface.index}".encode())
    return f"dist-{spread % 8 + 1:02d}", f"Te1/1/{spread // 8 % 48 + 1}"


def show_lldp_neighbors_detail(device: Device, t: float) -> str:
    lines: list[str] = []
    count = 0
    for iface in device.interfaces:
        neighbor = _lldp_neighbor(device, iface)
        if neighbor is None or not iface.oper_up:
            continue
        count += 1
        system, port = neighbor
        chassis = hashlib.sha256(system.encode()).hexdigest()[:12]
        lines += [
            "-" * 48,
            f"Local Intf: {iface.name}",
            f"Chassis id: {chassis[0:4]}.{chassis[4:8]}.{chassis[8:12]}",
            f"Port id: {port}",
            f"Port Description: downlink to {_hostname(device)}",
            f"System Name: {system}",
            "",
            "System Description: ",
            _VERSION_LINE.format(v="10"),
            "",
            "Time remaining: 105 seconds",
            "System Capabilities: B,R",
            "Enabled Capabilities: B,R",
            "Management Addresses - not advertised",
            "Auto Negotiation - not supported",
            "Physical media capabilities - not advertised",
            "Media Attachment Unit type - not advertised",
            "Vlan ID: - not advertised",
            "",
        ]
    lines += ["", f"Total entries displayed: {count}", ""]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class BgpPeer:
    address: str
    remote_as: int
    router_id: str
    description: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class Bgp:
    """A distribution switch's BGP: two core peers and one shut down, fixed per name."""

    router_id: str
    local_as: int
    peers: tuple[BgpPeer, ...]

    @classmethod
    def of(cls, device: Device) -> Bgp | None:
        if device.role != "distribution":
            return None
        n = zlib.crc32(device.name.encode())
        net = f"10.{n % 250 + 1}.{n // 250 % 250 + 1}"
        peers = (
            BgpPeer(f"{net}.1", 64512, "10.255.255.1", "core-01", True),
            BgpPeer(f"{net}.5", 64512, "10.255.255.2", "core-02", True),
            BgpPeer(f"{net}.9", 64999, "0.0.0.0", "old transit", False),  # noqa: S104 -- an id
        )
        return cls(f"{net}.254", 65000 + n % 500, peers)

    def accepted(self, number: int, t: float) -> int:
        """Prefixes peer ``number`` sends us at uptime ``t``: a few hundred, drifting."""
        return 800 + 40 * number + int(20 * math.sin(t / 600 + number))

    @staticmethod
    def sent(number: int) -> int:
        return 12 + number


def _bgp_age(seconds: float) -> str:
    """IOS's Up/Down column: 00:12:34, then 1d17h, 8w5d, 1y28w."""
    s = int(seconds)
    if s < 86400:
        return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
    days = s // 86400
    if days < 7:
        return f"{days}d{s // 3600 % 24}h"
    if days < 365:
        return f"{days // 7}w{days % 7}d"
    return f"{days // 365}y{days % 365 // 7}w"


def show_bgp_summary(device: Device, t: float) -> str:
    bgp = Bgp.of(device)
    if bgp is None:
        return "% BGP not active\n"
    lines = [
        "For address family: IPv4 Unicast",
        f"BGP router identifier {bgp.router_id}, local AS number {bgp.local_as}",
        "BGP table version is 1, main routing table version 1",
        "",
        "Neighbor        V           AS MsgRcvd MsgSent   TblVer  InQ OutQ Up/Down  State/PfxRcd",
    ]
    for number, peer in enumerate(bgp.peers):
        if peer.enabled:
            messages = int(t / 60) + 3
            state = str(bgp.accepted(number, t))
            age = _bgp_age(t)
        else:
            messages, state, age = 0, "Idle (Admin)", "never"
        lines.append(
            f"{peer.address:<15} 4 {peer.remote_as:>12} {messages:>7} {messages:>7} "
            f"{1 if not peer.enabled else 1234:>8} {0:>4} {0:>4} {age:<8} {state}"
        )
    return "\n".join(lines) + "\n\n"


def show_bgp_ipv4_neighbors(device: Device, t: float) -> str:
    bgp = Bgp.of(device)
    if bgp is None:
        return "% BGP not active\n"
    lines: list[str] = []
    for number, peer in enumerate(bgp.peers):
        link = "internal" if peer.remote_as == bgp.local_as else "external"
        state = f"Established, up for {_bgp_age(t)}" if peer.enabled else "Idle, down for never"
        current = (bgp.sent(number), bgp.accepted(number, t)) if peer.enabled else (0, 0)
        lines += [
            f"BGP neighbor is {peer.address},  remote AS {peer.remote_as}, {link} link",
            f"  Description: {peer.description}",
            f"  BGP version 4, remote router ID {peer.router_id}",
            f"  BGP state = {state}",
            "  Last read 00:00:12, last write 00:00:21, hold time is 180, keepalive is 60",
            "",
            " For address family: IPv4 Unicast",
            f"  Session: {peer.address}",
            "                                 Sent       Rcvd",
            "  Prefix activity:               ----       ----",
            f"    Prefixes Current:          {current[0]:>6}     {current[1]:>6}",
            f"    Prefixes Total:            {current[0]:>6}     {current[1]:>6}",
            "",
            "                                   Outbound    Inbound",
            "  Local Policy Denied Prefixes:    --------    -------",
            "    Total:                                0          0",
            "",
        ]
    return "\n".join(lines) + "\n"


def _no_neighbors(device: Device, t: float) -> str:
    return ""  # the other address families napalm asks about: none configured


_COMMANDS: dict[tuple[str, ...], tuple[bool, Render]] = {
    ("show", "bgp", "all", "summary"): (False, show_bgp_summary),
    ("show", "ip", "bgp", "summary"): (False, show_bgp_summary),
    ("show", "bgp", "ipv4", "unicast", "neighbors"): (False, show_bgp_ipv4_neighbors),
    ("show", "ip", "bgp", "neighbors"): (False, show_bgp_ipv4_neighbors),
    ("show", "bgp", "ipv4", "multicast", "neighbors"): (False, _no_neighbors),
    ("show", "bgp", "ipv6", "unicast", "neighbors"): (False, _no_neighbors),
    ("show", "bgp", "ipv6", "multicast", "neighbors"): (False, _no_neighbors),
    ("show", "bgp", "vpnv4", "unicast", "all", "neighbors"): (False, _no_neighbors),
    ("show", "bgp", "vpnv6", "unicast", "all", "neighbors"): (False, _no_neighbors),
    ("show", "bgp", "ipv4", "mdt", "all", "neighbors"): (False, _no_neighbors),
    ("show", "lldp", "neighbors", "detail"): (False, show_lldp_neighbors_detail),
    ("show", "version"): (False, show_version),
    ("show", "hosts"): (False, show_hosts),
    ("show", "interfaces"): (False, show_interfaces),
    ("show", "interface", "summary"): (False, show_interface_summary),
    ("show", "interfaces", "summary"): (False, show_interface_summary),
    ("show", "ip", "interface", "brief"): (False, show_ip_interface_brief),
    ("show", "running-config"): (True, show_running_config),
}
