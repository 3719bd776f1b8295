"""Lint a personalised body from its template: the literal text once, the values per message.

A body built from a template is ``parts``: literal, value, literal, ..., literal (``"".join``
is the body).  Every message rule is a pattern scan (content.py: prohibited terms, links, phone
numbers, opt-out wording, and evasion.py's hint of normalisable tricks) or a plain function of the
whole body (length, segments, the brand name and the campaign's own opt-out sentence as
substrings: computed per message, they cost little).  The scans are what cost, and they are
derived here without scanning the literal text again:

1. **Once per template** (``literal_facts``, cached by the literals): for every pattern, no
   match may start in a literal and run into a value, start in a value and end in a literal, or
   span a literal from one value to the next (boundary.py proves it from the pattern's prefix,
   suffix and infix languages).  The literals' own matches are then the body's, provided they do
   not depend on the one character of context their lookarounds read next to a value: they are
   computed with every class of context character (a letter, a capital, a digit, ``_``, ``/``,
   punctuation, a space) and must agree.  A template that fails either test is linted whole.
2. **Per message** (``lint_parts``): one scan of each value's span (with its neighbours as
   context) per group of patterns (``Plan.scans``): a literal is scanned with its values only
   by the patterns that may cross its edges (``order [Ozempic] online`` makes the terms rescan
   ``Your order `` with every value, while links, phone numbers and opt-out wording, which
   cannot cross it, scan the value alone; a literal whose own matches of the other patterns
   depend on the context is scanned by all of them).  No match there means the body's
   matches are the literals' (1.), and the findings are assembled from those facts exactly as
   ``lint_body`` assembles them from its own scans: those that follow from the facts and the
   campaign (``lint.fact_findings``) once per template and campaign rules (``Plan.found``),
   the body's own (length, brand name, opt-out sentence, encoding, segments) per message.  A
   match in a value (a link, a phone number, a term, an evasion hint) sends that message through
   ``lint_body``.

Per message (issue 22 item 3, docs/scaling.md): the value scans run the patterns as rewritten by
dispatch.py (the same match positions; most positions rejected at their first character), and a
clean body that is GSM-7 and at most ``LONG_MESSAGE_CHARS`` long takes the findings its
template's literals decide (``_fixed``, once per template and rules).  Callgrind, decide() over
bench/decide.py's distinct bodies: 160 080 machine instructions per call before, 105 439 after;
the bench's line 34-48 000/s before, 52-67 000/s after (alternating same-minute runs, load 1-8).

Only ASCII bodies take this path (normalising a non-ASCII body changes its length and joins
characters across parts); the others are linted whole.  A hypothesis test checks the result
against ``lint_body`` over random templates and values
(tests/unit/compliance/test_template_lint.py).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import accumulate

from dispatcher.compliance import boundary, content, evasion
from dispatcher.compliance.dispatch import dispatch
from dispatcher.compliance.findings import Finding
from dispatcher.compliance.lint import (
    LONG_MESSAGE_CHARS,
    BodyFacts,
    body_findings,
    fact_findings,
    lint_body,
)
from dispatcher.compliance.segments import segments

#: context characters standing for every class the patterns' lookarounds tell apart
_CONTEXT = ("a", "A", "0", "_", "/", "#", " ", "-", ".", "$", "+", "(")


@cache
def _patterns() -> tuple[tuple[re.Pattern[str], bool], ...]:
    """Every pattern the message rules scan, and whether it reads the lower-cased body."""
    combined, _ = content._tables(False)
    return (
        (combined, True),
        (evasion._HINT_RE, True),
        (content.LINK_RE, False),
        (content.PHONE_RE, False),
        (content.OPT_OUT_LANGUAGE_RE, False),
        (content.NONSTANDARD_OPT_OUT_RE, False),
    )


def _crossing(literals: tuple[str, ...]) -> tuple[frozenset[int], ...]:
    """For each literal, the patterns (indices in ``_patterns()``) whose match may cross one of
    its edges (start in it and run into the next value, end in it having started in the
    previous one, or span it from value to value): for those, the literal is scanned with its
    values."""
    last = len(literals) - 1
    out = []
    for k, lit in enumerate(literals):
        crossed = set()
        for j, (rx, lowered) in enumerate(_patterns()):
            edges = boundary.edges(rx.pattern, rx.flags)
            text = lit.lower() if lowered else lit
            if (
                (k < last and edges.open_before_value(text))
                or (k > 0 and edges.open_after_value(text))
                or (0 < k < last and edges.spans(text))
            ):
                crossed.add(j)
        out.append(frozenset(crossed))
    return tuple(out)


def _windows(joined: Sequence[bool]) -> tuple[tuple[int, int], ...]:
    """The ranges of parts scanned per message: each value, with the literals next to it that
    are ``joined``; overlapping ranges merged."""
    windows: list[tuple[int, int]] = []
    for i in range(1, len(joined)):
        a, b = 2 * i - 1, 2 * i - 1  # the value's part index
        if joined[i - 1]:
            a -= 1
        if joined[i]:
            b += 1
        if windows and windows[-1][1] >= a:
            windows[-1] = (windows[-1][0], b)
        else:
            windows.append((a, b))
    return tuple(windows)


def _phone_lower() -> str:
    """The phone pattern read on the lower-cased body: its one case-sensitive part, the letters
    of ``1-800-FLOWERS``, as lower-case letters.  On an ASCII body it matches wherever
    ``PHONE_RE`` matches the body (and on some lower-case words too): a value scan needs no
    more, since a match sends the message to ``lint_body``."""
    src = content.PHONE_RE.pattern
    assert src.count("[A-Z0-9]") == 2, src
    src = src.replace("[A-Z0-9]", "[a-z0-9]")
    assert src == src.lower(), src
    return src


def _union(patterns: frozenset[int]) -> str:
    """The patterns ``patterns`` (indices in ``_patterns()``) as one search of the lower-cased
    body.  The case-insensitive patterns have no capital letter, so they need no ``(?i)``
    (which costs several times more); the phone pattern is read as :func:`_phone_lower`."""
    lower = []
    for j, (rx, _) in enumerate(_patterns()):
        if j not in patterns:
            continue
        if rx is content.PHONE_RE:
            src = _phone_lower()
        else:
            src = rx.pattern.removeprefix("(?i)")
            assert src == src.lower() or rx.pattern == src, rx.pattern
        lower.append(f"(?:{src})")
    return "|".join(lower)


@lru_cache(maxsize=64)
def _scanner(patterns: frozenset[int]) -> re.Pattern[str]:
    """:func:`_union` of ``patterns``, rewritten by :func:`dispatch.dispatch`: the same
    positions match, most of the others are rejected at their first character (the bench's
    value scans: 3.4 times fewer machine instructions for the terms' scan of ``Your order ``
    and the value, 2.0 times fewer for the other patterns' scan of the value; callgrind)."""
    return re.compile(dispatch(_union(patterns)))


_Local = tuple[frozenset[str], tuple[str, ...], bool, bool, bool, bool]


def _local(lit: str, left: str, right: str, skip: frozenset[int] = frozenset()) -> _Local | None:
    """The matches inside ``lit`` between context characters ``left`` and ``right`` (``""``: the
    body's edge): (categories, links, phone, nonstandard opt-out, opt-out language, evasion hint);
    None if a match runs into the context.  The patterns in ``skip`` (indices in ``_patterns()``:
    those scanned with the values) count as finding nothing."""
    s = left + lit + right
    low = s.lower()
    lo, hi = len(left), len(left) + len(lit)
    index = {rx: j for j, (rx, _) in enumerate(_patterns())}

    def inside(rx: re.Pattern[str], text: str) -> list[re.Match[str]] | None:
        if index[rx] in skip:
            return []
        got = [m for m in rx.finditer(text, lo) if m.start() < hi]
        return None if any(m.end() > hi for m in got) else got

    cats: set[str] = set()
    if 0 not in skip:  # the categories' union is _patterns()[0]
        for cat, rx in zip(content.CATEGORIES, content._tables(False)[1], strict=True):
            got = [m for m in rx.finditer(low, lo) if m.start() < hi]
            if any(m.end() > hi for m in got):
                return None
            if got:
                cats.add(cat.key)
    scans = [inside(rx, s) for rx in (content.LINK_RE, content.PHONE_RE)]
    scans += [inside(rx, s) for rx in (content.NONSTANDARD_OPT_OUT_RE, content.OPT_OUT_LANGUAGE_RE)]
    hint = inside(evasion._HINT_RE, low)
    if hint is None or any(g is None for g in scans):
        return None
    links, phones, nonstd, opt = scans
    return (
        frozenset(cats),
        tuple(m.group(0).rstrip(".,;:!?)]") for m in links or ()),
        bool(phones),
        bool(nonstd),
        bool(opt),
        bool(hint),
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """A template's scan facts for every message whose scans of ``windows`` find nothing.
    ``windows``: ranges of parts, first and last inclusive (a value, with the literals next to
    it that a match may cross)."""

    facts: BodyFacts
    windows: tuple[tuple[int, int], ...]
    #: per search of the lower-cased body: (its patterns as one, its windows); a pattern that
    #: crosses no literal's edge scans the values alone
    scans: tuple[tuple[re.Pattern[str], tuple[tuple[int, int], ...]], ...] = ()
    #: :func:`fact_findings` of ``facts`` by campaign rules (has_links, has_phone, age_gated,
    #: usecase, proactive): the same for every message of the template
    found: dict[tuple[bool, bool, bool, str, bool], tuple[Finding, ...]] = field(
        default_factory=dict, compare=False
    )
    #: :func:`_fixed` by all the rules (``found``'s, then brand name, first message, opt-out
    #: sentence)
    fixed: dict[tuple[object, ...], tuple[Finding, ...] | None] = field(
        default_factory=dict, compare=False
    )


@lru_cache(maxsize=256)
def plan(literals: tuple[str, ...]) -> Plan | None:
    """How to lint bodies made of ``literals`` and values; None when the literals alone decide
    nothing (a lookaround of theirs reads a value, one needs the evasion normalisation, or the
    text is not ASCII)."""
    if len(literals) < 2 or not all(lit.isascii() for lit in literals):
        return None
    crossing = _crossing(literals)
    last = len(literals) - 1
    every = frozenset(range(len(_patterns())))
    cats: set[str] = set()
    links: list[str] = []
    phone = nonstd = opt = False
    for k, lit in enumerate(literals):
        if crossing[k] == every:
            continue  # scanned with its values: a match in it sends the message to lint_body
        got = _local_everywhere(lit, k > 0, k < last, crossing[k])
        if got is None and crossing[k]:
            # its own matches of the other patterns depend on the context: scan it with every
            # pattern
            crossing = (*crossing[:k], every, *crossing[k + 1 :])
            continue
        if got is None or got[5]:
            return None
        cats |= got[0]
        links.extend(got[1])
        phone, nonstd, opt = phone or got[2], nonstd or got[3], opt or got[4]
    found = tuple(c for c in content.CATEGORIES if c.key in cats)
    scan = content.ContentScan(found, {}, ()) if found else content._CLEAN
    groups: dict[tuple[tuple[int, int], ...], set[int]] = {}  # one search per set of windows
    for j in range(len(_patterns())):
        groups.setdefault(_windows([j in c for c in crossing]), set()).add(j)
    scans = tuple((_scanner(frozenset(js)), w) for w, js in groups.items())
    windows = _windows([bool(c) for c in crossing])
    return Plan(BodyFacts(scan, tuple(links), phone, nonstd, opt), windows, scans)


def _local_everywhere(
    lit: str, after_value: bool, before_value: bool, skip: frozenset[int]
) -> _Local | None:
    """``_local`` of ``lit`` between every class of context character (the body's edge where it
    has no value next to it); None unless they all agree."""
    seen: set[_Local | None] = {
        _local(lit, left, right, skip)
        for left in (_CONTEXT if after_value else ("",))
        for right in (_CONTEXT if before_value else ("",))
    }
    return seen.pop() if len(seen) == 1 else None


def literal_facts(literals: tuple[str, ...]) -> BodyFacts | None:
    got = plan(literals)
    return None if got is None else got.facts


#: messages of a template linted whole before its plan is built (a dry run's few dozen
#: representatives never pay for the plan; a run's workers do, once)
WARM = 200
_seen: dict[tuple[str, ...], int] = {}
#: one thread of a process builds a plan; the others lint whole bodies meanwhile.  Without it
#: every worker thread built the same plan at once (8 x ~2 s of CPU): on a loaded machine the
#: process stalled 20-40 s in the middle of a run (issue 22, bench/utilisation.py)
_planning = threading.Lock()
_planned: set[tuple[str, ...]] = set()


def _plan_once(literals: tuple[str, ...]) -> Plan | None:
    """``plan(literals)`` once it is built; None while another thread builds it."""
    if literals in _planned:
        return plan(literals)
    if not _planning.acquire(blocking=False):
        return None
    try:
        got = plan(literals)
        if len(_planned) > 256:  # plan's own cache holds as many
            _planned.clear()
        _planned.add(literals)
        return got
    finally:
        _planning.release()


#: the plans built, by literals: the hot path's one look-up
_ready: dict[tuple[str, ...], Plan] = {}


def split_composed(parts: Sequence[str], text: str) -> tuple[str, ...] | None:
    """``parts`` (literal, value, ..., literal) of a rendered body, refitted to ``text``, the
    body ``compose()`` made of it (a brand prefix, an opt-out sentence, stripped ends); None when
    the refit would cut into a value."""
    rendered = "".join(parts)
    if text == rendered:
        return tuple(parts)
    first, last = parts[0], parts[-1]
    for a in {0, len(rendered) - len(rendered.lstrip())}:
        for b in {len(rendered), len(rendered.rstrip())}:
            core = rendered[a:b]
            at = text.find(core)
            if at < 0 or a > len(first) or len(rendered) - b > len(last) or len(parts) < 3:
                continue
            head = text[:at] + first[a:]
            tail = last[: len(last) - (len(rendered) - b)] + text[at + len(core) :]
            out = (head, *parts[1:-1], tail)
            if "".join(out) == text:
                return out
    return None


def _clean(
    scans: tuple[tuple[re.Pattern[str], tuple[tuple[int, int], ...]], ...],
    lowered: str,
    at: list[int],
) -> bool:
    """No search of ``scans`` finds a match in its windows of ``lowered`` (``at``: where each
    part starts, and the end)."""
    end = at[-1]
    for rx, windows in scans:
        for a, b in windows:
            if rx.search(lowered, at[a], min(at[b + 1] + 1, end)) is not None:
                return False
    return True


_UNSET = object()


def _fixed(
    how: Plan,
    literals: tuple[str, ...],
    has_links: bool,
    has_phone: bool,
    age_gated: bool,
    usecase: str,
    proactive: bool,
    brand_name: str | None,
    first_message: bool,
    opt_out_language: str | None,
) -> tuple[Finding, ...] | None:
    """The findings of every clean body of the template (its scans are the literals') that is
    GSM-7 and at most ``LONG_MESSAGE_CHARS`` long, when the literals decide the rest: a literal
    is not blank, and the brand name and the campaign's opt-out sentence, where the rules ask
    for them, are inside one literal (then inside the body, whatever the values); None when a
    value may change them.  They are ``body_findings`` of the literals joined: blank, length,
    encoding and size findings are none for both, the rest the same."""
    rep = "".join(literals)
    folded = [lit.casefold() for lit in literals]
    if not rep.strip() or len(rep) > LONG_MESSAGE_CHARS or segments(rep).encoding != "GSM-7":
        return None
    if brand_name and not any(brand_name.strip().casefold() in f for f in folded):
        return None
    if proactive and not how.facts.opt_out_language and opt_out_language:
        if not any(opt_out_language.strip().casefold() in f for f in folded):
            return None
    found = fact_findings(how.facts, has_links, has_phone, age_gated, usecase, proactive)
    return body_findings(
        rep, how.facts, found, brand_name, first_message, proactive, opt_out_language
    )


def lint_parts(
    parts: tuple[str, ...],
    body: str,
    has_links: bool,
    has_phone: bool,
    age_gated: bool,
    usecase: str,
    brand_name: str | None,
    first_message: bool,
    proactive: bool,
    opt_out_language: str | None,
) -> tuple[Finding, ...]:
    """``lint_body(body, ...)``, computed from ``parts`` (``"".join(parts) == body``)."""
    literals = parts[0::2]
    how = _ready.get(literals) if len(parts) % 2 else None
    if how is None and len(parts) % 2:
        seen = _seen.get(literals, 0)
        if seen < WARM:  # the first plan of a process costs ~1 s unless warm() ran (workers do)
            _seen[literals] = seen + 1
            if len(_seen) > 4096:
                _seen.clear()
        else:
            how = _plan_once(literals)
            if how is not None:
                if len(_ready) > 256:
                    _ready.clear()
                _ready[literals] = how
    if how is not None and body.isascii() and "".join(parts) == body and all(parts[1::2]):
        if _clean(how.scans, body.lower(), [0, *accumulate(map(len, parts))]):
            every = (
                has_links,
                has_phone,
                age_gated,
                usecase,
                proactive,
                brand_name,
                first_message,
                opt_out_language,
            )
            fixed = how.fixed.get(every, _UNSET)
            if fixed is _UNSET:
                if len(how.fixed) > 64:
                    how.fixed.clear()
                fixed = how.fixed[every] = _fixed(how, literals, *every)
            if (
                fixed is not None
                and len(body) <= LONG_MESSAGE_CHARS
                and segments(body).encoding == "GSM-7"
            ):
                return fixed  # type: ignore[return-value]
            rules = (has_links, has_phone, age_gated, usecase, proactive)
            found = how.found.get(rules)
            if found is None:
                if len(how.found) > 64:
                    how.found.clear()
                found = how.found[rules] = fact_findings(how.facts, *rules)
            return body_findings(
                body, how.facts, found, brand_name, first_message, proactive, opt_out_language
            )
    return lint_body(
        body,
        has_links,
        has_phone,
        age_gated,
        usecase,
        brand_name,
        first_message,
        proactive,
        opt_out_language,
    )


def warm() -> None:
    """Compute the patterns' edge languages now (``boundary.edges``, cached per process).  They
    are the same for every template and cost ~0.8 s of CPU on a quiet core (the category
    pattern's ~0.78 s of it); a worker process pays them when it is built, before it takes a
    message.  Paid instead at a template's ``WARM``-th message, in the middle of a run, that
    second of CPU held the GIL against the process's other threads: their halt checks and
    sends ran 0.1-0.3 s late each and a quarter of a window's rows missed their grace and went
    a window later (bench/utilisation.py, 30 per 10 s: windows of 30, 30, 7, 30, ...)."""
    for rx, _ in _patterns():
        boundary.edges(rx.pattern, rx.flags)
