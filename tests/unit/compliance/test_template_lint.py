"""Linting a body from its template parts equals linting the whole body (template_lint.py)."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.compliance import ContactState, OutgoingMessage, compose, decide, template_lint
from dispatcher.compliance.boundary import edges
from dispatcher.compliance.content import LINK_RE, PHONE_RE, _tables
from dispatcher.compliance.lint import body_findings, lint_body

from .helpers import Camp

# Fragments that take part in the patterns (terms across words, links, phone numbers, opt-out
# wording, spaced-out letters, digits for letters), so that random joins cross every edge.
FRAGMENTS = [
    "happy", "hour", "hap", "py ", "reply", "Reply ", "STOP", "stop", "text", " to opt out",
    "with", "www.", "acme", ".com", "/t", "bit", ".ly", "http://", "555", "-", "123", "4567",
    "(212) ", "+1", "1-800-", "FLOWERS", "$", "5", "0", ",", ".", " a day", "earn ", "make ",
    "money ", "online", "gin", "rum", "weed", " delivery", "c a s", " h", "4pm", "b2b", "m4r",
    "ijuana", "c.b.d", "!", "+", "@", "|", "_", "/", " ", "  ", "\n", "'", '"', "(", ")", ":",
    "#", "Acme", "acme", "order", "shipped", "Hi ", "press 1", " to cancel", "debt", " relief",
    "your", " credit", "caf\u00e9", "\u2019", "A", "Z", "q", "x", "7", "9",
]  # fmt: skip
CHUNK = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=6).map("".join)
VALUE = st.lists(
    st.sampled_from(FRAGMENTS) | st.text(min_size=1, max_size=4), min_size=1, max_size=4
).map("".join)
RULES = st.tuples(
    st.booleans(),  # has_links
    st.booleans(),  # has_phone
    st.booleans(),  # age_gated
    st.sampled_from(["ACCOUNT_NOTIFICATION", "MARKETING"]),
    st.sampled_from([None, "Acme"]),
    st.booleans(),  # first_message
    st.booleans(),  # proactive
    st.sampled_from([None, "Text QUIT to leave", "  "]),
)


@pytest.fixture(autouse=True)
def _plan_at_once(monkeypatch):
    """The plan from the first message (a process builds it after ``WARM`` of a template)."""
    monkeypatch.setattr(template_lint, "WARM", 0)


def _parts(literals: list[str], values: list[str]) -> tuple[str, ...]:
    out: list[str] = [literals[0]]
    for v, lit in zip(values, literals[1:], strict=True):
        out += [v, lit]
    return tuple(out)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(CHUNK, min_size=2, max_size=4), st.data(), RULES)
def test_parts_lint_equals_whole_body_lint(literals, data, rules):
    values = data.draw(st.lists(VALUE, min_size=len(literals) - 1, max_size=len(literals) - 1))
    parts = _parts(literals, values)
    body = "".join(parts)
    assert template_lint.lint_parts(parts, body, *rules) == lint_body(body, *rules)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(
        [
            ("Your order ", " shipped, track it at www.acme.com/t. Reply STOP to opt out."),
            ("Hi ", ", your table for ", " is ready. Acme. Reply STOP to opt out."),
            ("Acme: code ", " expires at ", ". Text STOP to quit."),
        ]
    ),
    st.data(),
    RULES,
)
def test_parts_lint_equals_whole_body_lint_on_real_templates(literals, data, rules):
    """The fast path is taken on these templates (literal_facts proves their edges closed), so
    this checks the derivation itself, with values of every kind."""
    assert template_lint.literal_facts(literals) is not None
    values = data.draw(st.lists(VALUE, min_size=len(literals) - 1, max_size=len(literals) - 1))
    parts = _parts(list(literals), values)
    body = "".join(parts)
    assert template_lint.lint_parts(parts, body, *rules) == lint_body(body, *rules)


def test_plain_values_skip_the_whole_body_lint(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(template_lint, "lint_body", lambda body, *a: calls.append(body) or ())
    lits = ("Your order ", " shipped, track it at www.acme.com/t. Reply STOP to opt out.")
    rules = (True, False, False, "ACCOUNT_NOTIFICATION", "Acme", True, True, None)
    for v in ("#10001-5550001", "Bob", "A-17"):
        parts = (lits[0], v, lits[1])
        template_lint.lint_parts(parts, "".join(parts), *rules)
    assert calls == []
    for v in ("bit.ly/x", "212-555-0100", "gin", "c a s h"):  # a match inside the value
        parts = (lits[0], v, lits[1])
        template_lint.lint_parts(parts, "".join(parts), *rules)
    assert len(calls) == 4


@pytest.mark.parametrize(
    ("literals", "windows", "why"),
    [
        (("Happy ", " at the bar"), ((0, 1),), "a term may run from the literal into the value"),
        (("Call 555-", " or email"), ((0, 1),), "a phone number may run into the value"),
        (("Call 555-", " now"), ((0, 2),), "... and 'loans approved now' into the literal"),
        (("Reply ", " STOP"), ((0, 2),), "opt-out wording may span the value"),
        (("Hi ", ", code ", " ok"), ((1, 1), (3, 4)), "'bad credit ok' may end in the literal"),
        (("Code ", " expires at ", "."), ((1, 3),), "'reduce your [x] at debt' may span it"),
        (("Parcel ", " shipped"), ((1, 1),), "nothing crosses: the value alone"),
        (("Order ", " shipped"), ((0, 1),), "'order [Ozempic online]' is a drug sale"),
    ],
)
def test_literals_a_match_may_cross_are_scanned_with_their_values(literals, windows, why):
    got = template_lint.plan(literals)
    assert got is not None and got.windows == windows, why


def test_each_pattern_scans_only_the_literals_it_may_cross():
    """``order [Ozempic] online`` may run from ``Your order `` into the value, so the terms scan
    it; no link, phone number or opt-out wording can, so those scan the value alone."""
    got = template_lint.plan(("Your order ", " shipped"))
    assert got is not None and got.windows == ((0, 1),)
    # a text each pattern finds (and the others do not): the scans that find it are its own
    samples = ["buy viagra", "v1agra", "www.x.com", "212-555-0100", "reply stop", "text 2 to end"]
    for j, (p, _) in enumerate(template_lint._patterns()):
        assert [k for k, text in enumerate(samples) if p.search(text)] == [j]
    by_pattern = {}
    for rx, windows in got.scans:
        for j, sample in enumerate(samples):
            if rx.search(sample):
                assert j not in by_pattern, "one scan per pattern"
                by_pattern[j] = windows
    assert by_pattern == {
        0: ((0, 1),),
        1: ((1, 1),),
        2: ((1, 1),),
        3: ((1, 1),),
        4: ((1, 1),),
        5: ((1, 1),),
    }


# literals some patterns cross and others do not (terms, phone numbers, links, opt-out wording)
PARTIAL = [
    "Your order ", "Call 555-", "Reply ", "Happy ", " hour", " at www.", ".com", "Text ",
    " to opt out", "Hi ", ", your credit ", "(212) ", " today", "buy ", " online", "+1",
    " STOP", "!", "", " ", "Acme: ", " shipped. Reply STOP to opt out.",
]  # fmt: skip


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.sampled_from(PARTIAL), min_size=2, max_size=4), st.data(), RULES)
def test_parts_lint_equals_whole_body_lint_when_patterns_cross_different_literals(
    literals, data, rules
):
    """The per-pattern windows (Plan.scans): a value's scan by one pattern reaches into a literal
    that another pattern's does not."""
    values = data.draw(st.lists(VALUE, min_size=len(literals) - 1, max_size=len(literals) - 1))
    parts = _parts(literals, values)
    body = "".join(parts)
    assert template_lint.lint_parts(parts, body, *rules) == lint_body(body, *rules)


