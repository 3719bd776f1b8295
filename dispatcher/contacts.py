"""Contacts: upsert, lookup, and the streaming CSV import with per-row rejects.

The import reads the file in batches (never the whole file), writes every good row inside ONE
transaction (a crash leaves the database as before), and writes each rejected row with its row
number and reason to a rejects CSV the operator can fix and re-import.  Re-importing the same file
changes nothing: contacts are compared before update and consent events carry a dedupe key.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel import Session, col, select

from dispatcher import consent, ledger
from dispatcher.clock import utcnow
from dispatcher.consent_file import ensure_contact
from dispatcher.csvrows import (
    CsvRows,
    Rejects,
    RowReject,
    cell,
    default_rejects_path,
    parse_time,
    row_phone,
)
from dispatcher.dedupe import SeenPhones
from dispatcher.errors import InputError, NotFoundError, UnknownTimeZoneError
from dispatcher.models import Brand, Campaign, Contact
from dispatcher.phones import normalize_phone
from dispatcher.store import bulk_insert

BATCH = 2000
KNOWN = {
    "phone",
    "name",
    "time_zone",
    "timezone",
    "state",
    "consent_source",
    "source",
    "consent_evidence",
    "evidence",
    "consent_url",
    "evidence_url",
    "consented_at",
    "consent_type",
}
_SOURCE_RE = re.compile(r"^[a-z_]{2,32}$")
#: time zone names as the HTTP API takes them, before the time zone database is asked
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*$"


# --------------------------------------------------------------------------------------- basics
def check_time_zone(tz: str | None) -> str | None:
    if not tz:
        return None
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:  # OSError: "America" is a folder
        raise UnknownTimeZoneError(f"unknown time zone {tz!r}", field="time_zone") from e
    return tz


def get_contact(session: Session, phone: str) -> Contact:
    e164 = normalize_phone(phone)
    c = session.exec(select(Contact).where(Contact.phone == e164)).first()
    if c is None:
        raise NotFoundError("contact", e164)
    return c


def upsert_contact(
    session: Session,
    phone: str,
    *,
    name: str | None = None,
    time_zone: str | None = None,
    state_code: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> tuple[Contact, bool]:
    """Create or update one contact; returns (contact, created).  Created as every path
    creates one (``consent_file.ensure_contact``), then given what is known."""
    e164 = normalize_phone(phone)
    tz = check_time_zone(time_zone)
    cid, created = ensure_contact(consent.connection(session), e164)
    c = session.get(Contact, cid)
    assert c is not None
    changed = False
    for k, v in (("name", name), ("time_zone", tz), ("state_code", state_code)):
        if v is not None and getattr(c, k) != v:
            setattr(c, k, v)
            changed = True
    if attributes is not None and c.attributes != {**c.attributes, **attributes}:
        c.attributes = {**c.attributes, **attributes}
        changed = True
    if changed and not created:
        c.updated_at = utcnow()
    session.flush()
    return c, created


def list_contacts(session: Session, *, limit: int = 100, offset: int = 0) -> list[Contact]:
    return list(session.exec(select(Contact).order_by(col(Contact.id)).offset(offset).limit(limit)))


def contact_dict(c: Contact) -> dict[str, Any]:
    return {
        "id": c.id,
        "phone": c.phone,
        "name": c.name,
        "time_zone": c.time_zone,
        "state": c.state_code,
        "attributes": c.attributes,
    }


# ------------------------------------------------------------------------------------ CSV import
@dataclass
class ImportReport:
    file: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    consent_events: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    rejects_file: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_second"] = round(self.rows / self.seconds) if self.seconds else None
        return d


@dataclass
class _Row:
    line: int
    raw: dict[str, str]
    phone: str
    name: str | None
    tz: str | None
    state: str | None
    attributes: dict[str, Any]
    consent: tuple[str, str, str | None, datetime, str] | None  # source, evidence, url, at, type


def _parse_row(
    line: int, raw: dict[str, str], has_consent: bool, default_tz: ZoneInfo, now: datetime
) -> _Row:
    phone = row_phone(raw)
    tz = cell(raw, "time_zone", "timezone") or None
    try:
        check_time_zone(tz)
    except InputError as e:
        raise RowReject("bad_time_zone", str(e)) from e
    state = cell(raw, "state").upper() or None
    if state is not None and not re.fullmatch(r"[A-Z]{2}", state):
        raise RowReject("bad_state", f"state {state!r} is not a two-letter US state code")
    attrs = {k: v for k, v in raw.items() if k and k not in KNOWN and v not in (None, "")}
    consent = None
    if has_consent:
        source = cell(raw, "consent_source", "source").lower() or "import"
        evidence = cell(raw, "consent_evidence", "evidence")
        url = cell(raw, "consent_url", "evidence_url") or None
        when_text = cell(raw, "consented_at")
        ctype = cell(raw, "consent_type").lower() or "express"
        if not evidence and not url:
            raise RowReject("missing_consent_evidence", "consent evidence is missing")
        if not _SOURCE_RE.match(source) or source not in ledger.SOURCES:
            raise RowReject("bad_consent_source", f"unknown consent source {source!r}")
        if ctype not in ledger.CONSENT_TYPES:
            raise RowReject("bad_consent_type", f"unknown consent type {ctype!r}")
        if not when_text:
            raise RowReject("bad_date", "consented_at is missing")
        consent = (
            source,
            evidence,
            url,
            parse_time(when_text, "consented_at", default_tz, now),
            ctype,
        )
    return _Row(line, raw, phone, cell(raw, "name") or None, tz, state, attrs, consent)


def import_csv(
    session: Session,
    path: Path,
    *,
    brand: Brand | consent.BrandRef | None,
    campaign: Campaign | consent.CampaignRef | None = None,
    actor: str = "operator",
    rejects_path: Path | None = None,
    default_tz: str = "UTC",
) -> ImportReport:
    """Import contacts (and consent grants) from ``path``.  The caller owns the transaction."""
    started = time.perf_counter()
    report = ImportReport(file=str(path))
    tz = ZoneInfo(default_tz)
    now = utcnow()
    with CsvRows(path) as rows, SeenPhones() as seen:  # duplicates on disk: flat memory
        has_consent = bool(
            {"consent_evidence", "evidence", "consent_url", "consented_at"} & set(rows.header)
        )
        if has_consent and brand is None:
            raise InputError("the file has consent columns: name the brand with --brand")
        with Rejects(rejects_path or default_rejects_path(path), rows.header) as rejects:
            for batch in rows.batches(BATCH):
                good: list[_Row] = []
                for line, raw in batch:
                    report.rows += 1
                    try:
                        row = _parse_row(line, raw, has_consent, tz, now)
                        if not seen.add(row.phone):
                            raise RowReject(
                                "duplicate", f"phone {row.phone} appears earlier in the file"
                            )
                        good.append(row)
                    except RowReject as r:
                        rejects.add(line, r.code, str(r), raw)
                _write_batch(session, good, report, brand, campaign, actor)
    report.rejected, report.reasons = rejects.count, rejects.reasons
    report.rejects_file = rejects.written
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _write_batch(
    session: Session,
    rows: list[_Row],
    report: ImportReport,
    brand: Brand | consent.BrandRef | None,
    campaign: Campaign | consent.CampaignRef | None,
    actor: str,
) -> None:
    if not rows:
        return
    now = utcnow()
    existing = {
        c.phone: c
        for c in session.exec(select(Contact).where(Contact.phone.in_([r.phone for r in rows])))  # type: ignore[attr-defined]
    }
    new = [r for r in rows if r.phone not in existing]
    if new:
        bulk_insert(
            session.connection(),
            Contact.__table__,  # type: ignore[attr-defined]
            [
                {
                    "phone": r.phone,
                    "name": r.name,
                    "time_zone": r.tz,
                    "state_code": r.state,
                    "attributes": r.attributes,
                    "created_at": now,
                    "updated_at": now,
                }
                for r in new
            ],
        )
        report.created += len(new)
    for r in rows:
        c = existing.get(r.phone)
        if c is None:
            continue
        merged = {**(c.attributes or {}), **r.attributes}
        target = (r.name or c.name, r.tz or c.time_zone, r.state or c.state_code, merged)
        if target != (c.name, c.time_zone, c.state_code, c.attributes or {}):
            c.name, c.time_zone, c.state_code, c.attributes = target
            c.updated_at = now
            session.add(c)
            report.updated += 1
        else:
            report.unchanged += 1
    session.flush()
    with_consent = [r for r in rows if r.consent is not None]
    if not with_consent or brand is None:
        return
    ids = dict(
        session.exec(
            select(Contact.phone, Contact.id).where(
                Contact.phone.in_([r.phone for r in with_consent])  # type: ignore[attr-defined]
            )
        ).all()
    )
    rows_in = []
    for r in with_consent:
        source, evidence, url, at, ctype = r.consent  # type: ignore[misc]
        rows_in.append(
            {
                "phone": r.phone,
                "contact_id": ids[r.phone],
                "action": "grant",
                "consent_type": ctype,
                "source": source,
                "evidence_text": evidence,
                "evidence_url": url,
                "actor": actor,
                "occurred_at": at,
                "recorded_at": now,
                "note": f"imported from {Path(report.file).name} row {r.line}",
            }
        )
    assert brand.id is not None
    scope = consent.Scope(brand.id, campaign.id if campaign else None)
    report.consent_events += consent.import_grants(session, rows_in, scope=scope)
