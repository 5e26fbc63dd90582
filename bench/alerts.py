"""Alert latency and rule-evaluation cost, with the same-run baselines.

    python bench/alerts.py [--quick] [--database-url URL] [--runs N] [--alerts N]

Latency (one run: 1,000 alerts; --quick 100): what ``netmon run`` runs, in one process: a
writer, the batcher with alert evaluation hooked in, the alert service (recorder, group
flush, webhook deliverer) and the API serving ``/ws/alerts``; a webhook subscription in
netmon format with group_wait 0 and one group per device. A consumer process, as a real
NOC client would be, holds a WebSocket on ``/ws/alerts`` and an HTTP receiver that
verifies every Standard Webhooks signature. Every 5 ms (``PACE=0.02`` in the environment
for every 20 ms) a sample that crosses the rule's
threshold for a new device enters ingest (``Batcher.submit``, the poller's hand-off);
wall-clock times (one machine, one clock) give, per alert:

* figures.commit_p50_ms / commit_p99_ms: sample submitted -> alert row committed;
* figures.ws_p50_ms / ws_p99_ms: -> the WebSocket client has the ``firing`` change;
* figures.webhook_p50_ms / webhook_p99_ms: -> the receiver has the verified message.
  ``figures.ws_missing`` / ``webhook_missing`` count alerts that never arrived (must be 0).

Evaluation cost: 1,000 rules (100 per metric over 10 interface metrics, each for one site
and an interface regex, thresholds a few series cross) over 2,000 series of 100 devices in
20 sites, in batches of 5,000 samples:

* baseline.samples_per_s: ingest without rules (``SampleWriter.write`` per batch);
* figures.eval_samples_per_s: the same with ``AlertEngine.observe`` on every batch first,
  as the batcher does (fresh timestamps per section, sections alternate);
* figures.engine_samples_per_s: ``observe`` alone, no database.

Targets: ws_p99_ms <= 50, webhook_p99_ms <= 200, ratio.eval_samples_per_s >= 0.8
(evaluation costs at most 20 % of ingest throughput). The database is netmon_bench_<random>,
dropped at the end. Progress on stderr; the last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _contract import environment, main, percentile, repeat, stderr

from netmon.alerts.engine import AlertEngine, DeviceAttrs
from netmon.alerts.rules import Rule, parse_rule
from netmon.alerts.service import AlertService
from netmon.api.context import ApiContext
from netmon.api.server import ApiServer
from netmon.config import Settings, load_settings
from netmon.core_control import LocalCore
from netmon.records import Sample, SeriesKey
from netmon.store.batcher import Batcher
from netmon.store.database import Database
from netmon.store.maintenance import maintain
from netmon.store.schema import upgrade
from netmon.store.tokens import create_token
from netmon.store.writer import SampleWriter

RULES = """
rules:
  - name: bench-hot
    metric: bench_temp
    op: ">"
    value: 50
    severity: major
    summary: "{device} is hot ({value:.0f})"
"""
PACE_S = float(os.environ.get("PACE", "0.005"))
METRICS = [f"ifMetric{i}" for i in range(10)]
SITES = [f"site{i:02d}" for i in range(20)]
EVAL_BATCH = 5_000


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alerts", type=int, default=None, help="alerts per latency run")
    parser.add_argument(
        "--consumer", nargs=3, metavar=("WS_URL", "TOKEN", "OUT"), help=argparse.SUPPRESS
    )


# -- latency --------------------------------------------------------------------------------


def settings_for(url: str, data_dir: Path) -> Settings:
    rules = data_dir / "rules.yaml"
    rules.write_text(RULES)
    return load_settings(
        None,
        data_dir=data_dir,
        database={"url": url, "pool_min": 4, "pool_max": 20},
        api={"port": 0, "rate_limit": 0},
        alerts={"rules_file": str(rules), "webhooks": {"allow": ["127.0.0.1/32"]}},
    )


class Stack:
    """netmon run's parts in this process: writer, batcher, alerting, API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database, settings.data_dir)
        self.commits: dict[str, float] = {}

    async def __aenter__(self) -> Stack:
        await self.db.start()
        await upgrade(self.db)
        await maintain(self.db, self.settings.storage)
        self.writer = SampleWriter(self.db, self.settings)
        await self.writer.start()
        self.batcher = Batcher(self.writer, self.settings.writer)
        self.batcher.start()
        self.alerts = AlertService(self.db, self.settings)
        await self.alerts.start()
        self.batcher.observe = self.alerts.observe
        self.alerts.recorder.on_commit = self._committed
        core = LocalCore(writer=self.writer, batcher=self.batcher, alerts=self.alerts)
        self.api = ApiServer(ApiContext(self.settings, self.db, core))
        await self.api.start()
        async with self.db.pool.acquire() as conn:
            _, self.token = await create_token(
                conn, name="bench", role="viewer", created_by="bench", pepper=b""
            )
        return self

    def _committed(self, transitions: Sequence[Any], _views: Sequence[Any]) -> None:
        now = time.time()
        for t in transitions:
            if t.event == "firing":
                self.commits.setdefault(t.device, now)

    async def __aexit__(self, *exc: object) -> None:
        await self.api.stop()
        await self.batcher.close()
        await self.alerts.close()
        await self.writer.close()
        await self.db.stop()


