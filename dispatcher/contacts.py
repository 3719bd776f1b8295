"""Contacts: upsert, lookup, and the streaming CSV import with per-row rejects.

The import reads the file in batches (never the whole file), writes every good row inside ONE
transaction (a crash leaves the database as before), and writes each rejected row with its row
number and reason to a rejects CSV the operator can fix and re-import.  Re-importing the same file
changes nothing: contacts are compared before update and consent events carry a dedupe key.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel import Session, select

from dispatcher import ledger
from dispatcher.clock import utcnow
from dispatcher.errors import InputError, InvalidPhoneError, NotFoundError
from dispatcher.models import Brand, Campaign, ConsentEvent, Contact
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


# --------------------------------------------------------------------------------------- basics
def check_time_zone(tz: str | None) -> str | None:
    if not tz:
        return None
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InputError(f"unknown time zone {tz!r}", field="time_zone") from e
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
    """Create or update one contact; returns (contact, created)."""
    e164 = normalize_phone(phone)
    tz = check_time_zone(time_zone)
    c = session.exec(select(Contact).where(Contact.phone == e164)).first()
    created = c is None
    if c is None:
        c = Contact(
            phone=e164, name=name, time_zone=tz, state_code=state_code, attributes=attributes or {}
        )
        session.add(c)
    else:
        changed = False
        for k, v in (("name", name), ("time_zone", tz), ("state_code", state_code)):
            if v is not None and getattr(c, k) != v:
                setattr(c, k, v)
                changed = True
        if attributes is not None and c.attributes != {**c.attributes, **attributes}:
            c.attributes = {**c.attributes, **attributes}
            changed = True
        if changed:
            c.updated_at = utcnow()
    session.flush()
    return c, created


def list_contacts(session: Session, *, limit: int = 100, offset: int = 0) -> list[Contact]:
    return list(session.exec(select(Contact).order_by(Contact.id).offset(offset).limit(limit)))


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


class _Reject(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def _get(raw: dict[str, str], *names: str) -> str:
    for n in names:
        v = raw.get(n)
        if v is not None and v.strip():
            return v.strip()
    return ""


def _parse_when(text: str, default_tz: ZoneInfo, now: datetime) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise _Reject("bad_date", f"consented_at {text!r} is not an ISO 8601 date") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=default_tz)
    when = when.astimezone(UTC)
    if when > now:
        raise _Reject("bad_date", f"consented_at {text!r} is in the future")
    return when


def _parse_row(
    line: int, raw: dict[str, str], has_consent: bool, default_tz: ZoneInfo, now: datetime
) -> _Row:
    if None in raw:  # more cells than header columns
        raise _Reject("malformed_row", "row has more cells than the header")
    try:
        phone = normalize_phone(_get(raw, "phone"))
    except InvalidPhoneError as e:
        raise _Reject("invalid_phone", str(e)) from e
    tz = _get(raw, "time_zone", "timezone") or None
    try:
        check_time_zone(tz)
    except InputError as e:
        raise _Reject("bad_time_zone", str(e)) from e
    state = _get(raw, "state").upper() or None
    if state is not None and not re.fullmatch(r"[A-Z]{2}", state):
        raise _Reject("bad_state", f"state {state!r} is not a two-letter US state code")
    attrs = {k: v for k, v in raw.items() if k and k not in KNOWN and v not in (None, "")}
    consent = None
    if has_consent:
        source = _get(raw, "consent_source", "source").lower() or "import"
        evidence = _get(raw, "consent_evidence", "evidence")
        url = _get(raw, "consent_url", "evidence_url") or None
        when_text = _get(raw, "consented_at")
        ctype = _get(raw, "consent_type").lower() or "express"
        if not evidence and not url:
            raise _Reject("missing_consent_evidence", "consent evidence is missing")
        if not _SOURCE_RE.match(source) or source not in ledger.SOURCES:
            raise _Reject("bad_consent_source", f"unknown consent source {source!r}")
        if ctype not in ledger.CONSENT_TYPES:
            raise _Reject("bad_consent_type", f"unknown consent type {ctype!r}")
        if not when_text:
            raise _Reject("bad_date", "consented_at is missing")
        consent = (source, evidence, url, _parse_when(when_text, default_tz, now), ctype)
    return _Row(line, raw, phone, _get(raw, "name") or None, tz, state, attrs, consent)


def _batches(reader: csv.DictReader, size: int) -> Iterator[list[tuple[int, dict[str, str]]]]:
    batch: list[tuple[int, dict[str, str]]] = []
    for raw in reader:
        batch.append((reader.line_num, raw))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_csv(
    session: Session,
    path: Path,
    *,
    brand: Brand | None,
    campaign: Campaign | None = None,
    actor: str = "operator",
    rejects_path: Path | None = None,
    default_tz: str = "UTC",
) -> ImportReport:
    """Import contacts (and consent grants) from ``path``.  The caller owns the transaction."""
    started = time.perf_counter()
    report = ImportReport(file=str(path))
    tz = ZoneInfo(default_tz)
    now = utcnow()
    rejects_path = rejects_path or path.with_name(path.stem + ".rejects.csv")
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from e
    rejects_fh = None
    rejects_writer: csv.writer | None = None  # type: ignore[valid-type]
    seen: set[str] = set()
    with fh:
        reader = csv.DictReader(fh)
        try:
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
        except (csv.Error, UnicodeDecodeError) as e:
            raise InputError(f"{path}: not a readable CSV file ({e})") from e
        if "phone" not in header:
            raise InputError(f"{path}: the header has no 'phone' column")
        reader.fieldnames = header
        has_consent = bool(
            {"consent_evidence", "evidence", "consent_url", "consented_at"} & set(header)
        )
        if has_consent and brand is None:
            raise InputError("the file has consent columns: name the brand with --brand")
        try:
            for batch in _batches(reader, BATCH):
                good: list[_Row] = []
                for line, raw in batch:
                    report.rows += 1
                    try:
                        row = _parse_row(line, raw, has_consent, tz, now)
                        if row.phone in seen:
                            raise _Reject(
                                "duplicate", f"phone {row.phone} appears earlier in the file"
                            )
                        seen.add(row.phone)
                        good.append(row)
                    except _Reject as r:
                        report.rejected += 1
                        report.reasons[r.code] = report.reasons.get(r.code, 0) + 1
                        if rejects_writer is None:
                            rejects_fh = rejects_path.open("w", newline="", encoding="utf-8")
                            rejects_writer = csv.writer(rejects_fh)
                            rejects_writer.writerow(["row", "reason", "detail", *header])
                        rejects_writer.writerow(
                            [line, r.code, str(r), *[raw.get(h, "") or "" for h in header]]
                        )
                _write_batch(session, good, report, brand, campaign, actor)
        except (csv.Error, UnicodeDecodeError) as e:
            raise InputError(f"{path}: unreadable CSV near row {reader.line_num}: {e}") from e
        finally:
            if rejects_fh is not None:
                rejects_fh.close()
    if rejects_writer is not None:
        report.rejects_file = str(rejects_path)
    elif rejects_path.exists():
        rejects_path.unlink()  # a stale rejects file from an earlier import of the same file
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _write_batch(
    session: Session,
    rows: list[_Row],
    report: ImportReport,
    brand: Brand | None,
    campaign: Campaign | None,
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
    campaign_id = campaign.id if campaign else None
    keyed = []
    for r in with_consent:
        source, evidence, url, at, ctype = r.consent  # type: ignore[misc]
        key = ledger.dedupe_key(
            "import",
            r.phone,
            brand.id,
            campaign_id,
            "grant",
            source,
            evidence,
            url,
            at.isoformat(),
            ctype,
        )
        keyed.append((key, r, source, evidence, url, at, ctype))
    known = set(
        session.exec(
            select(ConsentEvent.dedupe_key).where(
                ConsentEvent.dedupe_key.in_([k[0] for k in keyed])  # type: ignore[union-attr]
            )
        ).all()
    )
    fresh = [
        {
            "contact_id": ids[r.phone],
            "brand_id": brand.id,
            "campaign_id": campaign_id,
            "action": "grant",
            "consent_type": ctype,
            "source": source,
            "evidence_text": evidence,
            "evidence_url": url,
            "actor": actor,
            "occurred_at": at,
            "recorded_at": now,
            "dedupe_key": key,
            "note": f"imported from {Path(report.file).name} row {r.line}",
        }
        for key, r, source, evidence, url, at, ctype in keyed
        if key not in known
    ]
    if fresh:
        bulk_insert(session.connection(), ConsentEvent.__table__, fresh)  # type: ignore[attr-defined]
        report.consent_events += len(fresh)
