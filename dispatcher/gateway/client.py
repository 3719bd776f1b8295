"""The product's only way to Twilio: the official ``twilio`` client behind a small typed facade.

Every failure becomes a :class:`~dispatcher.errors.GatewayError`, of the subclass that says how
the pipeline reacts (retryable, rejected, ambiguous; see :mod:`dispatcher.gateway.outcomes`).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from requests.utils import get_environ_proxies
from twilio.base.exceptions import TwilioRestException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import NameResolutionError, NewConnectionError

from dispatcher.errors import GatewayError, InputError
from dispatcher.gateway import outcomes
from dispatcher.gateway.outcomes import SendResult
from dispatcher.logs import mask_phone, scrub
from dispatcher.templates import body_hash

log = logging.getLogger(__name__)


def http_transport(url: str, timeout: float) -> TwilioHttpClient:
    """The official client's transport, with the environment read once.

    requests re-reads proxy and CA-bundle variables from ``os.environ`` on every request
    (``trust_env``): ~8 % of a worker's CPU per send.  The same variables (HTTPS_PROXY,
    NO_PROXY, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) are honoured, as of process start."""
    client = TwilioHttpClient(timeout=timeout, proxy=get_environ_proxies(url) or None)
    if client.session is not None:
        client.session.trust_env = False
        client.session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
    return client


class TwilioGateway:
    """Send and look up messages through ``twilio.rest.Client``.

    ``base_url`` unset talks to Twilio; set (e.g. ``http://127.0.0.1:8765``) it talks to the
    sandbox carrier or any compatible endpoint.  ``http_client`` replaces the transport (e.g.
    :class:`~dispatcher.gateway.transport.AsgiHttpClient` in embedded mode).
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str | None = None,
        *,
        http_client: HttpClient | None = None,
        timeout: float = 10,
    ) -> None:
        if http_client is None:
            http_client = http_transport(base_url or "https://api.twilio.com", timeout)
        elif http_client.timeout is None:
            http_client.timeout = timeout
        env: dict[str, str] | None = {} if base_url else None
        self._client = Client(account_sid, auth_token, http_client=http_client, environment=env)
        if base_url:
            base = base_url.rstrip("/")
            self._client.edge = None
            self._client.region = None
            self._client.api.base_url = base
            self._client.messaging.base_url = base
        self.account_sid = account_sid
        self.timeout = timeout

    @property
    def client(self) -> Client:
        return self._client

    # -- sending --------------------------------------------------------------------------------

    def send(
        self,
        to: str,
        body: str,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        validity_period: int | None = None,
    ) -> SendResult:
        if not from_ and not messaging_service_sid:
            raise InputError("a send needs from_ or messaging_service_sid")
        kwargs: dict[str, Any] = {"to": to, "body": body}
        if messaging_service_sid:
            kwargs["messaging_service_sid"] = messaging_service_sid
        if from_:
            kwargs["from_"] = from_
        if status_callback:
            kwargs["status_callback"] = status_callback
        if validity_period is not None:
            kwargs["validity_period"] = int(validity_period)
        try:
            msg = self._client.messages.create(**kwargs)
        except TwilioRestException as e:
            raise _rest_error(e, "send") from e
        except requests.RequestException as e:
            raise _transport_error(e, "send") from e
        log.debug("sent %s to %s: %s", msg.sid, mask_phone(to), msg.status)
        return _result(msg)

    def cancel(self, sid: str) -> str:
        """Cancel a message still queued/scheduled at the provider; returns the new status."""
        try:
            msg = self._client.messages(sid).update(status="canceled")
        except TwilioRestException as e:
            raise _rest_error(e, "cancel") from e
        except requests.RequestException as e:
            raise _transport_error(e, "cancel") from e
        return str(msg.status)

    def fetch(self, sid: str) -> SendResult:
        try:
            msg = self._client.messages(sid).fetch()
        except TwilioRestException as e:
            raise _rest_error(e, "fetch") from e
        except requests.RequestException as e:
            raise _transport_error(e, "fetch") from e
        return _result(msg)

    # -- resolving ambiguous sends --------------------------------------------------------------

    def find_sent(
        self,
        to: str,
        from_or_service: str,
        since: datetime,
        digest: str,
        *,
        limit: int = 200,
    ) -> SendResult | None:
        """The message sent to ``to`` since ``since`` whose body hashes to ``digest``
        (:func:`body_hash`), if any.

        ``from_or_service`` is a phone number (filters ``From`` at the provider) or a Messaging
        Service SID (``MG...``, filtered here since the list endpoint has no such filter).  Twilio
        matches ``DateSent>`` by day, so ``since`` is also re-checked here (one minute of slack for
        clock skew).  Raises ``GatewayError`` if the provider cannot be asked.
        """
        by_service = from_or_service.startswith("MG")
        kwargs: dict[str, Any] = {
            "to": to,
            "date_sent_after": since,
            "limit": limit,
            "page_size": 50,
        }
        if not by_service:
            kwargs["from_"] = from_or_service
        floor = since.astimezone(UTC) - timedelta(minutes=1)
        try:
            for msg in self._client.messages.stream(**kwargs):
                if by_service and msg.messaging_service_sid != from_or_service:
                    continue
                sent_at = msg.date_sent or msg.date_created
                if sent_at is not None and sent_at < floor:
                    continue
                if msg.body is not None and body_hash(msg.body) == digest:
                    return _result(msg)
        except TwilioRestException as e:
            raise _rest_error(e, "find_sent") from e
        except requests.RequestException as e:
            raise _transport_error(e, "find_sent") from e
        return None

    # -- campaigns ------------------------------------------------------------------------------

    def fetch_campaign(self, service_sid: str, campaign_sid: str) -> dict[str, Any]:
        """The UsAppToPerson resource as Twilio returns it (snake_case JSON object)."""
        uri = f"/Services/{service_sid}/Compliance/Usa2p/{campaign_sid}"
        try:
            payload = self._client.messaging.v1.fetch(
                method="GET", uri=uri, headers={"Accept": "application/json"}
            )
        except TwilioRestException as e:
            raise _rest_error(e, "fetch_campaign") from e
        except requests.RequestException as e:
            raise _transport_error(e, "fetch_campaign") from e
        if not isinstance(payload, dict):
            raise GatewayError("fetch_campaign: provider answered with a non-object")
        return payload

    def close(self) -> None:
        http = self._client.http_client
        close = getattr(http, "close", None)
        if callable(close):
            close()
        session = getattr(http, "session", None)
        if session is not None:
            session.close()


