"""Forbidden content categories and filter evasion (compliance.md §2.4, issue 18): tables of bodies
that must be flagged and bodies that must stay clean."""

from __future__ import annotations

import json
import sys
import unicodedata
from datetime import UTC, datetime
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.compliance import (
    ContactState,
    OutgoingMessage,
    Suppress,
    compose,
    content,
    decide,
    evasion,
    lint_campaign,
    lint_message,
)
from dispatcher.compliance.lint import content_findings
from workers.demo import TEMPLATE

from .helpers import Camp, registration

ZWSP = "\u200b"
CYR_ES = "\u0421"  # Cyrillic capital ES, looks like Latin C
CYR_O = "\u043e"  # Cyrillic small O

# (body, category expected, written to evade filters)
MUST_FLAG: list[tuple[str, str | None, bool]] = [
    # the examples of issue 18
    (f"marij{ZWSP}uana", "cannabis", True),
    ("m4rijuana", "cannabis", True),
    (f"{CYR_ES}BD oil", "cannabis", True),
    (f"CBD {CYR_O}il", "cannabis", True),
    ("quick cash loans, approved today", "high_risk_financial", False),
    ("credit repair that works", "debt", False),
    ("make money from home", "get_rich_quick", False),
    # high-risk financial services
    ("Need money? Payday loans with no credit check, apply now", "high_risk_financial", False),
    ("Bad credit OK! Title loans in 15 minutes", "high_risk_financial", False),
    ("Short-term loans up to $1,000, guaranteed approval", "high_risk_financial", False),
    ("Your loan approved instantly, just reply YES", "high_risk_financial", False),
    ("Invest in Bitcoin today and watch it grow", "high_risk_financial", False),
    ("Crypto signals: 10x gains guaranteed", "high_risk_financial", False),
    # third-party lead generation
    ("Get free quotes from multiple auto insurers in 2 minutes", "lead_generation", False),
    ("Get matched with top lenders near you", "lead_generation", False),
    ("Thanks! One of our partners will contact you shortly", "lead_generation", False),
    ("You may be entitled to compensation for your injury", "lead_generation", False),
    # debt collection or forgiveness
    ("Struggling? Our debt relief program can help", "debt", False),
    ("Consolidate your credit card debt into one payment", "debt", False),
    ("We can reduce your debt by up to 50%", "debt", False),
    ("Apply now for student loan forgiveness", "debt", False),
    ("This is an attempt to collect a debt by a debt collector", "debt", False),
    ("Your account was placed with our office for collection", "debt", False),
    ("We act on behalf of your original creditor", "debt", False),
    ("Acme Recovery is a collection agency. Call us today", "debt", False),
    ("Fix your credit score in 30 days", "debt", False),
    # get rich quick
    ("Earn $500/day from your phone!", "get_rich_quick", False),
    ("Work from home opportunity: be your own boss", "get_rich_quick", False),
    ("Passive income with our risk-free investment", "get_rich_quick", False),
    ("Become a mystery shopper today", "get_rich_quick", False),
    # illegal substances
    ("Cocaine and MDMA delivered", "drugs", False),
    ("THCA flower and delta 8 gummies", "cannabis", False),
    ("Marihuana delivery tonight", "cannabis", False),
    # evasion of every kind
    ("c a n n a b i s", "cannabis", True),
    ("C.B.D gummies", "cannabis", True),
    ("q u i c k  c a s h", "high_risk_financial", True),
    ("q u i c k c a s h l o a n s", "high_risk_financial", True),
    ("M A R 1 J U A N A", "cannabis", True),
    ("c@nnabis", "cannabis", True),
    ("v1agra", "rx", True),
    ("a1cohol", "alcohol", True),
    ("d3bt r3lief", "debt", True),
    ("5ex toys", "sex", True),
    ("w33d delivery tonight", "cannabis", True),
    ("fresh m4rijuana at 4pm", "cannabis", True),
    ("\uff43\uff42\uff44 gummies", "cannabis", True),  # fullwidth
    ("\U0001d41c\U0001d41b\U0001d41d gummies", "cannabis", True),  # mathematical bold
    ("mariju\u00e1na", "cannabis", True),  # accent
    ("can\u00adnabis", "cannabis", True),  # soft hyphen
    ("cann\u2060abis", "cannabis", True),  # word joiner
    ("\u0441\u0430nnabis", "cannabis", True),  # Cyrillic с, а
    ("\u0441\u0432\u0434", None, False),  # Cyrillic "свд" is Russian letters, not a look-alike
    # prescription drugs sold or offered (a drug's name alone is a pharmacy's wording: CLEAN)
    ("buy Ozempic online, no prescription needed", "rx", False),
    ("Cheap generic Cialis shipped overnight", "rx", False),
    ("Xanax for sale, text me", "rx", False),
    ("Adderall without a prescription, delivered", "rx", False),
    ("Order Ozempic today", "rx", False),
    # ... or a drug's name in disguise
    ("Your 0zempic refill is ready", "rx", True),
    ("o z e m p i c", "rx", True),
    ("Your Ozempic refill is ready, and cheap v1agra too", "rx", True),
    # "xxx" beside adult words (alone it is a placeholder: CLEAN)
    ("XXX videos free tonight", "sex", False),
    ("Hot XXX girls in your area", "sex", False),
    ("Watch free xxx now", "sex", False),
    ("Rated XXX movies, 50% off", "sex", False),
    # evasion signals on their own: error whatever the word means
    (f"Hello{ZWSP}world", None, True),
    ("\u03a1ay now", None, True),  # Greek capital RHO in "Pay"
]

