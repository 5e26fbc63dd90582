"""A real Prometheus scrapes netmon: Debian's ``prometheus`` binary, a generated config
with a viewer token in a credentials file, netmon's API serving a polled lab. PromQL's
answers about a lab interface must be what netmon stored, and a token limited to other
sites must see none of the lab's devices.

Prometheus listens on a free 127.0.0.1 port with its TSDB in the test's tmp folder and is
stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from netmon.config import Settings
from netmon.store.database import Database
from tests.peer_check import missing_peer
from tests.poller_helpers import eventually, fast_inventory, running_poller
from tests.test_api_prometheus import api_settings, served, token_for

PROMETHEUS = "/usr/bin/prometheus"

# The lab device and interface the PromQL questions are about.
DEVICE = "lab-0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def prometheus_config(folder: Path, target: str, tokens: dict[str, str]) -> Path:
    """One scrape job per token, each reading its token from a file of its own (as an
    operator would keep it out of the config)."""
    jobs = []
    for job, token in tokens.items():
        credentials = folder / f"{job}.token"
        credentials.write_text(token + "\n")
        credentials.chmod(0o600)
        jobs.append(
            f"  - job_name: {job}\n"
            f"    metrics_path: /metrics\n"
            f"    authorization:\n"
            f"      credentials_file: {credentials}\n"
            f"    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n" + "".join(jobs)
    )
    return config


@contextlib.contextmanager
def running_prometheus(config: Path, folder: Path) -> Iterator[str]:
    if shutil.which(PROMETHEUS) is None:
        missing_peer(f"{PROMETHEUS} is not installed (Debian: apt-get install prometheus)")
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


class PromQL:
    def __init__(self, url: str) -> None:
        self.client = httpx.AsyncClient(base_url=url, timeout=5)

    async def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return (await self.client.get("/-/ready")).status_code == 200
        return False

    async def query(self, promql: str) -> list[dict[str, Any]]:
        response = await self.client.get("/api/v1/query", params={"query": promql})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def targets(self) -> list[tuple[str, str, str]]:
        """Each scrape job's health and last error: what a failure message needs."""
        response = await self.client.get("/api/v1/targets")
        return [
            (t["labels"]["job"], t["health"], t["lastError"])
            for t in response.json()["data"]["activeTargets"]
        ]

    async def value(self, promql: str) -> float | None:
        result = await self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@contextlib.asynccontextmanager
async def promql(url: str) -> AsyncIterator[PromQL]:
    client = PromQL(url)
    try:
        await eventually(client.ready, timeout=20, what="Prometheus to be ready")
        yield client
    finally:
        await client.client.aclose()


async def stored_octets(db: Database, device: str, interface: str) -> float:
    async with db.pool.acquire() as conn:
        value = await conn.fetchval(
            """
            SELECT x.value::float8 FROM samples x
            JOIN series s ON s.id = x.series_id JOIN devices d ON d.id = s.device_id
            WHERE d.name = $1 AND s.metric = 'ifHCInOctets' AND s.labels->>'interface' = $2
            ORDER BY x.time DESC LIMIT 1
            """,
            device,
            interface,
        )
    assert value is not None, (device, interface)
    return float(value)


@pytest.mark.slow
async def test_prometheus_scrapes_the_lab_through_netmon(
    settings: Settings, db: Database, lab: Any, tmp_path: Path
):
    # The defaults: device samples on, /metrics behind a viewer token.
    s = api_settings(settings)
    inventory = fast_inventory(lab, tmp_path / "inventory", interval="1s")
    # An uplink: the lab keeps some access ports down, their counters at zero.
    interface = lab.device(DEVICE).interfaces[-1].name
    series = f'netmon_device_if_hc_in_octets_total{{device="{DEVICE}",interface="{interface}"}}'
    async with served(s, db) as api:
        tokens = {
            "netmon": api.token,
            # A viewer limited to a site the lab is not in: none of its devices.
            "elsewhere": await token_for(db, s, sites=["elsewhere"]),
        }
        config = prometheus_config(tmp_path, api.url.removeprefix("http://"), tokens)
        with running_prometheus(config, tmp_path) as url:
            async with promql(url) as prom:
                async with running_poller(s, db, inventory):

                    async def rate_seen() -> bool:
                        rate = await prom.value(f"rate({series}[4s])")
                        return rate is not None and rate > 0

                    # The lab's counters grow while it is polled: PromQL's rate() over
                    # the exported counter moves.
                    try:
                        await eventually(rate_seen, timeout=30, what="a rate over the counter")
                    except AssertionError as exc:
                        raise AssertionError(
                            f"{exc}; targets: {await prom.targets()}; "
                            f"{series}: {await prom.query(series)}"
                        ) from exc
                    up = await prom.query('up{job="netmon"}')
                    assert [float(r["value"][1]) for r in up] == [1.0]

                # Polls have stopped: netmon's newest value no longer changes. Once a
                # scrape after the last write has landed, Prometheus must hold exactly it.
                stored = await stored_octets(db, DEVICE, interface)
                await asyncio.sleep(2.5)

                async def latest_is_stored() -> bool:
                    return await prom.value(f'{series[:-1]},job="netmon"}}') == stored

                await eventually(latest_is_stored, timeout=10, what="the stored value")
                labels = (await prom.query(f'{series[:-1]},job="netmon"}}'))[0]["metric"]
                assert labels["site"] == "lab"
                assert labels["role"]

                lab_devices = await prom.query(
                    'count by (device) (netmon_device_sys_up_time{job="netmon"})'
                )
                assert {r["metric"]["device"] for r in lab_devices} == set(lab.devices)
                # The other site's token: scraped fine, with no device series at all.
                assert [float(r["value"][1]) for r in await prom.query('up{job="elsewhere"}')] == [
                    1.0
                ]
                assert not await prom.query('{job="elsewhere",__name__=~"netmon_device_.*"}')
                assert await prom.value('netmon_exported_device_series{job="elsewhere"}') == 0
                assert (await prom.value('netmon_exported_device_series{job="netmon"}') or 0) > 0
