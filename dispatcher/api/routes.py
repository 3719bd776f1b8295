"""The ``/v1`` endpoints.  Each request is one transaction; every write names the key as actor."""

# No "from __future__ import annotations": FastAPI resolves the closures' annotations.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from dispatcher import apikeys, consent, hooks, ledger, run_report, runs
from dispatcher import contacts as contact_svc
from dispatcher.api import reads, upload
from dispatcher.api.models import (
    IDEMPOTENCY_KEY,
    NO_NUL,
    ConsentEventOut,
    ConsentIn,
    ConsentLedger,
    ContactIn,
    ContactOut,
    DeliveryPage,
    MessagePage,
    MessageState,
    PathPhone,
    PauseBody,
    ResumeBody,
    RunCreate,
    RunCreated,
    RunPage,
    RunProgress,
    RunSpec,
    RunState,
    Subscription,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionList,
)
from dispatcher.api.models import Contact as ContactDoc
from dispatcher.api.problems import IdempotencyKeyMismatch, problem, problem_responses
from dispatcher.errors import ConflictError
from dispatcher.launch import Submission, submit_run
from dispatcher.models import ApiKey
from dispatcher.registry import MAX_ID

RunId = Annotated[
    int,
    Path(
        ge=1,
        le=2**31 - 1,
        description="Run id.",
        openapi_examples={"run": {"summary": "A run", "value": 1}},
    ),
]
SubscriptionId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Webhook subscription id.")]
PhonePath = Annotated[
    PathPhone,
    Path(
        description="Phone number (E.164 preferred, e.g. +14155550100): 10 to 15 digits, "
        "at most two of space ( ) . - + between them; percent-encoded.  One that is not a "
        "US number is a 400 `invalid-phone`.",
        openapi_examples={"e164": {"summary": "E.164", "value": "+14155550100"}},
    ),
]
IdemHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY,
        description="Same key + same body returns the same run; same key + another body is 409.",
    ),
]
LAUNCH_CHECKS = (
    "Before anything is written the launch is checked (docs/api.md, Launch checks): an error — "
    "a template that looks like a file name, an unknown `[field]` or one no recipient has, a "
    "message-lint error, a `send_at` in the past — is a 422 `launch-refused` problem whose "
    "`errors` name each rule; warnings (a field some recipients lack, with the count) are a 422 "
    "`launch-warnings` problem unless `force` is true, and are listed in `dry_run.warnings`."
)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")
Cursor = Annotated[
    str | None,
    Query(
        pattern=reads.CURSOR_PATTERN,
        description="`next_cursor` of the previous page (opaque: pass it back as it is).",
    ),
]
LAUNCH_422 = (
    "`validation` (the body breaks the schema), `idempotency-key-mismatch` (the "
    "Idempotency-Key header and the body's `idempotency_key` differ), `launch-refused` or "
    "`launch-warnings` (the launch checks)."
)
#: the campaign and brand the examples of the document name (tests/unit/api/test_openapi.py
#: builds them, so that the fuzzer's examples launch real runs)
EXAMPLE_CAMPAIGN = "QE2c6890da8086d771620e9b13fadeba0b"
EXAMPLE_BRAND = "Acme Corporation"
EXAMPLE_TEMPLATE = "Acme: your contract expires on [date]. Reply STOP to opt out"
EXAMPLES: dict[str, dict[str, Any]] = {
    "runs": {
        "recipients": {
            "summary": "Inline recipients with their [field] values",
            "value": {
                "campaign": EXAMPLE_CAMPAIGN,
                "template": EXAMPLE_TEMPLATE,
                "recipients": [
                    {"phone": "+14155550100", "variables": {"date": "May 1"}},
                    {"phone": "(415) 555-0101", "variables": {"date": "May 2"}},
                ],
                "idempotency_key": "contracts-2026-05",
            },
        },
        "segment": {
            "summary": "Stored contacts of a segment",
            "value": {
                "campaign": EXAMPLE_CAMPAIGN,
                "template": "Acme: your plan renews next week. Reply STOP to opt out",
                "audience": {"kind": "segment", "query": "plan=gold"},
            },
        },
    },
    "upload": {
        "lines": {
            "summary": "A run spec, then one recipient per line",
            "value": [
                {"campaign": EXAMPLE_CAMPAIGN, "template": EXAMPLE_TEMPLATE},
                {"phone": "+14155550100", "variables": {"date": "May 1"}},
                {"phone": "+14155550101", "variables": {"date": "May 2"}},
            ],
        }
    },
    "contact": {
        "contact": {
            "summary": "Name, zone, state and attributes",
            "value": {
                "name": "Ann Lee",
                "time_zone": "America/Chicago",
                "state": "IL",
                "attributes": {"plan": "gold", "date": "May 1"},
            },
        }
    },
    "consent": {
        "grant": {
            "summary": "A grant with its evidence",
            "value": {
                "phone": "+14155550100",
                "brand": EXAMPLE_BRAND,
                "campaign": EXAMPLE_CAMPAIGN,
                "action": "grant",
                "source": "web_form",
                "evidence_url": "https://acme.example/sms-terms",
                "evidence_text": "Ticked 'Text me about my contract' on the signup form",
            },
        },
        "revoke": {
            "summary": "A revocation for the whole brand",
            "value": {"phone": "+14155550100", "brand": EXAMPLE_BRAND, "action": "revoke"},
        },
    },
    "subscription": {
        "runs": {
            "summary": "Runs this key launched",
            "value": {
                "url": "https://producer.example/dispatcher-events",
                "events": ["run.finished", "run.paused"],
            },
        }
    },
}
PHONE_400 = "`invalid-phone`: the number is not a US number (the numbering plan says so)."


