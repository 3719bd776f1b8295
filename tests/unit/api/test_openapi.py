"""The committed docs/openapi.json is the app's document; schemathesis finds no 500 and no
response outside the schema on any operation (with a key holding every scope)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from dispatcher import runs
from dispatcher.api import create_api_app
from dispatcher.api.openapi import document, render
from dispatcher.launch import submit_run
from tests.unit.api.conftest import make_key, make_runtime, make_world

COMMITTED = Path(__file__).parents[3] / "docs" / "openapi.json"


def test_committed_openapi_matches_the_app(app):
    assert COMMITTED.exists(), "run: python -m dispatcher.api.openapi > docs/openapi.json"
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == app.openapi() == document(), (
        "docs/openapi.json is stale: python -m dispatcher.api.openapi > docs/openapi.json"
    )
    assert COMMITTED.read_text(encoding="utf-8") == render()


def test_served_openapi_lists_every_operation(client):
    doc = client.get("/openapi.json", token=None).json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {
        ("POST", "/v1/runs"),
        ("POST", "/v1/runs:upload"),
        ("GET", "/v1/runs/{run_id}"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/{run_id}/messages"),
        ("GET", "/v1/contacts/{phone}"),
        ("POST", "/v1/runs/{run_id}:pause"),
        ("POST", "/v1/runs/{run_id}:resume"),
        ("POST", "/v1/runs/{run_id}:cancel"),
        ("PUT", "/v1/contacts/{phone}"),
        ("POST", "/v1/consent"),
        ("GET", "/v1/contacts/{phone}/consent"),
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("GET", "/v1/webhooks/{subscription_id}"),
        ("DELETE", "/v1/webhooks/{subscription_id}"),
        ("GET", "/v1/webhooks/{subscription_id}/deliveries"),
    }
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value):  # noqa: ANN001 - schemathesis hook signature
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


OPERATIONS = (
    sorted((p, m) for p, item in json.loads(COMMITTED.read_text())["paths"].items() for m in item)
    if COMMITTED.exists()
    else []
)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_schemathesis(sqlite_db, path, method):
    world = make_world(sqlite_db)
    token = make_key(sqlite_db, "fuzz")
    rt = make_runtime(sqlite_db)
    app = create_api_app(rt)
    # a run and a contact with consent, so that some generated ids hit something real
    submit_run(
        sqlite_db,
        runs.LaunchRequest(
            campaign=world["campaign"], template="Acme: hi", audience={"kind": "all"}
        ),
        now=rt.clock.now(),
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[path][method.upper()]
    headers = {"Authorization": f"Bearer {token}"}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case):
        case.call_and_validate(
            headers=headers, checks=[not_a_server_error, response_schema_conformance]
        )

    check()


def test_served_app_document_is_the_committed_one(tmp_path):
    """`dispatcher serve` mounts the API beside the webhooks: its /openapi.json is the same."""
    from dispatcher.runtime import Runtime
    from dispatcher.settings import Settings
    from dispatcher.webhooks import create_app

    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path}/x.db"))
    assert create_app(rt).openapi() == json.loads(COMMITTED.read_text(encoding="utf-8"))
