"""Configuration: YAML + environment, and errors that name the file, the key and why."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from netmon.config import load_settings
from netmon.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "netmon.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_issue(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.database.url is None  # embedded
    assert (s.database.pool_min, s.database.pool_max) == (10, 30)
    assert s.storage.partition_interval == timedelta(days=1)
    assert s.storage.premake == timedelta(days=7)
    assert s.storage.raw_retention == timedelta(days=30)
    assert s.storage.rollup_5m_retention == timedelta(days=180)
    assert s.storage.rollup_1h_retention == timedelta(days=730)


def test_yaml_then_environment_override(tmp_path, monkeypatch):
    path = write(tmp_path, "storage:\n  raw_retention: 14d\n  premake: 3d\n")
    monkeypatch.setenv("NETMON_STORAGE__PREMAKE", "2d")
    s = load_settings(path)
    assert s.storage.raw_retention == timedelta(days=14)
    assert s.storage.premake == timedelta(days=2)


def test_example_config_is_valid():
    s = load_settings(Path(__file__).parent.parent / "netmon.example.yaml")
    assert s.database.sslmode == "verify-full"
    assert s.storage.lock_timeout == timedelta(milliseconds=50)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("storage:\n  raw_retention: forever\n", "storage.raw_retention: expected a duration"),
        ("storage:\n  retension: 3d\n", "storage.retension: unknown key"),
        ("database:\n  pool_max: lots\n", "database.pool_max: Input should be a valid integer"),
        ("database:\n  url: mysql://x/y\n", "database.url: expected a postgresql:// URL"),
        ("database:\n  sslmode: maybe\n", "database.sslmode: Input should be"),
        (
            "storage:\n  partition_interval: 7h\n",
            "storage.partition_interval: expected whole hours",
        ),
        ("storage: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_file_names_file_key_and_expectation(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_yaml_error_has_line_number(tmp_path):
    path = write(tmp_path, "storage:\n  raw_retention: 3d\n bad: [\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_settings(path)


def test_bad_environment_value_is_attributed_to_the_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETMON_STORAGE__PREMAKE", "soon")
    with pytest.raises(ConfigError, match="environment variable NETMON_STORAGE__PREMAKE"):
        load_settings()


def test_password_in_file_is_refused_and_not_echoed(tmp_path):
    path = write(tmp_path, "database:\n  password: hunter2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "NETMON_DATABASE__PASSWORD" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_password_inside_url_is_refused(tmp_path):
    path = write(tmp_path, "database:\n  url: postgresql://u:hunter2@db/x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "hunter2" not in str(info.value)


def test_password_from_environment_and_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETMON_DATABASE__PASSWORD", "from-env")
    s = load_settings()
    assert s.database.resolved_password() == "from-env"
    assert "from-env" not in repr(s)
    assert "from-env" not in s.model_dump_json()
    monkeypatch.delenv("NETMON_DATABASE__PASSWORD")
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    s = load_settings(write(tmp_path, f"database:\n  password_file: {secret}\n"))
    assert s.database.resolved_password() == "from-file"


def test_missing_password_file_is_a_config_error(tmp_path):
    s = load_settings(write(tmp_path, f"database:\n  password_file: {tmp_path / 'nope'}\n"))
    with pytest.raises(ConfigError, match=r"database\.password_file"):
        s.database.resolved_password()


def test_config_file_from_environment_variable(tmp_path, monkeypatch):
    path = write(tmp_path, "storage:\n  raw_retention: 9d\n")
    monkeypatch.setenv("NETMON_CONFIG", str(path))
    assert load_settings().storage.raw_retention == timedelta(days=9)


def test_unreadable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(tmp_path / "missing.yaml")


def test_urls_are_logged_without_their_password():
    from netmon.logs import redact_url

    assert redact_url("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("postgresql://u@db/x") == "postgresql://u@db/x"