CLEAN: list[str] = [
    # first-party service wording (issue 18, compliance.md §2.4)
    "your balance of $40 is due on Friday",
    "Acme Bank: your loan payment of $250 is due on 05/01.",
    "Acme Dental: your account is past due. Please pay your balance of $120 by Friday.",
    "Reminder from Acme Hospital: the debt of $80 for your visit on 3/2 is overdue.",
    "Acme Credit Union: your auto loan payment is due tomorrow.",
    "Your student loan payment of $210 is due on 5/1.",
    "Your credit card statement is ready.",
    "Your prescription is ready for pickup.",
    "We received your payment. Thank you!",
    "Payday is Friday! Your paycheck will be deposited.",
    "Your Bitcoin withdrawal of 0.01 BTC is complete.",
    "You earned $25 cash back this month.",
    "Snow day: the office is closed, please work from home.",
    "Your claim has been approved today.",
    "Mow the lawn and pull the weeds: spring service starts Monday.",
    "We never sell or share your information with third parties.",
    "Fraud alert: did you just spend $52.10 at Target? Reply Y or N",
    "Payment plan available: call us to settle your balance.",
    "Acme Hospital: please settle your debt of $80 by Friday.",
    "Acme Gym: unpaid balances over 90 days are sent to a collection agency.",
    "Acme Bank: a cash advance of $200 posted to your card.",
    "Your credit score went up 12 points!",
    "Earn double points this week.",
    # a pharmacy names the drugs it fills (issue 18: not "without prescription")
    "Your Ozempic refill is ready for pickup at Main St Pharmacy",
    "Main St Pharmacy: your Xanax prescription needs a new authorization from your doctor.",
    "Reminder: take your Adderall with food. Questions? Call Main St Pharmacy.",
    "Your Viagra refill #12 is ready",  # digits: the body is normalised, the name is as written
    "Order your Ozempic refill online or in store.",
    # "xxx" as a placeholder
    "Order XXX-1234 has shipped",
    "Your card ending xxxx was charged $40.",
    "Ref: XXX. Please quote it when you call.",
    "Your order xxx-xxx-1234 shipped.",
    # digits, symbols and single letters that are ordinary
    "Your appointment is on Tuesday at 4pm. Reply C to confirm.",
    "Your order #A1B2C3 has shipped.",
    "Flash sale: 20% off your 2nd pair.",
    "B2B invoice INV-2024-0001 is due.",
    "Vitamin B12 shots are available at the front desk.",
    "Pay your $40 balance by 9 a.m. Friday.",
    "Open 24/7, call us any time.",
    "Your Wi-Fi password is P@ssw0rd1!",
    "Plan A, B or C: reply with the letter.",
    "Hugs, the Acme team!!!",
    "Use code SAVE10 for 10% off.",
    "Take 10mg 2x daily, refill in 30d; COVID19 boosters on the 3rd.",
    # non-ASCII text that is ordinary
    "Hi Jos\u00e9, your caf\u00e9 order is ready \u2615",
    "Hola Mar\u00eda, su cita es el martes a las 3:00 p.\u00a0m.",
    "\u0412\u0430\u0448 \u0437\u0430\u043a\u0430\u0437 \u0433\u043e\u0442\u043e\u0432",  # Russian
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 Family plan renewed",  # ZWJ emoji
    "Dosage: 500 \u00b5g twice a day",
    "Acme\u2122: it\u2019s ready, see you soon \U0001f600",
    "\u00c9quipe Acme: votre rendez-vous est confirm\u00e9",
    # Persian uses ZWNJ inside ordinary words
    "\u0645\u0631\u062d\u0628\u0627\u200c\u0628\u06a9 \u0633\u0641\u0627\u0631\u0634",
]


