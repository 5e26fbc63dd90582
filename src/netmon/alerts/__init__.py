"""Alerting: rules evaluated in the ingest stream, alerts with a lifecycle, silences, and
notifications by WebSocket and signed webhooks (docs/alerts.md)."""
