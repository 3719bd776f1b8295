"""Request and response models of the HTTP API (pydantic; the OpenAPI document comes from them).

Shared by the server (dispatcher.api) and the Python client (dispatcher.client).  Requests forbid
unknown fields, so a misspelt field is a 422 naming it rather than a silently ignored value.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from dispatcher import ledger

MAX_INLINE_RECIPIENTS = 10_000
IDEMPOTENCY_KEY = r"^[A-Za-z0-9._:~-]{1,64}$"
_FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$"

Scalar = (
    Annotated[str, StringConstraints(max_length=2000)]
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)
VarName = Annotated[str, StringConstraints(pattern=_FIELD_NAME)]
Variables = dict[VarName, Scalar]
Phone = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=255)]
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


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _text_ok(cls, v: Any) -> Any:
        return _no_nul(v)


# ------------------------------------------------------------------------------------- runs
class Recipient(_In):
    phone: Phone = Field(description="Phone number; normalised to E.164 (US default region).")
    variables: Variables = Field(
        default_factory=dict, description="Template values for this recipient ([field] names)."
    )


class AudienceRef(_In):
    kind: Literal["all", "segment"] = Field(
        description="'all' contacts, or a 'segment' of contacts (attributes equal values)."
    )
    query: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        default=None, description="Segment terms, e.g. 'plan=gold,state=FL' (kind=segment)."
    )

    @model_validator(mode="after")
    def _query(self) -> AudienceRef:
        if self.kind == "segment":
            from dispatcher.audience import parse_segment
            from dispatcher.errors import InputError

            try:
                parse_segment(self.query or "")
            except InputError as e:
                raise ValueError(str(e)) from None
        elif self.query is not None:
            raise ValueError("query is only allowed with kind 'segment'")
        return self


class RunSpec(_In):
    """What a run sends, without its recipients (the first line of an NDJSON upload)."""

    campaign: Short = Field(description="Campaign SID (QE...) or numeric id.")
    template: Annotated[str, StringConstraints(min_length=1, max_length=1600)] = Field(
        description="Message template with [field] placeholders."
    )
    send_at: AwareDatetime | None = Field(
        default=None, description="When to start (ISO 8601 with offset); default now."
    )
    idempotency_key: Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY)] | None = Field(
        default=None, description="Same as the Idempotency-Key header (either, or both equal)."
    )
    force: bool = Field(
        default=False,
        description="Accept the launch checks' warnings (a field some recipients lack); "
        "errors are never accepted.  Not part of the idempotency fingerprint.",
    )


class RunCreate(RunSpec):
    """A run: recipients inline, or a reference to contacts already stored."""

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


class PauseBody(_In):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


# --------------------------------------------------------------------------------- contacts
class ContactIn(_In):
    name: Annotated[str, StringConstraints(max_length=255)] | None = None
    time_zone: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="IANA zone, e.g. America/Chicago."
    )
    state: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = Field(
        default=None, description="US state code."
    )
    attributes: dict[Annotated[str, StringConstraints(pattern=_FIELD_NAME)], Scalar] | None = Field(
        default=None, description="Merged into the stored attributes (segments, [field]s)."
    )


class ContactOut(BaseModel):
    id: int
    phone: str
    name: str | None
    time_zone: str | None
    state: str | None
    attributes: dict[str, Any]
    created: bool


# ---------------------------------------------------------------------------------- consent
class ConsentIn(_In):
    phone: Phone
    brand: Short = Field(description="Brand name or id.")
    campaign: Short | None = Field(
        default=None, description="Campaign SID; none = the whole brand."
    )
    action: Literal["grant", "revoke"]
    source: Source = "api"
    consent_type: Literal["implied", "express", "written"] = "express"
    evidence_text: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    evidence_url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    evidence_ref: Annotated[str, StringConstraints(max_length=128)] | None = None
    note: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    occurred_at: AwareDatetime | None = Field(default=None, description="Default: now.")

    @model_validator(mode="after")
    def _evidence(self) -> ConsentIn:
        if self.action == "grant" and not (
            self.evidence_text or self.evidence_url or self.evidence_ref or self.note
        ):
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


def is_idempotency_key(text: str) -> bool:
    return re.match(IDEMPOTENCY_KEY, text) is not None
