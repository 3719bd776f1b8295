"""Consent events an operator records by phone number: one (``consent grant|revoke PHONE``) or
a CSV file of revocations (``consent revoke --file PHONES.csv``).

Both go through ``record``: the contact is created if the number is new (a revocation of a
number not imported yet still counts: a later import or launch finds it opted out), then the
consent service (``dispatcher.consent``), which signals a revoke's halt so that the workers' next
send checks it and suppresses the contact's pending rows in the revocation's scope.  A file
is one transaction (the caller's session): every good row is recorded, or none is; a row that
cannot be recorded (bad phone number, date or source) goes to a rejects file with its row number
and reason, for the operator to fix and hand in again; a number repeated in the file is revoked
once.

Evidence: as for a single revoke, none is required (the ledger requires it of grants
only: a revocation is honoured by whatever means it came).  Each row's event carries the row's
``evidence`` / ``url`` / ``evidence_ref`` / ``note`` cells, or the command's options, and its
note names the file and row it came from.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select

from dispatcher import consent, consent_events
from dispatcher.clock import utcnow
from dispatcher.consent import Target
from dispatcher.consent_events import Event
from dispatcher.csvrows import (
    CsvRows,
    Rejects,
    RowReject,
    cell,
    default_rejects_path,
    parse_time,
    row_phone,
)
from dispatcher.phones import normalize_phone
from dispatcher.tables import contact as CT

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlmodel import Session

    from dispatcher.delivery.ports import HaltSignal

#: cells a revocation file may have besides ``phone`` (first of each tuple wins)
COLUMNS = {
    "evidence": ("evidence", "evidence_text"),
    "url": ("url", "evidence_url"),
    "evidence_ref": ("evidence_ref",),
    "note": ("note",),
    "occurred_at": ("occurred_at", "revoked_at"),
    "source": ("source",),
}


@dataclass(frozen=True)
class Recorder:
    """Who records the events, for whom, and the values a row does not give."""

    #: the brand and campaign (``consent.target``: the campaign is checked to be the brand's)
    target: Target
    source: str
    actor: str
    #: what a revoke signals before it commits (the workers' halt check)
    halts: HaltSignal
    evidence_text: str | None = None
    evidence_url: str | None = None
    note: str | None = None


def record(
    db: Session | Connection,
    who: Recorder,
    action: str,
    phone: str,
    *,
    evidence_text: str | None = None,
    evidence_url: str | None = None,
    evidence_ref: str | None = None,
    note: str | None = None,
    source: str | None = None,
    occurred_at: datetime | None = None,
) -> tuple[Event, str, bool]:
    """One event for one number, through the consent service (a revocation also suppresses
    the contact's pending rows in its scope): (event, the number in E.164, contact was
    created)."""
    conn = consent.connection(db)
    e164 = normalize_phone(phone)
    contact_id, created = ensure_contact(conn, e164)
    evidence = consent.Evidence(
        text=evidence_text or who.evidence_text,
        url=evidence_url or who.evidence_url,
        ref=evidence_ref,
        note=note or who.note,
    )
    got = consent.record(
        conn,
        action,
        contact_id,
        who.target.scope,
        source or who.source,
        evidence,
        actor=who.actor,
        halts=who.halts,
        occurred_at=occurred_at,
    )
    return got.event, e164, created


def ensure_contact(conn: Connection, e164: str) -> tuple[int, bool]:
    """The id of the contact with this (normalised) number, created with nothing else known if
    there is none: (id, created).  (``contacts.upsert_contact`` also sets a name, zone or
    attributes, through the models.)"""
    found = conn.execute(select(CT.c.id).where(CT.c.phone == e164)).scalar()
    if found is not None:
        return found, False
    now = utcnow()
    new = conn.execute(
        insert(CT)
        .values(phone=e164, attributes={}, created_at=now, updated_at=now)
        .returning(CT.c.id)
    ).scalar_one()
    return new, True


@dataclass
class RevokeReport:
    file: str
    rows: int = 0
    revoked: int = 0
    new_contacts: int = 0
    repeated: int = 0  # rows of a number an earlier row revoked
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    rejects_file: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Revocation:
    line: int
    phone: str
    cells: dict[str, str]
    occurred_at: datetime | None


def _parse(line: int, raw: dict[str, str], tz: ZoneInfo, now: datetime) -> _Revocation:
    phone = row_phone(raw)
    cells = {k: cell(raw, *names) for k, names in COLUMNS.items()}
    source = cells["source"].lower()
    if source and source not in consent_events.SOURCES:
        raise RowReject("bad_source", f"unknown consent source {source!r}")
    cells["source"] = source
    when = cells["occurred_at"]
    return _Revocation(
        line, phone, cells, parse_time(when, "occurred_at", tz, now) if when else None
    )


def revoke_csv(
    db: Session | Connection,
    path: Path,
    who: Recorder,
    *,
    rejects_path: Path | None = None,
    default_tz: str = "UTC",
    occurred_at: datetime | None = None,
) -> RevokeReport:
    """Revoke every number in ``path`` (a CSV with a ``phone`` column; see COLUMNS), each as
    ``record`` does for one.  The caller owns the transaction.  ``occurred_at`` is the time of a
    row that gives none (default: now)."""
    started = time.perf_counter()
    report = RevokeReport(file=str(path))
    tz, now = ZoneInfo(default_tz), utcnow()
    seen: set[str] = set()
    with (
        CsvRows(path) as rows,
        Rejects(rejects_path or default_rejects_path(path), rows.header) as rejects,
    ):
        for line, raw in rows:
            report.rows += 1
            try:
                r = _parse(line, raw, tz, now)
            except RowReject as e:
                rejects.add(line, e.code, str(e), raw)
                continue
            if r.phone in seen:  # revoked by an earlier row of the file
                report.repeated += 1
                continue
            seen.add(r.phone)
            c = r.cells
            _, _, created = record(
                db,
                who,
                "revoke",
                r.phone,
                evidence_text=c["evidence"] or None,
                evidence_url=c["url"] or None,
                evidence_ref=c["evidence_ref"] or None,
                note="; ".join(
                    x for x in (c["note"] or who.note, f"from {path.name} row {line}") if x
                ),
                source=c["source"] or None,
                occurred_at=r.occurred_at or occurred_at,
            )
            report.revoked += 1
            report.new_contacts += created
    report.rejected, report.reasons = rejects.count, rejects.reasons
    report.rejects_file = rejects.written
    report.seconds = round(time.perf_counter() - started, 3)
    return report