def _seed004() -> dict[str, object]:
    ref = resources.files("dispatcher") / "data" / "usa2p_seed004.json"
    return json.loads(ref.read_text(encoding="utf-8"))


SEED = _seed004()
CLEAN += [str(s) for s in SEED["message_samples"]]  # type: ignore[attr-defined]
CLEAN += [str(SEED[k]) for k in ("opt_in_message", "opt_out_message", "help_message")]
CLEAN += list(registration()["message_samples"])
CLEAN.append(
    compose(
        TEMPLATE.replace("[first_name]", "Dana")
        .replace("[contract]", "MC-1042")
        .replace("[date]", "2026-12-31"),
        brand_name="Northwind",
        first_message=True,
    )
)


def _codes(text: str) -> dict[str, str]:
    return {f.code: f.message for f in content_findings(text, "body", False)}


@pytest.mark.parametrize(("body", "category", "evasive"), MUST_FLAG)
def test_must_flag(body: str, category: str | None, evasive: bool) -> None:
    found = _codes(body)
    if category is None:
        assert "prohibited_content" not in found, found
    else:
        assert category in [c.key for c in content.scan(body).categories]
        assert f"({category};" in found["prohibited_content"]
    assert ("filter_evasion" in found) == evasive, found


@pytest.mark.parametrize("body", CLEAN)
def test_must_stay_clean(body: str) -> None:
    assert content_findings(body, "body", False) == []


@pytest.mark.parametrize("body", CLEAN)
def test_clean_bodies_pass_the_whole_lint(body: str) -> None:
    camp = Camp(has_embedded_links=True, has_embedded_phone=True)
    errors = [f for f in lint_message(body, camp) if f.severity == "error"]
    assert errors == []


def test_evasion_findings_name_the_trick_and_the_word() -> None:
    found = _codes(f"Acme: fresh {CYR_ES}BD oil. Reply STOP to opt out.")
    assert "look-alike letters" in found["prohibited_content"]
    assert "Cyrillic" in found["filter_evasion"] and "U+0421" in found["filter_evasion"]
    found = _codes(f"marij{ZWSP}uana")
    assert "U+200B" in found["filter_evasion"] and "marij\\u200buana" in found["filter_evasion"]
    found = _codes("m4rijuana")
    assert "digits or symbols for letters hide cannabis" in found["filter_evasion"]


def test_age_gated_campaign_still_refuses_the_evasion() -> None:
    found = content_findings("b33r tasting tonight", "body", True)
    assert {(f.code, f.severity) for f in found} == {
        ("age_gated_content", "warning"),
        ("filter_evasion", "error"),
    }


def test_decide_suppresses_an_evasive_body() -> None:
    now = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
    body = compose("fresh m4rijuana in stock", brand_name="Acme", first_message=True)
    d = decide(
        OutgoingMessage("+12125550100", body, True, brand_name="Acme"),
        ContactState(True),
        Camp(),
        now=now,
    )
    assert isinstance(d, Suppress) and d.detail == "prohibited_content"


def test_registration_samples_are_checked_for_the_new_categories() -> None:
    reg = registration()
    reg["message_samples"] = [reg["message_samples"][0], "Acme Sandwich: debt relief now!"]
    found = {(f.code, f.field) for f in lint_campaign(reg) if f.severity == "error"}
    assert ("prohibited_content", "message_samples") in found


def test_every_format_character_counts_as_invisible() -> None:
    cf = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    missing = [f"U+{c:04X}" for c in cf if not evasion.INVISIBLE_RE.fullmatch(chr(c))]
    assert missing == []


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_fast_path_skips_only_text_that_normalising_leaves_alone(text: str) -> None:
    """The fast path (no normalisation) is taken only where normalising would change nothing."""
    if not evasion.needs_normalising(text.lower()):
        assert evasion.stages(text) == []