async def latency_run(stack: Stack, run: int, n: int) -> dict[str, float]:
    out = stack.settings.data_dir / f"consumer-{run}.json"
    ws_url = f"ws://127.0.0.1:{stack.api.port}/ws/alerts"
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--consumer",
        ws_url,
        stack.token,
        str(out),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert consumer.stdout is not None
        line = (await consumer.stdout.readline()).decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"consumer did not start: {line!r}")
        port = int(line.split()[1])
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        (consumer_secret := stack.settings.data_dir / f"secret-{run}").write_text(secret)
        await add_webhook(stack, run, f"http://127.0.0.1:{port}/hook", secret)
        consumer.send_signal(signal.SIGUSR1)  # read the secret now
        await asyncio.sleep(0.2)
        submitted: dict[str, float] = {}
        pending: set[asyncio.Task[Any]] = set()
        now = datetime.now(UTC)
        for i in range(n):
            device = f"b{run}-{i:05d}"
            key = SeriesKey.of(device, "bench_temp")
            submitted[device] = time.time()
            task = asyncio.create_task(stack.batcher.submit([Sample(key, now, 80.0)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(PACE_S)
        await asyncio.gather(*pending)
        await stack.alerts.recorder.drain(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and stack.alerts.deliverer.stats.delivered < n:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        consumer.send_signal(signal.SIGTERM)
        await asyncio.wait_for(consumer.wait(), 30)
    seen = json.loads(out.read_text())
    consumer_secret.unlink()
    return latencies(submitted, stack.commits, seen["ws"], seen["webhook"])


async def add_webhook(stack: Stack, run: int, url: str, secret: str) -> None:
    async with stack.db.pool.acquire() as conn:
        await conn.execute("UPDATE webhooks SET enabled = false")
        await conn.execute(
            """
            INSERT INTO webhooks (name, url, secret, format, group_by, group_wait,
                                  group_interval, repeat_interval, created_by)
            VALUES ($1, $2, $3, 'netmon', '{rule,device}', '0s', '0s', '4h', 'bench')
            """,
            f"bench-{run}",
            url,
            secret,
        )


def latencies(
    submitted: dict[str, float],
    commits: dict[str, float],
    ws: dict[str, float],
    webhook: dict[str, float],
) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, arrived in (("commit", commits), ("ws", ws), ("webhook", webhook)):
        ms = [(arrived[d] - t) * 1000 for d, t in submitted.items() if d in arrived]
        if ms:
            out[f"{name}_p50_ms"] = percentile(ms, 50)
            out[f"{name}_p99_ms"] = percentile(ms, 99)
        if name != "commit":
            out[f"{name}_missing"] = float(len(submitted) - len(ms))
    return out


# -- the consumer process ---------------------------------------------------------------------


def consumer_main(ws_url: str, token: str, out: str) -> None:
    """A NOC client: a WebSocket on /ws/alerts and a webhook receiver that verifies each
    message. Records the first arrival time per device; writes them at SIGTERM."""
    import websockets
    from standardwebhooks.webhooks import Webhook

    ws_seen: dict[str, float] = {}
    hook_seen: dict[str, float] = {}
    secret_file = Path(out).parent / f"secret-{Path(out).stem.split('-')[-1]}"
    verifier: list[Webhook] = []

    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while line := await reader.readline():
                del line
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                now = time.time()
                status = "401 Unauthorized"
                if verifier:
                    try:
                        message = verifier[0].verify(body, headers)
                    except Exception:  # a failed verification is a lost message here
                        message = None
                    if message is not None:
                        status = "200 OK"
                        for alert in message["alerts"]:
                            hook_seen.setdefault(alert["device"], now)
                writer.write(f"HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(
            signal.SIGUSR1, lambda: verifier.append(Webhook(secret_file.read_text()))
        )
        async with websockets.connect(
            ws_url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
        ) as ws:
            await ws.send(json.dumps({"subscribe": {}}))
            reply = json.loads(await ws.recv())
            if reply.get("type") != "subscribed":
                raise RuntimeError(f"subscribe: {reply}")
            print(f"READY {port}", flush=True)

            async def read() -> None:
                async for raw in ws:
                    now = time.time()
                    data = json.loads(raw)
                    if data.get("type") == "alert" and data.get("event") == "firing":
                        ws_seen.setdefault(data["alert"]["device"], now)

            reader = asyncio.create_task(read())
            await stop.wait()
            reader.cancel()
        server.close()
        for writer in writers:  # handlers see end of stream and return
            writer.close()
        await asyncio.sleep(0.1)
        seen = json.dumps({"ws": ws_seen, "webhook": hook_seen})
        await asyncio.to_thread(Path(out).write_text, seen)

    asyncio.run(run())


# -- evaluation cost ----------------------------------------------------------------------------


def eval_rules() -> list[Rule]:
    rules = []
    for m, metric in enumerate(METRICS):
        for j in range(100):
            site = SITES[(m * 100 + j) % len(SITES)]
            spec = parse_rule(
                {
                    "name": f"r-{metric}-{j}",
                    "metric": metric,
                    "op": ">",
                    "value": 990.0 - (j % 5),  # a few series cross now and then
                    "for": "1m",
                    "matchers": [f'site="{site}"', f'interface=~"eth[0-{j % 8 + 1}]"'],
                }
            )
            rules.append(Rule.from_spec(spec, "api"))
    return rules


def eval_data(n_series: int) -> tuple[list[SeriesKey], dict[str, DeviceAttrs]]:
    devices = {f"e{d:03d}": DeviceAttrs(site=SITES[d % len(SITES)]) for d in range(100)}
    names = list(devices)
    keys = [
        SeriesKey.of(
            names[i % len(names)],
            METRICS[(i // len(names)) % len(METRICS)],
            {"interface": f"eth{(i // (len(names) * len(METRICS))) % 10}"},
        )
        for i in range(n_series)
    ]
    return keys, devices


def batches_at(keys: Sequence[SeriesKey], steps: int, first: datetime) -> list[list[Sample]]:
    samples = [
        Sample(k, first + timedelta(seconds=s), float((hash(k) + s * 7) % 1000))
        for s in range(steps)
        for k in keys
    ]
    return [samples[i : i + EVAL_BATCH] for i in range(0, len(samples), EVAL_BATCH)]


async def eval_run(
    writer: SampleWriter,
    keys: list[SeriesKey],
    devices: dict[str, DeviceAttrs],
    steps: int,
    run: int,
) -> tuple[dict[str, float], dict[str, float]]:
    engine = AlertEngine(eval_rules(), devices=devices)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    # A running engine has met its series already (binding a series to its rules happens
    # once, at its first sample): the steady state is what is timed.
    warm = batches_at(keys, 1, base - timedelta(minutes=5))
    section = base + timedelta(hours=run)  # fresh timestamps for every run and section
    plain_batches = batches_at(keys, steps, section)
    rules_batches = batches_at(keys, steps, section + timedelta(minutes=30))
    n = sum(len(b) for b in plain_batches)
    for b in warm:
        engine.observe(b)

    async def plain() -> float:
        t = time.perf_counter()
        for b in plain_batches:
            await writer.write(b)
        return n / (time.perf_counter() - t)

    async def with_rules() -> float:
        t = time.perf_counter()
        for b in rules_batches:
            engine.observe(b)
            await writer.write(b)
        return n / (time.perf_counter() - t)

    if run % 2:
        evaluated, baseline = await with_rules(), await plain()
    else:
        baseline, evaluated = await plain(), await with_rules()
    alone = AlertEngine(eval_rules(), devices=devices)
    for b in warm:
        alone.observe(b)
    t = time.perf_counter()
    for b in plain_batches:
        alone.observe(b)
    engine_rate = n / (time.perf_counter() - t)
    stderr.print(
        f"evaluation: {n:,} samples, {engine.stats.evaluations:,} evaluations, "
        f"{engine.stats.transitions:,} transitions"
    )
    # The ingest without rules is the baseline of the figure with them (ratio = 1 - cost).
    return (
        {"eval_samples_per_s": evaluated, "engine_samples_per_s": engine_rate},
        {"samples_per_s": baseline, "eval_samples_per_s": baseline},
    )


async def bench(args: argparse.Namespace, url: str, data_dir: Path) -> dict[str, Any]:
    n_alerts = args.alerts or (100 if args.quick else 1_000)
    runs = args.runs or (1 if args.quick else 3)
    n_series, steps = (500, 10) if args.quick else (2_000, 50)
    settings = settings_for(url, data_dir)
    keys, devices = eval_data(n_series)
    async with Stack(settings) as stack:
        # Series and devices exist before the clock starts, as in a running poller.
        await stack.writer.write(batches_at(keys, 1, datetime.now(UTC) - timedelta(hours=7))[0])

        async def once(run: int) -> tuple[dict[str, float], dict[str, float]]:
            stderr.print(f"latency: {n_alerts} alerts, one every {PACE_S * 1000:.0f} ms")
            figures: dict[str, float] = dict(await latency_run(stack, run, n_alerts))
            evaluated, baseline = await eval_run(stack.writer, keys, devices, steps, run)
            figures.update(evaluated)
            return figures, baseline

        return await repeat(
            "alerts",
            runs,
            once,
            notes={
                "alerts_per_run": n_alerts,
                "pace_ms": PACE_S * 1000,
                "rules": 1000,
                "eval_series": n_series,
                "eval_samples": n_series * steps,
                "eval_batch": EVAL_BATCH,
                "targets": {"ws_p99_ms": 50, "webhook_p99_ms": 200, "eval_ratio_min": 0.8},
                **environment(),
            },
        )


if __name__ == "__main__":
    if "--consumer" in sys.argv:
        i = sys.argv.index("--consumer")
        consumer_main(*sys.argv[i + 1 : i + 4])
        sys.exit(0)
    sys.exit(main(__doc__, options, bench))
