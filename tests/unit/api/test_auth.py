"""API keys: stored hashed, shown once; 401 without a valid key, 403 without the scope; the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dispatcher import apikeys
from dispatcher.cli.app import app as cli_app
from dispatcher.errors import ConflictError, InputError
from dispatcher.models import ApiKey
from tests.unit.api.conftest import ApiClient, make_key


def test_key_is_stored_hashed_and_verifies(db):
    with db.session() as s:
        token, key = apikeys.create_key(s, "billing", "runs:write,consent:write")
    assert token.startswith("dsk_") and len(token) > 50
    with db.session() as s:
        row = s.get(ApiKey, key.id)
        assert token not in (row.key_hash, row.prefix) and row.key_hash != token
        assert row.scopes == ["consent:write", "runs:write"]
        assert apikeys.verify(s, token).name == "billing"
        for bad in (None, "", "dsk_x", token[:-1] + ("A" if token[-1] != "A" else "B")):
            with pytest.raises(apikeys.AuthenticationError):
                apikeys.verify(s, bad)
        apikeys.revoke(s, "billing")
    with db.session() as s, pytest.raises(apikeys.AuthenticationError):
        apikeys.verify(s, token)


def test_key_names_and_scopes_are_checked(db):
    with db.session() as s:
        with pytest.raises(InputError, match="unknown scope"):
            apikeys.create_key(s, "x", "runs:admin")
        with pytest.raises(InputError, match="key name"):
            apikeys.create_key(s, "Bad Name", "runs:read")
        apikeys.create_key(s, "x", "runs:read")
        with pytest.raises(ConflictError):
            apikeys.create_key(s, "x", "runs:read")


def _problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert set(doc) >= {"type", "title", "status", "detail", "field"}
    assert doc["status"] == status
    return doc


def test_401_without_or_with_a_wrong_key(app, world, db):
    c = ApiClient(app)
    doc = _problem(c.get("/v1/runs/1", token=None), 401)
    assert "missing" in doc["detail"]
    _problem(c.get("/v1/runs/1", token="dsk_abcdefghij_" + "x" * 43), 401)
    r = c.get("/v1/runs/1", token="not-a-key")
    assert _problem(r, 401)["detail"] == "invalid API key"
    assert r.headers["www-authenticate"] == "Bearer"
    tok = make_key(db, "gone")
    with db.session() as s:
        apikeys.revoke(s, "gone")
    _problem(c.get("/v1/runs/1", token=tok), 401)


@pytest.mark.parametrize(
    ("method", "path", "body", "needs"),
    [
        (
            "POST",
            "/v1/runs",
            {"campaign": "x", "template": "t", "audience": {"kind": "all"}},
            "runs:write",
        ),
        ("GET", "/v1/runs/1", None, "runs:read"),
        ("GET", "/v1/runs", None, "runs:read"),
        ("GET", "/v1/runs/1/messages", None, "runs:read"),
        ("GET", "/v1/contacts/4155550100", None, "contacts:read"),
        ("POST", "/v1/runs/1:pause", None, "runs:write"),
        ("POST", "/v1/runs/1:cancel", None, "runs:write"),
        ("PUT", "/v1/contacts/4155550100", {"name": "Ann"}, "contacts:write"),
        (
            "POST",
            "/v1/consent",
            {"phone": "4155550100", "brand": "Acme Corporation", "action": "revoke"},
            "consent:write",
        ),
        ("GET", "/v1/contacts/4155550100/consent", None, "consent:read"),
    ],
)
def test_each_endpoint_enforces_its_scope(app, world, db, method, path, body, needs):
    others = ",".join(s for s in apikeys.SCOPES if s != needs)
    c = ApiClient(app, make_key(db, "narrow", others))
    doc = _problem(c.request(method, path, json=body), 403)
    assert needs in doc["detail"] and doc["type"].endswith("missing-scope")
    c_ok = ApiClient(app, make_key(db, "wide", needs))
    assert c_ok.request(method, path, json=body).status_code not in (401, 403)


def test_cli_create_list_revoke(cli_env):
    run = CliRunner().invoke
    r = run(
        cli_app,
        ["api-key", "create", "billing", "--scope", "runs:write,consent:write", "--json"],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["key"].startswith("dsk_") and doc["scopes"] == ["consent:write", "runs:write"]
    r = run(cli_app, ["api-key", "create", "plain", "--scope", "runs:read"])
    assert r.exit_code == 0 and r.stdout.strip().startswith("dsk_")
    assert "not shown again" in r.stderr
    r = run(cli_app, ["api-key", "list", "--json"])
    keys = json.loads(r.stdout)["keys"]
    assert [k["name"] for k in keys] == ["billing", "plain"]
    assert doc["key"] not in r.stdout
    r = run(cli_app, ["api-key", "revoke", "billing", "--json"])
    assert json.loads(r.stdout)["changed"] is True
    r = run(cli_app, ["api-key", "create", "bad", "--scope", "nope"])
    assert r.exit_code == 1 and r.stderr.startswith("error: unknown scope")
    r = run(cli_app, ["api-key", "revoke", "nobody"])
    assert r.exit_code == 1 and "no API key" in r.stderr
