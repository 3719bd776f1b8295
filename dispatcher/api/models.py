"""Request and response models of the HTTP API (pydantic; the OpenAPI document comes from them).

Shared by the server (dispatcher.api) and the Python client (dispatcher.client).  Requests forbid
unknown fields, so a misspelt field is a 422 naming it rather than a silently ignored value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    Strict,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from dispatcher import ledger, outbox
from dispatcher.audience import SEGMENT_PATTERN
from dispatcher.contacts import TIME_ZONE_PATTERN
from dispatcher.hooks import URL_PATTERN
from dispatcher.phones import PATH_PHONE_PATTERN, PHONE_PATTERN
from dispatcher.templates import MAX_TEMPLATE, TEMPLATE_PATTERN

MAX_INLINE_RECIPIENTS = 10_000
IDEMPOTENCY_KEY = r"^[A-Za-z0-9._:~-]{1,64}$"
_FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$"
#: what every request string without a pattern of its own is held to (PostgreSQL text cannot
#: hold NUL); the pattern says so in the OpenAPI document, ``_In._text_ok`` enforces it
NO_NUL = "^[^\\x00]*$"


class Schema:
    """Keywords added to a field's JSON schema (``Annotated[str, Schema(pattern=...)]``) where
    a validator of ours enforces the rule with a message better than the regex (the document
    says the rule; the validator says what is wrong)."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(core_schema), **self.keywords}


_compiled = functools.cache(re.compile)


def _matching(pattern: str, message: str) -> Callable[[str], str]:
    """A validator holding a string to ``pattern`` (compiled on first use)."""

    def check(value: str) -> str:
        if _compiled(pattern).fullmatch(value) is None:
            raise ValueError(message)
        return value

    return check


def _template(value: str) -> str:
    """The template's own error first (parse_template says where), then the documented
    pattern, which it always agrees with (tests/unit/test_templates.py)."""
    from dispatcher.errors import InputError
    from dispatcher.templates import parse_template

    _no_nul(value)
    try:
        parse_template(value)
    except InputError as e:
        raise ValueError(str(e)) from None
    return _matching(TEMPLATE_PATTERN, "not a template")(value)


_PHONE_RULE = "a phone number is 10 to 15 digits, with at most two of ( ) . - / + or space between"
#: 10 to 15 digits (a few spaces, brackets, dots, dashes, slashes, plus signs around them);
#: whether the number exists is the numbering plan's answer: 400 ``invalid-phone``
ApiPhone = Annotated[
    str,
    StringConstraints(max_length=32),
    AfterValidator(_matching(PHONE_PATTERN, _PHONE_RULE)),
    Schema(pattern=PHONE_PATTERN),
]
PathPhone = Annotated[
    str,
    StringConstraints(max_length=32),
    AfterValidator(_matching(PATH_PHONE_PATTERN, _PHONE_RULE.replace(" /", "") + " (no slash)")),
    Schema(pattern=PATH_PHONE_PATTERN),
]
Template = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TEMPLATE),
    AfterValidator(_template),
    Schema(pattern=TEMPLATE_PATTERN),
]
SegmentQuery = Annotated[
    str,
    StringConstraints(max_length=1000),
    AfterValidator(_matching(SEGMENT_PATTERN, "a segment is key=value terms joined by commas")),
    Schema(pattern=SEGMENT_PATTERN),
]
TimeZoneName = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_matching(TIME_ZONE_PATTERN, "a time zone is an IANA name: America/Chicago")),
    Schema(pattern=TIME_ZONE_PATTERN),
]
#: strict: a string too long for the first member must not become an int by the second
Scalar = (
    Annotated[str, Strict(), StringConstraints(max_length=2000)]
    | StrictInt
    | Annotated[float, Strict(), Field(allow_inf_nan=False)]
    | StrictBool
    | None
)


