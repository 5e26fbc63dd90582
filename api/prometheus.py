"""``/metrics``: netmon's own state, and optionally its devices' latest samples, in the
Prometheus text exposition format.

Built as prometheus_client's custom collectors: nothing is mirrored into client-library
metric objects as it happens; every scrape reads the live counters of the poller, writer,
batcher, feed hub and HTTP middleware of this process and yields metric families from
them. Each app has a registry of its own (never the global one), so two apps in one
process (tests) do not see each other.

Device samples come from PostgreSQL (one query for every series, newest value within a
bounded lookback) before generation starts, so the event loop never waits on the database
inside the synchronous ``collect()``; their text is generated in a worker thread, as it
grows with the number of series.

What a scrape of ``netmon api --workers N`` sees is the worker that answered: the poller
and writer figures exist only in ``netmon run``, HTTP and WebSocket figures per worker.

Here: the registry, the collector of netmon's own metrics and the entry points; the HTTP
middleware and its figures are in ``http_stats.py``, the device samples in
``device_export.py``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import CollectorRegistry

from netmon import __version__
from netmon.api.context import ApiContext
from netmon.api.device_export import (
    DeviceRow,
    DeviceSampleCollector,
    device_lookback,
    fetch_device_samples,
)
from netmon.api.http_stats import HttpStats, recorded_http_stats
from netmon.histogram import Histogram
from netmon.logs import get_logger
from netmon.store.database import is_connection_error

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["CONTENT_TYPE", "MetricsExporter", "NetmonCollector", "exporter_of"]

log = get_logger(__name__)

# The classic text format: what every Prometheus and every scraper since 2014 reads.
# Without the charset, which Litestar appends to text/* itself.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4.removesuffix("; charset=utf-8")

_STATE_KEY = "netmon_metrics"


# -- netmon's own metrics --------------------------------------------------------------


def _le(hist: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(b) else repr(b), n) for b, n in hist.cumulative()]


def _count(value: Any) -> int | None:
    """A hub attribute as a number: a count, or a collection to count."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        return len(value)
    except TypeError:
        return None


