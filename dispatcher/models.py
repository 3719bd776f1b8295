"""SQLModel tables.  The schema is owned by Alembic migrations (dispatcher/migrations).

State machine of an outbox row (compare-and-set transitions, see dispatcher.outbox):

    queued ──claim──► sending ──► sent ──callback──► delivered | undelivered
       │                 ├──────► failed
       │                 └──────► unknown ──find_sent──► sent | queued (never reached carrier)
       └──► suppressed | cancelled            (terminal, never sent)

``queued`` rows with ``due_at`` in the future are deferred (quiet hours, throttle).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from dispatcher.clock import utcnow


def _ts(**kw: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kw)


def _json(default: Any = None, **kw: Any) -> Any:
    factory = (
        (lambda: list(default))
        if isinstance(default, list)
        else ((lambda: dict(default)) if isinstance(default, dict) else None)
    )
    if factory is not None:
        return Field(default_factory=factory, sa_column=Column(JSON, **kw))
    return Field(default=default, sa_column=Column(JSON, **kw))


# ---------------------------------------------------------------------------------------- brand
class Brand(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=255)
    tmobile_brand_tier: str | None = Field(default=None, max_length=32)
    ein: str | None = Field(default=None, max_length=32)
    created_at: datetime = _ts(default_factory=utcnow)


# ------------------------------------------------------------------------------------- campaign
class Campaign(SQLModel, table=True):
    """Mirrors Twilio's UsAppToPerson resource plus our own send policy."""

    id: int | None = Field(default=None, primary_key=True)
    sid: str = Field(index=True, unique=True, max_length=34)
    brand_id: int = Field(foreign_key="brand.id", index=True)
    account_sid: str | None = Field(default=None, max_length=34)
    brand_registration_sid: str | None = Field(default=None, max_length=34)
    messaging_service_sid: str | None = Field(default=None, max_length=34)
    description: str = Field(sa_column=Column(Text, nullable=False))
    message_flow: str = Field(sa_column=Column(Text, nullable=False))
    message_samples: list[str] = _json([])
    us_app_to_person_usecase: str = Field(max_length=64)
    has_embedded_links: bool = False
    has_embedded_phone: bool = False
    subscriber_opt_in: bool | None = None
    age_gated: bool = False
    direct_lending: bool = False
    opt_in_keywords: list[str] = _json([])
    opt_out_keywords: list[str] = _json([])
    help_keywords: list[str] = _json([])
    opt_in_message: str | None = Field(default=None, sa_column=Column(Text))
    opt_out_message: str | None = Field(default=None, sa_column=Column(Text))
    help_message: str | None = Field(default=None, sa_column=Column(Text))
    campaign_status: str | None = Field(default=None, max_length=32)
    campaign_id: str | None = Field(default=None, max_length=64)
    is_externally_registered: bool | None = None
    rate_limits: dict[str, Any] = _json({})
    errors: list[Any] = _json([])
    privacy_policy_url: str | None = Field(default=None, max_length=2048)
    terms_and_conditions_url: str | None = Field(default=None, max_length=2048)
    mock: bool | None = None
    # --- our send policy --------------------------------------------------------------------
    sender: str | None = Field(
        default=None, max_length=34, description="From number (E.164) when no messaging service"
    )
    window_limit: int = 10
    window_seconds: int = 300
    quiet_hours_policy: str = Field(default="strictest", max_length=32)
    frequency_cap_count: int | None = None
    frequency_cap_hours: int | None = None
    guard: dict[str, Any] = _json({}, nullable=True)
    date_created: datetime | None = _ts(default=None)
    date_updated: datetime | None = _ts(default=None)
    synced_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts(default_factory=utcnow)


