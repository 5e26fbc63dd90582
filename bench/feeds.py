"""Memory per live-feed client: what the real ``netmon api`` process gains in RSS for each
WebSocket client that is connected, subscribed and receiving, against what the same
server gains for each plain idle TCP connection, in the same run.

    python bench/feeds.py [--quick] [--database-url URL] [--runs N] [--clients 500,2000]
                          [--seconds S] [--compression]

Set-up (not measured), in a fresh netmon_bench_<random> database: the real migrations,
one viewer token per 10 clients (tokens are made in the database, as ``netmon token
create`` makes them), and a producer in this process that writes through the real
``SampleWriter`` (publish on: NOTIFY to the server's feed hub) for the whole run: 10,000
series (``DEVICES`` 200 devices x ``SERIES`` 50 interface counters), each written every
5 s, 10 devices every 0.25 s, as a poller spreads its devices over its interval.

Per client count N (``--clients``, default 500 and 2,000; --quick 200), each in a server
of its own, ``python -m netmon api`` (one process, rate limit off):

1. Warm-up: 10 WebSocket clients connect, subscribe and receive for one cycle of the
   producer (6 s), then leave, so that imports, caches and the feed metadata are in place
   before the first reading.
2. RSS before: the median of 5 readings of the server's ``VmRSS`` over a second.
3. N clients in ``CLIENT_PROCESSES`` (2) processes of their own connect to
   ``/ws/metrics?access_token=`` (offering permessage-deflate, as browsers and the
   ``websockets`` client do by default), each subscribes to one device (client i to device
   i mod 200: 50 samples every 5 s) and reads everything the server sends.
4. Steady state: after ``--seconds`` (12; --quick 6) of streaming, the median of the
   readings taken over the second half of that time; every client must have received
   samples in it (``min_messages_<N>``, the fewest messages any client read, > 0);
   ``closed_<N>`` counts the clients the server closed meanwhile (0 expected).

Figures: ``kb_per_client_<N>`` = (RSS after - RSS before) / N in KiB; ``kb_per_client``
is that at the largest N (the headline). ``rss_mb_<N>`` the server's RSS at steady state.
The server runs with its defaults (``api.ws_compression`` off); ``--compression`` turns
permessage-deflate on for both servers, to see what it costs.

Baseline, same run, same procedure (a fresh server, the same warm-up): N plain TCP
connections to the same port that send nothing (uvicorn's HTTP protocol object and the
socket, nothing of the feeds), kept open over the same time (``api.header_timeout``, which
would close them after 10 s, is raised to 10 minutes for both servers where the setting
exists); ``kb_per_client_<N>`` is their RSS delta per connection. The ratio is then how
many idle connections one feed client weighs.

Progress goes to stderr; the last line of stdout is the JSON result (bench/_contract.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _contract import emit, environment, main, median_figures, stderr
from _process import Process

from netmon.config import ApiSettings, load_settings
from netmon.records import Sample, SeriesKey
from netmon.store.database import Database
from netmon.store.schema import upgrade
from netmon.store.tokens import create_token
from netmon.store.writer import SampleWriter

SCRIPT = Path(__file__).resolve()
DEVICES = 200
SERIES = 50
TICK = 0.25
DEVICES_PER_TICK = 10
CLIENTS_PER_TOKEN = 10
CLIENT_PROCESSES = 2
WARMUP_CLIENTS = 10
WARMUP_SECONDS = DEVICES / DEVICES_PER_TICK * TICK + 1.0
KIB = 1024


# The baseline's connections send nothing: a server that closes a connection without a
# request head after a while (api.header_timeout, where it exists) must wait longer than
# the measurement. Both servers get the same settings.
HOLD_IDLE = (
    {"NETMON_API__HEADER_TIMEOUT": "10m"} if "header_timeout" in ApiSettings.model_fields else {}
)


# Settings of both servers from the command line (--compression).
SERVER_ENV: dict[str, str] = {}


def device_name(i: int) -> str:
    return f"bench-feed{i % DEVICES:04d}"


# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise RuntimeError(f"no VmRSS for process {pid}")


class Server:
    """``netmon api`` in a session of its own; stopped by its id."""

    def __init__(
        self, url: str, data_dir: Path, port: int, max_clients: int, extra: dict[str, str]
    ) -> None:
        self.port = port
        self.log = data_dir / f"netmon-api-{port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
        env.update(
            NETMON_DATABASE__URL=url,
            NETMON_DATA_DIR=str(data_dir),
            NETMON_API__RATE_LIMIT="0",
            NETMON_API__WS_MAX_CLIENTS=str(max_clients),
            **HOLD_IDLE,
            **extra,
            NETMON_LOG__LEVEL="warning",
            NETMON_LOG__FORMAT="json",
            PYTHONUNBUFFERED="1",
        )
        argv = [sys.executable, "-m", "netmon", "api", "--host", "127.0.0.1"]
        argv += ["--port", str(port)]
        self.process = Process(argv, env, self.log, data_dir)

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self) -> str:
        return self.process.tail()

    async def wait_ready(self, within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        url = f"http://127.0.0.1:{self.port}/health/live"
        while time.monotonic() < deadline:
            proc = self.process.proc
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(OSError):
                status = await asyncio.to_thread(_status, url)
                if status == 200:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {within:.0f} s:\n{self.tail()}")

    async def rss(self, readings: int = 5, over: float = 1.0) -> float:
        """The median of ``readings`` RSS readings spread over ``over`` seconds."""
        values = []
        for i in range(readings):
            values.append(rss_bytes(self.pid))
            if i < readings - 1:
                await asyncio.sleep(over / max(1, readings - 1))
        return float(statistics.median(values))

    def stop(self) -> None:
        self.process.stop()


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2.0) as response:
        return int(response.status)


# -- client processes ----------------------------------------------------------------------


def ws_clients_main(port: int, tokens_file: str, first: int, count: int) -> None:
    """Clients ``first`` .. ``first + count - 1``: client i uses token i // CLIENTS_PER_TOKEN
    and subscribes to device i mod DEVICES. Prints READY when all are subscribed, then
    reads until a line arrives on stdin: prints JSON with the messages each client read
    since READY (fewest, total) and how many were closed by the server."""
    import websockets

    tokens = Path(tokens_file).read_text().split()

    async def run() -> None:
        gate = asyncio.Semaphore(32)
        counts = [0] * count
        closed = 0

        async def open_one(i: int) -> Any:
            token = tokens[i // CLIENTS_PER_TOKEN]
            url = f"ws://127.0.0.1:{port}/ws/metrics?access_token={token}"
            async with gate:
                for attempt in range(5):
                    try:
                        ws = await websockets.connect(url, open_timeout=60, ping_interval=None)
                        break
                    except (OSError, TimeoutError, websockets.InvalidStatus):
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.5)
                await ws.send(json.dumps({"subscribe": {"devices": [device_name(i)]}}))
                while True:
                    reply = json.loads(await ws.recv())
                    if reply.get("type") == "subscribed":
                        return ws
                    if reply.get("type") == "error":
                        raise RuntimeError(f"client {i}: {reply}")

        sockets = await asyncio.gather(*(open_one(first + k) for k in range(count)))

        async def read(k: int, ws: Any) -> None:
            nonlocal closed
            try:
                async for _ in ws:
                    counts[k] += 1
            except websockets.ConnectionClosed:
                pass
            closed += 1

        counts = [0] * count
        readers = [asyncio.create_task(read(k, ws)) for k, ws in enumerate(sockets)]
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        result = {"min": min(counts), "total": sum(counts), "closed": closed}
        for ws in sockets:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        print(json.dumps(result), flush=True)

    asyncio.run(run())


def tcp_clients_main(port: int, count: int) -> None:
    """``count`` plain TCP connections that send nothing. READY, then on a line from stdin
    prints how many the server still holds open."""
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setblocking(False)
        sockets.append(s)
    print("READY", flush=True)
    sys.stdin.readline()
    still = 0
    errors: dict[str, int] = {}
    for s in sockets:
        try:
            data = s.recv(1, socket.MSG_PEEK)
            errors["eof" if not data else "data"] = errors.get("eof" if not data else "data", 0) + 1
        except BlockingIOError:
            still += 1  # nothing to read, not closed
        except OSError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    for s in sockets:
        s.close()
    print(json.dumps({"open": still, "errors": errors}), flush=True)


class Clients:
    """Client processes we started; stopped by their ids."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, argvs: Sequence[list[str]], log: Path) -> None:
        for argv in argvs:
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(SCRIPT),
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log.open("ab"),
                    start_new_session=True,
                )
            )
        for proc in self.procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 300)
            if line.strip() != b"READY":
                tail = await asyncio.to_thread(log.read_text)
                raise RuntimeError(f"clients did not start: {line!r}\n{tail[-2000:]}")

    async def finish(self) -> list[dict[str, Any]]:
        results = []
        for proc in self.procs:
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        for proc in self.procs:
            assert proc.stdout is not None
            results.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 120)))
            async with asyncio.timeout(60):
                await proc.wait()
        self.procs = []
        return results

    async def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.procs = []


