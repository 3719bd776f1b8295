"""The one launch path: the CLI, the HTTP API and :func:`dispatcher.notify.notify` all launch a
run through :func:`submit_run`.

In one transaction: the replay of an earlier request with the same idempotency key, or the new
run (its outbox rows staged for a CSV or list audience), then the launch checks
(:mod:`dispatcher.launch_checks`) over the template, the campaign and the audience's fields, then
the dry-run figures.  A check error refuses the launch (:class:`LaunchRefused`), and so do
warnings not accepted with ``req.force`` (:class:`WarningsNotAccepted`); either rolls the whole
transaction back, so nothing is written.  ``preview=True`` (the CLI's ``--dry-run``) runs the
same steps, reports the warnings and rolls back.

Concurrent submissions with one idempotency key: both may miss the existing run and insert; the
unique constraint on ``run.idempotency_key`` refuses the second insert, whose transaction is rolled
back whole (no half-written run) and which then returns the winner's run — or 409 when the winner
was launched with another request body.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import and_, case, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement, FromClause
from sqlmodel import Session

from dispatcher import audience as aud
from dispatcher import run_report, runs
from dispatcher.errors import StorageError
from dispatcher.launch_checks import (
    FieldStats,
    Issue,
    LaunchRefused,
    WarningsNotAccepted,
    check_launch,
)
from dispatcher.models import Campaign, Run
from dispatcher.store import Database
from dispatcher.templates import CONTACT_FIELDS, parse_template

__all__ = ["LaunchRefused", "Submission", "WarningsNotAccepted", "audience_fields", "submit_run"]


@dataclass
class Submission:
    run: dict[str, Any]
    created: bool
    dry_run: dict[str, Any] | None
    #: the launch checks' warnings this launch accepted (none on a replay: it was checked then)
    warnings: list[dict[str, Any]] = field(default_factory=list)


def run_doc(session: Session, run: Run) -> dict[str, Any]:
    campaign = session.get(Campaign, run.campaign_id)
    return {**run_report.run_dict(run), "campaign": campaign.sid if campaign else None}


def submit_run(
    db: Database,
    req: runs.LaunchRequest,
    *,
    now: datetime,
    dry_run: bool = True,
    sample_limit: int | None = None,
    preview: bool = False,
    zone: tzinfo = UTC,
) -> Submission:
    """Check and launch ``req`` in one transaction (idempotent by ``req.idempotency_key``).

    ``now`` is when the request is handled; ``dry_run`` adds the dry-run figures, bounded to the
    first ``sample_limit`` recipients of a large list; ``preview`` writes nothing; ``zone`` is
    the one the launch checks show times in (the operator's, for the CLI)."""
    try:
        with db.session() as s:
            run = runs.find_replay(s, req)
            created = run is None
            warnings: tuple[Issue, ...] = ()
            if run is None:
                run, warnings = _create_checked(s, req, now, zone, accept=req.force or preview)
            doc = run_doc(s, run)
            if preview:  # checked: drop it all before the figures, which hold no write lock then
                s.rollback()
            return _submission(s, req, doc, created, warnings, now, dry_run, sample_limit)
    except IntegrityError:
        if not req.idempotency_key:
            raise
    # lost the race for this idempotency key: the winner's run, read afresh (409 if the winner
    # was another request)
    with db.session() as s:
        run = runs.find_replay(s, req)
        if run is None:
            raise StorageError("the run could not be stored; retry with the same key")
        return _submission(s, req, run_doc(s, run), False, (), now, dry_run, sample_limit)


def _create_checked(
    s: Session, req: runs.LaunchRequest, now: datetime, zone: tzinfo, *, accept: bool
) -> tuple[Run, tuple[Issue, ...]]:
    from dispatcher.registry import get_brand, get_campaign

    tpl = parse_template(req.template)  # malformed: InputError before anything is written
    campaign = get_campaign(s, req.campaign)
    brand = get_brand(s, campaign.brand_id)
    run = runs.create_run(s, req, campaign, now=now)
    checked = check_launch(
        req.template,
        fields=audience_fields(s, run, tpl.fields),
        campaign=campaign,
        brand_name=brand.name,
        now=now,
        send_at=req.send_at,
        zone=zone,
    )
    if checked.errors:
        raise LaunchRefused(checked.errors)
    if checked.warnings and not accept:
        raise WarningsNotAccepted(checked.warnings)
    return run, checked.warnings


def _submission(
    s: Session,
    req: runs.LaunchRequest,
    doc: dict[str, Any],
    created: bool,
    warnings: tuple[Issue, ...],
    now: datetime,
    dry_run: bool,
    sample_limit: int | None,
) -> Submission:
    found = [w.to_dict() for w in warnings]
    figures = None
    if dry_run:
        figures = {
            **run_report.dry_run(s, req, now=now, sample_limit=sample_limit),
            "warnings": found,
        }
    return Submission(doc, created, figures, found)


# ---------------------------------------------------------------------- the audience's fields
C = runs.C
OB = runs.OB


def audience_fields(session: Session, run: Run, fields: Iterable[str]) -> FieldStats | None:
    """How many of ``run``'s audience have a value for each of ``fields``, counted in SQL in one
    pass (contacts matching an 'all' / 'segment' audience; staged outbox rows of a list, whose
    variables come before the contact's own values, as ``templates.contact_values`` has it).
    ``None`` when the template has no fields."""
    names = sorted(set(fields))
    if not names:
        return None
    staged = "staged" in run.audience  # a count: 0 when every listed phone was rejected
    if staged:
        source = OB.join(C, C.c.id == OB.c.contact_id)
        where: ColumnElement[bool] = OB.c.run_id == run.id
    else:
        source = C
        where = aud.where_clause(run.audience)
    counts = [func.count()] + [
        func.coalesce(func.sum(case((has_value(f, staged), 1), else_=0)), 0) for f in names
    ]
    row = session.connection().execute(select(*counts).select_from(source).where(where)).one()
    total, holders = int(row[0]), {f: int(n) for f, n in zip(names, row[1:], strict=True)}
    known: frozenset[str] = frozenset()
    if total and not all(holders.values()):  # only a field no one has needs the known names
        known = _known_names(session, run, staged)
    return FieldStats(total, holders, known)


def _filled(value: ColumnElement[Any]) -> ColumnElement[bool]:
    return and_(value.is_not(None), value != "")


def has_value(name: str, staged: bool) -> ColumnElement[bool]:
    """SQL: this recipient has a value for ``[name]`` (see ``templates.contact_values``)."""
    attr = C.c.attributes[name].as_string()
    has = _filled(attr)
    if name in CONTACT_FIELDS:  # the attribute, when set, comes before the name column
        has = or_(has, and_(attr.is_(None), _filled(func.trim(C.c.name))))
    if staged:
        var = OB.c.variables[name].as_string()
        has = or_(_filled(var), and_(var.is_(None), has))
    return has


def _known_names(session: Session, run: Run, staged: bool) -> frozenset[str]:
    """Every attribute (and, for a list, variable) name in the audience, and the columns."""
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"

    def keys(
        column: ColumnElement[Any], source: FromClause, where: ColumnElement[bool]
    ) -> set[str]:
        if pg:
            q = select(func.json_object_keys(column)).select_from(source)
            q = q.where(where, func.json_typeof(column) == "object")
        else:
            each = func.json_each(column).table_valued("key")
            q = select(each.c.key).select_from(source).join(each, true()).where(where)
        return {str(k) for (k,) in conn.execute(q.distinct())}

    if staged:
        where: ColumnElement[bool] = OB.c.run_id == run.id
        names = keys(OB.c.variables, OB, where)
        names |= keys(C.c.attributes, OB.join(C, C.c.id == OB.c.contact_id), where)
    else:
        names = keys(C.c.attributes, C, aud.where_clause(run.audience))
    return frozenset(names) | CONTACT_FIELDS