@pytest.mark.parametrize(
    "parts",
    [
        ("Call 555-", "123-4567", " now"),  # a phone number from the literal into the value
        ("Call ", "212", "-555-0100 today"),  # ... from the value into the literal
        ("Visit www.", "acme", ".com today"),  # a link across the value
        ("Your order ", "ozempic online", " shipped"),  # a drug sale from the literal
        ("Happy ", "hour", " at the bar"),  # a term across the edge
        ("Press ", "9", " to opt out"),  # non-standard opt-out wording across the value
        ("Get c.", "b.", "d here"),  # an evasion hint across both edges
        ("Try ", "h", "-e-r-o-i-n now"),  # ... from the value into the literal
        ("Reply ", "STOP", " to opt out"),  # the standard opt-out instruction across the value
    ],
)
def test_a_match_across_an_edge_is_found_by_the_pattern_that_crosses_it(parts):
    rules = (False, False, False, "ACCOUNT_NOTIFICATION", None, False, True, None)
    body = "".join(parts)
    assert template_lint.plan(parts[0::2]) is not None
    assert template_lint.lint_parts(parts, body, *rules) == lint_body(body, *rules)
    plain = parts[0] + " ~ " + parts[2]
    assert lint_body(body, *rules) != lint_body(plain, *rules)  # the match is the crossing one


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["1", "800", "-", "FLOWERS", "flowers", "Ab", "555", "(212) ", "+1", " "])
        | st.text(alphabet=st.characters(max_codepoint=127), max_size=3),
        max_size=8,
    ).map("".join)
)
def test_the_lower_case_phone_scan_finds_every_phone_number(text):
    """The value scan reads the lower-cased body (template_lint._phone_lower): it must match
    wherever the phone pattern matches the body as it is."""
    lower = re.compile(template_lint._phone_lower())
    if PHONE_RE.search(text):
        assert lower.search(text.lower())


