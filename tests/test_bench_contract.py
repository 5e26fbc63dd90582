"""Every benchmark keeps the JSON contract: one object on the last line of stdout, with the
keys the issues name. Run in --quick mode against the system PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SYSTEM_URL_ENV, with_database

BENCH = Path(__file__).parent.parent / "bench"

REQUIRED = {
    "api": {
        "figures": {
            "rps_device",
            "rps_last",
            "rps_range",
            "p99_ms_device",
            "p99_ms_last",
            "p99_ms_range",
            "ws_p99_ms",
            "ws_gaps",
            "last_values_fill_s",
            "last_values_series",
            "last_values_mb",
            "api_rss_mb",
        },
        "baseline": {"rps", "rps_device"},
        "ratio": {"rps_device", "p99_ms_device"},
    },
    "alerts": {
        "figures": {"ws_p99_ms", "webhook_p99_ms", "eval_samples_per_s"},
        "baseline": {"samples_per_s", "eval_samples_per_s"},
        "ratio": {"eval_samples_per_s"},
    },
    "feeds": {
        "figures": {"kb_per_client", "min_messages_200", "closed_200"},
        "baseline": {"kb_per_client"},
        "ratio": {"kb_per_client"},
    },
    "ingest": {
        "figures": {"samples_per_s", "bytes_per_sample"},
        # samples_per_s: the fastest raw COPY; connections: how many it streamed over
        "baseline": {"samples_per_s", "connections", "samples_per_s_1conn", "samples_per_s_2conn"},
        "ratio": {"samples_per_s"},
    },
    "matchers": {
        "figures": {"worst_us", "typical_us", "catastrophic_us"},
        "baseline": {"typical_us", "catastrophic_us"},
        "ratio": {"typical_us", "catastrophic_us"},
    },
    "netbox_sync": {
        # a full reconcile of NetBox devices against a bare paged fetch of them; starts
        # its own NetBox (tests/netbox_peer.py) unless NETMON_NETBOX_URL names one
        "figures": {"full_sync_s_per_1000", "incremental_lag_s"},
        "baseline": {"full_sync_s_per_1000"},
        "ratio": {"full_sync_s_per_1000"},
    },
    "netconf": {
        "figures": {
            "cpu_ms_per_device",
            "backup_cpu_ms_per_device",
            "collect_cpu_ms_per_device",
            "loop_cpu_ms_per_device",
            "task_cpu_ms_per_device",
            "transport_cpu_ms_per_device",
        },
        # the whole poller's CPU per device poll against bare ncclient's <get>
        "baseline": {"cpu_ms_per_device", "backup_cpu_ms_per_device"},
        "ratio": {"cpu_ms_per_device", "collect_cpu_ms_per_device"},
    },
    "poll": {
        # --quick polls 50 devices; the full run's key is overruns_at_20000
        "figures": {
            "devices_per_min_per_core",
            "cpu_ms_per_device_poll",
            "cpu_ms_per_value",
            "overruns_at_50",
            "failed_polls",
        },
        # the poller against a bare pysnmp loop (cpu_ms_per_device_poll), and both loops
        "baseline": {
            "cpu_ms_per_device_poll",
            "cpu_ms_per_value",
            "gufo_cpu_ms_per_device_poll",
            "pysnmp_cpu_ms_per_device_poll",
        },
        "ratio": {"cpu_ms_per_device_poll", "cpu_ms_per_value"},
    },
    "store_path": {
        # the whole path after collection against a bare COPY of the same rows
        "figures": {"cpu_ms_per_poll", "samples_per_poll", "pipeline_ms", "feed_ms"},
        "baseline": {"cpu_ms_per_poll"},
        "ratio": {"cpu_ms_per_poll"},
    },
    "prometheus_export": {
        # GET /metrics with every device's samples over HTTP against the export's SQL
        # alone (query_ms) and a hand-written prometheus_client exporter (scrape_ms)
        "figures": {"scrape_ms", "scoped_scrape_ms"},
        "baseline": {"query_ms", "scrape_ms"},
        "ratio": {"scrape_ms"},
    },
    "query": {
        "figures": {
            "last_p50_ms",
            "last_p99_ms",
            "range_24h_p50_ms",
            "range_24h_p99_ms",
            "range_30d_p50_ms",
            "range_30d_p99_ms",
        },
        "baseline": {"last_p99_ms", "range_24h_p99_ms", "range_30d_p99_ms"},
        "ratio": {"last_p99_ms", "range_24h_p99_ms", "range_30d_p99_ms"},
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_benchmark_prints_one_contract_object(name):
    url = os.environ.get(SYSTEM_URL_ENV)
    if not url:
        pytest.skip(f"{SYSTEM_URL_ENV} is not set")
    out = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "NETMON_BENCH_DATABASE_URL": with_database(url, "postgres")},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "progress must go to stderr"
    result = json.loads(lines[-1])
    assert result["bench"] == name
    assert result["runs"] == 1
    for section, keys in REQUIRED[name].items():
        assert keys <= set(result[section]), (section, keys - set(result[section]))
    for key, ratio in result["ratio"].items():
        assert ratio == pytest.approx(result["figures"][key] / result["baseline"][key], rel=1e-3), (
            key
        )
