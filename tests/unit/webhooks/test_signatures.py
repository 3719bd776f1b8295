"""Every /twilio/* request is checked against X-Twilio-Signature; forgeries record nothing."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from sqlmodel import func, select

from dispatcher.models import ConsentEvent, InboundMessage, OutboxMessage
from tests.unit.webhooks.conftest import BASE, TOKEN, inbound, post, sign, status


def _counts(db):
    with db.session() as s:
        return (
            s.exec(select(func.count()).select_from(InboundMessage)).one(),
            s.exec(select(func.count()).select_from(ConsentEvent)).one(),
            [r.state for r in s.exec(select(OutboxMessage).order_by(OutboxMessage.id))],
        )


def _params(path):
    return inbound("STOP") if path == "/twilio/inbound" else status("SM" + "f" * 32, "delivered")


PATHS = ["/twilio/inbound", "/twilio/status"]


@pytest.mark.parametrize("path", PATHS)
def test_signed_request_accepted(client, world, path):
    world.add_row("sent", sid="SM" + "f" * 32)
    r = post(client, path, _params(path))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/xml")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "forgery", ["wrong_token", "altered_body", "wrong_url", "missing", "garbage"]
)
def test_forged_request_rejected_and_nothing_recorded(client, world, path, forgery):
    world.add_row("queued")
    world.add_row("sent", sid="SM" + "f" * 32)
    before = _counts(world.db)
    params = _params(path)
    if forgery == "wrong_token":
        r = post(client, path, params, token="not-the-token")
    elif forgery == "altered_body":
        sig = sign(params, BASE + path)
        params = {**params, "Body" if "Body" in params else "MessageStatus": "START"}
        r = post(client, path, params, signature=sig)
    elif forgery == "wrong_url":
        r = post(client, path, params, url="https://evil.example.com" + path)
    elif forgery == "garbage":
        r = post(client, path, params, signature="AAAA")
    else:
        r = client.post(
            path,
            content=urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert r.status_code == 403
    assert "error" in r.json()
    assert _counts(world.db) == before


def test_query_string_is_part_of_the_signed_url(client, world):
    params = inbound("HELP")
    path = "/twilio/inbound?tenant=acme"
    assert post(client, path, params, url=BASE + path).status_code == 200
    assert post(client, path, params, url=BASE + "/twilio/inbound").status_code == 403


def test_url_with_default_port_is_accepted(client, world):
    path = "/twilio/inbound"
    r = post(client, path, inbound("HELP"), url="https://hooks.example.com:443" + path)
    assert r.status_code == 200


@pytest.mark.parametrize(
    "content_type,body,status_code",
    [
        ("application/json", b'{"MessageSid": "SM1"}', 400),
        ("text/plain", b"MessageSid=SM1", 400),
        (None, b"MessageSid=SM1", 400),
        ("application/x-www-form-urlencoded", b"Body=%FF%FE", 400),
        ("application/x-www-form-urlencoded", "Body=é".encode(), 400),
        ("application/x-www-form-urlencoded", b"Body=a%00b", 400),
        ("application/x-www-form-urlencoded", b"x=" + b"a" * 300_000, 413),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(client, world, content_type, body, status_code):
    headers = {"X-Twilio-Signature": "c2lnbmF0dXJl"}
    if content_type:
        headers["Content-Type"] = content_type
    r = client.post("/twilio/inbound", content=body, headers=headers)
    assert r.status_code == status_code
    assert r.json()["error"]


@pytest.mark.parametrize(
    "path,drop",
    [
        ("/twilio/inbound", "MessageSid"),
        ("/twilio/inbound", "From"),
        ("/twilio/status", "MessageStatus"),
        ("/twilio/status", "MessageSid"),
    ],
)
def test_signed_but_missing_required_field_is_400(client, world, path, drop):
    params = {k: v for k, v in _params(path).items() if k != drop}
    r = post(client, path, params)
    assert r.status_code == 400
    assert drop in r.json()["error"]


def test_duplicated_field_is_400(client, world):
    params = list(inbound("STOP").items()) + [("MessageSid", "SM" + "2" * 32)]
    r = post(client, "/twilio/inbound", params)
    assert r.status_code == 400
    assert "MessageSid" in r.json()["error"]


def test_token_is_the_settings_auth_token(client, world):
    assert post(client, "/twilio/inbound", inbound("HELP"), token=TOKEN).status_code == 200
