"""Contract: the gateway's requests and the sandbox's responses follow Twilio's OpenAPI spec, and
the official client parses every sandbox response."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from dispatcher.gateway.transport import AsgiHttpClient
from dispatcher.templates import body_hash
from tests.contract import spec
from tests.unit.gateway.conftest import CALLBACK_URL, FROM, MG, QE, Env


def test_vendored_spec_matches_shared() -> None:
    shared = spec.shared_dir()
    if shared is None:
        pytest.skip("shared twilio/ directory not beside the repo")
    for name in spec.SPEC_FILES:
        vendored = (spec.HERE / "twilio" / name).read_bytes()
        assert (
            hashlib.sha256(vendored).digest()
            == hashlib.sha256((shared / name).read_bytes()).digest()
        ), name


def test_create_with_from_matches_spec(env: Env) -> None:
    r = env.gateway.send(
        "+14155550100",
        "Acme: hello. Reply STOP to opt out.",
        from_=FROM,
        status_callback=CALLBACK_URL,
        validity_period=600,
    )
    assert r.sid.startswith("SM") and len(r.sid) == 34
    assert r.status == "queued" and r.num_segments == 1
    assert env.check_contract() == 1
    ex = env.http.exchanges[0]
    assert ex.method == "POST" and ex.url.endswith(
        f"/Accounts/{env.config.account_sid}/Messages.json"
    )
    assert ex.data is not None
    assert ex.data["To"] == "+14155550100" and ex.data["ValidityPeriod"] == 600
    assert ex.data["StatusCallback"] == CALLBACK_URL


def test_create_with_service_matches_spec(env: Env) -> None:
    r = env.gateway.send("+14155550100", "hello", messaging_service_sid=MG)
    assert r.status == "accepted"
    assert r.num_segments == 0  # as Twilio: no sender assigned yet
    body = json.loads(env.http.exchanges[0].text)
    assert body["messaging_service_sid"] == MG
    env.check_contract()


def test_fetch_update_delete_match_spec(env: Env) -> None:
    r = env.gateway.send("+14155550100", "hello", messaging_service_sid=MG)
    assert env.gateway.fetch(r.sid).status == "accepted"
    assert env.gateway.cancel(r.sid) == "canceled"
    env.gateway.client.messages(r.sid).update(body="")  # redact
    assert env.gateway.client.messages(r.sid).fetch().body == ""
    assert env.gateway.client.messages(r.sid).delete() is True
    with pytest.raises(TwilioRestException) as ei:
        env.gateway.client.messages(r.sid).fetch()
    assert ei.value.code == 20404 and ei.value.status == 404
    env.check_contract()


def test_list_paging_filters_and_client_parsing(env: Env) -> None:
    sids = set()
    for i in range(7):
        sids.add(env.gateway.send("+14155550100", f"msg {i}", from_=FROM).sid)
        env.clock.advance(1)
    env.gateway.send("+14155550199", "other", from_=FROM)
    got = list(env.gateway.client.messages.stream(to="+14155550100", page_size=3))
    assert {m.sid for m in got} == sids and len(got) == 7
    assert [m.body for m in got] == [f"msg {i}" for i in reversed(range(7))]  # newest first
    assert got[0].date_sent is not None and got[0].date_sent.tzinfo is not None
    lists = [ex for ex in env.http.exchanges if ex.method == "GET"]
    assert len(lists) == 3  # 3 + 3 + 1
    # DateSent> filter: only the last 3
    since = env.clock.now() - timedelta(seconds=3)
    recent = env.gateway.client.messages.list(to="+14155550100", date_sent_after=since)
    assert [m.body for m in recent] == ["msg 6", "msg 5", "msg 4"]
    assert env.gateway.client.messages.list(from_="+15005550099") == []
    env.check_contract()


def test_find_sent_matches_body_hash(env: Env) -> None:
    since = env.clock.now()
    env.gateway.send("+14155550100", "first", from_=FROM)
    r = env.gateway.send("+14155550100", "second", from_=FROM)
    found = env.gateway.find_sent("+14155550100", FROM, since, body_hash("second"))
    assert found is not None and found.sid == r.sid
    assert env.gateway.find_sent("+14155550100", FROM, since, body_hash("third")) is None
    r2 = env.gateway.send("+14155550100", "via service", messaging_service_sid=MG)
    found = env.gateway.find_sent("+14155550100", MG, since, body_hash("via service"))
    assert found is not None and found.sid == r2.sid
    later = env.clock.now() + timedelta(hours=1)
    assert env.gateway.find_sent("+14155550100", FROM, later, body_hash("second")) is None
    env.check_contract()


def test_fetch_campaign_and_list_match_spec(env: Env) -> None:
    doc = env.gateway.fetch_campaign(MG, QE)
    assert doc["sid"] == QE and doc["campaign_status"] == "VERIFIED"
    assert doc["rate_limits"]["att"]["mps"] == 600
    assert len(doc) == 28
    listed = list(env.gateway.client.messaging.v1.services(MG).us_app_to_person.list())
    assert [c.sid for c in listed] == [QE]
    with pytest.raises(Exception) as ei:
        env.gateway.fetch_campaign(MG, "QE" + "c" * 32)
    assert getattr(ei.value, "code", None) == 20404
    env.check_contract()


@pytest.mark.parametrize(
    ("to", "from_", "code"),
    [
        ("+15005550001", FROM, 21211),
        ("+15005550002", FROM, 21612),
        ("+15005550003", FROM, 21408),
        ("+15005550004", FROM, 21610),
        ("+15005550009", FROM, 21614),
        ("4155550100", FROM, 21211),
        ("+14155550100", "+15005550001", 21212),
        ("+14155550100", "+15005550008", 21611),
    ],
)
def test_magic_numbers_raise_twilio_rest_exception(
    env: Env, to: str, from_: str, code: int
) -> None:
    with pytest.raises(TwilioRestException) as ei:
        env.gateway.client.messages.create(to=to, from_=from_, body="x")
    assert ei.value.code == code and ei.value.status == 400
    assert env.sandbox.records() == []
    env.check_contract()


def test_request_validation_errors(env: Env) -> None:
    cases = [
        ({"to": "+14155550100", "body": "x"}, 21603),
        ({"to": "+14155550100", "from_": FROM}, 21602),
        ({"to": "+14155550100", "from_": FROM, "body": "x" * 1601}, 21617),
        ({"to": "+14155550100", "from_": FROM, "body": "x", "validity_period": 36001}, 21624),
        ({"to": "+14155550100", "messaging_service_sid": "MGbad", "body": "x"}, 21701),
    ]
    for kwargs, code in cases:
        with pytest.raises(TwilioRestException) as ei:
            env.gateway.client.messages.create(**kwargs)
        assert ei.value.code == code, kwargs


def test_wrong_credentials_get_401_with_twilio_error_body(env: Env) -> None:
    http = AsgiHttpClient(env.app, timeout=5)
    try:
        client = Client(env.config.account_sid, "wrong-token", http_client=http)
        client.api.base_url = "http://sandbox.invalid"
        with pytest.raises(TwilioRestException) as ei:
            client.messages.create(to="+14155550100", from_=FROM, body="x")
        assert ei.value.status == 401 and ei.value.code == 20003
        resp = http._test_only_last_response
        assert resp is not None
        spec.jsonschema.validate(json.loads(resp.text), spec.ERROR_SCHEMA)
    finally:
        http.close()


def test_strict_from_rejects_unowned_numbers(env: Env) -> None:
    env.sandbox.configure({"strict_from": True, "senders": ["+14155550000"]})
    env.gateway.send("+14155550100", "ok", from_="+14155550000")
    env.gateway.send("+14155550100", "ok", from_=FROM)
    with pytest.raises(TwilioRestException) as ei:
        env.gateway.client.messages.create(to="+14155550100", from_="+14155559999", body="x")
    assert ei.value.code == 21606


def test_fetch_and_list_carry_the_error_code(env: Env) -> None:
    """A fetched or listed status comes with its ErrorCode, as a callback does (issue 21.1)."""
    env.config.delivery_errors = {30007: 1.0}
    since = env.clock.now()
    r = env.gateway.send("+14155550100", "filtered", from_=FROM)
    assert r.error_code is None
    env.clock.advance(5)
    env.sandbox.tick()
    got = env.gateway.fetch(r.sid)
    assert (got.status, got.error_code) == ("undelivered", 30007)
    found = env.gateway.find_sent("+14155550100", FROM, since, body_hash("filtered"))
    assert found is not None and (found.sid, found.error_code) == (r.sid, 30007)
    env.check_contract()