class _Segment(Convertor[str]):
    """A path segment with no colon: ``/v1/runs/{run_id:segment}`` leaves ``1:cancel`` to the
    ``:cancel`` route, so a GET there is a 405 naming POST (not a 422 about ``run_id``)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="API key from `dispatcher api-key create` (dsk_...).",
)


def build_router(runtime: Any) -> APIRouter:
    """All ``/v1`` routes over ``runtime`` (anything with ``.db``, ``.clock``, ``.settings`` and
    ``.halts``), added resource by resource."""
    register_url_convertor("segment", _Segment())
    router = APIRouter(generate_unique_id_function=lambda route: route.name)
    scope = _scope_dependency(runtime)
    for add_routes in (
        _run_collection_routes,
        _run_routes,
        _contact_routes,
        _consent_routes,
        _webhook_routes,
    ):
        add_routes(router, runtime, scope)
    return router


Scope = Callable[[str], Callable[..., ApiKey]]


def _scope_dependency(runtime: Any) -> Scope:
    """``scope(name)``: the dependency that answers the request's API key (authenticated
    against ``runtime.db``) if it has scope ``name``: 401 / 403 otherwise."""

    def authenticate(
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        with runtime.db.session() as s:
            return apikeys.verify(s, cred.credentials if cred else None)

    def scope(name: str) -> Callable[..., ApiKey]:
        def dependency(key: Annotated[ApiKey, Depends(authenticate)]) -> ApiKey:
            apikeys.require_scope(key, name)
            return key

        dependency.__name__ = f"scope_{name.replace(':', '_')}"
        return dependency

    return scope


def errors(*codes: int, **notes: str) -> dict[int | str, dict[str, Any]]:
    """401, 403, 422 and ``codes``; ``notes``: ``s400="..."`` describes a status."""
    described = {int(k[1:]): v for k, v in notes.items()}
    return problem_responses(401, 403, 422, *codes, notes=described)


def _run_collection_routes(router: APIRouter, runtime: Any, scope: Scope) -> None:
    """``/v1/runs``: list the runs, launch one (JSON body or streamed NDJSON upload)."""

    @router.get(
        "/v1/runs",
        tags=["runs"],
        response_model=RunPage,
        summary="List runs",
        description="Scope `runs:read`.  Newest first, each as `GET /v1/runs/{run_id}` shows "
        "it; filter by `state` and `campaign` (SID or id: 404 when there is no such campaign); "
        "page with `cursor`.",
        responses=errors(404),
    )
    def list_runs(
        key: Annotated[ApiKey, Depends(scope("runs:read"))],
        state: Annotated[RunState | None, Query(description="Only runs in this state.")] = None,
        campaign: Annotated[
            str | None,
            Query(min_length=1, max_length=255, pattern=NO_NUL, description="Campaign SID or id."),
        ] = None,
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=50, description="Runs per page.")] = 20,
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            return reads.run_page(
                s,
                grace_s=runtime.settings.throttle_grace_s,
                now=runtime.clock.now(),
                state=state,
                campaign=campaign,
                cursor=cursor,
                limit=limit,
            )

    @router.post(
        "/v1/runs",
        tags=["runs"],
        status_code=201,
        response_model=RunCreated,
        summary="Launch a run (idempotent)",
        description="Scope `runs:write`.  201 with the new run and its dry-run figures; 200 with "
        "the same run when the idempotency key was already used with the same body.  "
        + LAUNCH_CHECKS,
        responses={
            200: {"model": RunCreated, "description": "Replay of an earlier request"},
            **errors(404, 409, s422=LAUNCH_422),
        },
    )
    def create_run(
        body: Annotated[RunCreate, Body(openapi_examples=EXAMPLES["runs"])],
        response: Response,
        key: Annotated[ApiKey, Depends(scope("runs:write"))],
        idempotency_key: IdemHeader = None,
    ) -> RunCreated:
        req = runs.LaunchRequest(
            campaign=body.campaign,
            template=body.template,
            audience=(
                body.audience.model_dump(exclude_none=True) if body.audience else {"kind": "list"}
            ),
            send_at=body.send_at,
            actor=apikeys.actor_of(key),
            idempotency_key=_namespaced(key, idempotency_key, body.idempotency_key),
            recipients=(
                [r.model_dump() for r in body.recipients] if body.recipients is not None else None
            ),
            force=body.force,
        )
        sub = _submit(lambda: submit_run(runtime.db, req, now=runtime.clock.now()), req)
        response.status_code = 201 if sub.created else 200
        return _created(sub, None)

    @router.post(
        "/v1/runs:upload",
        tags=["runs"],
        status_code=201,
        response_model=RunCreated,
        summary="Launch a run with a streamed NDJSON recipient list",
        description="Scope `runs:write`.  Body `application/x-ndjson`: line 1 is the run spec "
        "(campaign, template, send_at, idempotency_key), every further line one recipient "
        '`{"phone": ..., "variables": {...}}`.  Streamed to disk, never held in memory; '
        "rejected lines are listed in `upload.rejects` and do not fail the upload.  "
        + LAUNCH_CHECKS,
        responses={
            200: {"model": RunCreated, "description": "Replay of an earlier upload"},
            **errors(
                400,
                404,
                409,
                413,
                415,
                s400="`invalid-input`: the body is empty, or its first line is longer than 64 KiB.",
                s422=LAUNCH_422,
            ),
        },
        openapi_extra={"requestBody": _upload_body()},
    )
    async def upload_run(
        request: Request,
        response: Response,
        key: Annotated[ApiKey, Depends(scope("runs:write"))],
        idempotency_key: IdemHeader = None,
    ) -> Any:
        return await _upload_run(runtime, request, response, key, idempotency_key)


def _run_routes(router: APIRouter, runtime: Any, scope: Scope) -> None:
    """``/v1/runs/{run_id}``: a run's progress and messages; pause, resume, cancel."""

    @router.get(
        "/v1/runs/{run_id:segment}",
        tags=["runs"],
        response_model=RunProgress,
        summary="Progress of a run",
        description="Scope `runs:read`.  Rows by state (docs/operating.md), reasons, the "
        "schedule (when the rows still to send go: the finish, sends per hour), pause reason.",
        responses=errors(404),
    )
    def get_run(
        run_id: RunId, key: Annotated[ApiKey, Depends(scope("runs:read"))]
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            return run_report.progress(
                s, run_id, runtime.clock.now(), grace_s=runtime.settings.throttle_grace_s
            )

    @router.get(
        "/v1/runs/{run_id:segment}/messages",
        tags=["runs"],
        response_model=MessagePage,
        summary="The messages of a run, with their states",
        description="Scope `runs:read`.  One item per recipient, by contact id; filter by "
        "`state`, page with `cursor`.  Phone numbers are masked (`+1415555****`) unless the key "
        "also has `contacts:read`.",
        responses=errors(404),
    )
    def list_messages(
        run_id: RunId,
        key: Annotated[ApiKey, Depends(scope("runs:read"))],
        state: Annotated[
            MessageState | None, Query(description="Only messages in this state.")
        ] = None,
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Messages per page.")] = 100,
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            return reads.message_page(
                s,
                run_id,
                state=state,
                cursor=cursor,
                limit=limit,
                full_phones="contacts:read" in (key.scopes or []),
            )

    def controlled(run_id: int, change: Callable[[Any, Any], object]) -> dict[str, Any]:
        now = runtime.clock.now()
        with runtime.db.session() as s:
            change(s, now)
            s.flush()
            return run_report.progress(s, run_id, now, grace_s=runtime.settings.throttle_grace_s)

    def pause_run(
        run_id: RunId,
        key: Annotated[ApiKey, Depends(scope("runs:write"))],
        body: Annotated[PauseBody | None, Body()] = None,
    ) -> dict[str, Any]:
        why = body.reason if body and body.reason else None
        reason = f"paused by {apikeys.actor_of(key)}" + (f": {why}" if why else "")
        return controlled(
            run_id, lambda s, now: runs.pause_run(s, run_id, reason, now, halts=runtime.halts)
        )

    def resume_run(
        run_id: RunId,
        key: Annotated[ApiKey, Depends(scope("runs:write"))],
        body: Annotated[ResumeBody | None, Body()] = None,
    ) -> dict[str, Any]:
        why = body.acknowledge if body else None
        doc = controlled(
            run_id,
            lambda s, now: runs.resume_run(
                s, run_id, now, actor=apikeys.actor_of(key), acknowledge=why
            ),
        )
        metrics = getattr(runtime, "metrics", None)
        if metrics is not None:
            metrics.guard_event(doc["campaign"] or "unknown", "acknowledge" if why else "resume")
        return doc

    # cancel takes no body (one sent is not read)

    def cancel_run(
        run_id: RunId, key: Annotated[ApiKey, Depends(scope("runs:write"))]
    ) -> dict[str, Any]:
        return controlled(
            run_id, lambda s, now: runs.cancel_run(s, run_id, now, halts=runtime.halts)
        )

    for action, handler, doc in (
        ("pause", pause_run, "Pause an active run (idempotent); `reason` is recorded."),
        ("resume", resume_run, "Resume a paused run."),
        ("cancel", cancel_run, "Cancel a run: every row not yet handed over is cancelled."),
    ):
        router.add_api_route(
            f"/v1/runs/{{run_id:segment}}:{action}",
            handler,
            methods=["POST"],
            tags=["runs"],
            response_model=RunProgress,
            summary=f"{action.capitalize()} a run",
            description=f"Scope `runs:write`.  {doc}",
            responses=errors(404, 409),
        )


def _contact_routes(router: APIRouter, runtime: Any, scope: Scope) -> None:
    """``/v1/contacts/{phone}``: read, create or update a contact."""

    @router.get(
        "/v1/contacts/{phone}",
        tags=["contacts"],
        response_model=ContactDoc,
        summary="A contact",
        description="Scope `contacts:read`.  404 when there is no contact with that number.",
        responses=errors(400, 404, s400=PHONE_400),
    )
    def get_contact(
        phone: PhonePath, key: Annotated[ApiKey, Depends(scope("contacts:read"))]
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            return reads.contact_doc(s, phone)

    @router.put(
        "/v1/contacts/{phone}",
        tags=["contacts"],
        response_model=ContactOut,
        summary="Create or update a contact",
        description="Scope `contacts:write`.  Attributes are merged into the stored ones.  "
        "201 when created, 200 when updated.",
        responses={
            201: {"model": ContactOut, "description": "Created"},
            **errors(
                400,
                s400=PHONE_400[:-1] + "; `unknown-time-zone`: the time zone "
                "database has no such zone.",
            ),
        },
    )
    def put_contact(
        phone: PhonePath,
        body: Annotated[ContactIn, Body(openapi_examples=EXAMPLES["contact"])],
        response: Response,
        key: Annotated[ApiKey, Depends(scope("contacts:write"))],
    ) -> ContactOut:
        with runtime.db.session() as s:
            c, created = contact_svc.upsert_contact(
                s,
                phone,
                name=body.name,
                time_zone=body.time_zone,
                state_code=body.state.upper() if body.state else None,
                attributes=body.attributes,
            )
            response.status_code = 201 if created else 200
            return ContactOut(**contact_svc.contact_dict(c), created=created)


def _consent_routes(router: APIRouter, runtime: Any, scope: Scope) -> None:
    """``/v1/consent``: record a grant or revocation; a contact's consent ledger."""

    @router.post(
        "/v1/consent",
        tags=["consent"],
        status_code=201,
        response_model=ConsentEventOut,
        summary="Record a consent grant or revocation",
        description="Scope `consent:write`.  Appends to the ledger with the key as actor "
        "(`api:<key name>`); a grant needs evidence.  404 when the brand, or the campaign "
        "within the brand, does not exist.",
        responses=errors(400, 404, s400=PHONE_400),
    )
    def post_consent(
        body: Annotated[ConsentIn, Body(openapi_examples=EXAMPLES["consent"])],
        key: Annotated[ApiKey, Depends(scope("consent:write"))],
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            to = consent.target(s, body.brand, body.campaign)
            contact, _ = contact_svc.upsert_contact(s, body.phone)
            evidence = consent.Evidence(
                body.evidence_text, body.evidence_url, body.evidence_ref, body.note
            )
            got = consent.record(
                s,
                body.action,
                contact,
                to.scope,
                body.source,
                evidence,
                actor=apikeys.actor_of(key),
                halts=runtime.halts,
                consent_type=body.consent_type,
                occurred_at=body.occurred_at,
            )
            doc = {
                **got.event.as_dict(),
                "phone": contact.phone,
                "brand": to.brand.name,
                "campaign_sid": to.campaign.sid if to.campaign else None,
            }
        metrics = getattr(runtime, "metrics", None)
        if metrics is not None:  # committed: the revocation's suppressions count (issue 20)
            for sid, n in got.suppressed.items():
                metrics.suppressed(sid, "opted_out", n)
        return doc

    @router.get(
        "/v1/contacts/{phone}/consent",
        tags=["consent"],
        response_model=ConsentLedger,
        summary="The consent ledger of one contact",
        description="Scope `consent:read`.  Every event with its evidence, oldest first.",
        responses=errors(400, 404, s400=PHONE_400),
    )
    def get_consent(
        phone: PhonePath, key: Annotated[ApiKey, Depends(scope("consent:read"))]
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            contact = contact_svc.get_contact(s, phone)
            return {
                "phone": contact.phone,
                "events": list(ledger.export_rows(s, phone=contact.phone)),
            }


def _webhook_routes(router: APIRouter, runtime: Any, scope: Scope) -> None:
    """``/v1/webhooks``: producers' event subscriptions and their delivery logs."""

    @router.post(
        "/v1/webhooks",
        tags=["webhooks"],
        status_code=201,
        response_model=SubscriptionCreated,
        summary="Subscribe to events",
        description="Scope `webhooks:write` (and `contacts:read` for `contact.opted_out`).  "
        "The answer holds the signing `secret`, shown this once.  409 when the key already has "
        f"{hooks.MAX_SUBSCRIPTIONS} subscriptions.  See docs/api.md, Webhooks.",
        responses=errors(409),
    )
    def create_subscription(
        body: Annotated[SubscriptionIn, Body(openapi_examples=EXAMPLES["subscription"])],
        key: Annotated[ApiKey, Depends(scope("webhooks:write"))],
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            sub, secret = hooks.create_subscription(
                s, key, body.url, body.events, now=runtime.clock.now()
            )
            return {**hooks.subscription_dict(sub), "secret": secret}

    @router.get(
        "/v1/webhooks",
        tags=["webhooks"],
        response_model=SubscriptionList,
        summary="This key's subscriptions",
        description="Scope `webhooks:read`.  Secrets are never shown again.",
        responses=errors(),
    )
    def list_subscriptions(
        key: Annotated[ApiKey, Depends(scope("webhooks:read"))],
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            return {"items": [hooks.subscription_dict(x) for x in hooks.subscriptions(s, key)]}

    @router.get(
        "/v1/webhooks/{subscription_id:segment}",
        tags=["webhooks"],
        response_model=Subscription,
        summary="A subscription",
        description="Scope `webhooks:read`.  404 for another key's or a deleted one.",
        responses=errors(404),
    )
    def get_subscription(
        subscription_id: SubscriptionId, key: Annotated[ApiKey, Depends(scope("webhooks:read"))]
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            return hooks.subscription_dict(hooks.get_subscription(s, key, subscription_id))

    @router.delete(
        "/v1/webhooks/{subscription_id:segment}",
        tags=["webhooks"],
        status_code=204,
        response_class=Response,
        summary="Delete a subscription",
        description="Scope `webhooks:write`.  Its pending events are cancelled; nothing more "
        "is sent to it.",
        responses=errors(404),
    )
    def delete_subscription(
        subscription_id: SubscriptionId, key: Annotated[ApiKey, Depends(scope("webhooks:write"))]
    ) -> Response:
        with runtime.db.session() as s:
            hooks.delete_subscription(s, key, subscription_id, now=runtime.clock.now())
        return Response(status_code=204)

    @router.get(
        "/v1/webhooks/{subscription_id:segment}/deliveries",
        tags=["webhooks"],
        response_model=DeliveryPage,
        summary="The delivery log of a subscription",
        description="Scope `webhooks:read`.  Its events newest first, each with its state and "
        "every attempt (time, status, error, duration); page with `cursor`.",
        responses=errors(404),
    )
    def list_deliveries(
        subscription_id: SubscriptionId,
        key: Annotated[ApiKey, Depends(scope("webhooks:read"))],
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=100, description="Events per page.")] = 20,
    ) -> dict[str, Any]:
        with runtime.db.session() as s:
            return hooks.delivery_page(
                s, key, subscription_id, cursor=reads.cursor_key(cursor, MAX_ID), limit=limit
            )


async def _upload_run(
    runtime: Any, request: Request, response: Response, key: ApiKey, idempotency_key: str | None
) -> Any:
    """``POST /v1/runs:upload``: spool the NDJSON body, validate its first line as the run
    spec, launch (in a thread) and answer the run with the upload's report."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in NDJSON_TYPES:
        return problem(
            415,
            "unsupported-media-type",
            "send the recipients as application/x-ndjson",
            field="content-type",
        )
    try:
        spec_line, recipients, report = await upload.spool(request.stream())
    except upload.UploadTooLarge as e:
        return problem(413, "too-large", str(e), field=e.field)
    try:
        try:
            spec = RunSpec.model_validate_json(spec_line)
        except ValidationError as e:
            raise RequestValidationError(
                [
                    {**err, "loc": ("body", "spec", *err.get("loc", ()))}
                    for err in e.errors(include_url=False, include_context=False)
                ]
            ) from None
        req = upload.UploadRequest(
            campaign=spec.campaign,
            template=spec.template,
            audience={"kind": "list", "upload_sha256": report.sha256},
            send_at=spec.send_at,
            actor=apikeys.actor_of(key),
            idempotency_key=_namespaced(key, idempotency_key, spec.idempotency_key),
            recipients=recipients,  # type: ignore[arg-type]  # re-iterable spool
            force=spec.force,
        )
        now = runtime.clock.now()
        sample = upload.DRY_RUN_SAMPLE if report.accepted > upload.DRY_RUN_SAMPLE else None
        sub = await run_in_threadpool(
            _submit, lambda: submit_run(runtime.db, req, now=now, sample_limit=sample), req
        )
    finally:
        recipients.discard()
    response.status_code = 201 if sub.created else 200
    return _created(sub, {**report.as_dict(), "dry_run_sample": sample})


def _upload_body() -> dict[str, Any]:
    """The NDJSON body in the document: the sequence of its lines as an array (a client or a
    fuzzer writes item *i* as line *i*): a run spec, then anything (each further line is a
    recipient, or a reject listed in ``upload.rejects``: never a refused upload)."""
    lines = {
        "type": "array",
        "description": "NDJSON: one JSON value per line, written as the items of this array.  "
        'Line 1 is the run spec; every further line a recipient `{"phone": ..., '
        '"variables": {...}}` (see Recipient); a line that is not one is listed in '
        "`upload.rejects` and does not fail the upload.",
        "prefixItems": [RunSpec.model_json_schema()],
        "items": {"description": "A Recipient (or a line reported in upload.rejects)."},
        "minItems": 1,
        "maxItems": upload.MAX_ROWS + 1,
    }
    return {
        "required": True,
        "content": {t: {"schema": lines, "examples": EXAMPLES["upload"]} for t in NDJSON_TYPES},
    }


def _namespaced(key: ApiKey, header: str | None, body: str | None) -> str | None:
    """Idempotency keys are per API key: two systems cannot collide or read each other's run."""
    if header and body and header != body:
        raise IdempotencyKeyMismatch()
    k = header or body
    return f"api:{key.name}:{k}" if k else None


def _submit(launch: Callable[[], Submission], req: runs.LaunchRequest) -> Submission:
    """``launch()``; its idempotency conflict names the key as the client sent it (the stored
    one carries the API key's namespace, which is none of the client's business)."""
    try:
        return launch()
    except ConflictError:
        key = (req.idempotency_key or "").split(":", 2)[-1]
        raise ConflictError(f"idempotency key {key!r} was used with a different request") from None


def _created(sub: Submission, report: dict[str, Any] | None) -> RunCreated:
    run = dict(sub.run)
    k = run.get("idempotency_key")
    if k and k.startswith("api:"):
        run["idempotency_key"] = k.split(":", 2)[2]
    return RunCreated.model_validate(
        {"run": run, "dry_run": sub.dry_run, "replayed": not sub.created, "upload": report}
    )