# -------------------------------------------------------------------------------------- contact
class Contact(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(index=True, unique=True, max_length=16)
    name: str | None = Field(default=None, max_length=255)
    time_zone: str | None = Field(default=None, max_length=64)
    state_code: str | None = Field(default=None, max_length=2, description="US state, if known")
    attributes: dict[str, Any] = _json({})
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


# ---------------------------------------------------------------------------- consent ledger
class ConsentEvent(SQLModel, table=True):
    """Append-only: no update or delete path (ORM guard + database triggers)."""

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    brand_id: int = Field(foreign_key="brand.id", index=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", index=True)
    action: str = Field(max_length=8, description="grant | revoke")
    consent_type: str = Field(default="express", max_length=16)
    source: str = Field(max_length=32, description="web_form|keyword|import|operator|api|carrier")
    evidence_text: str | None = Field(default=None, sa_column=Column(Text))
    evidence_url: str | None = Field(default=None, max_length=2048)
    evidence_ref: str | None = Field(default=None, max_length=128)
    note: str | None = Field(default=None, sa_column=Column(Text))
    actor: str = Field(max_length=128)
    occurred_at: datetime = _ts(default_factory=utcnow)
    recorded_at: datetime = _ts(default_factory=utcnow)
    dedupe_key: str | None = Field(default=None, max_length=64, unique=True)


# ------------------------------------------------------------------------------------------ run
class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    template: str = Field(sa_column=Column(Text, nullable=False))
    audience: dict[str, Any] = _json({})
    state: str = Field(default="scheduled", max_length=16, index=True)
    send_at: datetime = _ts(default_factory=utcnow)
    pause_reason: str | None = Field(default=None, sa_column=Column(Text))
    total: int = 0
    actor: str = Field(default="operator", max_length=128)
    idempotency_key: str | None = Field(default=None, max_length=128, unique=True)
    request_hash: str | None = Field(default=None, max_length=64)
    options: dict[str, Any] = _json({})
    created_at: datetime = _ts(default_factory=utcnow)
    started_at: datetime | None = _ts(default=None)
    finished_at: datetime | None = _ts(default=None)


class GuardEvent(SQLModel, table=True):
    """The reputation guard's record for a run: its decisions (``pause``: the reason and the
    figures it judged) and the operator's answers (``resume``: who resumed; ``acknowledge``: who
    resumed, why, and from when the guard judges the run again: only sends at or after ``at``)."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    kind: str = Field(max_length=16, description="pause | resume | acknowledge")
    actor: str = Field(max_length=128)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    figures: dict[str, Any] = _json({}, nullable=True)
    at: datetime = _ts(default_factory=utcnow)


# --------------------------------------------------------------------------------------- outbox
class OutboxMessage(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("run_id", "contact_id", name="uq_outbox_run_contact"),
        Index("ix_outbox_state_due", "state", "due_at"),
        Index("ix_outbox_campaign_contact", "campaign_id", "contact_id"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    # run_id is the leading column of uq_outbox_run_contact: no index of its own (fan-out speed)
    run_id: int = Field(foreign_key="run.id")
    campaign_id: int = Field(foreign_key="campaign.id")
    contact_id: int = Field(foreign_key="contact.id", index=True)
    to_phone: str = Field(max_length=16)
    variables: dict[str, Any] = _json({}, nullable=True)
    body: str | None = Field(default=None, sa_column=Column(Text))
    body_hash: str | None = Field(default=None, max_length=64)
    segments: int | None = None
    state: str = Field(default="queued", max_length=16)
    suppress_reason: str | None = Field(default=None, max_length=64)
    defer_reason: str | None = Field(default=None, max_length=64)
    due_at: datetime = _ts(default_factory=utcnow)
    enqueued_at: datetime | None = _ts(default=None)
    claimed_at: datetime | None = _ts(default=None)
    claim_token: str | None = Field(default=None, max_length=36)
    attempts: int = 0
    provider_sid: str | None = Field(default=None, max_length=34, unique=True)
    provider_status: str | None = Field(default=None, max_length=24)
    error_code: int | None = None
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    sent_at: datetime | None = _ts(default=None)
    status_at: datetime | None = _ts(default=None)
    updated_at: datetime = _ts(default_factory=utcnow)


# ----------------------------------------------------------------------------- inbound + keys
class InboundMessage(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_sid: str = Field(max_length=34, unique=True)
    from_phone: str = Field(max_length=16, index=True)
    to: str | None = Field(default=None, max_length=34)
    body: str | None = Field(default=None, sa_column=Column(Text))
    classification: str | None = Field(default=None, max_length=16)
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    received_at: datetime = _ts(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    prefix: str = Field(max_length=16, index=True)
    key_hash: str = Field(max_length=128)
    scopes: list[str] = _json([])
    created_at: datetime = _ts(default_factory=utcnow)
    revoked_at: datetime | None = _ts(default=None)


# ---------------------------------------------------------------------- producer webhooks
def _big_id() -> Any:
    return Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )


class WebhookSubscription(SQLModel, table=True):
    """An API key's subscription to producer events (dispatcher.hooks): the URL they are POSTed
    to, the secret they are signed with, the event types.  Deleting one disables it (its
    delivery log stays readable)."""

    id: int | None = Field(default=None, primary_key=True)
    api_key_id: int = Field(foreign_key="apikey.id", index=True)
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=64)
    events: list[str] = _json([])
    created_at: datetime = _ts(default_factory=utcnow)
    disabled_at: datetime | None = _ts(default=None)


class WebhookEvent(SQLModel, table=True):
    """One event for one subscription: written in the transaction of the change it reports
    (committed with it or not at all), delivered later by the scheduler (pending -> delivered,
    or failed after the last attempt; cancelled when the subscription is deleted)."""

    __table_args__ = (Index("ix_webhookevent_due", "state", "next_attempt_at"),)

    id: int | None = _big_id()
    subscription_id: int = Field(foreign_key="webhooksubscription.id", index=True)
    type: str = Field(max_length=32)
    payload: dict[str, Any] = _json({})
    state: str = Field(default="pending", max_length=16)
    attempts: int = 0
    created_at: datetime = _ts(default_factory=utcnow)
    next_attempt_at: datetime = _ts(default_factory=utcnow)
    delivered_at: datetime | None = _ts(default=None)
    last_status: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class WebhookAttempt(SQLModel, table=True):
    """The delivery log: one row per POST of an event, with its outcome."""

    id: int | None = _big_id()
    event_id: int = Field(
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"),
            ForeignKey("webhookevent.id"),
            index=True,
            nullable=False,
        )
    )
    attempted_at: datetime = _ts(default_factory=utcnow)
    status_code: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    duration_ms: int = 0


def pk(row: SQLModel) -> int:
    """The primary key of a stored row. A row that was never flushed has none: asking for it is a
    programming error, said here instead of as a ``None`` deep in a query."""
    ident = getattr(row, "id", None)
    if ident is None:
        raise ValueError(f"{type(row).__name__} has no id yet (it was never flushed)")
    return int(ident)
