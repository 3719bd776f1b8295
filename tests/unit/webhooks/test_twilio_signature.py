"""dispatcher.signing.twilio_signature: the one place the product computes X-Twilio-Signature
(through twilio's RequestValidator); it must equal what Twilio documents and what the webhook
side accepts."""

from __future__ import annotations

from dispatcher.sandbox.callbacks import signed_callback
from dispatcher.signing import twilio_signature, twilio_validator
from dispatcher.webhooks.forms import Form, signature_matches

# Twilio's published example (webhooks security docs, twilio-python's own test).
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_twilio_published_example() -> None:
    assert twilio_signature("12345", URL, PARAMS) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_sha256_variant_differs_and_is_checked_by_the_webhook_side() -> None:
    sha1 = twilio_signature("12345", URL, PARAMS)
    sha256 = twilio_signature("12345", URL, PARAMS, "HMAC_SHA256")
    assert sha1 != sha256 and len(sha256) == 44
    form = Form(PARAMS.items())
    assert signature_matches("12345", URL, form, sha256, "HMAC_SHA256")
    assert not signature_matches("12345", URL, form, sha1, "HMAC_SHA256")


def test_the_sandbox_signs_what_the_webhooks_accept() -> None:
    cb = signed_callback("tok", URL, dict(PARAMS))
    sig = cb.headers["X-Twilio-Signature"]
    form = Form(PARAMS.items())
    assert signature_matches("tok", URL, form, sig, "HMAC_SHA1")
    assert not signature_matches("other", URL, form, sig, "HMAC_SHA1")
    changed = Form({**PARAMS, "Digits": "9"}.items())
    assert not signature_matches("tok", URL, changed, sig, "HMAC_SHA1")


def test_one_validator_per_token() -> None:
    assert twilio_validator("tok") is twilio_validator("tok")
    assert twilio_validator("tok") is not twilio_validator("other")
