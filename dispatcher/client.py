"""A small typed client for the notifications HTTP API (httpx).

    from dispatcher.client import DispatcherClient

    with DispatcherClient("https://dispatcher.example.com", token) as api:
        created = api.create_run("QE...", "Acme: your contract expires on [date]. STOP to opt out",
                                 [{"phone": "+14155550100", "variables": {"date": "May 1"}}],
                                 idempotency_key="contracts-2026-05")
        api.get_run(created.run.id).state

Responses are the API's pydantic models (dispatcher.api.models).  A 4xx raises the matching
DispatcherError subclass (InputError with ``.field``, NotFoundError, ConflictError, a refused
launch as ``LaunchRefused`` / ``WarningsNotAccepted`` as ``notify()`` raises them, ...), whose
``.problem`` holds the problem document; ``str(e)`` is its one-line detail.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from dispatcher.api.models import (
    ConsentEventOut,
    ConsentLedger,
    Contact,
    ContactOut,
    Delivery,
    MessageOut,
    RunCreated,
    RunProgress,
    Subscription,
    SubscriptionCreated,
)
from dispatcher.apikeys import AuthenticationError, ScopeError
from dispatcher.errors import (
    ConflictError,
    DispatcherError,
    InputError,
    NotFoundError,
    StorageError,
)
from dispatcher.launch_checks import Issue, LaunchRefused, WarningsNotAccepted
from dispatcher.signing import HEADER as SIGNATURE_HEADER
from dispatcher.signing import TOLERANCE_S, WebhookSignatureError, verify

__all__ = [
    "SIGNATURE_HEADER",
    "ApiError",
    "DispatcherClient",
    "WebhookSignatureError",
    "error_from",
    "phone_path",
    "verify_webhook",
]


class ApiError(DispatcherError):
    """An API answer that maps to no narrower error (5xx, unexpected status)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def error_from(response: httpx.Response) -> DispatcherError:
    """The DispatcherError for a failed response (problem document or not)."""
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    status = response.status_code
    detail = str(doc.get("detail") or response.reason_phrase or f"HTTP {status}")
    field = doc.get("field")
    e: DispatcherError
    if status == 401:
        e = AuthenticationError(detail)
    elif status == 403:
        e = ScopeError(detail, scope=str(field or ""))
    elif status == 404:
        e = NotFoundError("resource", response.request.url.path)
        e.args = (detail,)
    elif status == 409:
        e = ConflictError(detail)
    elif status == 422 and str(doc.get("type", "")).endswith(("launch-refused", "launch-warnings")):
        issues = [_issue(x) for x in doc.get("errors") or [] if isinstance(x, dict)]
        launch = WarningsNotAccepted if doc["type"].endswith("warnings") else LaunchRefused
        e = launch(issues, message=detail)
    elif status in (400, 413, 415, 422):
        e = InputError(detail, field=field)
    elif status == 503:
        e = StorageError(detail)
    else:
        e = ApiError(detail, status=status)
    e.problem = doc
    e.status = status
    return e


def _issue(doc: dict[str, Any]) -> Issue:
    count = doc.get("count")
    return Issue(
        str(doc.get("rule") or "launch_refused"),
        str(doc.get("field") or "template"),
        str(doc.get("message") or ""),
        count if isinstance(count, int) else None,
    )