class NetmonCollector:
    """Everything this process knows about itself, read at scrape time. Parts that do not
    run here (the poller and writer under ``netmon api``) are left out, not exported as
    zeros that would read as "nothing happens"."""

    def __init__(self, ctx: ApiContext, http: Callable[[], HttpStats | None]) -> None:
        self.ctx = ctx
        self.http = http

    def collect(self) -> Iterable[Metric]:
        yield _build_info_family()
        yield from self._poller()
        yield from self._writer()
        yield from self._alerts()
        yield from self._feeds()
        yield from self._http()

    def _poller(self) -> Iterable[Metric]:
        service = self.ctx.runtime.poller
        poller = service.poller if service is not None else None
        if service is None or poller is None:
            return
        s = poller.stats
        polls = CounterMetricFamily(
            "netmon_polls",
            "Polls finished, by outcome. A poll is all of one device's tasks; it fails at its "
            "first failed task. Failing share: "
            'rate(netmon_polls_total{outcome="failure"}[5m]) / rate(netmon_polls_total[5m]).',
            labels=["outcome"],
        )
        polls.add_metric(["success"], s.polls - s.failed)
        polls.add_metric(["failure"], s.failed)
        yield polls
        errors = CounterMetricFamily(
            "netmon_poll_errors",
            "Failed polls by error class, as poll health records it: timeout (no answer), "
            "unknown_user, wrong_digest, decryption (SNMPv3 credentials), no_such, "
            "end_of_mib, agent_error, malformed (the agent), task (a task's own failure); "
            "netconf_* (NETCONF: timeout, auth, host_key, rpc_error, malformed, unsafe_xml, "
            "...) and cli_* (SSH CLI: timeout, auth, command, parse).",
            labels=["class"],
        )
        for error_class, n in sorted(s.errors_by_class.items()):
            errors.add_metric([error_class], n)
        yield errors
        yield CounterMetricFamily(
            "netmon_poll_overruns",
            "Polls skipped because the device's previous poll was still running when the "
            "next fell due (never queued behind it). Steady growth: lengthen the interval "
            "or raise poller.max_in_flight.",
            value=s.overruns,
        )
        yield HistogramMetricFamily(
            "netmon_poll_duration_seconds",
            "Time one poll took, all of a device's tasks in order. Polls near a multiple "
            "of the SNMP timeout are devices that did not answer.",
            buckets=_le(s.poll_seconds),
            sum_value=s.poll_seconds.sum,
        )
        yield CounterMetricFamily(
            "netmon_poll_samples",
            "Samples the polls handed to the writer, derived rates included.",
            value=s.samples,
        )
        states = {"reachable": 0, "unreachable": 0, "unknown": 0}
        for name in poller.device_names:
            up = service.health.is_reachable(name)
            states["unknown" if up is None else "reachable" if up else "unreachable"] += 1
        devices = GaugeMetricFamily(
            "netmon_poller_devices",
            "Devices the poller schedules, by the outcome of their last poll (unknown: "
            "not polled yet).",
            labels=["reachability"],
        )
        for state, n in states.items():
            devices.add_metric([state], n)
        yield devices
        yield GaugeMetricFamily(
            "netmon_polls_in_flight",
            "Polls running or waiting for a slot now (at most poller.max_in_flight run).",
            value=poller.in_flight,
        )
        c = service.configs.stats
        backups = CounterMetricFamily(
            "netmon_config_backups",
            "Configurations read by the config tasks, by what became of them: stored (a new "
            "version), unchanged (equal to the newest), superseded (a newer read came "
            "before the database took it).",
            labels=["outcome"],
        )
        backups.add_metric(["stored"], c.stored)
        backups.add_metric(["unchanged"], c.unchanged)
        backups.add_metric(["superseded"], c.superseded)
        yield backups
        yield CounterMetricFamily(
            "netmon_config_changes",
            "Configuration versions that changed from the one before (a device.config_changed "
            "event each).",
            value=c.changed,
        )
        yield GaugeMetricFamily(
            "netmon_config_backups_pending",
            "Configurations read and waiting for the database.",
            value=service.configs.pending,
        )

    def _writer(self) -> Iterable[Metric]:
        writer = self.ctx.runtime.writer
        if writer is not None:
            s = writer.stats
            for name, value, doc in (
                ("stored", s.stored, "Samples newly stored in PostgreSQL, replays included."),
                (
                    "duplicate",
                    s.duplicates,
                    "Samples PostgreSQL already held (same series and time), e.g. a "
                    "spool replayed twice; harmless, the write is idempotent.",
                ),
                (
                    "spooled",
                    s.spooled,
                    "Samples written to the on-disk spool because the database was "
                    "unreachable or the spool was not empty yet.",
                ),
                ("replayed", s.replayed, "Samples replayed from the spool into PostgreSQL."),
                (
                    "dropped",
                    s.dropped,
                    "Samples lost because the spool was full (writer.spool_max_bytes). "
                    "Anything above 0 is data gone: alert on increase().",
                ),
                (
                    "expired",
                    s.expired,
                    "Spooled samples let go at replay because they had aged past "
                    "storage.raw_retention while they waited.",
                ),
            ):
                yield CounterMetricFamily(f"netmon_writer_samples_{name}", doc, value=value)
            yield CounterMetricFamily(
                "netmon_writer_records_rejected",
                "Samples and events refused before storage: time outside retention or too "
                "far ahead (device clock), value out of range, unknown kind or severity.",
                value=s.rejected,
            )
            yield CounterMetricFamily(
                "netmon_writer_notifications",
                "NOTIFY payloads sent to the live feeds (writer.publish) for committed "
                "samples and events.",
                value=s.notifications,
            )
            yield CounterMetricFamily(
                "netmon_writer_publish_errors",
                "Live-feed publishes that failed after their rows were committed: the rows "
                "are stored, feed clients missed them (and were not told).",
                value=s.publish_errors,
            )
            yield CounterMetricFamily(
                "netmon_writer_series_cache_drops",
                "Times the writer dropped its series id cache: a device was deleted in some "
                "process, or its control listener reconnected.",
                value=s.series_forgets,
            )
            yield CounterMetricFamily(
                "netmon_writer_batches",
                "Batches written into PostgreSQL (one COPY each, split over "
                "writer.connections streams when large).",
                value=s.batches,
            )
            yield HistogramMetricFamily(
                "netmon_writer_batch_duration_seconds",
                "Time to write one batch into PostgreSQL: series look-up, COPY, duplicates "
                "and missing partitions handled. Batches that went to the spool instead are "
                "not in it.",
                buckets=_le(s.write_latency),
                sum_value=s.write_latency.sum,
            )
            yield GaugeMetricFamily(
                "netmon_database_up",
                "1 while the writer reaches PostgreSQL; 0 while it spools to disk and waits "
                "for the database to come back.",
                value=1 if writer.database_up else 0,
            )
            spool = writer.spool
            yield GaugeMetricFamily(
                "netmon_spool_bytes",
                "Bytes in the on-disk spool, waiting for replay. Compare with "
                "netmon_spool_max_bytes: at the limit, new batches are dropped.",
                value=spool.bytes_used,
            )
            yield GaugeMetricFamily(
                "netmon_spool_max_bytes",
                "The spool's size limit (writer.spool_max_bytes).",
                value=spool.max_bytes,
            )
            yield GaugeMetricFamily(
                "netmon_spool_files",
                "Batches (one file each) in the on-disk spool.",
                value=len(spool),
            )
            yield CounterMetricFamily(
                "netmon_spool_corrupt_files",
                "Spool files that could not be read back and were moved to corrupt/ "
                "(their samples are not replayed; the files are kept for inspection).",
                value=spool.corrupt,
            )
        batcher = self.ctx.runtime.batcher
        if batcher is not None:
            yield GaugeMetricFamily(
                "netmon_batcher_queued_samples",
                "Samples submitted by polls and waiting for the next batch (flushed at "
                "writer.batch_size samples or after writer.flush_interval).",
                value=batcher.queued,
            )

    def _alerts(self) -> Iterable[Metric]:
        alerts = self.ctx.runtime.alerts
        if alerts is None:
            return
        e, r, d = alerts.engine.stats, alerts.recorder.stats, alerts.deliverer.stats
        for name, value, doc in (
            ("samples_evaluated", e.samples, "Samples the alert engine looked at."),
            ("evaluations", e.evaluations, "(sample, rule) pairs evaluated."),
            ("transitions_committed", r.committed, "Alert changes committed to the database."),
            (
                "transitions_lost",
                r.failed + r.dropped,
                "Alert changes given up: refused by the database, or past the queue's bound "
                "during a long outage. Anything above 0 deserves a look at the logs.",
            ),
            ("messages_queued", r.queued_messages, "Webhook messages written to the outbox."),
            ("webhook_delivered", d.delivered, "Webhook messages delivered (2xx)."),
            ("webhook_attempts", d.attempts, "Webhook delivery attempts."),
            ("webhook_failures", d.failures, "Webhook attempts that failed (retried or not)."),
            (
                "webhook_dead",
                d.dead,
                "Webhook messages dead-lettered (refused, or retried past "
                "alerts.webhooks.retry_for); redeliver through the API.",
            ),
            ("webhook_disabled", d.disabled, "Webhooks disabled by a 410 Gone answer."),
        ):
            yield CounterMetricFamily(f"netmon_alerts_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "netmon_alerts_rules", "Alert rules loaded.", value=len(alerts.engine.rules)
        )
        yield GaugeMetricFamily(
            "netmon_alerts_pending_transitions",
            "Alert changes waiting to be committed (grows while the database is away).",
            value=alerts.recorder.pending,
        )
        yield HistogramMetricFamily(
            "netmon_alerts_commit_seconds",
            "From a rule's verdict in the ingest stream to the alert change committed.",
            buckets=_le(r.latency),
            sum_value=r.latency.sum,
        )

    def _feeds(self) -> Iterable[Metric]:
        hub = self.ctx.hub
        if hub is None:
            return
        clients = _count(getattr(hub, "clients", None))
        if clients is not None:
            yield GaugeMetricFamily(
                "netmon_websocket_clients",
                "WebSocket clients connected to this process's live feeds.",
                value=clients,
            )
        gaps = _count(getattr(hub, "gaps", None))
        if gaps is not None:
            yield CounterMetricFamily(
                "netmon_websocket_gaps",
                "Times a WebSocket client fell behind by a full queue (api.ws_queue) and "
                "missed messages; the client was told with a gap message.",
                value=gaps,
            )
        delivered = _count(getattr(hub, "delivered", None))
        if delivered is not None:
            yield CounterMetricFamily(
                "netmon_websocket_messages_delivered",
                "Messages queued for WebSocket clients (one per client a message reached).",
                value=delivered,
            )

        for attr, name, doc in (
            (
                "dropped",
                "netmon_websocket_messages_dropped",
                "Messages dropped at full client queues (the clients were sent gap messages).",
            ),
            (
                "reconnects",
                "netmon_websocket_listener_reconnects",
                "Times this process's LISTEN connection was lost and made again; clients got a "
                "gap message for what was published meanwhile.",
            ),
            (
                "errors",
                "netmon_websocket_fanout_errors",
                "Fan-out rounds that failed (logged); their messages were not delivered.",
            ),
        ):
            value = _count(getattr(hub, attr, None))
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)

    def _http(self) -> Iterable[Metric]:
        stats = self.http()
        if stats is None:
            return
        requests = CounterMetricFamily(
            "netmon_http_requests",
            "HTTP requests answered, by method, route template and status (499: the "
            "client went away first). Requests to paths that match no route are not counted.",
            labels=["method", "route", "status"],
        )
        durations = HistogramMetricFamily(
            "netmon_http_request_duration_seconds",
            "Time from a request reaching its route (authentication included) to the end "
            "of its answer.",
            labels=["method", "route"],
        )
        for (method, route), r in sorted(stats.routes.items()):
            for status, n in sorted(r.statuses.items()):
                requests.add_metric([method, route, str(status)], n)
            durations.add_metric([method, route], _le(r.seconds), r.seconds.sum)
        yield requests
        yield durations


# -- the exporter ----------------------------------------------------------------------


class MetricsExporter:
    """One per app: its registry, its HTTP figures, and what renders a scrape."""

    def __init__(self, ctx: ApiContext, app: Litestar) -> None:
        self.ctx = ctx
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NetmonCollector(ctx, lambda: recorded_http_stats(app)))
        # What every Python exporter reports: CPU, memory, open files, GC, interpreter.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    async def render(self, sites: frozenset[str] | None = None) -> bytes:
        """The page for one scrape. For a token limited to ``sites``: only those sites'
        device samples. netmon's own figures are of every site (polls, errors, queues of
        the whole process), so they are for tokens of every site."""
        own = generate_latest(self.registry) if sites is None else _build_info()
        if not self.ctx.settings.api.metrics_device_samples:
            return own
        ok = True
        rows: list[DeviceRow] = []
        try:
            rows = await fetch_device_samples(self.ctx.db, device_lookback(self.ctx), sites)
        except Exception as exc:
            if not (is_connection_error(exc) or isinstance(exc, TimeoutError)):
                raise
            ok = False
            log.warning("device samples left out of /metrics", error=f"{type(exc).__name__}: {exc}")
        collector = DeviceSampleCollector(rows, ok)
        if len(rows) < 1000:
            return own + generate_latest(collector)
        return own + await asyncio.to_thread(generate_latest, collector)


def _build_info_family() -> Metric:
    info = GaugeMetricFamily(
        "netmon_build_info",
        "Always 1; the version label says which netmon answers (join on it to see "
        "what runs where).",
        labels=["version"],
    )
    info.add_metric([__version__], 1)
    return info


class _BuildInfo:
    def collect(self) -> Iterable[Metric]:
        yield _build_info_family()


def _build_info() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BuildInfo())
    return generate_latest(registry)


def exporter_of(app: Litestar, ctx: ApiContext) -> MetricsExporter:
    exporter = app.state.get(_STATE_KEY)
    if exporter is None:
        exporter = app.state[_STATE_KEY] = MetricsExporter(ctx, app)
    assert isinstance(exporter, MetricsExporter)
    return exporter
