"""Issue 23: where a client author would trip.  Routes do not capture each other's paths, every
rule the server enforces on a request is in the OpenAPI document (or is a documented problem
type no schema can state), errors leak nothing internal, and the Python client escapes phones."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import jsonschema
import pytest

from dispatcher.api import create_api_app
from dispatcher.client import DispatcherClient, phone_path
from dispatcher.errors import ConflictError, StorageError
from tests.unit.api.conftest import ApiClient, SyncAsgiTransport, make_runtime

GOOD_BODY = {"campaign": "QE" + "0" * 32, "template": "Acme: hi", "audience": {"kind": "all"}}


# ------------------------------------------------------------------------------------ 23.1
def test_an_action_path_is_not_a_run_id(client):
    r = client.get("/v1/runs/1:cancel")
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST"
    assert r.headers["content-type"] == "application/problem+json"
    r = client.request("OPTIONS", "/v1/runs/1:pause")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert client.post("/v1/runs/1:frobnicate").status_code == 404
    r = client.get("/v1/runs/abc")  # still a run id that is not an integer
    assert r.status_code == 422 and r.json()["field"] == "run_id"


# ------------------------------------------------------------------------------------ 23.2
def _operation(doc: dict[str, Any], method: str, template: str) -> dict[str, Any]:
    return doc["paths"][template][method.lower()]


def _valid(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    """``value`` against ``schema`` of the served document (its $refs resolved)."""
    root = {**schema, "components": doc["components"]}
    return jsonschema.Draft202012Validator(root).is_valid(value)


def _body_schema(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    return op["requestBody"]["content"]["application/json"]["schema"]


def _param_schema(op: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p["schema"] for p in op["parameters"] if p["name"] == name)


def _grant(**evidence: Any) -> dict[str, Any]:
    return {"phone": "4155550100", "brand": "Acme Corporation", "action": "grant", **evidence}


# (method, path template, path, body, the document says valid, status the server answers)
BODY_CASES = [
    ("POST", "/v1/consent", _grant(evidence_text="", evidence_ref=""), False, 422),
    ("POST", "/v1/consent", _grant(note="signed paper form"), True, 201),
    ("POST", "/v1/consent", _grant(note="x", evidence_url=None), True, 201),
    ("POST", "/v1/consent", {**_grant(note="n"), "phone": "0" * 31}, False, 422),
    ("POST", "/v1/consent", {**_grant(note="n"), "phone": "415555010"}, False, 422),
    ("POST", "/v1/consent", {**_grant(note="n"), "phone": "(415) 555-0100"}, True, 201),
    ("POST", "/v1/consent", {**_grant(note="n"), "phone": "4155550100x"}, False, 422),
    ("POST", "/v1/consent", {**_grant(note="n"), "brand": "a\x00b"}, False, 422),
    ("POST", "/v1/consent", {**_grant(note="n"), "occurred_at": 0}, False, 422),
    ("PUT", "/v1/contacts/{phone}", {"attributes": {"a b": 1}}, False, 422),
    ("PUT", "/v1/contacts/{phone}", {"attributes": {"n": "0" * 2001}}, False, 422),  # was 0
    ("PUT", "/v1/contacts/{phone}", {"attributes": {"plan": "gold"}}, True, 201),
    ("PUT", "/v1/contacts/{phone}", {"time_zone": ""}, False, 422),
    ("PUT", "/v1/contacts/{phone}", {"time_zone": "Mars/Base"}, True, 400),  # documented
    ("PUT", "/v1/contacts/{phone}", {"state": "ILL"}, False, 422),
    ("PUT", "/v1/contacts/{phone}", {"name": "A\x00"}, False, 422),
    ("POST", "/v1/runs", {**GOOD_BODY, "template": "bad [field"}, False, 422),
    ("POST", "/v1/runs", {**GOOD_BODY, "force": "yes"}, False, 422),
    ("POST", "/v1/runs", {**GOOD_BODY, "send_at": 1767625200}, False, 422),
    ("POST", "/v1/runs", {**GOOD_BODY, "template": " \t "}, False, 422),
    ("POST", "/v1/runs", {**GOOD_BODY, "template": "Hi [[you]] [ name ]"}, True, 404),
    ("POST", "/v1/runs", {**GOOD_BODY, "audience": {"kind": "segment", "query": "x"}}, False, 422),
    (
        "POST",
        "/v1/runs",
        {**GOOD_BODY, "audience": {"kind": "segment", "query": "plan = gold, state=FL"}},
        True,
        404,
    ),
    ("POST", "/v1/runs", {**GOOD_BODY, "audience": {"kind": "all", "query": "a=b"}}, False, 422),
    ("POST", "/v1/runs", {**GOOD_BODY, "recipients": [{"phone": "4155550100"}]}, False, 422),
    ("POST", "/v1/runs", {**GOOD_BODY, "audience": None}, False, 422),
    (
        "POST",
        "/v1/runs",
        {**GOOD_BODY, "audience": None, "recipients": [{"phone": "x", "variables": {"1": 2}}]},
        False,
        422,
    ),
]


@pytest.mark.parametrize(("method", "template", "body", "valid", "status"), BODY_CASES)
def test_the_document_states_every_rule_on_a_body(client, method, template, body, valid, status):
    doc = client.get("/openapi.json", token=None).json()
    op = _operation(doc, method, template)
    assert _valid(doc, _body_schema(doc, op), body) is valid
    path = template.replace("{phone}", "4155550100")
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert str(r.status_code) in op["responses"]


@pytest.mark.parametrize(
    ("phone", "valid", "status"),
    [
        ("0" * 31, False, 422),  # was 400 "too long" though the document allowed 32 characters
        ("415555010", False, 422),  # 9 digits
        ("415-555-0100", True, 404),
        ("+1 (415) 555-0100", True, 404),
        ("4155550100x", False, 422),
        ("2995550100", True, 400),  # no such area code: the documented invalid-phone
    ],
)
def test_the_document_states_the_phone_rule_of_a_path(client, phone, valid, status):
    doc = client.get("/openapi.json", token=None).json()
    op = _operation(doc, "GET", "/v1/contacts/{phone}/consent")
    assert _valid(doc, _param_schema(op, "phone"), phone) is valid
    r = client.get(f"/v1/contacts/{phone_path(phone) if valid else phone}/consent")
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["type"] == "urn:dispatcher:problem:invalid-phone"
    if status == 422:
        assert r.json()["field"] == "phone"


def test_idempotency_key_mismatch_is_a_documented_422(client, world):
    doc = client.get("/openapi.json", token=None).json()
    described = _operation(doc, "POST", "/v1/runs")["responses"]["422"]["description"]
    assert "idempotency-key-mismatch" in described
    body = {"campaign": world["campaign"], "template": "Acme: hi", "audience": {"kind": "all"}}
    r = client.post(
        "/v1/runs", json={**body, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"}
    )
    assert r.status_code == 422
    assert r.json()["type"] == "urn:dispatcher:problem:idempotency-key-mismatch"
    assert r.json()["field"] == "idempotency_key"


@pytest.mark.parametrize("action", ["cancel"])
def test_cancel_takes_no_body(client, world, action):
    run_id = client.post("/v1/runs", json={**GOOD_BODY, "campaign": world["campaign"]}).json()
    run_id = run_id["run"]["id"]
    client.post(f"/v1/runs/{run_id}:pause")
    garbage = {
        "content": b"\x0e \x00\xe7\xbd%\x1b",
        "headers": {"Content-Type": "application/json"},
    }
    r = client.post(f"/v1/runs/{run_id}:{action}", **garbage)
    assert r.status_code == 200, r.text
    doc = client.get("/openapi.json", token=None).json()
    assert "requestBody" not in _operation(doc, "POST", f"/v1/runs/{{run_id}}:{action}")


def test_a_body_that_is_not_json_is_a_documented_422(client):
    doc = client.get("/openapi.json", token=None).json()
    for path, template in (("/v1/runs/1:pause", "/v1/runs/{run_id}:pause"), ("/v1/consent", None)):
        r = client.post(
            path, content=b"\x0e \x00\xe7\xbd%\x1b", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422 and r.json()["field"] == "body", r.text
        assert "422" in _operation(doc, "POST", template or path)["responses"]


def test_campaign_of_another_brand_is_not_found(client, world, db):
    from dispatcher import registry

    with db.session() as s:
        registry.add_brand(s, name="Other Brand")
    r = client.post(
        "/v1/consent",
        json={**_grant(note="n"), "brand": "Other Brand", "campaign": world["campaign"]},
    )
    assert r.status_code == 404 and "of brand Other Brand" in r.json()["detail"]


# ------------------------------------------------------------------------------------ 23.3
def test_a_conflict_names_the_key_as_the_client_sent_it(client, world):
    body = {"campaign": world["campaign"], "template": "Acme: hi", "audience": {"kind": "all"}}
    assert (
        client.post("/v1/runs", json=body, headers={"Idempotency-Key": "inv-7"}).status_code == 201
    )
    r = client.post(
        "/v1/runs", json={**body, "template": "Acme: bye"}, headers={"Idempotency-Key": "inv-7"}
    )
    assert r.status_code == 409
    assert r.json()["detail"] == "idempotency key 'inv-7' was used with a different request"
    assert "api:" not in r.text and "billing" not in r.text


class _DownDatabase:
    """A database that cannot be reached, failing as ``Database.session`` fails."""

    url = "postgresql+psycopg://dispatcher@127.0.0.1:5432/secret_db"

    @contextmanager
    def session(self) -> Any:
        raise StorageError(
            'database error: connection to server at "127.0.0.1", port 5432 failed: '
            'FATAL: database "secret_db" does not exist'
        )
        yield  # pragma: no cover


def test_503_names_no_host_port_or_database(db, token, caplog):
    rt = make_runtime(db)
    rt.__dict__["db"] = _DownDatabase()
    c = ApiClient(create_api_app(rt), token)
    with caplog.at_level(logging.WARNING, logger="dispatcher.api.problems"):
        r = c.get("/v1/runs/1")
    assert r.status_code == 503 and r.json()["type"].endswith("storage-unavailable")
    assert r.json()["detail"] == "the database is unavailable; retry later"
    for secret in ("127.0.0.1", "5432", "secret_db"):
        assert secret not in r.text
    assert "secret_db" in caplog.text  # the operator's log keeps the cause


# ------------------------------------------------------------------------------------ 23.5
def test_client_escapes_the_phone(app, token, world):
    assert phone_path("+1 (415) 555-0130") == "%2B14155550130"
    assert phone_path("415/555/0130") == "4155550130"
    with DispatcherClient("http://testserver", token, transport=SyncAsgiTransport(app)) as api:
        assert api.upsert_contact("415/555/0130", name="Ann").phone == "+14155550130"
        assert api.upsert_contact("+1 415.555.0130", name="Ann").created is False
        api.grant_consent("415/555/0130", world["brand"], note="paper form")
        assert len(api.consent_ledger("(415) 555-0130").events) == 1


def test_no_docs_page_on_either_app(client, tmp_path):
    """Intended: the contract is /openapi.json (docs/api.md says so); no Swagger UI is served."""
    from dispatcher.runtime import Runtime
    from dispatcher.settings import Settings
    from dispatcher.webhooks import create_app

    assert client.get("/docs", token=None).status_code == 404
    served = create_app(Runtime(Settings(database_url=f"sqlite:///{tmp_path}/x.db")))
    assert served.docs_url is None and served.redoc_url is None


def test_conflict_error_is_what_the_client_raises(app, token, world):
    with DispatcherClient("http://testserver", token, transport=SyncAsgiTransport(app)) as api:
        api.create_run(world["campaign"], "Acme: hi", audience={"kind": "all"}, idempotency_key="k")
        with pytest.raises(ConflictError, match="'k' was used"):
            api.create_run(
                world["campaign"], "Acme: yo", audience={"kind": "all"}, idempotency_key="k"
            )


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/runs", "GET, POST"),
        ("/v1/contacts/4155550100", "GET, PUT"),
        ("/v1/runs/1:resume", "POST"),
    ],
)
def test_a_405_names_every_method_of_the_path(client, path, allow):
    r = client.request("DELETE", path)
    assert r.status_code == 405 and r.headers["allow"] == allow
