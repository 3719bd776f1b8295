import subprocess
import sys

import pytest

from dispatcher.errors import ConfigError
from dispatcher.settings import Settings, get_settings


def test_defaults_are_embedded():
    s = Settings()
    assert s.embedded and s.is_sqlite
    assert s.database_url.endswith(".dispatcher/dispatcher.db")
    assert s.account_sid.startswith("AC") and len(s.account_sid) == 34


def test_twilio_names_and_postgres_normalisation(monkeypatch):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "1" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", "postgres://u@h/db")
    monkeypatch.setenv("DISPATCHER_REDIS_URL", "redis://127.0.0.1:6379/0")
    s = Settings()
    assert s.account_sid == "AC" + "1" * 32 and s.auth_token == "tok"
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert not s.embedded


def test_bad_setting_is_one_line(monkeypatch):
    monkeypatch.setenv("DISPATCHER_DEFAULT_TIMEZONE", "Mars/Olympus")
    get_settings.cache_clear()
    with pytest.raises(ConfigError) as e:
        get_settings()
    get_settings.cache_clear()
    assert "Mars/Olympus" in str(e.value) and "\n" not in str(e.value)


def test_importing_cli_does_no_work_with_empty_environment(tmp_path):
    code = (
        "import sys, dispatcher.cli.app, workers;"
        "import pathlib; assert not pathlib.Path('.dispatcher').exists(), 'created files';"
        "print('ok')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