def ws_argvs(port: int, tokens_file: Path, n: int) -> list[list[str]]:
    parts = min(CLIENT_PROCESSES, n)
    bounds = [n * p // parts for p in range(parts + 1)]
    return [
        ["_ws", str(port), str(tokens_file), str(lo), str(hi - lo)]
        for lo, hi in itertools.pairwise(bounds)
    ]


def tcp_argvs(port: int, n: int) -> list[list[str]]:
    parts = min(CLIENT_PROCESSES, n)
    bounds = [n * p // parts for p in range(parts + 1)]
    return [["_tcp", str(port), str(hi - lo)] for lo, hi in itertools.pairwise(bounds)]


# -- the producer --------------------------------------------------------------------------


async def produce(writer: SampleWriter, stop: asyncio.Event) -> None:
    """Every series once per cycle of DEVICES / DEVICES_PER_TICK ticks, as a poller spreads
    its devices over its interval."""
    keys = [
        [
            SeriesKey.of(device_name(d), "ifHCInOctets", {"ifName": f"eth{s}"}, kind="counter")
            for s in range(SERIES)
        ]
        for d in range(DEVICES)
    ]
    tick = 0
    while not stop.is_set():
        now = datetime.now(UTC)
        first = tick * DEVICES_PER_TICK % DEVICES
        batch = [
            Sample(k, now, tick) for d in range(first, first + DEVICES_PER_TICK) for k in keys[d]
        ]
        await writer.write(batch)
        tick += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TICK):
                await stop.wait()


# -- the benchmark -------------------------------------------------------------------------


async def measure(
    kind: str,
    n: int,
    url: str,
    data_dir: Path,
    tokens_file: Path,
    seconds: float,
) -> dict[str, float]:
    """RSS before and at steady state of one fresh server with ``n`` clients of ``kind``
    (``ws`` or ``tcp``)."""
    port = free_port()
    server = Server(url, data_dir, port, n + 2 * WARMUP_CLIENTS, SERVER_ENV)
    log = data_dir / f"clients-{kind}-{n}.log"
    clients = Clients()
    try:
        await server.wait_ready()
        warm = Clients()
        try:
            await warm.start(ws_argvs(port, tokens_file, WARMUP_CLIENTS), log)
            await asyncio.sleep(WARMUP_SECONDS)
            warmed = await warm.finish()
        finally:
            await warm.kill()
        if min(r["min"] for r in warmed) == 0:
            raise RuntimeError("warm-up clients received nothing: is the producer running?")
        await asyncio.sleep(1.0)
        before = await server.rss()
        argvs = ws_argvs(port, tokens_file, n) if kind == "ws" else tcp_argvs(port, n)
        await clients.start(argvs, log)
        readings: list[int] = []
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            if elapsed >= seconds / 2:
                readings.append(rss_bytes(server.pid))
            await asyncio.sleep(0.25)
        after = float(statistics.median(readings))
        results = await clients.finish()
    finally:
        await clients.kill()
        server.stop()
        server_tail = server.tail()
    out = {
        "kb_per_client": (after - before) / n / KIB,
        "rss_mb": after / KIB / KIB,
        "rss_before_mb": before / KIB / KIB,
    }
    if kind == "ws":
        out["min_messages"] = float(min(r["min"] for r in results))
        out["closed"] = float(sum(r["closed"] for r in results))
        if out["closed"]:
            # Kept as a figure: the server could not hold them all, which is a result too.
            stderr.print(f"[yellow]the server closed {out['closed']:.0f} clients:[/yellow]")
            stderr.print(server_tail)
        if out["min_messages"] == 0:
            raise RuntimeError(f"not every client was receiving: {results}")
    else:
        out["open"] = float(sum(r["open"] for r in results))
        if out["open"] != n:
            raise RuntimeError(f"the server closed idle connections: {results}\n{server_tail}")
    stderr.print(f"  {kind} x {n}: " + ", ".join(f"{k}={v:,.1f}" for k, v in out.items()))
    return out


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", default=None, help="client counts, e.g. 500,2000")
    parser.add_argument("--seconds", type=float, default=None, help="streaming time per count")
    parser.add_argument(
        "--compression",
        action="store_true",
        help="serve with api.ws_compression on (permessage-deflate), to see what it costs",
    )


async def bench(args: argparse.Namespace, url: str, data_dir: Path) -> dict[str, Any]:
    counts = [int(c) for c in (args.clients or ("200" if args.quick else "500,2000")).split(",")]
    seconds = args.seconds or (6.0 if args.quick else 12.0)
    runs = args.runs or (1 if args.quick else 3)
    if args.compression:
        SERVER_ENV["NETMON_API__WS_COMPRESSION"] = "true"
    settings = load_settings(
        None,
        data_dir=data_dir / "producer",
        database={"url": url, "pool_min": 1, "pool_max": 4},
        writer={"publish": True},
    )
    db = Database(settings.database, settings.data_dir)
    await db.start()
    stop = asyncio.Event()
    producer: asyncio.Task[None] | None = None
    try:
        await upgrade(db)
        tokens = []
        async with db.pool.acquire() as conn:
            for i in range((max(counts) + WARMUP_CLIENTS) // CLIENTS_PER_TOKEN + 1):
                _, token = await create_token(
                    conn, name=f"bench-{i}", role="viewer", created_by="bench", pepper=b""
                )
                tokens.append(token)
        tokens_file = data_dir / "tokens.txt"
        tokens_file.write_text("\n".join(tokens))
        async with SampleWriter(db, settings) as writer:
            producer = asyncio.create_task(produce(writer, stop))
            figure_runs: list[dict[str, float]] = []
            baseline_runs: list[dict[str, float]] = []
            for index in range(runs):
                figures: dict[str, float] = {}
                baseline: dict[str, float] = {}
                for n in counts:
                    ws = await measure("ws", n, url, data_dir, tokens_file, seconds)
                    tcp = await measure("tcp", n, url, data_dir, tokens_file, seconds)
                    figures[f"kb_per_client_{n}"] = ws["kb_per_client"]
                    figures[f"rss_mb_{n}"] = ws["rss_mb"]
                    figures[f"min_messages_{n}"] = ws["min_messages"]
                    figures[f"closed_{n}"] = ws["closed"]
                    baseline[f"kb_per_client_{n}"] = tcp["kb_per_client"]
                    baseline[f"rss_mb_{n}"] = tcp["rss_mb"]
                figures["kb_per_client"] = figures[f"kb_per_client_{max(counts)}"]
                baseline["kb_per_client"] = baseline[f"kb_per_client_{max(counts)}"]
                stderr.print(f"[bold]run {index + 1}/{runs}[/bold] {figures} {baseline}")
                figure_runs.append(figures)
                baseline_runs.append(baseline)
            stop.set()
            await producer
    finally:
        stop.set()
        if producer is not None and not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        await db.stop()
    import uvicorn
    import websockets

    return emit(
        "feeds",
        median_figures(figure_runs),
        median_figures(baseline_runs),
        runs,
        notes={
            "clients": counts,
            "seconds": seconds,
            "stream": f"{DEVICES * SERIES} series of {DEVICES} devices, each written every "
            f"{DEVICES / DEVICES_PER_TICK * TICK:g} s ({DEVICES_PER_TICK * SERIES} samples every "
            f"{TICK:g} s); client i subscribed to device i mod {DEVICES}",
            "baseline": "the same server's RSS delta per idle TCP connection",
            "server_env": {**HOLD_IDLE, **SERVER_ENV},
            "uvicorn": uvicorn.__version__,
            "websockets": websockets.__version__,
            **environment(),
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["_ws"]:
        ws_clients_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1:2] == ["_tcp"]:
        tcp_clients_main(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main(__doc__, options, bench))
