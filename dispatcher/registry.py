"""Brands and campaigns: the TCR registration as Twilio's UsAppToPerson resource returns it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session, col, select

from dispatcher.errors import ConflictError, InputError, NotFoundError
from dispatcher.models import Brand, Campaign, pk
from dispatcher.tables import MAX_ID as MAX_ID  # re-exported
from dispatcher.tables import as_id as as_id

TMOBILE_TIERS = ("TOP", "HIGH", "MID", "LOW", "BASIC", "UNCAPPED", "LOW_VOLUME", "SOLE_PROPRIETOR")


# ---------------------------------------------------------------------------------------- brand
def add_brand(
    session: Session, *, name: str, tmobile_brand_tier: str | None = None, ein: str | None = None
) -> Brand:
    name = (name or "").strip()
    if not 2 <= len(name) <= 255:
        raise InputError("brand name must be 2..255 characters", field="name")
    tier = tmobile_brand_tier.strip().upper() if tmobile_brand_tier else None
    if tier is not None and tier not in TMOBILE_TIERS:
        raise InputError(
            f"unknown T-Mobile brand tier {tmobile_brand_tier!r} "
            f"(one of {', '.join(TMOBILE_TIERS)})",
            field="tmobile_brand_tier",
        )
    if session.exec(select(Brand).where(Brand.name == name)).first():
        raise ConflictError(f"brand {name!r} already exists")
    brand = Brand(name=name, tmobile_brand_tier=tier, ein=ein)
    session.add(brand)
    session.flush()
    return brand


def get_brand(session: Session, key: str | int) -> Brand:
    ident = as_id(key)
    if ident is not None:
        brand = session.get(Brand, ident) if ident > 0 else None
    else:
        brand = session.exec(select(Brand).where(Brand.name == key)).first()
    if brand is None:
        raise NotFoundError("brand", key)
    return brand


def list_brands(session: Session) -> list[Brand]:
    return list(session.exec(select(Brand).order_by(col(Brand.id))))


def brand_dict(b: Brand) -> dict[str, Any]:
    return {"id": b.id, "name": b.name, "tmobile_brand_tier": b.tmobile_brand_tier, "ein": b.ein}


# ------------------------------------------------------------------------------------- campaign
class UsAppToPersonDoc(BaseModel):
    """Shape check of a UsAppToPerson JSON document (snake_case, as Twilio returns it).

    Content rules (lengths, samples, keywords) are lint's job (dispatcher.compliance); this only
    refuses documents whose fields have the wrong type or are missing."""

    model_config = ConfigDict(extra="allow", strict=False)

    sid: str = Field(pattern=r"^QE[0-9a-zA-Z]{32}$")
    account_sid: str | None = None
    brand_registration_sid: str | None = None
    messaging_service_sid: str | None = None
    description: str
    message_flow: str
    message_samples: list[str]
    us_app_to_person_usecase: str
    has_embedded_links: bool
    has_embedded_phone: bool
    subscriber_opt_in: bool | None = None
    age_gated: bool = False
    direct_lending: bool = False
    campaign_status: str | None = None
    campaign_id: str | None = None
    is_externally_registered: bool | None = None
    rate_limits: dict[str, Any] | None = None
    opt_in_message: str | None = None
    opt_out_message: str | None = None
    help_message: str | None = None
    opt_in_keywords: list[str] | None = None
    opt_out_keywords: list[str] | None = None
    help_keywords: list[str] | None = None
    privacy_policy_url: str | None = None
    terms_and_conditions_url: str | None = None
    date_created: datetime | None = None
    date_updated: datetime | None = None
    mock: bool | None = None
    errors: list[Any] | None = None


def parse_campaign_document(doc: Any) -> UsAppToPersonDoc:
    if not isinstance(doc, dict):
        raise InputError("campaign JSON must be an object (a UsAppToPerson resource)")
    try:
        return UsAppToPersonDoc.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "document"
        raise InputError(f"campaign JSON field {field!r}: {first['msg']}", field=field) from e


def load_campaign_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


_DOC_FIELDS = set(UsAppToPersonDoc.model_fields) - {"sid"}


def _registration_values(parsed: UsAppToPersonDoc) -> dict[str, Any]:
    """Campaign column values of a registration (absent lists and maps stored empty)."""
    values = parsed.model_dump(include=_DOC_FIELDS)
    for key in ("opt_in_keywords", "opt_out_keywords", "help_keywords", "errors"):
        values[key] = values[key] or []
    values["rate_limits"] = values["rate_limits"] or {}
    return values


def import_campaign(
    session: Session, doc: dict[str, Any], *, brand: Brand, policy: dict[str, Any] | None = None
) -> tuple[Campaign, bool]:
    """Create or refresh a campaign from a UsAppToPerson document.  Returns (campaign, created)."""
    parsed = parse_campaign_document(doc)
    values = _registration_values(parsed)
    campaign = session.exec(select(Campaign).where(Campaign.sid == parsed.sid)).first()
    created = campaign is None
    if campaign is None:
        campaign = Campaign(sid=parsed.sid, brand_id=pk(brand), **values)
    else:
        if campaign.brand_id != brand.id:
            raise ConflictError(f"campaign {parsed.sid} belongs to another brand")
        for k, v in values.items():
            setattr(campaign, k, v)
    for k, v in (policy or {}).items():
        if v is not None:
            setattr(campaign, k, v)
    _check_policy(campaign)
    session.add(campaign)
    session.flush()
    return campaign, created


def _check_policy(c: Campaign) -> None:
    if c.window_limit < 1 or c.window_seconds < 1:
        raise InputError("window limit and window seconds must be positive", field="window_limit")
    if (c.frequency_cap_count is None) != (c.frequency_cap_hours is None):
        raise InputError("frequency cap needs both a count and hours", field="frequency_cap_count")
    if c.sender is not None:
        from dispatcher.phones import normalize_phone

        c.sender = normalize_phone(c.sender)


def get_campaign(session: Session, key: str | int) -> Campaign:
    ident = as_id(key)
    if ident is not None:
        c = session.get(Campaign, ident) if ident > 0 else None
    else:
        c = session.exec(select(Campaign).where(Campaign.sid == key)).first()
    if c is None:
        raise NotFoundError("campaign", key)
    return c


def list_campaigns(session: Session) -> list[Campaign]:
    return list(session.exec(select(Campaign).order_by(col(Campaign.id))))


def campaign_dict(c: Campaign, *, full: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": c.id,
        "sid": c.sid,
        "brand_id": c.brand_id,
        "us_app_to_person_usecase": c.us_app_to_person_usecase,
        "campaign_status": c.campaign_status,
        "messaging_service_sid": c.messaging_service_sid,
        "sender": c.sender,
        "window": f"{c.window_limit}/{c.window_seconds}s",
    }
    if full:
        d.update(c.model_dump(mode="json"))
    return d


def sync_campaign(
    session: Session, campaign: Campaign, doc: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Refresh a campaign from the UsAppToPerson resource Twilio returned; our own send policy
    is kept.  Returns what changed (field -> [old, new])."""
    parsed = parse_campaign_document(doc)
    if parsed.sid != campaign.sid:
        raise InputError(f"provider returned campaign {parsed.sid}, expected {campaign.sid}")
    values = _registration_values(parsed)
    changed = {}
    for k, v in values.items():
        if getattr(campaign, k) != v:
            changed[k] = [getattr(campaign, k), v]
            setattr(campaign, k, v)
    campaign.synced_at = now
    session.add(campaign)
    session.flush()
    return changed


