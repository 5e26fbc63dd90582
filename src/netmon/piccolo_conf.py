"""Piccolo's configuration module (``PICCOLO_CONF=netmon.piccolo_conf``).

``DB`` is assigned when netmon connects (``store.database.Database.start``): the URL is
known only at run time, after the embedded server has started or the settings are read.
"""

from __future__ import annotations

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

DB: PostgresEngine | None = None

APP_REGISTRY = AppRegistry(apps=["netmon.migrations.piccolo_app"])
