"""Status schedule, signed callbacks, records, inbound and admin endpoints of the sandbox."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from dispatcher.compliance import segments
from dispatcher.errors import GatewayError
from dispatcher.sandbox import Sandbox, SandboxConfig, twilio_signature
from dispatcher.sandbox.callbacks import Callback
from dispatcher.sandbox.inbound import inbound_params
from tests.contract import spec
from tests.unit.gateway.conftest import CALLBACK_URL, FROM, MG, AsgiCaller, Env


def _statuses(cbs: list[Callback]) -> list[str]:
    return [c.params["MessageStatus"] for c in cbs]


def _verify(env: Env, cbs: list[Callback]) -> None:
    validator = RequestValidator(env.config.auth_token)
    for cb in cbs:
        assert validator.validate(cb.url, cb.params, cb.headers["X-Twilio-Signature"]), cb
        spec.validate_callback(cb.params)


def test_lifecycle_with_signed_callbacks(env: Env) -> None:
    r = env.gateway.send("+14155550100", "hi", from_=FROM, status_callback=CALLBACK_URL)
    assert env.sandbox.tick() == 0 and env.callbacks.callbacks == []  # no callback for queued
    env.clock.advance(0.05)
    assert env.sandbox.tick() == 1 and _statuses(env.callbacks.callbacks) == ["sending"]
    env.sandbox.advance(0.05)
    assert env.gateway.fetch(r.sid).status == "sent"
    env.sandbox.advance(1)
    assert _statuses(env.callbacks.callbacks) == ["sending", "sent", "delivered"]
    last = env.callbacks.callbacks[-1].params
    assert last["MessageSid"] == last["SmsSid"] == r.sid
    assert last["AccountSid"] == env.config.account_sid and last["To"] == "+14155550100"
    assert len(last["RawDlrDoneDate"]) == 10 and "ErrorCode" not in last
    assert "MessagingServiceSid" not in last
    _verify(env, env.callbacks.callbacks)
    assert env.sandbox.pending() == 0


def test_service_send_goes_accepted_queued_and_reports_service(env: Env) -> None:
    env.gateway.send("+14155550100", "hi", messaging_service_sid=MG, status_callback=CALLBACK_URL)
    env.sandbox.advance(5)
    assert _statuses(env.callbacks.callbacks) == ["queued", "sending", "sent", "delivered"]
    assert all(c.params["MessagingServiceSid"] == MG for c in env.callbacks.callbacks)
    assert all(c.params["From"] == "+15005550006" for c in env.callbacks.callbacks)
    _verify(env, env.callbacks.callbacks)


@pytest.mark.parametrize(
    ("code", "final", "path"),
    [
        (30007, "undelivered", ["sending", "sent", "undelivered"]),
        (30003, "undelivered", ["sending", "sent", "undelivered"]),
        (30001, "failed", ["failed"]),
    ],
)
def test_delivery_errors_by_fraction(env: Env, code: int, final: str, path: list[str]) -> None:
    env.sandbox.configure({"delivery_errors": {code: 1.0}})
    r = env.gateway.send("+14155550100", "hi", from_=FROM, status_callback=CALLBACK_URL)
    env.sandbox.advance(5)
    assert _statuses(env.callbacks.callbacks) == path
    assert env.callbacks.callbacks[-1].params["ErrorCode"] == str(code)
    msg = env.gateway.client.messages(r.sid).fetch()
    assert msg.status == final and msg.error_code == code and msg.error_message
    _verify(env, env.callbacks.callbacks)
    env.check_contract()


def test_filter_fraction_is_seeded_and_close_to_target(env: Env) -> None:
    env.sandbox.configure({"delivery_errors": {30007: 0.2}})
    for i in range(200):
        env.sandbox.create({"To": f"+1415555{i:04d}", "From": FROM, "Body": "x"})
    env.sandbox.advance(5)
    filtered = sum(1 for r in env.sandbox.records() if r["error_code"] == 30007)
    assert 20 <= filtered <= 60


def test_validity_period_expiry_fails_with_30036(env: Env) -> None:
    env.sandbox.configure(
        {"schedule": {"sending_after_s": 30, "sent_after_s": 31, "final_after_s": 32}}
    )
    r = env.gateway.send(
        "+14155550100", "hi", from_=FROM, validity_period=10, status_callback=CALLBACK_URL
    )
    env.sandbox.advance(60)
    assert env.gateway.fetch(r.sid).status == "failed"
    assert env.callbacks.callbacks[-1].params["ErrorCode"] == "30036"


def test_dropped_callbacks_are_not_sent_but_status_moves(env: Env) -> None:
    env.sandbox.set_faults({"drop_callbacks": 1.0})
    r = env.gateway.send("+14155550100", "hi", from_=FROM, status_callback=CALLBACK_URL)
    env.sandbox.advance(5)
    assert env.callbacks.callbacks == []
    assert env.gateway.fetch(r.sid).status == "delivered"
    assert env.sandbox.stats.callbacks_dropped == 3


def test_cancel_only_while_queued(env: Env) -> None:
    r = env.gateway.send("+14155550100", "hi", from_=FROM, status_callback=CALLBACK_URL)
    assert env.gateway.cancel(r.sid) == "canceled"
    env.sandbox.advance(5)
    assert _statuses(env.callbacks.callbacks) == ["canceled"]
    r2 = env.gateway.send("+14155550100", "hi", from_=FROM)
    env.sandbox.advance(5)
    with pytest.raises(GatewayError) as ei:
        env.gateway.cancel(r2.sid)
    assert type(ei.value) is GatewayError  # "failed": none of the retry/reject/ambiguous kinds


def test_failing_callback_sender_never_crashes_the_sandbox(env: Env) -> None:
    class Boom:
        def send(self, cb: Callback) -> None:
            raise RuntimeError("webhook down")

        def close(self) -> None:
            pass

    env.sandbox.callbacks = Boom()
    r = env.gateway.send("+14155550100", "hi", from_=FROM, status_callback=CALLBACK_URL)
    env.sandbox.advance(5)
    assert env.gateway.fetch(r.sid).status == "delivered"


def test_records_keep_receive_time_and_bodies(env: Env) -> None:
    t0 = env.clock.time()
    env.gateway.send("+14155550100", "one. Reply STOP to opt out", from_=FROM)
    env.clock.advance(2)
    env.gateway.send("+14155550101", "two. Reply STOP to opt out", from_=FROM)
    recs = env.sandbox.records()
    assert [r["received_at"] - t0 for r in recs] == [0, 2]
    assert all("STOP" in r["body"] for r in recs)
    env.sandbox.reset()
    assert env.sandbox.records() == []


def test_signature_matches_twilio_validator() -> None:
    params = {"b": "2", "a": "1", "Body": "héllo"}
    url = "https://example.com/twilio/status?x=1"
    sig = twilio_signature("tok", url, params)
    assert RequestValidator("tok").validate(url, params, sig)
    assert not RequestValidator("other").validate(url, params, sig)


#: bodies the sandbox's own counter (before the package had one) counted differently
DISAGREED = ["a" * 152 + "€" + "a" * 152, "a" * 66 + "😀" + "a" * 66, "👍🏽" * 23]


@pytest.mark.parametrize("body", ["a" * 161, "€" * 81, "ü" + "ж" * 70, *DISAGREED])
def test_the_sandbox_counts_segments_with_the_package_counter(env: Env, body: str) -> None:
    r = env.gateway.send("+14155550100", body, from_=FROM)
    assert r.num_segments == segments(body).count


def test_an_inbound_message_without_text_is_one_segment() -> None:
    assert inbound_params("AC" + "0" * 32, "+14155550100", FROM, "")["NumSegments"] == "1"
    assert inbound_params("AC" + "0" * 32, "+14155550100", FROM, "a" * 161)["NumSegments"] == "2"


def test_admin_endpoints(env: Env, caller: AsgiCaller) -> None:
    assert caller.request("GET", "/_sandbox/health").json()["ok"] is True
    r = caller.request("POST", "/_sandbox/faults", json={"rate_429": 0.5, "seed": 9})
    assert r.status_code == 200 and r.json()["rate_429"] == 0.5
    assert caller.request("POST", "/_sandbox/faults", json={"rate_429": 2}).status_code == 400
    assert caller.request("POST", "/_sandbox/config", json={"nope": 1}).status_code == 400
    r = caller.request(
        "POST", "/_sandbox/config", json={"faults": {"rate_429": 0}, "strict_from": True}
    )
    assert r.status_code == 200 and r.json()["strict_from"] is True and "auth_token" not in r.json()
    env.gateway.send("+14155550100", "hi", from_=FROM)
    msgs = caller.request("GET", "/_sandbox/messages").json()
    assert len(msgs["messages"]) == 1 and msgs["messages"][0]["to"] == "+14155550100"
    env.clock.advance(5)
    assert caller.request("POST", "/_sandbox/tick").json()["applied"] == 3
    assert caller.request("POST", "/_sandbox/reset").status_code == 200
    assert caller.request("GET", "/_sandbox/messages").json()["messages"] == []
    r = caller.request("POST", "/_sandbox/inbound", json={"from": "+14155550100", "body": "STOP"})
    assert r.status_code == 200
    cb = env.callbacks.callbacks[-1]
    assert cb.url == env.config.inbound_url and cb.params["Body"] == "STOP"
    assert cb.params["To"] == FROM and cb.params["MessageSid"].startswith("SM")
    assert RequestValidator(env.config.auth_token).validate(
        cb.url, cb.params, cb.headers["X-Twilio-Signature"]
    )
    assert caller.request("GET", "/2010-04-01/nothing").json()["code"] == 20404


def test_inbound_carries_service_sid_when_known() -> None:
    cfg = SandboxConfig(service_senders={MG: "+14155550000"}, senders=["+14155550000"])
    sb = Sandbox(cfg)
    params = sb.inbound("+14155550100", "HELP")
    assert params["MessagingServiceSid"] == MG and params["To"] == "+14155550000"
    assert params["NumMedia"] == "0" and params["NumSegments"] == "1"