# ------------------------------------------------------------------------------- campaign cache
class CampaignCache:
    """Campaign and brand by campaign id, kept ``ttl_s`` seconds: the one campaign cache of a
    process (the worker's gate, the status callbacks).  A status change or suspension reaches
    its readers within ``ttl_s`` (pause and STOP act through the claim and the halt check, not
    through this); ``ttl_s`` 0 reads every time.  The rows kept are copies outside any session,
    so the rollback of the session that read them cannot expire them under another thread.
    ``now`` is the monotonic clock (injected by tests)."""

    def __init__(self, ttl_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self._now = ttl_s, now
        self._hits: dict[int, tuple[Campaign, Brand, float]] = {}

    def get(self, session: Session, campaign_id: int) -> tuple[Campaign, Brand]:
        at = self._now()
        hit = self._hits.get(campaign_id)
        if hit is not None and 0 <= at - hit[2] < self.ttl_s:
            return hit[0], hit[1]
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise NotFoundError("campaign", campaign_id)
        brand = session.get(Brand, campaign.brand_id)
        if brand is None:
            raise NotFoundError("brand", campaign.brand_id)
        kept = Campaign(**campaign.model_dump()), Brand(**brand.model_dump())
        if self.ttl_s > 0:
            self._hits[campaign_id] = (*kept, at)
        return kept
