"""`dispatcher campaign sync` reads the UsAppToPerson resource through the official client
(here from the sandbox carrier served on loopback) and pauses runs of a suspended campaign."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dispatcher.cli.app import app
from dispatcher.sandbox.app import create_app
from dispatcher.sandbox.config import (
    DEFAULT_CAMPAIGN_SID,
    DEFAULT_SERVICE_SID,
    SandboxConfig,
    default_campaign,
)
from dispatcher.sandbox.server import BackgroundServer
from dispatcher.settings import get_settings


def test_sync_refreshes_status_and_pauses_runs(cli_env, monkeypatch):
    live = default_campaign(
        campaign_status="SUSPENDED", rate_limits={"att": {"mps": 75, "msg_class": "A"}}
    )
    cfg = SandboxConfig(campaigns=[live])
    with BackgroundServer(create_app(cfg)) as srv:
        monkeypatch.setenv("DISPATCHER_TWILIO_API_BASE_URL", srv.url)
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", cfg.account_sid)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", cfg.auth_token)
        get_settings.cache_clear()
        doc = {**live, "campaign_status": "VERIFIED", "rate_limits": {}}
        f = cli_env / "c.json"
        f.write_text(json.dumps(doc))
        r = CliRunner()
        assert r.invoke(app, ["brand", "add", "Acme Corporation"]).exit_code == 0
        assert r.invoke(app, ["campaign", "import", str(f)]).exit_code == 0
        launched = r.invoke(
            app,
            [
                "run",
                "launch",
                "--campaign",
                DEFAULT_CAMPAIGN_SID,
                "--template",
                "Hi [name]",
                "--json",
            ],
        )
        assert launched.exit_code == 0, launched.stderr
        res = r.invoke(app, ["campaign", "sync", DEFAULT_CAMPAIGN_SID, "--json"])
        assert res.exit_code == 0, res.stderr
        out = json.loads(res.stdout)
        assert out["campaign_status"] == "SUSPENDED" and out["runs_paused"] == 1
        assert out["changed"]["rate_limits"][1] == {"att": {"mps": 75, "msg_class": "A"}}
        show = json.loads(r.invoke(app, ["run", "show", "1", "--json"]).stdout)
        assert show["state"] == "paused" and "SUSPENDED" in show["pause_reason"]
        assert DEFAULT_SERVICE_SID.startswith("MG")


def test_sync_of_unknown_campaign_at_provider_is_one_line(cli_env, monkeypatch):
    cfg = SandboxConfig(campaigns=[])
    with BackgroundServer(create_app(cfg)) as srv:
        monkeypatch.setenv("DISPATCHER_TWILIO_API_BASE_URL", srv.url)
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", cfg.account_sid)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", cfg.auth_token)
        get_settings.cache_clear()
        f = cli_env / "c.json"
        f.write_text(json.dumps(default_campaign()))
        r = CliRunner()
        r.invoke(app, ["brand", "add", "Acme Corporation"])
        r.invoke(app, ["campaign", "import", str(f)])
        res = r.invoke(app, ["campaign", "sync", DEFAULT_CAMPAIGN_SID])
        assert res.exit_code == 1
        assert len(res.stderr.strip().splitlines()) == 1 and "error:" in res.stderr
