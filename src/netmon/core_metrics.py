"""The core's own figures for Prometheus: the poller, the writer and its spool, the
batcher and alerting of this process, read at scrape time.

They are rendered in the core's process (``core_exposition``) and handed to the API's
``/metrics`` (``netmon.api.prometheus``), over the control socket when the API runs in a
process of its own. ``netmon_core_process_*`` are the core process's CPU, memory and files
(the API's own are ``process_*``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from netmon.histogram import Histogram
from netmon.snmp.engines import engines_in_use
from netmon.snmp.gufo_engine import GufoEngine

if TYPE_CHECKING:
    from netmon.core_control import LocalCore

__all__ = ["CoreCollector", "core_exposition"]


def _le(hist: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(b) else repr(b), n) for b, n in hist.cumulative()]


class CoreCollector:
    """Parts that do not run in this process are left out, not exported as zeros that
    would read as "nothing happens"."""

    def __init__(self, core: LocalCore) -> None:
        self.core = core

    def collect(self) -> Iterable[Metric]:
        yield from self._poller()
        yield from self._inventory()
        yield from self._snmp()
        yield from self._writer()
        yield from self._alerts()

    def _poller(self) -> Iterable[Metric]:
        service = self.core.poller
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
        yield HistogramMetricFamily(
            "netmon_poll_start_lag_seconds",
            "From a poll's slot in the schedule (its due time plus jitter) to its tasks "
            "starting. Milliseconds, unless the poller is starved of CPU, its event loop "
            "is blocked, or poller.max_in_flight polls are running already.",
            buckets=_le(s.start_lag),
            sum_value=s.start_lag.sum,
        )
        yield CounterMetricFamily(
            "netmon_polls_late",
            "Polls that started more than 2 s after their slot in the schedule.",
            value=s.late,
        )
        yield CounterMetricFamily(
            "netmon_polls_waited_for_slot",
            "Polls that found poller.max_in_flight polls running and waited for one to "
            "end. Rising: raise poller.max_in_flight.",
            value=s.waited,
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

    def _snmp(self) -> Iterable[Metric]:
        engines = engines_in_use()
        if not engines:
            return
        requests = CounterMetricFamily(
            "netmon_snmp_requests",
            "SNMP requests answered, by engine (gufo: gufo-snmp, compiled; pysnmp: the "
            "reference engine, for 3DES, contexts, and telling USM refusals apart).",
            labels=["engine"],
        )
        values = CounterMetricFamily(
            "netmon_snmp_values", "SNMP values received, by engine.", labels=["engine"]
        )
        overload = CounterMetricFamily(
            "netmon_snmp_overload",
            "SNMP requests that timed out while netmon's own engine was starved (CPU): "
            "retried, and an overload error if it stayed so; never a device's fault.",
            labels=["engine", "outcome"],
        )
        late = CounterMetricFamily(
            "netmon_snmp_late_answers",
            "SNMP answers that came after the timeout, to a second, longer wait: slow "
            "devices (raise snmp.timeout), not unreachable ones.",
            labels=["engine"],
        )
        for engine in engines:
            requests.add_metric([engine.name], engine.stats["requests"])
            values.add_metric([engine.name], engine.stats["values"])
            overload.add_metric([engine.name, "retried"], engine.stats["overload_retries"])
            overload.add_metric([engine.name, "failed"], engine.stats["overload"])
            late.add_metric([engine.name], engine.stats["late_answers"])
        yield requests
        yield values
        yield overload
        yield late
        gufo = next((e for e in engines if isinstance(e, GufoEngine)), None)
        if gufo is None:
            return
        yield GaugeMetricFamily(
            "netmon_snmp_sessions",
            "gufo-snmp sessions open (one UDP socket each, one per device polled).",
            value=gufo.sessions,
        )
        yield GaugeMetricFamily(
            "netmon_snmp_session_budget",
            "Most gufo-snmp sessions kept open: the descriptor limit less a reserve. Past it "
            "sessions are closed and reopened (engine discovery again): raise the limit.",
            value=gufo.max_sessions,
        )
        events = CounterMetricFamily(
            "netmon_snmp_session_events",
            "gufo-snmp session events: opened (discovery), refreshed (idle past 120 s), "
            "renewed (refused: agent restarted or replaced), evicted (over the budget).",
            labels=["event"],
        )
        for event, stat in (
            ("opened", "sessions_opened"),
            ("refreshed", "refreshes"),
            ("renewed", "renewals"),
            ("evicted", "evictions"),
        ):
            events.add_metric([event], gufo.stats[stat])
        yield events

    def _writer(self) -> Iterable[Metric]:
        writer = self.core.writer
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
                "netmon_writer_deadlines",
                "Writes that did not finish within writer.write_deadline: their batch went "
                "to the spool and the database counted as down (polls never wait on it).",
                value=s.deadlines,
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
        batcher = self.core.batcher
        if batcher is not None:
            yield GaugeMetricFamily(
                "netmon_batcher_queued_samples",
                "Samples submitted by polls and waiting for the next batch (flushed at "
                "writer.batch_size samples or after writer.flush_interval).",
                value=batcher.queued,
            )
            yield CounterMetricFamily(
                "netmon_batcher_overflows",
                "Times the batcher's queue passed writer.queue_limit and what waited went "
                "to the spool instead (the database too slow for the polls).",
                value=batcher.stats.overflows,
            )
            yield CounterMetricFamily(
                "netmon_batcher_overflowed_samples",
                "Samples sent to the spool by a queue overflow (replayed later, not lost).",
                value=batcher.stats.overflowed,
            )

    def _inventory(self) -> Iterable[Metric]:
        service = self.core.poller
        if service is None:
            return
        sync = service.sync
        s = sync.stats
        labels = ["source"]
        source = sync.key.owner
        now = time.time()
        if s.last_full_ok is not None:
            age = GaugeMetricFamily(
                "netmon_inventory_full_sync_age_seconds",
                "Seconds since the last full inventory sync that applied (a held one does "
                "not count). Rising past inventory.netbox.full_sync_interval: look at "
                "GET /api/v1/inventory/sync.",
                labels=labels,
            )
            age.add_metric([source], now - s.last_full_ok)
            yield age
        if s.incremental_lag_s is not None:
            lag = GaugeMetricFamily(
                "netmon_inventory_incremental_lag_seconds",
                "From a change at the source to the devices table, for the last change "
                "applied (webhook or change log).",
                labels=labels,
            )
            lag.add_metric([source], s.incremental_lag_s)
            yield lag
        synced = GaugeMetricFamily(
            "netmon_inventory_objects_synced",
            "Hosts the source holds that are devices here (retired ones not counted).",
            labels=labels,
        )
        synced.add_metric([source], s.synced)
        yield synced
        skipped = GaugeMetricFamily(
            "netmon_inventory_objects_skipped",
            "Hosts the last sync could not take, by reason (no_address, secret_value, "
            "bad_context, owned, duplicate_name, name_taken, no_name).",
            labels=[*labels, "reason"],
        )
        for reason, n in sorted(s.skipped.items()):
            skipped.add_metric([source, reason], n)
        yield skipped
        for name, value, doc in (
            ("added", s.added, "Devices the inventory sync added."),
            ("changed", s.changed, "Devices the inventory sync changed (renames, moves, ...)."),
            ("retired", s.retired, "Devices the inventory sync retired."),
            ("held", s.held, "Full syncs the mass-retirement guard held (nothing retired)."),
        ):
            counter = CounterMetricFamily(f"netmon_inventory_{name}", doc, labels=labels)
            counter.add_metric([source], value)
            yield counter
        runs = CounterMetricFamily(
            "netmon_inventory_syncs",
            "Inventory syncs by kind (full, incremental) and outcome (ok, failed).",
            labels=[*labels, "kind", "outcome"],
        )
        for (kind, ok), n in sorted(s.runs.items()):
            runs.add_metric([source, kind, "ok" if ok else "failed"], n)
        yield runs

    def _alerts(self) -> Iterable[Metric]:
        alerts = self.core.alerts
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
        direct = alerts.direct
        if direct is not None:
            yield CounterMetricFamily(
                "netmon_alerts_direct_delivered",
                "Webhook messages sent straight from the on-disk alert outbox while the "
                "database was away (2xx).",
                value=direct.stats.delivered,
            )
            yield CounterMetricFamily(
                "netmon_alerts_direct_failures",
                "Direct webhook attempts that failed (the message waits for the database).",
                value=direct.stats.failed,
            )
            yield CounterMetricFamily(
                "netmon_alerts_spooled_transitions",
                "Alert changes written to the on-disk alert outbox while the database was away.",
                value=direct.stats.spooled,
            )
            yield GaugeMetricFamily(
                "netmon_alerts_spool_bytes",
                "Size of the on-disk alert outbox (data_dir/alert-spool); 0 once reconciled.",
                value=direct.stats.spool_bytes,
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


def core_exposition(core: LocalCore) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CoreCollector(core))
    ProcessCollector(namespace="netmon_core", registry=registry)
    return generate_latest(registry)
