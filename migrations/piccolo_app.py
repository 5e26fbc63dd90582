"""The Piccolo app that owns netmon's schema."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from netmon.store.tables import TABLES

APP_NAME = "netmon"

APP_CONFIG = AppConfig(
    app_name=APP_NAME,
    migrations_folder_path=Path(__file__).parent / "piccolo_migrations",
    table_classes=list(TABLES),
)
