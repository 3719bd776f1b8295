"""The order of suppression reasons (issue 21.6): for every pair of reasons that can hold together,
the gate (``delivery.gate.evaluate``, pure) reports the one first in ``REASON_ORDER``: consent
before the number, the number before the message.  Campaign-level reasons pause the run."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from dispatcher.compliance import CAMPAIGN_LEVEL_REASONS, REASON_ORDER, SuppressReason
from dispatcher.delivery.gate import Verdict, evaluate
from dispatcher.ledger import ConsentStatus
from dispatcher.templates import parse_template

from .helpers import Camp

R = SuppressReason
NOON_NY = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
BRAND_NAME = "Acme"


@dataclass
class Case:
    """Every input of one ``evaluate`` call; each reason below changes some of them."""

    template: str = "Hi [first_name], your order shipped."
    variables: dict[str, Any] = field(default_factory=lambda: {"first_name": "Jane"})
    phone: str = "+12125550123"
    campaign: Camp = field(default_factory=Camp)
    consent: ConsentStatus = field(default_factory=lambda: ConsentStatus(True, False, None, None))
    history: list[tuple[int, datetime, str, int | None]] = field(default_factory=list)


def _status(value: str | None):
    def apply(c: Case) -> None:
        c.campaign.campaign_status = value

    return apply


def _drift(c: Case) -> None:
    c.campaign.us_app_to_person_usecase = "CONVERSATIONAL"


def _opted_out(c: Case) -> None:
    c.consent = ConsentStatus(False, True, None, NOON_NY)


def _no_consent(c: Case) -> None:
    if not c.consent.opted_out:
        c.consent = ConsentStatus(False, False, None, None)


def _invalid(c: Case) -> None:
    c.phone = "+1212"


def _carrier(c: Case) -> None:
    c.history.append((99, NOON_NY, "undelivered", 21614))


def _missing(c: Case) -> None:
    c.template += " Ref [order_ref]."


def _too_long(c: Case) -> None:
    c.template += " [note]"
    c.variables["note"] = "x" * 1590


def _lint(c: Case) -> None:
    c.template += " Visit www.acme.example today."  # a link the campaign did not declare


TRIGGERS = {
    R.CAMPAIGN_IN_PROGRESS: _status("IN_PROGRESS"),
    R.CAMPAIGN_FAILED: _status("FAILED"),
    R.CAMPAIGN_SUSPENDED: _status("SUSPENDED"),
    R.CAMPAIGN_STATUS_UNKNOWN: _status(None),
    R.CAMPAIGN_DRIFT: _drift,
    R.OPTED_OUT: _opted_out,
    R.NO_CONSENT: _no_consent,
    R.INVALID_NUMBER: _invalid,
    R.CARRIER_SUPPRESSED: _carrier,
    R.TEMPLATE_VARIABLE_MISSING: _missing,
    R.MESSAGE_TOO_LONG: _too_long,
    R.LINT_ERROR: _lint,
}
#: one campaign has one status: these never hold together
STATUSES = {R.CAMPAIGN_IN_PROGRESS, R.CAMPAIGN_FAILED, R.CAMPAIGN_SUSPENDED}
STATUSES |= {R.CAMPAIGN_STATUS_UNKNOWN}


@dataclass
class _Brand:
    name: str = BRAND_NAME


def _reported(case: Case) -> tuple[Verdict, str | None]:
    case.campaign.id = 1  # type: ignore[attr-defined]

    @dataclass
    class Contact:
        phone: str
        name: str | None = None
        attributes: dict[str, Any] | None = None
        time_zone: str | None = None
        state_code: str | None = None

    g = evaluate(
        parse_template(case.template),
        case.variables,
        Contact(case.phone),
        _Brand(),  # type: ignore[arg-type]
        case.campaign,  # type: ignore[arg-type]
        case.consent,
        case.history,
        NOON_NY,
    )
    reason = g.reason.split(" (")[0] if g.reason else None
    return g.kind, reason


def _expected(reason: SuppressReason) -> tuple[Verdict, str]:
    kind = Verdict.PAUSE if reason in CAMPAIGN_LEVEL_REASONS else Verdict.SUPPRESS
    return kind, reason.value


def test_the_order_names_every_reason_once():
    assert sorted(REASON_ORDER) == sorted(SuppressReason)
    assert set(TRIGGERS) == set(SuppressReason)


def test_the_case_sends_and_each_trigger_alone_gives_its_reason():
    assert _reported(Case()) == (Verdict.SEND, None)
    for reason, trigger in TRIGGERS.items():
        case = Case()
        trigger(case)
        assert _reported(case) == _expected(reason), reason


PAIRS = [
    (a, b)
    for a, b in itertools.permutations(REASON_ORDER, 2)
    if not (a in STATUSES and b in STATUSES)
]


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_every_pair_reports_the_first_in_the_order(a, b):
    case = Case()
    TRIGGERS[a](case)
    TRIGGERS[b](case)
    first = min(a, b, key=REASON_ORDER.index)
    assert _reported(case) == _expected(first)


def test_a_list_recipient_without_consent_or_fields_is_no_consent():
    """The case of issue 21.6: a CSV-audience recipient who is not a contact (no name, no
    attributes, so the template's fields are missing) and has no consent."""
    case = Case(variables={}, consent=ConsentStatus(False, False, None, None))
    assert _reported(case) == (Verdict.SUPPRESS, "no_consent")