def _text_only(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("a time is an ISO 8601 string with an offset, e.g. 2026-05-01T09:00:00Z")
    return value


#: a time as the document says (a string, format date-time), not also a number of seconds
Timestamp = Annotated[AwareDatetime, BeforeValidator(_text_only)]
VarName = Annotated[str, StringConstraints(pattern=_FIELD_NAME)]
#: names outside the pattern are refused (422), not ignored: the document says so
Variables = Annotated[dict[VarName, Scalar], Schema(additionalProperties=False)]
Phone = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Text = Annotated[str, StringConstraints(min_length=1)]
Source = Literal[
    "web_form",
    "keyword",
    "import",
    "operator",
    "api",
    "carrier",
    "paper",
    "ivr",
    "email",
    "natural_language",
]
assert set(Source.__args__) == set(ledger.SOURCES)  # type: ignore[attr-defined]
RunState = Literal["scheduled", "fanning_out", "running", "paused", "completed", "cancelled"]
MessageState = Literal[
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "unknown",
    "suppressed",
    "cancelled",
]
assert set(MessageState.__args__) == set(outbox.STATES)  # type: ignore[attr-defined]
#: the cursor of the next page of a listing
NextCursor = Annotated[
    str | None, Field(description="Pass as `cursor` for the next page; null on the last one.")
]


def _no_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL: refuse it at the edge, where the field is known."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k)
            _no_nul(v)
    elif isinstance(value, list):
        for v in value:
            _no_nul(v)
    return value


def _document_no_nul(schema: dict[str, Any]) -> None:
    """Every string of a request model's schema without a pattern gets :data:`NO_NUL` (the
    patterns of our own exclude NUL already); nested models have their own schema."""
    own = {"pattern", "enum", "const", "format"} & set(schema)
    if schema.get("type") == "string" and not own:
        schema["pattern"] = NO_NUL
    for key in ("properties", "patternProperties"):
        for sub in (schema.get(key) or {}).values():
            _document_no_nul(sub)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in schema.get(key) or []:
            _document_no_nul(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _document_no_nul(schema[key])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_no_nul)

    @field_validator("*", mode="after")
    @classmethod
    def _text_ok(cls, v: Any) -> Any:
        return _no_nul(v)


# ------------------------------------------------------------------------------------- runs
class Recipient(_In):
    phone: Phone = Field(
        description="Phone number; normalised to E.164 (US default region).  One that is not a "
        "US number does not fail the launch: it is counted in `run.audience.rejected`."
    )
    variables: Variables = Field(
        default_factory=dict, description="Template values for this recipient ([field] names)."
    )


class AudienceAll(_In):
    kind: Literal["all"] = Field(
        description="Every contact (the gates suppress those without consent, with a reason)."
    )
    query: None = Field(default=None, description="Not used with kind 'all'.")


class AudienceSegment(_In):
    kind: Literal["segment"] = Field(
        description="Contacts whose attributes (or state, time_zone, name) equal the values."
    )
    query: SegmentQuery = Field(description="Segment terms, e.g. 'plan=gold,state=FL'.")


AudienceRef = Annotated[AudienceAll | AudienceSegment, Field(discriminator="kind")]


class RunSpec(_In):
    """What a run sends, without its recipients (the first line of an NDJSON upload)."""

    campaign: Short = Field(description="Campaign SID (QE...) or numeric id.")
    template: Template = Field(
        description="Message template with [field] placeholders ([[ and ]] for literal "
        "brackets); not blank."
    )
    send_at: Timestamp | None = Field(
        default=None, description="When to start (ISO 8601 with offset); default now."
    )
    idempotency_key: Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY)] | None = Field(
        default=None,
        description="Same as the Idempotency-Key header (either, or both equal: a different "
        "value is a 422 `idempotency-key-mismatch`).",
    )
    force: StrictBool = Field(
        default=False,
        description="Accept the launch checks' warnings (a field some recipients lack); "
        "errors are never accepted.  Not part of the idempotency fingerprint.",
    )


def _exactly_one_audience(schema: dict[str, Any]) -> None:
    _document_no_nul(schema)
    schema["oneOf"] = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in ("recipients", "audience")
    ]