def _result(msg: Any) -> SendResult:
    """A message resource (create, fetch, list) as the carrier's answer, its error code with it."""
    code = _int(msg.error_code)
    return SendResult(
        sid=str(msg.sid),
        status=str(msg.status),
        num_segments=_int(msg.num_segments),
        error_code=code or None,
    )


def _int(v: object) -> int:
    try:
        return int(str(v))
    except (TypeError, ValueError):
        return 0


def _rest_error(e: TwilioRestException, op: str) -> GatewayError:
    code = e.code if isinstance(e.code, int) else None
    outcome = outcomes.classify_code(code, e.status)
    msg = scrub(" ".join(str(e.msg or "").split())) or "error"
    text = f"{op}: Twilio answered HTTP {e.status}" + (f" code {code}" if code else "") + f": {msg}"
    return outcomes.error(outcome, text, code=code, status=e.status)


def classify_transport(e: requests.RequestException) -> outcomes.Outcome:
    """``retryable`` if the request cannot have left (connect refused/timeout, DNS), else
    ``ambiguous`` (read timeout, connection reset or broken answer after sending)."""
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return outcomes.RETRYABLE
    if isinstance(e, requests.exceptions.ReadTimeout):
        return outcomes.AMBIGUOUS
    if isinstance(e, requests.exceptions.ConnectionError):
        reason = e.args[0] if e.args else None
        inner = getattr(reason, "reason", None)
        if isinstance(inner, NewConnectionError | NameResolutionError):
            return outcomes.RETRYABLE
        return outcomes.AMBIGUOUS
    if isinstance(e, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return outcomes.FAILED
    return outcomes.AMBIGUOUS


def _transport_error(e: requests.RequestException, op: str) -> GatewayError:
    outcome = classify_transport(e)
    return outcomes.error(outcome, f"{op}: {type(e).__name__} talking to Twilio ({outcome})")
