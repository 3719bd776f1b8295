"""Producer webhooks: subscriptions through the API, events written in the transaction of the
change they report (run finished, run paused by the guard, contact opted out), signed
delivery with retries and backoff on an injected clock, the delivery log, verification."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from dispatcher import apikeys, guard_check, hooks, ledger, runs
from dispatcher.client import SIGNATURE_HEADER, WebhookSignatureError, verify_webhook
from dispatcher.clock import FakeClock, SystemClock, utcnow
from dispatcher.halts import NoHaltKeys
from dispatcher.models import ApiKey, WebhookAttempt, WebhookEvent
from dispatcher.signing import header_value
from dispatcher.store import Database
from tests.unit.api.conftest import ApiClient, launch_list, make_key, make_runtime

URL = "https://producer.example/hooks"


class Receiver:
    """An httpx transport answering from a script: a status, or "down" (connection refused)."""

    def __init__(self, *script: int | str) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else 200
        if step == "down":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(int(step))


def _deliverer(
    db: Database, clock: FakeClock, receiver: Receiver, **config: Any
) -> hooks.Deliverer:
    http = httpx.Client(transport=httpx.MockTransport(receiver))
    return hooks.Deliverer(db, clock, http=http, config=hooks.DeliveryConfig(**config))


def _subscribe(client: ApiClient, events: list[str], url: str = URL) -> dict[str, Any]:
    r = client.post("/v1/webhooks", json={"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()


def _events(db: Database) -> list[WebhookEvent]:
    with db.session() as s:
        return list(s.exec(select(WebhookEvent).order_by(WebhookEvent.id)).scalars())


def _finish_rows(db: Database, run_id: int, state: str = "delivered", **values: Any) -> None:
    with db.session() as s:
        runs.fan_out(s, run_id, FakeClock().now())
        s.connection().execute(
            update(runs.OB).where(runs.OB.c.run_id == run_id).values(state=state, **values)
        )


# ------------------------------------------------------------------------- subscriptions
def test_subscribe_read_and_delete(client):
    created = _subscribe(client, ["run.finished", "run.paused"])
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    sub_id = created["id"]
    listed = client.get("/v1/webhooks").json()["items"]
    assert [s["id"] for s in listed] == [sub_id]
    assert "secret" not in listed[0] and created["secret"] not in client.get("/v1/webhooks").text
    one = client.get(f"/v1/webhooks/{sub_id}").json()
    assert one["url"] == URL and one["events"] == ["run.finished", "run.paused"]
    assert client.request("DELETE", f"/v1/webhooks/{sub_id}").status_code == 204
    assert client.get(f"/v1/webhooks/{sub_id}").status_code == 404
    assert client.get(f"/v1/webhooks/{sub_id}/deliveries").status_code == 404
    assert client.request("DELETE", f"/v1/webhooks/{sub_id}").status_code == 404
    assert client.get("/v1/webhooks").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://producer.example/h", "events": ["run.finished"]}, "url"),
        ({"url": "ftp://producer.example/h", "events": ["run.finished"]}, "url"),
        ({"url": "https://producer.example:70000/", "events": ["run.finished"]}, "url"),
        ({"url": "https://producer example/", "events": ["run.finished"]}, "url"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": ["run.started"]}, "events.0"),
        ({"url": URL, "events": ["run.paused", "run.paused"]}, "events"),
    ],
)
def test_a_bad_subscription_is_a_422_naming_the_field(client, body, field):
    r = client.post("/v1/webhooks", json=body)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_plain_http_only_to_this_host(client):
    _subscribe(client, ["run.finished"], url="http://127.0.0.1:8080/hooks?token=abc")
    _subscribe(client, ["run.finished"], url="http://localhost/hooks")


def test_opt_out_events_need_contacts_read_and_keys_see_only_their_own(app, client, db):
    narrow = ApiClient(app, make_key(db, "narrow", "webhooks:read,webhooks:write"))
    r = narrow.post("/v1/webhooks", json={"url": URL, "events": ["contact.opted_out"]})
    assert r.status_code == 403 and "contacts:read" in r.json()["detail"]
    mine = _subscribe(narrow_ok := client, ["contact.opted_out"])
    assert narrow.get(f"/v1/webhooks/{mine['id']}").status_code == 404  # another key's
    assert narrow.request("DELETE", f"/v1/webhooks/{mine['id']}").status_code == 404
    assert narrow_ok.get(f"/v1/webhooks/{mine['id']}").status_code == 200
    reader = ApiClient(app, make_key(db, "reader", "webhooks:read"))
    assert (
        reader.post("/v1/webhooks", json={"url": URL, "events": ["run.paused"]}).status_code == 403
    )


def test_at_most_twenty_subscriptions_per_key(client):
    for _ in range(hooks.MAX_SUBSCRIPTIONS):
        _subscribe(client, ["run.finished"])
    r = client.post("/v1/webhooks", json={"url": URL, "events": ["run.finished"]})
    assert r.status_code == 409 and "delete one" in r.json()["detail"]


# ------------------------------------------------------------------------------ emission
def test_run_finished_is_written_with_the_completion(app, client, db, world):
    sub = _subscribe(client, ["run.finished"])
    other = ApiClient(app, make_key(db, "other"))
    mine, theirs = launch_list(client, world), launch_list(other, world)
    for run_id in (mine, theirs):
        _finish_rows(db, run_id)
    now = FakeClock().now()
    with pytest.raises(RuntimeError), db.session() as s:  # rolled back: no run, no event
        assert runs.complete_finished(s, now) == [mine, theirs]
        raise RuntimeError("the transaction dies")
    assert _events(db) == []
    with db.session() as s:
        assert runs.complete_finished(s, now) == [mine, theirs]
    with db.session() as s:
        assert runs.complete_finished(s, now) == []  # done once: no second event
    (event,) = _events(db)
    assert (event.subscription_id, event.type, event.state) == (
        sub["id"],
        "run.finished",
        "pending",
    )
    assert event.payload == json.loads(client.get(f"/v1/runs/{mine}").text) | {
        "deferred_by_reason": {},
        "failed_by_code": {},
    }
    assert event.payload["state"] == "completed" and event.payload["by_state"] == {"delivered": 3}


def test_the_guard_pausing_a_run_is_an_event(client, db, world):
    _subscribe(client, ["run.paused"])
    run_id = launch_list(client, world, n=60)
    _finish_rows(db, run_id, state="undelivered", error_code=30007)
    with db.session() as s:
        verdict = guard_check.check_run(s, run_id, FakeClock().now(), halts=NoHaltKeys())
    assert verdict is not None and verdict.pause
    (event,) = _events(db)
    assert event.type == "run.paused" and event.payload["id"] == run_id
    assert event.payload["pause_reason"].startswith("reputation guard: 30007 filtering")
    client.post(f"/v1/runs/{run_id}:resume")
    client.post(f"/v1/runs/{run_id}:pause")  # the producer's own pause is not reported back
    assert len(_events(db)) == 1


def test_every_revocation_in_the_ledger_is_an_opt_out_event(client, app, db, world):
    sub = _subscribe(client, ["contact.opted_out"])
    _subscribe(client, ["run.finished"])  # not for opt-outs
    grant = {"phone": "4155550100", "brand": world["brand"], "action": "grant", "note": "form"}
    assert client.post("/v1/consent", json=grant).status_code == 201
    assert _events(db) == []  # a grant is not an opt-out
    revoke = {"phone": "(415) 555-0100", "brand": world["brand"], "action": "revoke"}
    ev = client.post("/v1/consent", json=revoke).json()
    (event,) = _events(db)
    assert event.subscription_id == sub["id"] and event.type == "contact.opted_out"
    assert event.payload == {
        "phone": "+14155550100",
        "brand": world["brand"],
        "campaign": None,
        "source": "api",
        "occurred_at": ev["occurred_at"],
        "consent_event_id": ev["id"],
    }
    with db.session() as s:  # the CLI's path, the same ledger
        key = s.exec(select(ApiKey).where(ApiKey.name == "billing")).scalars().one()
        apikeys.revoke(s, key.name)
        contact_id = s.exec(select(ledger.Contact.id)).scalars().first()
        ledger.append(
            s,
            contact_id=contact_id,
            brand_id=world["brand_id"],
            action="revoke",
            source="operator",
            actor="operator",
            halts=NoHaltKeys(),
        )
    assert len(_events(db)) == 1  # the key is revoked: its subscriptions get nothing more


def test_a_stop_reply_reaches_the_producer_signed(sqlite_db):
    """The patient replies STOP; the producer's endpoint gets contact.opted_out, signed, without
    polling (a real HTTP server on loopback, the inbound webhook, the deliverer)."""
    from tests.unit.webhooks.conftest import PHONE, build_world, inbound, make_client, post

    build_world(sqlite_db)
    got: list[tuple[bytes, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((body, self.headers.get(SIGNATURE_HEADER)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sqlite_db.session() as s:
            _, key = apikeys.create_key(s, "ehr", "contacts:read,webhooks:write")
            url = f"http://127.0.0.1:{server.server_address[1]}/dispatcher-events"
            _, secret = hooks.create_subscription(
                s, key, url, ["contact.opted_out"], now=FakeClock().now()
            )
        clock = FakeClock()
        twilio = make_client(sqlite_db, clock)
        assert post(twilio, "/twilio/inbound", inbound("STOP")).status_code == 200
        deliverer = hooks.Deliverer(sqlite_db, SystemClock())
        try:
            assert deliverer.run() == {"delivered": 1, "retrying": 0, "failed": 0}
        finally:
            deliverer.close()
    finally:
        server.shutdown()
        server.server_close()
    ((body, signature),) = got
    event = verify_webhook(body, signature, secret)
    assert event["type"] == "contact.opted_out" and event["data"]["phone"] == PHONE
    assert event["data"]["source"] == "keyword" and event["id"].startswith("evt_")


# ------------------------------------------------------------------------------ delivery
def _pending_event(
    client: ApiClient, db: Database, world: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    sub = _subscribe(client, ["run.finished"])
    run_id = launch_list(client, world)
    _finish_rows(db, run_id)
    with db.session() as s:
        runs.complete_finished(s, FakeClock().now())
    return sub, run_id


def test_delivery_is_signed_retried_with_backoff_and_logged(client, db, world):
    sub, run_id = _pending_event(client, db, world)
    clock = FakeClock()
    receiver = Receiver(500, "down", 200)
    deliverer = _deliverer(db, clock, receiver)
    assert deliverer.run_once() == {"delivered": 0, "retrying": 1, "failed": 0}
    assert deliverer.run_once() == {"delivered": 0, "retrying": 0, "failed": 0}  # not yet due
    clock.advance(29)
    assert deliverer.run() == {"delivered": 0, "retrying": 0, "failed": 0}
    clock.advance(1)  # 30 s after the first attempt
    assert deliverer.run_once()["retrying"] == 1
    clock.advance(59)
    assert deliverer.run_once()["retrying"] == 0
    clock.advance(1)  # 60 s after the second
    assert deliverer.run_once()["delivered"] == 1
    assert deliverer.run_once() == {"delivered": 0, "retrying": 0, "failed": 0}
    first, second, third = receiver.requests
    assert first.content == second.content == third.content  # the same event each time
    assert [r.headers["Dispatcher-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    event = verify_webhook(
        third.content, third.headers[SIGNATURE_HEADER], sub["secret"], now=clock.time()
    )
    assert event["type"] == "run.finished" and event["data"]["id"] == run_id
    assert third.headers["Dispatcher-Event-Id"] == event["id"]
    log = client.get(f"/v1/webhooks/{sub['id']}/deliveries").json()["items"]
    (item,) = log
    assert item["state"] == "delivered" and item["attempts"] == 3 and item["last_status"] == 200
    assert [a["status_code"] for a in item["log"]] == [500, None, 200]
    assert item["log"][1]["error"].startswith("ConnectError")
    assert item["next_attempt_at"] is None and item["delivered_at"]


def test_backoff_doubles_to_a_ceiling_and_delivery_gives_up():
    cfg = hooks.DeliveryConfig()
    assert [hooks.backoff_s(n, cfg) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert hooks.backoff_s(14, cfg) == 6 * 3600
    total = sum(hooks.backoff_s(n, cfg) for n in range(1, cfg.max_attempts))
    assert 2.5 * 86400 < total < 3.5 * 86400  # about three days of retries


def test_the_last_failed_attempt_marks_the_event_failed(client, db, world):
    _pending_event(client, db, world)
    clock = FakeClock()
    deliverer = _deliverer(db, clock, Receiver(503, 503, 503), max_attempts=3)
    outcomes = []
    for _ in range(3):
        outcomes.append(deliverer.run_once())
        clock.advance(3600)
    assert [o["failed"] for o in outcomes] == [0, 0, 1]
    (event,) = _events(db)
    assert event.state == "failed" and event.attempts == 3 and event.last_error == "HTTP 503"
    assert deliverer.run_once()["failed"] == 0


def test_an_attempt_that_never_ended_is_retried_after_the_lease(client, db, world):
    _pending_event(client, db, world)
    clock = FakeClock()
    receiver = Receiver()
    deliverer = _deliverer(db, clock, receiver, lease_s=120)
    assert len(deliverer._claim()) == 1  # claimed, then the process dies before the POST
    assert deliverer.run_once()["delivered"] == 0 and receiver.requests == []
    clock.advance(120)
    assert deliverer.run_once()["delivered"] == 1
    (event,) = _events(db)
    assert event.attempts == 2 and event.state == "delivered"


def test_a_deleted_subscription_gets_nothing(client, db, world):
    sub, _ = _pending_event(client, db, world)
    client.request("DELETE", f"/v1/webhooks/{sub['id']}")
    receiver = Receiver()
    assert _deliverer(db, FakeClock(), receiver).run() == {
        "delivered": 0,
        "retrying": 0,
        "failed": 0,
    }
    assert receiver.requests == [] and _events(db)[0].state == "cancelled"
    with db.session() as s:
        assert s.exec(select(WebhookAttempt)).all() == []


def test_a_revoked_keys_pending_events_are_cancelled(client, db, world):
    _pending_event(client, db, world)
    with db.session() as s:
        apikeys.revoke(s, "billing")
    receiver = Receiver()
    _deliverer(db, FakeClock(), receiver).run()
    assert receiver.requests == [] and _events(db)[0].state == "cancelled"


def test_the_scheduler_runs_deliveries_on_a_lock_of_their_own(db):
    from workers.scheduler import Scheduler

    class Stub:
        def __init__(self) -> None:
            self.runs = 0

        def run(self) -> None:
            self.runs += 1

        def close(self) -> None:
            pass

    import fakeredis

    rt = make_runtime(db)
    rt.__dict__["redis"] = fakeredis.FakeRedis()
    stub = Stub()
    s = Scheduler(rt, lambda ids: None, deliverer=stub)  # type: ignore[arg-type]
    with s._job_lock:  # a tick in progress does not hold deliveries up
        s.run_job("hooks")
    assert stub.runs == 1 and s.leading


# ---------------------------------------------------------------------------- verification
def test_verify_webhook_refuses_tampering_other_secrets_and_replays():
    secret, body, t = "whsec_test", b'{"id":"evt_1","type":"run.finished"}', 1_767_625_200
    good = header_value(secret, t, body)
    assert verify_webhook(body, good, secret, now=t + 299)["id"] == "evt_1"
    assert verify_webhook(body, f"t={t},v1=00,{good.split(',')[1]}", secret, now=t)
    cases = [
        (body + b" ", good, secret, t, "does not match"),
        (body, good, "whsec_other", t, "does not match"),
        (body, good, secret, t + 301, "replay"),
        (body, good, secret, t - 301, "replay"),
        (body, None, secret, t, "missing or malformed"),
        (body, f"v1={good.split('v1=')[1]}", secret, t, "missing or malformed"),
        (body, f"t={t}", secret, t, "missing or malformed"),
    ]
    for raw, header, key, now, message in cases:
        with pytest.raises(WebhookSignatureError, match=message):
            verify_webhook(raw, header, key, now=now)


def test_an_idle_deliverer_only_reads(client, db, world):
    from sqlalchemy import event as sa_event

    sub, _ = _pending_event(client, db, world)
    clock = FakeClock()
    deliverer = _deliverer(db, clock, Receiver())
    assert deliverer.run()["delivered"] == 1
    seen: list[str] = []
    sa_event.listen(db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    assert deliverer.run() == {"delivered": 0, "retrying": 0, "failed": 0}
    assert seen and all(q.lstrip().upper().startswith("SELECT") for q in seen), seen


def test_claim_and_deliver_on_both_databases(any_db):
    """The claim (FOR UPDATE OF ... SKIP LOCKED on PostgreSQL) and the log, on each backend."""
    from tests.unit.api.conftest import make_world

    world = make_world(any_db)
    with any_db.session() as s:
        _, key = apikeys.create_key(s, "crm", "contacts:read,webhooks:write")
        sub, secret = hooks.create_subscription(s, key, URL, ["contact.opted_out"], now=utcnow())
        contact = ledger.Contact(phone="+14155550100")
        s.add(contact)
        s.flush()
        ledger.append(
            s,
            contact_id=contact.id,
            brand_id=world["brand_id"],
            action="revoke",
            source="keyword",
            actor="twilio-webhook",
            halts=NoHaltKeys(),
        )
    clock = FakeClock(utcnow())  # the ledger stamps a revocation with the system clock
    receiver = Receiver(502, 200)
    deliverer = _deliverer(any_db, clock, receiver)
    assert deliverer.run_once()["retrying"] == 1
    clock.advance(30)
    assert deliverer.run_once()["delivered"] == 1
    body = receiver.requests[-1].content
    signature = receiver.requests[-1].headers[SIGNATURE_HEADER]
    assert verify_webhook(body, signature, secret, now=clock.time())["data"]["source"] == "keyword"
    with any_db.session() as s:
        page = hooks.delivery_page(s, key, sub.id, cursor=None, limit=10)
    assert [a["status_code"] for a in page["items"][0]["log"]] == [502, 200]