class RunCreate(RunSpec):
    """A run: recipients inline, or a reference to contacts already stored (exactly one)."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_audience)

    recipients: (
        Annotated[list[Recipient], Field(min_length=1, max_length=MAX_INLINE_RECIPIENTS)] | None
    ) = None
    audience: AudienceRef | None = None

    @model_validator(mode="after")
    def _one_audience(self) -> RunCreate:
        if (self.recipients is None) == (self.audience is None):
            raise ValueError("give exactly one of 'recipients' or 'audience'")
        return self


class RunOut(BaseModel):
    id: int
    campaign: str | None
    campaign_id: int
    state: str
    send_at: datetime
    total: int
    actor: str
    pause_reason: str | None
    audience: dict[str, Any]
    idempotency_key: str | None
    created_at: datetime


class LaunchIssue(BaseModel):
    """A finding of the launch checks (docs/api.md, Launch checks)."""

    rule: str = Field(description="Stable rule id, e.g. unknown_field, url_shortener.")
    field: str = Field(description="The input at fault: template or send_at.")
    message: str
    count: int | None = Field(default=None, description="Recipients concerned, when it applies.")


class ScheduleHour(BaseModel):
    hour: datetime = Field(description="Start of a UTC hour.")
    sends: int


class ScheduleWindow(BaseModel):
    window: str = Field(
        description="Recipients' quiet-hour window: zones and local hours, e.g. "
        "'America/New_York 08:00-20:00' (a Florida number), 'unknown zone (all 9 US zones) ...'."
    )
    unknown_zone: bool
    open_at_start: bool = Field(description="False: its rows wait for the window to open.")
    rows: int
    first: datetime | None
    last: datetime | None
    never: int = Field(description="Rows whose window never opens (an impossible policy).")


class Schedule(BaseModel):
    """The schedule model (docs/operating.md): when the rows still to send go."""

    start: datetime
    first_send: datetime | None
    finish: datetime | None = Field(description="When the last row goes.")
    seconds: int = Field(description="From start to finish.")
    rows: int = Field(description="Rows still to send that the model placed.")
    never: int
    slots_given_back: int = Field(
        description="Throttle slots that fall in their recipients' quiet hours (the rows go "
        "when the window opens)."
    )
    hours: list[ScheduleHour] = Field(description="Sends per UTC hour.")
    windows: list[ScheduleWindow]


class DryRunOut(BaseModel):
    campaign: str
    campaign_status: str | None
    audience: int
    rejected: dict[str, int]
    would_send: int
    deferred: dict[str, int]
    suppressed: dict[str, int]
    blocked_by_campaign: str | None
    first_message: str | None
    encoding: str | None
    segments: int | None
    limits: str
    estimated_seconds: int
    estimated_finish: datetime
    warnings: list[LaunchIssue] = Field(
        default_factory=list,
        description="Launch-check warnings this launch accepted with force (empty on a replay).",
    )
    schedule: Schedule


class RejectedRow(BaseModel):
    line: int
    reason: str
    detail: str


class UploadReport(BaseModel):
    rows: int = Field(description="Recipient lines read (the spec line and blank lines excluded).")
    accepted: int
    rejected: int
    reasons: dict[str, int]
    rejects: list[RejectedRow] = Field(description="The first rejected rows, with line numbers.")
    rejects_truncated: bool
    sha256: str = Field(description="Digest of the accepted recipients (part of idempotency).")
    dry_run_sample: int | None = Field(
        default=None,
        description="When set, the dry-run figures cover only the first this many "
        "recipients of the upload (large uploads); the run itself has every accepted one.",
    )


class RunCreated(BaseModel):
    run: RunOut
    dry_run: DryRunOut
    replayed: bool = Field(description="True when the idempotency key returned an existing run.")
    upload: UploadReport | None = None


class GuardEventOut(BaseModel):
    at: datetime
    kind: Literal["pause", "resume", "acknowledge"] = Field(
        description="`pause`: the reputation guard paused the run; `resume`: someone resumed it; "
        "`acknowledge`: someone resumed it with a reason, and the guard judges only sends after."
    )
    actor: str = Field(description="`reputation-guard`, `operator:<login>` or `api:<key name>`.")
    reason: str | None
    figures: dict[str, Any] = Field(description="What the guard judged (sends, rates, ...).")


class GuardOut(BaseModel):
    since: datetime | None = Field(
        description="The guard judges only sends at or after this (the last acknowledgement); "
        "null: every send of the run."
    )
    events: list[GuardEventOut] = Field(description="Newest first (at most 20).")


class RunProgress(BaseModel):
    """Row states and substates: docs/operating.md."""

    id: int
    campaign: str | None
    state: str
    substate: Literal["sending", "waiting_for_quiet_hours", "waiting_for_recipients"] | None = (
        Field(description="While running: what the run is doing.")
    )
    pause_reason: str | None
    send_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    total: int
    done: int = Field(description="Rows in a done state: never goes down.")
    live: int = Field(description="Rows still to go (queued, deferred, sending, unknown).")
    by_state: dict[str, int] = Field(description="Rows by row state.")
    deferred: int
    deferred_by_reason: dict[str, int]
    suppressed_by_reason: dict[str, int]
    failed_by_code: dict[str, int]
    eta: datetime | None = Field(description="When the last row goes (the schedule's finish).")
    next_send_at: datetime | None
    schedule: Schedule | None = Field(description="None once the run is paused or over.")
    guard: GuardOut = Field(description="The reputation guard's decisions and acknowledgements.")


class RunPage(BaseModel):
    items: list[RunProgress] = Field(description="Newest first.")
    next_cursor: NextCursor


class MessageOut(BaseModel):
    """One recipient of a run (an outbox row)."""

    id: int
    contact_id: int
    phone: str = Field(description="E.164; masked (+1415555****) unless the key has contacts:read.")
    state: MessageState
    suppress_reason: str | None = Field(description="Why it will never be sent (suppressed).")
    defer_reason: str | None = Field(description="Why it waits (quiet hours, throttle, ...).")
    due_at: datetime = Field(description="When it may be sent.")
    sent_at: datetime | None
    status_at: datetime | None = Field(description="When the carrier's last status arrived.")
    provider_sid: str | None = Field(description="The carrier's message SID (SM...).")
    error_code: int | None = Field(description="The carrier's error code (e.g. 30007).")
    segments: int | None
    attempts: int


class MessagePage(BaseModel):
    run_id: int
    phones_masked: bool = Field(description="True unless the key has contacts:read.")
    items: list[MessageOut] = Field(description="By contact id.")
    next_cursor: NextCursor


class PauseBody(_In):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class ResumeBody(_In):
    acknowledge: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = Field(
        default=None,
        description="Why you resume after looking at the reputation guard's figures: recorded "
        "with the key's name, and the guard then judges only sends from now on.",
    )


# --------------------------------------------------------------------------------- contacts
class ContactIn(_In):
    name: Annotated[str, StringConstraints(max_length=255)] | None = None
    time_zone: TimeZoneName | None = Field(
        default=None,
        description="IANA zone, e.g. America/Chicago; one the time zone database does not "
        "have is a 400 `unknown-time-zone`.",
    )
    state: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = Field(
        default=None, description="US state code."
    )
    attributes: Variables | None = Field(
        default=None, description="Merged into the stored attributes (segments, [field]s)."
    )


class Contact(BaseModel):
    id: int
    phone: str
    name: str | None
    time_zone: str | None
    state: str | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ContactOut(BaseModel):
    id: int
    phone: str
    name: str | None
    time_zone: str | None
    state: str | None
    attributes: dict[str, Any]
    created: bool


# ---------------------------------------------------------------------------------- consent
EVIDENCE = ("evidence_text", "evidence_url", "evidence_ref", "note")


def _grant_needs_evidence(schema: dict[str, Any]) -> None:
    _document_no_nul(schema)
    schema["if"] = {"properties": {"action": {"const": "grant"}}, "required": ["action"]}
    schema["then"] = {
        "anyOf": [
            {"required": [name], "properties": {name: {"type": "string"}}} for name in EVIDENCE
        ]
    }


class ConsentIn(_In):
    """A grant needs evidence: one of ``evidence_text``, ``evidence_url``, ``evidence_ref`` or
    ``note`` (each, when given, is not empty)."""

    model_config = ConfigDict(json_schema_extra=_grant_needs_evidence)

    phone: ApiPhone = Field(
        description="Phone number; one that is not a US number is a 400 `invalid-phone`."
    )
    brand: Short = Field(description="Brand name or id.")
    campaign: Short | None = Field(
        default=None, description="Campaign SID or id, of the brand; none = the whole brand."
    )
    action: Literal["grant", "revoke"]
    source: Source = "api"
    consent_type: Literal["implied", "express", "written"] = "express"
    evidence_text: Annotated[str, StringConstraints(min_length=1, max_length=10_000)] | None = None
    evidence_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    evidence_ref: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    note: Annotated[str, StringConstraints(min_length=1, max_length=10_000)] | None = None
    occurred_at: Timestamp | None = Field(default=None, description="Default: now.")

    @model_validator(mode="after")
    def _evidence(self) -> ConsentIn:
        if self.action == "grant" and all(getattr(self, name) is None for name in EVIDENCE):
            raise ValueError(
                "a consent grant needs evidence (evidence_text, evidence_url, evidence_ref or note)"
            )
        return self


class ConsentEventOut(BaseModel):
    id: int
    recorded_at: datetime
    occurred_at: datetime
    phone: str
    brand: str
    campaign_sid: str | None
    action: str
    consent_type: str
    source: str
    evidence_text: str | None
    evidence_url: str | None
    evidence_ref: str | None
    note: str | None
    actor: str


class ConsentLedger(BaseModel):
    phone: str
    events: list[ConsentEventOut]


# --------------------------------------------------------------------------------- webhooks
EventType = Literal["run.finished", "run.paused", "contact.opted_out"]


def _no_repeats(events: list[str]) -> list[str]:
    if len(set(events)) != len(events):
        raise ValueError("each event type once")
    return events


class SubscriptionIn(_In):
    url: Annotated[
        str,
        StringConstraints(max_length=2048),
        AfterValidator(
            _matching(URL_PATTERN, "https://..., or http://localhost or http://127.0.0.1")
        ),
        Schema(pattern=URL_PATTERN),
    ] = Field(description="Where events are POSTed: https, or http to localhost (development).")
    events: Annotated[
        list[EventType],
        Field(min_length=1, max_length=3),
        AfterValidator(_no_repeats),
        Schema(uniqueItems=True),
    ] = Field(
        description="`run.finished` and `run.paused` (runs this key launched); "
        "`contact.opted_out` (any revocation; needs contacts:read: it carries the phone)."
    )


class Subscription(BaseModel):
    id: int
    url: str
    events: list[EventType]
    created_at: datetime


class SubscriptionCreated(Subscription):
    secret: str = Field(
        description="The signing secret (whsec_...): shown this once, keep it with the receiver."
    )


class SubscriptionList(BaseModel):
    items: list[Subscription] = Field(description="This key's subscriptions, oldest first.")


class DeliveryAttempt(BaseModel):
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    error: str | None
    duration_ms: int


class Delivery(BaseModel):
    id: int
    event_id: str = Field(description="The Dispatcher-Event-Id header and the body's id.")
    type: EventType
    state: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When pending: the next attempt.")
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
    log: list[DeliveryAttempt] = Field(description="Every attempt, oldest first.")


class DeliveryPage(BaseModel):
    subscription_id: int
    items: list[Delivery] = Field(description="Newest first.")
    next_cursor: NextCursor


# ---------------------------------------------------------------------------------- errors
class FieldError(BaseModel):
    field: str | None
    message: str
    rule: str | None = Field(
        default=None, description="The launch check that refused a run (launch problems only)."
    )
    count: int | None = Field(default=None, description="Recipients concerned, when it applies.")


class Problem(BaseModel):
    """RFC 9457 problem document; ``field`` names the input at fault when there is one."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[FieldError] | None = None