def verify_webhook(
    body: bytes,
    signature: str | None,
    secret: str,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The event a dispatcher webhook carries, once its signature is checked.

    ``body``: the raw request body as received; ``signature``: its ``Dispatcher-Signature``
    header; ``secret``: the subscription's (whsec_...).  The HMAC is compared in constant time
    and the timestamp must be within ``tolerance_s`` of ``now`` (default: this machine's
    clock), so a captured request cannot be replayed later.  Raises WebhookSignatureError::

        event = verify_webhook(request.body, request.headers["Dispatcher-Signature"], secret)
        if event["type"] == "contact.opted_out": ...  # dedupe by event["id"]
    """
    return verify(
        body,
        signature,
        secret,
        now=time.time() if now is None else now,
        tolerance_s=tolerance_s,
    )


_PUNCTUATION = re.compile(r"[\s().\-/]")


def phone_path(phone: str) -> str:
    """``phone`` as one URL path segment: the punctuation the server ignores anyway (spaces,
    brackets, dots, dashes, slashes) dropped, the rest percent-encoded.  ``"415/555/0130"``
    then reaches its contact rather than another path."""
    return quote(_PUNCTUATION.sub("", phone), safe="")


def _recipient(r: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(r, str):
        return {"phone": r, "variables": {}}
    return {"phone": r["phone"], "variables": dict(r.get("variables") or {})}


class DispatcherClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        """``http``: an httpx.Client to use instead (e.g. Starlette's TestClient in tests)."""
        self._http = http or httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )
        self._http.headers["Authorization"] = f"Bearer {token}"

    # ------------------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DispatcherClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ApiError(f"cannot reach the dispatcher API: {e}", status=0) from e
        if response.status_code >= 400:
            raise error_from(response)
        return None if response.status_code == 204 else response.json()

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The items of every page of a listing, following ``next_cursor`` (one request per
        page, made when the previous page is used up)."""
        query = {k: v for k, v in params.items() if v is not None}
        while True:
            page = self._call("GET", path, params=query)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    @staticmethod
    def _idem(key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": key} if key else {}

    # ---------------------------------------------------------------------------------- runs
    def create_run(
        self,
        campaign: str,
        template: str,
        recipients: Iterable[str | Mapping[str, Any]] | None = None,
        *,
        audience: Mapping[str, Any] | None = None,
        send_at: datetime | None = None,
        idempotency_key: str | None = None,
        force: bool = False,
    ) -> RunCreated:
        """Launch a run for inline ``recipients`` (phones or {"phone", "variables"}) or an
        ``audience`` ({"kind": "all"} / {"kind": "segment", "query": ...}).  ``force`` accepts
        the launch checks' warnings; refusals raise ``LaunchRefused`` (``.rule``, ``.issues``)."""
        body: dict[str, Any] = {"campaign": campaign, "template": template}
        if force:
            body["force"] = True
        if recipients is not None:
            body["recipients"] = [_recipient(r) for r in recipients]
        if audience is not None:
            body["audience"] = dict(audience)
        if send_at is not None:
            body["send_at"] = send_at.isoformat()
        doc = self._call("POST", "/v1/runs", json=body, headers=self._idem(idempotency_key))
        return RunCreated.model_validate(doc)

    def upload_run(
        self,
        campaign: str,
        template: str,
        recipients: Iterable[str | Mapping[str, Any]],
        *,
        send_at: datetime | None = None,
        idempotency_key: str | None = None,
        force: bool = False,
    ) -> RunCreated:
        """Launch a run with a large recipient list, streamed as NDJSON (any iterable, e.g. a
        generator over a database cursor: nothing is collected in memory)."""
        spec: dict[str, Any] = {
            "campaign": campaign,
            "template": template,
            "send_at": send_at.isoformat() if send_at else None,
        }
        if force:
            spec["force"] = True

        def body() -> Iterator[bytes]:
            buf = [json.dumps(spec)]
            for r in recipients:
                buf.append(json.dumps(_recipient(r), ensure_ascii=False))
                if len(buf) >= 1000:
                    yield ("\n".join(buf) + "\n").encode()
                    buf = []
            if buf:
                yield ("\n".join(buf) + "\n").encode()

        headers = {"Content-Type": "application/x-ndjson", **self._idem(idempotency_key)}
        doc = self._call("POST", "/v1/runs:upload", content=body(), headers=headers)
        return RunCreated.model_validate(doc)

    def get_run(self, run_id: int) -> RunProgress:
        return RunProgress.model_validate(self._call("GET", f"/v1/runs/{int(run_id)}"))

    def iter_runs(
        self, *, state: str | None = None, campaign: str | None = None, page_size: int = 20
    ) -> Iterator[RunProgress]:
        """Every run (newest first), optionally in one ``state`` or of one ``campaign``."""
        params = {"state": state, "campaign": campaign, "limit": page_size}
        for doc in self._pages("/v1/runs", params):
            yield RunProgress.model_validate(doc)

    def iter_messages(
        self, run_id: int, *, state: str | None = None, page_size: int = 100
    ) -> Iterator[MessageOut]:
        """Every message of a run with its state (by contact); phones masked unless the key
        has ``contacts:read``."""
        params = {"state": state, "limit": page_size}
        for doc in self._pages(f"/v1/runs/{int(run_id)}/messages", params):
            yield MessageOut.model_validate(doc)

    def pause_run(self, run_id: int, reason: str | None = None) -> RunProgress:
        body = {"reason": reason} if reason else None
        return RunProgress.model_validate(
            self._call("POST", f"/v1/runs/{int(run_id)}:pause", json=body)
        )

    def resume_run(self, run_id: int) -> RunProgress:
        return RunProgress.model_validate(self._call("POST", f"/v1/runs/{int(run_id)}:resume"))

    def cancel_run(self, run_id: int) -> RunProgress:
        return RunProgress.model_validate(self._call("POST", f"/v1/runs/{int(run_id)}:cancel"))

    # ------------------------------------------------------------------------------ contacts
    def get_contact(self, phone: str) -> Contact:
        return Contact.model_validate(self._call("GET", f"/v1/contacts/{phone_path(phone)}"))

    def upsert_contact(
        self,
        phone: str,
        *,
        name: str | None = None,
        time_zone: str | None = None,
        state: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> ContactOut:
        body = {
            k: v
            for k, v in (
                ("name", name),
                ("time_zone", time_zone),
                ("state", state),
                ("attributes", dict(attributes) if attributes else None),
            )
            if v is not None
        }
        return ContactOut.model_validate(
            self._call("PUT", f"/v1/contacts/{phone_path(phone)}", json=body)
        )

    # ------------------------------------------------------------------------------- consent
    def grant_consent(
        self,
        phone: str,
        brand: str,
        *,
        campaign: str | None = None,
        evidence_text: str | None = None,
        evidence_url: str | None = None,
        evidence_ref: str | None = None,
        note: str | None = None,
        source: str = "api",
        consent_type: str = "express",
        occurred_at: datetime | None = None,
    ) -> ConsentEventOut:
        return self._consent(
            "grant",
            phone,
            brand,
            campaign,
            evidence_text,
            evidence_url,
            evidence_ref,
            note,
            source,
            consent_type,
            occurred_at,
        )

    def revoke_consent(
        self,
        phone: str,
        brand: str,
        *,
        campaign: str | None = None,
        evidence_text: str | None = None,
        evidence_url: str | None = None,
        evidence_ref: str | None = None,
        note: str | None = None,
        source: str = "api",
        occurred_at: datetime | None = None,
    ) -> ConsentEventOut:
        return self._consent(
            "revoke",
            phone,
            brand,
            campaign,
            evidence_text,
            evidence_url,
            evidence_ref,
            note,
            source,
            "express",
            occurred_at,
        )

    def _consent(
        self,
        action: str,
        phone: str,
        brand: str,
        campaign: str | None,
        evidence_text: str | None,
        evidence_url: str | None,
        evidence_ref: str | None,
        note: str | None,
        source: str,
        consent_type: str,
        occurred_at: datetime | None,
    ) -> ConsentEventOut:
        body = {
            "phone": phone,
            "brand": brand,
            "campaign": campaign,
            "action": action,
            "source": source,
            "consent_type": consent_type,
            "evidence_text": evidence_text,
            "evidence_url": evidence_url,
            "evidence_ref": evidence_ref,
            "note": note,
            "occurred_at": occurred_at.isoformat() if occurred_at else None,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return ConsentEventOut.model_validate(self._call("POST", "/v1/consent", json=body))

    def consent_ledger(self, phone: str) -> ConsentLedger:
        return ConsentLedger.model_validate(
            self._call("GET", f"/v1/contacts/{phone_path(phone)}/consent")
        )

    # ------------------------------------------------------------------------------ webhooks
    def create_subscription(self, url: str, events: Iterable[str]) -> SubscriptionCreated:
        """Subscribe ``url`` to ``events``; the answer's ``secret`` is shown this once (give it
        to :func:`verify_webhook` in the receiver)."""
        body = {"url": url, "events": list(events)}
        return SubscriptionCreated.model_validate(self._call("POST", "/v1/webhooks", json=body))

    def subscriptions(self) -> list[Subscription]:
        doc = self._call("GET", "/v1/webhooks")
        return [Subscription.model_validate(x) for x in doc["items"]]

    def delete_subscription(self, subscription_id: int) -> None:
        self._call("DELETE", f"/v1/webhooks/{int(subscription_id)}")

    def iter_deliveries(self, subscription_id: int, *, page_size: int = 20) -> Iterator[Delivery]:
        """The delivery log of a subscription, newest event first, each with its attempts."""
        path = f"/v1/webhooks/{int(subscription_id)}/deliveries"
        for doc in self._pages(path, {"limit": page_size}):
            yield Delivery.model_validate(doc)
