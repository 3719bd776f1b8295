"""NDJSON upload with a rejects report; consent through the API in `dispatcher consent export`;
the Python client and notify() on the same service layer."""

from __future__ import annotations

import json
import time

import psutil
import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from dispatcher import ledger
from dispatcher.client import DispatcherClient
from dispatcher.errors import ConflictError, InputError, NotFoundError
from dispatcher.launch_checks import WarningsNotAccepted
from dispatcher.models import OutboxMessage, Run
from dispatcher.notify import notify
from tests.unit.api.conftest import SyncAsgiTransport, make_runtime

ND = {"Content-Type": "application/x-ndjson"}


def _ndjson(world, n, bad=(), key=None):
    spec = {"campaign": world["campaign"], "template": "Acme: hi [name]. STOP to opt out"}
    if key:
        spec["idempotency_key"] = key
    yield json.dumps(spec) + "\n"
    for i in range(n):
        yield json.dumps({"phone": _phone(i), "variables": {"name": f"n{i}"}}) + "\n"
    yield from bad


def _phone(i: int) -> str:
    return f"+1415{200 + i // 10000:03d}{i % 10000:04d}"


def test_ndjson_upload_with_rejects(client, world, db):
    bad = [
        "not json\n",
        '["a list"]\n',
        '{"phone": "12"}\n',
        '{"phone": "+14152000001"}\n',
        '{"phone": "+14155550000", "variables": {"bad name": 1}}\n',
        "\n",
        '{"phone": "+14155550001", "extra": 1}\n',
        '{"phone": "+1415555' + "9" * 70000 + '"}\n',
    ]
    body = "".join(_ndjson(world, 200, bad))
    r = client.post("/v1/runs:upload", content=body, headers={**ND, "Idempotency-Key": "u1"})
    assert r.status_code == 201, r.text
    doc = r.json()
    up = doc["upload"]
    assert up["rows"] == 207 and up["accepted"] == 200 and up["rejected"] == 7
    assert up["reasons"] == {
        "malformed_json": 1,
        "not_an_object": 1,
        "invalid_phone": 1,
        "duplicate": 1,
        "bad_variables": 1,
        "unknown_field": 1,
        "line_too_long": 1,
    }
    assert [x["line"] for x in up["rejects"]] == [202, 203, 204, 205, 206, 208, 209]
    assert doc["run"]["total"] == 200 and doc["dry_run"]["audience"] == 200
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(OutboxMessage)).one() == 200
    # same upload again (chunked differently): same run; changed recipients: 409
    r2 = client.post(
        "/v1/runs:upload", content=body.encode(), headers={**ND, "Idempotency-Key": "u1"}
    )
    assert r2.status_code == 200 and r2.json()["run"]["id"] == doc["run"]["id"]
    r3 = client.post(
        "/v1/runs:upload",
        content="".join(_ndjson(world, 199)),
        headers={**ND, "Idempotency-Key": "u1"},
    )
    assert r3.status_code == 409


def test_upload_errors(client, world, db, tmp_path, monkeypatch):
    import tempfile

    # a directory of this test's own: other test runs on the host spool uploads too
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = client.post("/v1/runs:upload", content="{}", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415 and r.json()["status"] == 415
    r = client.post("/v1/runs:upload", content="", headers=ND)
    assert r.status_code == 400 and r.json()["field"] == "spec"
    r = client.post("/v1/runs:upload", content='{"campaign": "x"}\n', headers=ND)
    assert r.status_code == 422 and r.json()["field"] == "spec.template"
    r = client.post("/v1/runs:upload", content="nope\n", headers=ND)
    assert r.status_code == 422 and r.json()["field"].startswith("spec")
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Run)).one() == 0
    assert not list(tmp_path.glob("dispatcher-upload-*"))  # every spool file removed


