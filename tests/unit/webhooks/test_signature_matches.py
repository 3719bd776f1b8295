"""forms.signature_matches answers exactly what RequestValidator.validate answers (it only
skips computing the second URL variant when the first one matches)."""

from __future__ import annotations

import itertools

import pytest
from twilio.request_validator import RequestValidator

from dispatcher.webhooks.forms import Form, signature_matches
from tests.unit.webhooks.conftest import TOKEN

URLS = [
    "https://hooks.example.com/twilio/status",
    "https://hooks.example.com:443/twilio/status",
    "http://127.0.0.1:8000/twilio/status",
    "http://127.0.0.1/twilio/status",
    "http://127.0.0.1:80/twilio/status?tenant=acme&x=1",
    "https://hooks.example.com:8443/twilio/status",
]
FORM = Form(
    [
        ("MessageSid", "SM" + "a" * 32),
        ("MessageStatus", "delivered"),
        ("To", "+14155551234"),
        ("Body", "two"),
        ("Body", "values é"),
    ]
)


@pytest.mark.parametrize("algorithm", ["HMAC_SHA1", "HMAC_SHA256"])
@pytest.mark.parametrize("called,signed", list(itertools.product(URLS, URLS)))
def test_same_answer_as_the_validator(called, signed, algorithm):
    validator = RequestValidator(TOKEN)
    for token in (TOKEN, "another-token"):
        sig = RequestValidator(token).compute_signature(signed, FORM, algorithm)
        for candidate in (sig, sig[:-2] + "xx", "", "é" * len(sig)):
            expected = validator.validate(called, FORM, candidate, algorithm)
            assert signature_matches(TOKEN, called, FORM, candidate, algorithm) is expected


def test_unsupported_algorithm_is_rejected():
    sig = RequestValidator(TOKEN).compute_signature(URLS[0], FORM)
    assert signature_matches(TOKEN, URLS[0], FORM, sig, "HMAC_SHA1")
    assert not signature_matches(TOKEN, URLS[0], FORM, sig, "HMAC_MD5")
