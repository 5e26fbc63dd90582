"""The SSRF guard for webhook URLs: where netmon may send a POST on an API user's word.

``alerts.webhooks.allow`` lists IP networks (``10.0.0.0/8``, ``::1/128``) and host names
(``nsp.example.net``, or ``*.noc.example.net`` for any name below it). A URL is allowed
when it is http or https without user info, and either its host name is listed (then the
name is trusted and its addresses are not checked), or its host is an address, or every
address it resolves to, inside a listed network. Checking every address and not just one
keeps a name that resolves to both a public and an internal address out.

The deliverer checks before every attempt and connects to a checked address (plain http),
so a name that resolves differently between the check and the connection (DNS
rebinding) cannot redirect it; for https the certificate check refuses a host that is not
the named one. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

__all__ = ["AllowList", "DestinationError", "check_destination", "parse_allow"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class DestinationError(ValueError):
    """A webhook URL that netmon will not send to; the message names the host or address
    and says why."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """``alerts.webhooks.allow``, read: networks, exact host names, wildcard suffixes."""

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".noc.example.net" for "*.noc.example.net"

    def __bool__(self) -> bool:
        return bool(self.networks or self.names or self.suffixes)

    def allows_name(self, host: str) -> bool:
        return host in self.names or host.endswith(self.suffixes)

    def allows_address(self, address: IPAddress) -> bool:
        # An IPv4-mapped IPv6 address (::ffff:10.0.0.1) reaches the IPv4 host: judge that.
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return any(
            address in net or (mapped is not None and mapped in net) for net in self.networks
        )


def _normal_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _parse_entry(entry: str) -> IPNetwork | str:
    text = entry.strip()
    if not text:
        raise DestinationError("alerts.webhooks.allow: an entry is empty")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "/" in text or _looks_like_address(text):
            raise DestinationError(
                f"alerts.webhooks.allow: {text!r} is not an IP network ({exc})"
            ) from exc
    wildcard = text.startswith("*.")
    name = _normal_name(text[2:] if wildcard else text)
    labels = name.split(".")
    if not name or "*" in name or any(not label for label in labels) or not _hostname_ok(name):
        raise DestinationError(
            f"alerts.webhooks.allow: {text!r} is neither an IP network nor a host name "
            "(write '10.0.0.0/8', 'nsp.example.net' or '*.example.net')"
        )
    return f".{name}" if wildcard else name


def _looks_like_address(text: str) -> bool:
    return ":" in text or text.replace(".", "").isdigit()


def _hostname_ok(name: str) -> bool:
    return all(c.isalnum() or c in "-_." for c in name)


def parse_allow(allow: Sequence[str]) -> AllowList:
    """Read the allow list; :class:`DestinationError` names the first bad entry. Usable as
    a config-time check."""
    if isinstance(allow, str):
        raise DestinationError("alerts.webhooks.allow must be a list, not one string")
    networks: list[IPNetwork] = []
    names: set[str] = set()
    suffixes: list[str] = []
    for entry in allow:
        parsed = _parse_entry(entry)
        if isinstance(parsed, str):
            (suffixes.append if parsed.startswith(".") else names.add)(parsed)
        else:
            networks.append(parsed)
    return AllowList(tuple(networks), frozenset(names), tuple(suffixes))


def _split(url: str) -> tuple[SplitResult, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationError(f"{url!r} is not a usable URL: {exc}") from exc
    if parts.scheme not in _SCHEMES:
        raise DestinationError(
            f"webhook URLs must be http or https, not {parts.scheme or 'without a scheme'!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise DestinationError(
            "webhook URLs must not carry user info (user:password@): the signature "
            "authenticates netmon to the receiver"
        )
    host = _normal_name(parts.hostname or "")
    if not host:
        raise DestinationError("the webhook URL has no host")
    return parts, host, port or _DEFAULT_PORTS[parts.scheme]


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationError(f"cannot resolve {host}: {exc}") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationError(f"{host} resolves to no address")
    return addresses


async def check_destination(url: str, allow: Sequence[str] | AllowList) -> list[str]:
    """The addresses ``url``'s host resolves to (an IP literal: itself), in the resolver's
    order, if netmon may send there; else :class:`DestinationError`."""
    rules = allow if isinstance(allow, AllowList) else parse_allow(allow)
    _parts, host, port = _split(url)
    if not rules:
        raise DestinationError(
            f"webhooks may not go to {host}: no destination is allowed; list the networks "
            "or host names webhooks may reach in alerts.webhooks.allow"
        )
    literal = _literal(host)
    if literal is not None:
        if not rules.allows_address(literal):
            raise DestinationError(f"{host} is not inside a network in alerts.webhooks.allow")
        return [str(literal)]
    if rules.allows_name(host):
        return await _resolve(host, port)
    if not rules.networks:
        raise DestinationError(f"{host} is not a host name listed in alerts.webhooks.allow")
    addresses = await _resolve(host, port)
    refused = [a for a in addresses if not rules.allows_address(ipaddress.ip_address(a))]
    if refused:
        raise DestinationError(
            f"{host} resolves to {', '.join(refused)}, not inside a network in "
            "alerts.webhooks.allow (every address of a host must be allowed, or the host "
            "name itself listed)"
        )
    return addresses