def test_consent_through_api_is_in_the_export(client, world, db, cli_env, monkeypatch):
    r = client.post(
        "/v1/consent",
        json={
            "phone": "(415) 555-0100",
            "brand": world["brand"],
            "campaign": world["campaign"],
            "action": "grant",
            "source": "web_form",
            "evidence_url": "https://acme.example/form",
            "evidence_text": "Ticked the SMS box",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["actor"] == "api:billing" and r.json()["phone"] == "+14155550100"
    r = client.post(
        "/v1/consent", json={"phone": "4155550100", "brand": world["brand"], "action": "grant"}
    )
    assert r.status_code == 422 and "evidence" in r.json()["detail"]
    assert (
        client.post(
            "/v1/consent", json={"phone": "4155550100", "brand": "Nobody", "action": "revoke"}
        ).status_code
        == 404
    )
    # ids no row can have (past 64 bits, zero, non-ASCII digits) are "not found", not a crash
    for brand in ("9223372036854775808", "0", "\u0661\u0662"):
        assert (
            client.post(
                "/v1/consent", json={"phone": "4155550100", "brand": brand, "action": "revoke"}
            ).status_code
            == 404
        )
    assert (
        client.post(
            "/v1/consent", json={"phone": "4155550100", "brand": world["brand"], "action": "revoke"}
        ).status_code
        == 201
    )
    rows = list(_export(db))
    assert [(x["action"], x["actor"]) for x in rows] == [
        ("grant", "api:billing"),
        ("revoke", "api:billing"),
    ]
    ledger_doc = client.get("/v1/contacts/4155550100/consent").json()
    assert [e["id"] for e in ledger_doc["events"]] == [x["id"] for x in rows]
    assert client.get("/v1/contacts/4155550199/consent").status_code == 404
    # the operator's CLI export shows the same events with the key as actor
    from dispatcher.cli.app import app as cli_app
    from dispatcher.settings import get_settings

    monkeypatch.setenv("DISPATCHER_DATABASE_URL", db.url)
    get_settings.cache_clear()
    out = CliRunner().invoke(cli_app, ["consent", "export", "--format", "json"])
    assert out.exit_code == 0, out.stderr
    events = json.loads(out.stdout)["events"]
    assert [e["actor"] for e in events] == ["api:billing", "api:billing"]
    assert events[0]["evidence_url"] == "https://acme.example/form"


def _export(db):
    with db.session() as s:
        yield from list(ledger.export_rows(s))


def test_contact_upsert(client):
    r = client.put(
        "/v1/contacts/4155550100",
        json={
            "name": "Ann",
            "time_zone": "America/Chicago",
            "state": "il",
            "attributes": {"plan": "gold"},
        },
    )
    assert r.status_code == 201 and r.json()["state"] == "IL"
    r = client.put("/v1/contacts/+14155550100", json={"attributes": {"tier": 2}})
    assert r.status_code == 200 and r.json()["attributes"] == {"plan": "gold", "tier": 2}
    r = client.put("/v1/contacts/4155550100", json={"time_zone": "Mars/Base"})
    assert r.status_code == 400 and r.json()["field"] == "time_zone"
    assert r.json()["type"].endswith("unknown-time-zone")
    assert client.put("/v1/contacts/abc", json={}).status_code == 422  # not a phone number
    r = client.put("/v1/contacts/4155550100", json={"time_zone": "America"})  # a folder
    assert r.status_code == 400 and r.json()["type"].endswith("unknown-time-zone")


def test_python_client(app, token, world):
    with DispatcherClient("http://testserver", token, transport=SyncAsgiTransport(app)) as api:
        listed = ["4155550100", {"phone": "4155550101", "variables": {"date": "May 1"}}]
        with pytest.raises(WarningsNotAccepted) as refused:  # one recipient has no [date]
            api.create_run(world["campaign"], "Acme: [date]. STOP to opt out", listed)
        assert refused.value.rule == "field_missing" and refused.value.issues[0].count == 1
        created = api.create_run(
            world["campaign"],
            "Acme: [date]. STOP to opt out",
            listed,
            idempotency_key="c-1",
            force=True,
        )
        assert created.run.actor == "api:billing" and created.run.total == 2
        assert [w.rule for w in created.dry_run.warnings] == ["field_missing"]
        again = api.create_run(
            world["campaign"], "Acme: [date]. STOP to opt out", listed, idempotency_key="c-1"
        )
        assert again.replayed and again.run.id == created.run.id
        with pytest.raises(ConflictError):
            api.create_run(world["campaign"], "other", ["4155550100"], idempotency_key="c-1")
        assert api.pause_run(created.run.id, "hold").state == "paused"
        assert api.resume_run(created.run.id).state == "scheduled"
        assert api.get_run(created.run.id).total == 2
        assert api.cancel_run(created.run.id).state == "cancelled"
        with pytest.raises(NotFoundError, match="no run"):
            api.get_run(999)
        up = api.upload_run(
            world["campaign"], "Acme: hi", ({"phone": _phone(i)} for i in range(2500))
        )
        assert up.upload.accepted == 2500 and up.run.total == 2500
        assert api.upsert_contact("4155550100", attributes={"plan": "gold"}).attributes
        ev = api.grant_consent("4155550100", world["brand"], evidence_text="form")
        assert ev.actor == "api:billing"
        api.revoke_consent("4155550100", world["brand"])
        assert [e.action for e in api.consent_ledger("4155550100").events] == ["grant", "revoke"]
        with pytest.raises(InputError) as e:
            api.create_run(world["campaign"], "", ["4155550100"])
        assert e.value.field == "template"


def test_notify_goes_through_the_same_service(db, world):
    rt = make_runtime(db)
    res = notify(
        rt,
        world["campaign"],
        "Acme: [date]. STOP to opt out",
        [{"phone": "4155550100", "variables": {"date": "May 1"}}, "4155550101"],
        idempotency_key="n-1",
        force=True,  # one recipient has no [date]: a warning, accepted
    )
    assert res["created"] and res["run"]["actor"] == "python" and res["run"]["total"] == 2
    assert res["dry_run"]["warnings"][0]["count"] == 1
    again = notify(
        rt,
        world["campaign"],
        "Acme: [date]. STOP to opt out",
        [{"phone": "4155550100", "variables": {"date": "May 1"}}, "4155550101"],
        idempotency_key="n-1",
    )
    assert not again["created"] and again["run"]["id"] == res["run"]["id"]
    seg = notify(rt, world["campaign"], "Acme: hi", {"kind": "segment", "query": "plan=gold"})
    assert seg["run"]["audience"]["kind"] == "segment"
    with pytest.raises(InputError):
        notify(rt, world["campaign"], "Acme: hi", {"kind": "csv"})


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~20 s on a quiet 2-core host
def test_upload_100k_recipients(client, world, db):
    """Time and peak RSS of a 100 000-recipient NDJSON upload (printed)."""
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    r = client.post(
        "/v1/runs:upload", content=(line.encode() for line in _ndjson(world, 100_000)), headers=ND
    )
    seconds = time.perf_counter() - t0
    assert r.status_code == 201, r.text[:500]
    assert r.json()["run"]["total"] == 100_000
    peak = _peak_rss()
    print(
        f"\n100k NDJSON upload: {seconds:.1f} s, {100_000 / seconds:.0f} rows/s, "
        f"RSS before {rss0 / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB"
    )


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_a_revocation_through_the_api_counts_the_rows_it_suppressed(world, db, token):
    """The suppressed-by-reason panel counts what the database holds (issue 20)."""
    from dispatcher.api import create_api_app
    from tests.unit.api.conftest import ApiClient, launch_list, make_runtime

    rt = make_runtime(db)
    client = ApiClient(create_api_app(rt), token)
    launch_list(client, world, n=2)
    body = {"phone": "+14155550001", "brand": world["brand"], "action": "revoke"}
    assert client.post("/v1/consent", json=body).status_code == 201
    labels = {"campaign": world["campaign"], "reason": "opted_out"}
    assert rt.metrics.registry.get_sample_value("dispatcher_messages_suppressed_total", labels) == 1


def test_a_revocation_through_the_api_suppresses_the_contacts_rows_once(client, world, db):
    """POST /v1/consent goes through the consent service: the contact's queued rows in the
    scope are suppressed in the request's transaction, and a retried request with the same
    evidence_ref is one ledger entry (the dedupe rule)."""
    from dispatcher.models import ConsentEvent
    from tests.unit.api.conftest import launch_list

    run_id = launch_list(client, world, n=2)  # a listed run has its rows from the start
    body = {
        "phone": "+14155550001",
        "brand": world["brand"],
        "action": "revoke",
        "evidence_ref": "ticket-9",
    }
    first, again = (client.post("/v1/consent", json=body) for _ in range(2))
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["id"] == again.json()["id"]
    with db.session() as s:
        states = {
            r.to_phone: r.state
            for r in s.exec(select(OutboxMessage).where(OutboxMessage.run_id == run_id))
        }
        events = s.exec(select(ConsentEvent).where(ConsentEvent.action == "revoke")).all()
    assert states == {"+14155550000": "queued", "+14155550001": "suppressed"}
    assert len(events) == 1