def test_non_ascii_templates_are_linted_whole():
    assert template_lint.plan(("caf\u00e9 ", " ok")) is None


def test_edge_languages():
    phone = edges(PHONE_RE.pattern, PHONE_RE.flags)
    assert phone.open_before_value("call 555-") and not phone.open_before_value("order ")
    assert phone.open_after_value("-1234 x") and not phone.open_after_value(" shipped")
    link = edges(LINK_RE.pattern, LINK_RE.flags)
    assert link.open_after_value(".com") and not link.open_after_value(" acme")
    terms = _tables(False)[0]
    cats = edges(terms.pattern, terms.flags)
    assert cats.open_before_value("happy ") and not cats.open_before_value("your parcel ")
    assert cats.open_before_value("your order ")  # "order [Ozempic] online": a drug sale
    assert cats.open_after_value(" hour") and not cats.open_after_value(" shipped")


def test_decide_with_parts_equals_decide_with_body():
    camp = Camp(has_embedded_links=True)
    now = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
    state = ContactState(True)
    for v in ("#10001", "gin", "212-555-0100"):
        body = compose(
            f"Your order {v} shipped, www.acme.com/t",
            brand_name="Acme",
            opt_out_language=None,
            first_message=True,
        )
        i = body.index(v)
        parts = (body[:i], v, body[i + len(v) :])
        whole = decide(
            OutgoingMessage("+12125550100", body, True, brand_name="Acme"), state, camp, now=now
        )
        split = decide(
            OutgoingMessage("+12125550100", body, True, brand_name="Acme", parts=parts),
            state,
            camp,
            now=now,
        )
        assert split == whole


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        (("Your order ", "7", " shipped"), "Acme: Your order 7 shipped. Reply STOP to opt out."),
        (("  Hi ", "Bob", "!  "), "Acme: Hi Bob! Reply STOP to opt out."),
        (("Hi ", "Bob", ""), "Hi Bob"),
    ],
)
def test_split_composed_refits_the_parts(parts, text):
    got = template_lint.split_composed(parts, text)
    assert got is not None and "".join(got) == text and got[1::2] == parts[1::2]


