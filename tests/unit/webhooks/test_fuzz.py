"""Random form bodies, signed or not, never produce a 500 (hypothesis)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.webhooks.conftest import BASE, MG, PHONE, SENDER, build_world, make_client, sign

NAMES = [
    "MessageSid",
    "From",
    "To",
    "Body",
    "MessagingServiceSid",
    "OptOutType",
    "MessageStatus",
    "ErrorCode",
    "AccountSid",
    "SmsSid",
]
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "STOP",
            "START",
            "HELP",
            "stop texting me",
            PHONE,
            SENDER,
            MG,
            "delivered",
            "sent",
            "undelivered",
            "failed",
            "30007",
            "21610",
            "30034",
            "SM" + "c" * 32,
            "",
            "0",
            "-1",
            "+1",
            "x" * 40,
        ]
    ),
)
FORMS = st.lists(
    st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), VALUES), max_size=8
)
RAW = st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=200))
CONTENT_TYPES = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
    ]
)


@pytest.fixture
def fuzz_client(any_db):
    from dispatcher.clock import FakeClock

    build_world(any_db)
    return make_client(any_db, FakeClock())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/twilio/inbound", "/twilio/status"]),
    form=FORMS,
    signed=st.booleans(),
    raw=RAW,
    content_type=CONTENT_TYPES,
)
def test_random_bodies_never_500(fuzz_client, path, form, signed, raw, content_type):
    from dispatcher.webhooks.forms import Form

    body = raw if raw is not None else urlencode(form).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    if signed:
        headers["X-Twilio-Signature"] = sign(Form(form), BASE + path)
    r = fuzz_client.post(path, content=body, headers=headers)
    assert r.status_code < 500, r.text
    assert r.status_code in (200, 400, 403, 413)
