"""``netmon chaos relay``: a delaying relay process, controlled over a unix socket."""

from __future__ import annotations

import asyncio
import resource
import signal
from pathlib import Path
from typing import Annotated

import typer

from netmon.chaos.relay import RelaySpec, serve_relays

__all__ = ["parse_tcp", "parse_udp", "relay"]


def parse_udp(text: str) -> dict[int, tuple[str, int]]:
    """``FIRST-LAST=HOST:TARGET_FIRST`` (or ``PORT=HOST:PORT``) -> listen port -> target."""
    listen, sep, target = text.partition("=")
    host, colon, first_target = target.rpartition(":")
    if not sep or not colon or not host:
        raise typer.BadParameter(f"{text!r}: expected FIRST-LAST=HOST:PORT", param_hint="--udp")
    try:
        low, _, high = listen.partition("-")
        first, last = int(low), int(high or low)
        base = int(first_target)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: ports are numbers", param_hint="--udp") from None
    if not (1 <= first <= last <= 65535 and 1 <= base <= 65535 - (last - first)):
        raise typer.BadParameter(f"{text!r}: ports out of range", param_hint="--udp")
    return {first + i: (host, base + i) for i in range(last - first + 1)}


def parse_tcp(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """``PORT=HOST:PORT`` (listen on 127.0.0.1)."""
    listen, sep, target = text.partition("=")
    host, colon, port = target.rpartition(":")
    try:
        if not sep or not colon or not host:
            raise ValueError
        return ("127.0.0.1", int(listen)), (host, int(port))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected PORT=HOST:PORT", param_hint="--tcp") from None


def relay(
    control: Annotated[
        Path, typer.Option(metavar="PATH", help="Unix socket that takes the relay's commands.")
    ],
    udp: Annotated[
        list[str] | None,
        typer.Option(
            metavar="FIRST-LAST=HOST:TARGET_FIRST",
            help="UDP ports FIRST..LAST on 127.0.0.1 onto as many ports of HOST from "
            "TARGET_FIRST (a single PORT=HOST:PORT too). Repeatable.",
        ),
    ] = None,
    tcp: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PORT=HOST:PORT",
            help="TCP port PORT on 127.0.0.1 onto HOST:PORT. Repeatable.",
        ),
    ] = None,
    delay: Annotated[
        float, typer.Option(metavar="SECONDS", min=0, help="Initial delay each way.")
    ] = 0.0,
) -> None:
    """Relay UDP and TCP traffic with a delay, a cut or a freeze, for chaos experiments
    (this kernel has no netem). Runs until SIGTERM or Ctrl-C.

    The control socket takes one JSON object per line and answers each with the state:

      {"op": "set_delay", "seconds": 0.5}   hold data 0.5 s each way

      {"op": "cut"}                          the target looks gone

      {"op": "freeze"}                       the target hangs

      {"op": "restore"}                      forward again

      {"op": "status"}

    Examples:

      netmon chaos relay --control /tmp/r.sock --udp 31001-31200=127.0.0.1:16101

      netmon chaos relay --control /tmp/db.sock --tcp 25432=127.0.0.1:5432 --delay 0.5
    """
    spec = RelaySpec()
    for text in udp or []:
        spec.udp.update(parse_udp(text))
    spec.tcp = [parse_tcp(text) for text in tcp or []]
    if not spec.udp and not spec.tcp:
        raise typer.BadParameter("nothing to relay: give --udp or --tcp")

    # One socket per UDP port, and one more per client: take all the descriptors allowed.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_relays(spec, control, delay=delay, stop=stop)

    asyncio.run(main())