def test_a_template_seen_a_few_times_is_linted_whole(monkeypatch):
    monkeypatch.setattr(template_lint, "WARM", 3)
    monkeypatch.setattr(template_lint, "_seen", {})
    monkeypatch.setattr(template_lint, "_ready", {})
    built: list[tuple[str, ...]] = []
    real = template_lint.plan
    monkeypatch.setattr(template_lint, "plan", lambda lits: built.append(lits) or real(lits))
    whole: list[str] = []
    real_lint = template_lint.lint_body
    monkeypatch.setattr(
        template_lint, "lint_body", lambda body, *a: whole.append(body) or real_lint(body, *a)
    )
    lits = ("Order ", " is on its way")
    rules = (True, False, False, "ACCOUNT_NOTIFICATION", None, False, True, None)
    for i in range(5):
        parts = (lits[0], str(i), lits[1])
        template_lint.lint_parts(parts, "".join(parts), *rules)
    assert whole == ["Order 0 is on its way", "Order 1 is on its way", "Order 2 is on its way"]
    assert built == [lits]  # at the 4th message, kept for the 5th


def test_a_plan_is_built_by_one_thread_while_the_others_lint_whole_bodies():
    """Every worker thread of a process meets a template's 200th message at about the same
    time: one builds its plan, the others get None (they lint the whole body meanwhile)
    instead of building the same plan at once (issue 22: a process stalled for 20-40 s)."""
    import threading

    literals = ("Hi ", ", your order ", " has shipped (thread test).")
    template_lint._planned.discard(literals)
    started, release = threading.Event(), threading.Event()
    real = template_lint.plan

    def slow(lits: tuple[str, ...]) -> object:
        started.set()
        release.wait(10)
        return real(lits)

    got: list[object] = []
    template_lint.plan = slow  # type: ignore[assignment]
    try:
        builder = threading.Thread(target=lambda: got.append(template_lint._plan_once(literals)))
        builder.start()
        assert started.wait(10)
        assert template_lint._plan_once(literals) is None  # another thread is building it
        release.set()
        builder.join(10)
    finally:
        template_lint.plan = real  # type: ignore[assignment]
    assert got == [real(literals)] and got[0] is not None
    assert template_lint._plan_once(literals) is got[0]  # built: every thread uses it


@pytest.mark.parametrize(
    ("literals", "values"),
    [
        # the campaign's opt-out sentence and the brand name in a literal, in a value, across
        (("Acme: order ", " shipped. Ask us to forget you"), ["#1", "x" * 300, "{1}", "`"]),
        (("Order ", " shipped. Ask us to "), ["forget you", "#1", "stay"]),
        (("Ac", " order shipped. Reply STOP to opt out."), ["me", "#1"]),
        (("Order ", " shipped"), ["#1 Acme", "Ask us to forget you", "Reply STOP to end"]),
        # blank literals, a body made long or UCS-2 / extension characters by a value
        ((" ", " "), ["Acme hi", "  "]),
        (("Acme: code ", " expires. Reply STOP to opt out."), ["9" * 400, "[1]", "\\", "1"]),
    ],
)
def test_the_fixed_findings_of_a_template_equal_the_whole_body_lint(literals, values, monkeypatch):
    """``_fixed``: the findings the literals decide, taken when the body is short and GSM-7;
    over every rule that changes them (brand, first message, proactive, opt-out sentence)."""
    calls = []

    def counted(*args):  # noqa: ANN002, ANN202
        calls.append(args[0])
        return body_findings(*args)

    monkeypatch.setattr(template_lint, "body_findings", counted)
    checked = 0
    for rules in itertools.product(
        [False, True],
        [False],
        [False],
        ["ACCOUNT_NOTIFICATION", "CONVERSATIONAL"],
        [None, "Acme", "ACME", "  "],
        [False, True],
        [False, True],
        [None, "Ask us to forget you", "  "],
    ):
        for value in values:
            parts = _parts(list(literals), [value])
            body = "".join(parts)
            assert template_lint.lint_parts(parts, body, *rules) == lint_body(body, *rules), (
                parts,
                rules,
            )
            checked += 1
    if any(lit.strip() for lit in literals):  # blank literals decide nothing
        assert len(calls) < checked  # some bodies took the fixed findings
