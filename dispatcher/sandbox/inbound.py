"""Inbound-message webhooks as Twilio posts them (signed), for demos and tests."""

from __future__ import annotations

import httpx

from dispatcher.compliance.segments import segments
from dispatcher.sandbox import wire
from dispatcher.sandbox.callbacks import signed_callback


def inbound_params(
    account_sid: str,
    from_: str,
    to: str,
    body: str,
    *,
    messaging_service_sid: str | None = None,
    sid: str | None = None,
) -> dict[str, str]:
    """Twilio's inbound-message form fields."""
    sid = sid or wire.new_sid("SM")
    params = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": str(segments(body).count),
        "SmsStatus": "received",
        "ApiVersion": wire.API_VERSION,
    }
    if messaging_service_sid:
        params["MessagingServiceSid"] = messaging_service_sid
    return params


def post_inbound(
    url: str,
    *,
    account_sid: str,
    auth_token: str,
    from_: str,
    to: str,
    body: str,
    messaging_service_sid: str | None = None,
    timeout: float = 10.0,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """POST a signed inbound webhook to ``url`` (e.g. ``http://127.0.0.1:8000/twilio/inbound``).

    Raises ``httpx.HTTPError`` if the product cannot be reached (the CLI turns it into one line).
    """
    params = inbound_params(
        account_sid, from_, to, body, messaging_service_sid=messaging_service_sid
    )
    cb = signed_callback(auth_token, url, params)
    if client is not None:
        return client.post(url, data=cb.params, headers=cb.headers)
    with httpx.Client(timeout=timeout) as c:
        return c.post(url, data=cb.params, headers=cb.headers)
