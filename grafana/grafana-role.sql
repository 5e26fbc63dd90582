-- What Grafana's role may read (docs/grafana.md): the tables the dashboards query, and
-- nothing else (not api_tokens, audit_log or webhooks, which hold secrets).
-- Run it in netmon's database as the owner of its tables, after
--   CREATE ROLE netmon_grafana LOGIN PASSWORD '...';
-- Privileges on a partitioned table cover its partitions, including those made later.
GRANT USAGE ON SCHEMA public TO netmon_grafana;
GRANT SELECT ON
    devices, series, samples, samples_5m, samples_1h, rollup_state, poll_health,
    device_events, alerts, alert_history
TO netmon_grafana;
-- A dashboard cannot write, and a runaway query ends.
ALTER ROLE netmon_grafana SET default_transaction_read_only = on;
ALTER ROLE netmon_grafana SET statement_timeout = '30s';
