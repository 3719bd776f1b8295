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


def test_the_environment_fills_what_the_constructor_does_not_give(monkeypatch):
    """The precedence BaseSettings had: constructor, then DISPATCHER_<FIELD> (any case, empty
    counts as unset), then the default; values from the environment are validated alike."""
    monkeypatch.setenv("dispatcher_queue_name", "from-env")
    monkeypatch.setenv("DISPATCHER_DELIVER_BATCH", "7")
    monkeypatch.setenv("DISPATCHER_ADVANCED_OPT_OUT", "true")
    monkeypatch.setenv("DISPATCHER_REDIS_URL", "")
    monkeypatch.setenv("DISPATCHER_TWILIO_ACCOUNT_SID", "AC" + "2" * 32)
    s = Settings(deliver_batch=9)
    assert (s.queue_name, s.deliver_batch, s.advanced_opt_out) == ("from-env", 9, True)
    assert s.redis_url is None and s.embedded
    assert s.account_sid == "AC" + "2" * 32  # the field's second alias
    monkeypatch.setenv("DISPATCHER_DELIVER_BATCH", "0")
    get_settings.cache_clear()
    with pytest.raises(ConfigError):
        get_settings()
    get_settings.cache_clear()


def test_settings_do_not_import_pydantic_settings():
    code = "import sys; from dispatcher.settings import get_settings; get_settings(); " + (
        "print('pydantic_settings' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr
