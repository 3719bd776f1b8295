"""A provider status, whatever brought it: move the outbox row forward and react to its error
code.  ONE function, ``apply_status``, for a status callback (webhooks/status.py), a status the
delivery core fetched (``delivery.resolve``: a ``sent`` row that heard nothing) and a message found
by listing (an ``unknown`` row resolved): each carries its ``ErrorCode``, so 21610 (opt-out),
30034 (campaign pause) and the reputation guard's input (30007 counted on the row) are the same
on every path.  ``react`` is what follows the commit (metrics; the runs whose guard to evaluate).

Reactions happen only when the callback actually moved the row (``outbox.apply_provider_status``
is monotonic and idempotent), so a duplicated or late callback changes nothing and reacts once.
A callback that moved nothing because no row has its SID yet (the worker records SIDs after a
batch of sends) is told apart from a late/duplicate one: ``"unknown_sid"`` (the route keeps it
and applies it again a little later: early.py).

**Callbacks that provably change nothing** (``moves_nothing``): an intermediate status
(queued/accepted/scheduled/sending/sent: all map to the outbox state ``sent``) without an
``ErrorCode``.  The outbox records a SID only together with ``sent`` (``mark_sent``,
``mark_sent_many``, ``resolve_unknown``: tests/unit/test_outbox_owner.py keeps it so) and no
transition moves a row back from ``sent`` or a final state, so every row that has the callback's
SID already has a rank >= that of ``sent``: the compare-and-set (a move only from a lower rank)
matches no row, now or later.  Nothing else follows from such a callback: no row moves, so no
reaction and no metric (a reaction needs a move), ``provider_status``/``status_at`` stay as the
worker recorded them from the create response, and the early store would retry it for ~64 s to
find it "unchanged" in the end.  This holds for the cases that look as if they could differ:

* a row whose SID is not recorded yet (the worker's batch; an ambiguous send -- ``sending`` or
  ``unknown`` -- has no SID at all): the callback cannot attach its SID to a row (every move
  matches by SID), and ``mark_sent``/``resolve_unknown`` then record ``sent`` themselves;
* an intermediate status WITH an error code is not short-cut: it goes through ``apply_status``
  (the one path for error codes), whatever it changes;
* a status one precedence step up from the row (``delivered`` etc.: rank 3) is not intermediate.

So ``apply_status``/``apply_statuses`` answer such a callback "unchanged" without a statement,
and the webhook acknowledges it after the signature check without a transaction (webhooks/
status.py).  Two of the three callbacks Twilio posts per message are of this kind: on
bench/callbacks.py (queued, sent, delivered per row) the server's CPU per callback went from
1.11-1.12 ms to 0.45-0.49 and PostgreSQL's from 0.28-0.30 to 0.11 (load 6-7, 2026-12-07;
docs/scaling.md, "Status callbacks, second pass").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, String, bindparam
from sqlalchemy import select as sql_select
from sqlmodel import Session

from dispatcher import consent, outbox, runs
from dispatcher.models import Campaign, OutboxMessage, pk
from dispatcher.registry import CampaignCache

if TYPE_CHECKING:
    from dispatcher.delivery.ports import HaltSignal
    from dispatcher.metrics import OptOutKind

ACTOR = "twilio-webhook"
CARRIER_OPT_OUT = 21610
#: error code -> why every active run of the campaign is paused (compliance.md §7)
PAUSE_CAMPAIGN_CODES: dict[int, str] = {
    30034: "message from a number not registered for A2P 10DLC",
}
#: campaign_status values that pause every run (compliance.md §6)
PAUSE_CAMPAIGN_STATUSES = frozenset({"SUSPENDED"})


#: the rank of every row that has a provider SID (it is recorded with ``sent``: see above)
SID_RANK = outbox.RANK[outbox.SENT]


def moves_nothing(status: str, error_code: int | None) -> bool:
    """True when applying this callback changes nothing in the database, ever (the module
    docstring says why): a known status whose outbox state ranks no higher than ``sent``, and
    no error code."""
    target = outbox.PROVIDER_STATE.get(status)
    return not error_code and target is not None and outbox.RANK[target] <= SID_RANK


@dataclass
class StatusResult:
    #: "applied" | "unknown_sid" (no row has that SID yet; the status is a known one) |
    #: "unchanged" (nothing moved: late, duplicate, or an unknown status value)
    outcome: str
    row_id: int | None = None
    run_id: int | None = None
    state: str | None = None
    error_code: int | None = None
    campaign_sid: str | None = None
    sender: str | None = None
    carrier_opt_out: bool = False
    #: pending rows the 21610 revocation suppressed, per campaign SID (metrics)
    suppressed: dict[str, int] = field(default_factory=dict)
    paused_runs: int = 0


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One validated callback: what ``apply_status`` applies."""

    sid: str
    status: str
    error_code: int | None


def apply_status(
    session: Session,
    *,
    sid: str,
    status: str,
    error_code: int | None,
    now: datetime,
    campaigns: CampaignCache | None = None,
    halts: HaltSignal,
) -> StatusResult:
    """Move the row (monotonic CAS) and, if it moved, react to its error code / campaign (an
    opt-out or a campaign pause signals ``halts`` before the caller commits)."""
    if moves_nothing(status, error_code):
        return StatusResult("unchanged")
    row, why = _move(session, sid, status, error_code, now)
    if row is None:
        return StatusResult(why)
    return _moved(session, row, sid, error_code, now, campaigns, halts)


def _moved(
    session: Session,
    row: Any,
    sid: str,
    error_code: int | None,
    now: datetime,
    campaigns: CampaignCache | None,
    halts: HaltSignal,
) -> StatusResult:
    """What follows a move of ``row`` by a callback for ``sid``: its result and the reactions
    to its error code / campaign (an opt-out or a campaign pause signals ``halts``)."""
    cached, _ = (campaigns or CampaignCache(0)).get(session, row.campaign_id)
    csid, cstatus = cached.sid, cached.campaign_status
    sender = cached.messaging_service_sid or cached.sender
    res = StatusResult(
        "applied",
        row_id=row.id,
        run_id=row.run_id,
        state=row.state,
        error_code=error_code,
        campaign_sid=csid,
        sender=sender,
    )
    if not error_code and (cstatus or "").upper() not in PAUSE_CAMPAIGN_STATUSES:
        return res  # the common case: one UPDATE ... RETURNING and a cached lookup
    campaign = session.get_one(Campaign, row.campaign_id)
    if error_code == CARRIER_OPT_OUT:
        got = _carrier_opt_out(session, row, campaign, sid, now, halts)
        res.carrier_opt_out, res.suppressed = got.new, got.suppressed
    reason = None
    if error_code in PAUSE_CAMPAIGN_CODES:
        reason = (
            f"carrier error {error_code}: {PAUSE_CAMPAIGN_CODES[error_code]} "
            f"(message {sid}); every run of campaign {campaign.sid} paused"
        )
    elif (campaign.campaign_status or "").upper() in PAUSE_CAMPAIGN_STATUSES:
        reason = f"campaign {campaign.sid} is {campaign.campaign_status}"
    if reason:
        res.paused_runs = runs.pause_campaign_runs(session, pk(campaign), reason, now, halts=halts)
    return res


def apply_statuses(
    session: Session,
    updates: Sequence[StatusUpdate],
    *,
    now: datetime,
    campaigns: CampaignCache | None = None,
    halts: HaltSignal,
) -> list[StatusResult]:
    """Apply several callbacks in the caller's ONE transaction: the rows end as, and the same
    reactions run as, ``apply_status`` on each in arrival order (a duplicate or a late status
    in the batch changes nothing and reacts nothing).  Results in the order of ``updates``.

    The common callback -- a known status, no error code -- costs no statement of its own: per
    SID only the first callback of the highest rank can move the row (a later one of a lower or
    equal rank never does, an earlier lower one is overtaken within the batch and reacts
    nothing: no error code, so no metric but the final state's), and those moves are ONE
    statement (``outbox.apply_provider_statuses``).  The SIDs with an
    error-coded or unknown status go callback by callback through ``apply_status``, in SID
    order (a SID's callbacks keep their arrival order)."""
    out, by_sid, plain = _split(updates)
    if plain:
        _apply_plain(session, updates, plain, by_sid, out, now, campaigns, halts)
    for sid in sorted(by_sid.keys() - plain.keys()):
        for i in by_sid[sid]:
            u = updates[i]
            out[i] = apply_status(
                session,
                sid=sid,
                status=u.status,
                error_code=u.error_code,
                now=now,
                campaigns=campaigns,
                halts=halts,
            )
    return out  # type: ignore[return-value]


def is_plain(u: StatusUpdate) -> bool:
    """A known status without an error code: applying it is a move of its row and nothing
    else, unless the row's campaign is suspended."""
    return not u.error_code and u.status in outbox.PROVIDER_STATE


def apply_statuses_alone(
    conn: Connection, updates: Sequence[StatusUpdate], *, now: datetime
) -> list[StatusResult | None]:
    """The part of ``apply_statuses`` that is complete in ONE statement, for a connection in
    autocommit (PostgreSQL): no transaction around it, so no BEGIN/COMMIT round trips and no
    ORM session.  The result of each callback it settles; None for each one left for
    ``apply_statuses`` in a transaction, which the caller runs next on those alone.

    Settled here: a callback that ``moves_nothing``, and every callback of a SID all of whose
    callbacks in the batch are plain (``is_plain``) IF the statement moved its row -- the move
    is then the callback's whole effect (its reactions are ``react``'s metrics, after the
    commit), the same result and reactions as ``apply_statuses`` (same moving callback per SID,
    the others "unchanged").  The statement leaves alone the rows of a campaign whose status
    pauses runs (``PAUSE_CAMPAIGN_STATUSES``, read in the statement: a pause must commit with
    the move, so such a SID goes to the transaction).  A plain SID whose row did not move is
    settled too when a second, read-only statement (the state of its row) says why, as
    ``apply_statuses`` does: no row has the SID yet ("unknown_sid": the early store keeps it)
    or the row is at that rank or higher already (a late or duplicate status: "unchanged").
    Left for the transaction: SIDs with an error-coded or unknown status, and plain SIDs whose
    row is still below the status (committed after the statement's snapshot, or of a suspended
    campaign).  Each SID is settled wholly on one side, so its callbacks keep their arrival
    order."""
    out, by_sid, plain = _split(updates)
    if not plain:
        return out
    moved = outbox.apply_provider_statuses_alone(
        conn, {sid: updates[i].status for sid, i in plain.items()}, now, PAUSE_CAMPAIGN_STATUSES
    )
    for sid, row in moved.items():
        i = plain[sid]
        for j in by_sid[sid]:
            out[j] = StatusResult("unchanged")
        out[i] = StatusResult(
            "applied",
            row_id=row.id,
            run_id=row.run_id,
            state=row.state,
            error_code=None,
            campaign_sid=row.campaign_sid,
            sender=row.sender,
        )
    still = sorted(plain.keys() - moved.keys())
    found: dict[str, str] = dict(
        conn.execute(_SID_STATES, {"b_sids": still}).all() if still else ()
    )
    for sid in still:
        state = found.get(sid)
        if state in outbox.RANK and outbox.RANK[state] < _rank(updates[plain[sid]].status):
            continue  # committed after the statement's snapshot, or a suspended campaign
        why = "unknown_sid" if state is None else "unchanged"
        for j in by_sid[sid]:
            out[j] = StatusResult(why)
    return out


def _split(
    updates: Sequence[StatusUpdate],
) -> tuple[list[StatusResult | None], dict[str, list[int]], dict[str, int]]:
    """A batch's callbacks sorted out: the results so far (``moves_nothing`` ones settled
    "unchanged", None for the rest), the other callbacks' indices by SID, and for each SID
    whose callbacks are all ``is_plain`` the index of the one that can move its row (the first
    of the highest rank)."""
    out: list[StatusResult | None] = [None] * len(updates)
    by_sid: dict[str, list[int]] = {}
    for i, u in enumerate(updates):
        if moves_nothing(u.status, u.error_code):
            out[i] = StatusResult("unchanged")
        else:
            by_sid.setdefault(u.sid, []).append(i)
    plain = {
        sid: max(idx, key=lambda i: (_rank(updates[i].status), -i))
        for sid, idx in by_sid.items()
        if all(is_plain(updates[i]) for i in idx)
    }
    return out, by_sid, plain


def _rank(status: str) -> int:
    return outbox.RANK[outbox.PROVIDER_STATE[status]]


def _apply_plain(
    session: Session,
    updates: Sequence[StatusUpdate],
    plain: dict[str, int],
    by_sid: dict[str, list[int]],
    out: list[StatusResult | None],
    now: datetime,
    campaigns: CampaignCache | None,
    halts: HaltSignal,
) -> None:
    """The batch's plain SIDs (``plain``: SID -> its moving callback): their results in
    ``out``."""
    moved = outbox.apply_provider_statuses(
        session, {sid: updates[i].status for sid, i in plain.items()}, now
    )
    still = sorted(plain.keys() - moved.keys())
    found: dict[str, str] = dict(
        session.connection().execute(_SID_STATES, {"b_sids": still}).all() if still else ()
    )
    for sid, i in plain.items():
        row, status = moved.get(sid), updates[i].status
        state = found.get(sid)
        if state in outbox.RANK and outbox.RANK[state] < _rank(status):
            # the SID was committed after the batch's statement took its snapshot (READ
            # COMMITTED takes a new one per statement): the move applies now
            row = outbox.apply_provider_status(session, sid, status, None, now)
        if row is not None:
            out[i] = _moved(session, row, sid, None, now, campaigns, halts)
        why = "unchanged" if sid in found or row is not None else "unknown_sid"
        for j in by_sid[sid]:
            if out[j] is None:
                out[j] = StatusResult(why)


_T: Any = OutboxMessage.__table__  # type: ignore[attr-defined]
#: the state of the row that has a SID (unique index on provider_sid: one index lookup)
_SID_STATE = sql_select(_T.c.state).where(_T.c.provider_sid == bindparam("b_sid", type_=String))
#: the states of the rows that have these SIDs
_SID_STATES = sql_select(_T.c.provider_sid, _T.c.state).where(
    _T.c.provider_sid.in_(bindparam("b_sids", expanding=True))
)


def _move(
    session: Session, sid: str, status: str, error_code: int | None, now: datetime
) -> tuple[Any, str]:
    """``outbox.apply_provider_status``; if nothing moved, also why: "unknown_sid" or
    "unchanged".  Costs one indexed SELECT only when nothing moved."""
    row = outbox.apply_provider_status(session, sid, status, error_code, now)
    target = outbox.PROVIDER_STATE.get(status)
    if row is not None or target is None:
        return row, "unchanged"
    state = session.connection().execute(_SID_STATE, {"b_sid": sid}).scalar()
    if state is None:
        return None, "unknown_sid"
    if state in outbox.RANK and outbox.RANK[state] < outbox.RANK[target]:
        # the SID was committed between the UPDATE and this SELECT (READ COMMITTED takes a new
        # snapshot per statement): the move applies now
        row = outbox.apply_provider_status(session, sid, status, error_code, now)
    return row, "unchanged"


def _carrier_opt_out(
    session: Session, row: Any, campaign: Campaign, sid: str, now: datetime, halts: HaltSignal
) -> consent.Recorded:
    """21610: the recipient opted out at Twilio/the carrier -> brand-wide revoke + suppress
    (``consent.revoke_and_suppress``; one ledger entry per block, however many rows meet it).
    ``.new`` when the revocation is new."""
    return consent.carrier_opt_out(
        session,
        row.contact_id,
        campaign.brand_id,
        ref=sid,
        note=f"status callback for campaign {campaign.sid}",
        actor=ACTOR,
        halts=halts,
        now=now,
    )


class StatusMetrics(Protocol):
    """What ``react`` records (the webhooks' and the delivery core's metrics ports have these)."""

    def delivered(self, campaign: str, sender: str) -> None: ...

    def undelivered(self, campaign: str, sender: str, error_code: int | str | None) -> None: ...

    def failed(self, campaign: str, sender: str, error_code: int | str | None) -> None: ...

    def opt_out(self, campaign: str, kind: OptOutKind = "keyword") -> None: ...

    def suppressed(self, campaign: str, reason: str, n: int = 1) -> None: ...


def react(metrics: StatusMetrics, res: StatusResult) -> list[int]:
    """After the commit of a status that moved its row (``res.outcome == "applied"``): its
    metrics.  Returns the runs whose reputation guard to evaluate (the status carried an error
    code), which the caller does (``guard_check.check_runs``)."""
    if res.outcome != "applied":
        return []
    campaign, sender = res.campaign_sid or "unknown", res.sender or "unknown"
    if res.state == outbox.DELIVERED:
        metrics.delivered(campaign, sender)
    elif res.state == outbox.UNDELIVERED:
        metrics.undelivered(campaign, sender, res.error_code)
    elif res.state == outbox.FAILED:
        metrics.failed(campaign, sender, res.error_code)
    if res.carrier_opt_out:
        metrics.opt_out(campaign, "carrier")
    for sid, n in res.suppressed.items():
        metrics.suppressed(sid, "opted_out", n)
    return [res.run_id] if res.error_code and res.run_id is not None else []
