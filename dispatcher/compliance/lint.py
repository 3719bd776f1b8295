"""Lint a message body against its campaign (a registration: compliance/registration.py).

Message rules (seeds 000, 002, 003, compliance.md §2): prohibited content (SHAFT, illegal
substances and Twilio's forbidden categories: content.py), content written to evade filters
(evasion.py), public URL shorteners, links / phone numbers the campaign did not declare,
non-standard opt-out wording, length (21617) and segment warnings, campaign drift (a proactive send
on a conversational campaign, seed 000), and on a first message the brand name and opt-out language
(seed 002).  ``content_findings`` (prohibited content, evasion, shorteners) is shared with the
registration rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dispatcher.compliance import content
from dispatcher.compliance.findings import ERROR, WARNING, Finding
from dispatcher.compliance.segments import (
    MAX_BODY_CHARS,
    non_gsm7_characters,
    segments,
    utf16_units,
)

# Use cases whose registration promises person-to-person conversation only (seed 000: automated,
# list-based or marketing traffic on them is "campaign drift").  PROXY is pooled-number P2P.
CONVERSATIONAL_USECASES: frozenset[str] = frozenset({"CONVERSATIONAL", "CONVERSATIONS", "PROXY"})

LONG_MESSAGE_CHARS = 320  # Twilio recommends ≤ 320 characters [SGSEG]


def is_conversational(usecase: str | None) -> bool:
    return bool(usecase) and usecase.strip().upper() in CONVERSATIONAL_USECASES  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ messages
def content_findings(text: str, field: str, age_gated: bool) -> list[Finding]:
    """Prohibited content, content written to evade filters, public URL shorteners.

    A category found only once the text is normalised (evasion.py) is reported as prohibited content
    and, with the trick that hid it, as ``filter_evasion``; an invisible character or mixed scripts
    inside a word is ``filter_evasion`` whatever the word means (seed 003; compliance.md §2.4)."""
    return _content_findings(content.scan(text), content.find_links(text), field, age_gated)


def _content_findings(
    found: content.ContentScan, links: Sequence[str], field: str, age_gated: bool
) -> list[Finding]:
    out: list[Finding] = []
    for cat in found.categories:
        hidden = found.hidden.get(cat.key)
        how = f" (written with {hidden})" if hidden else ""
        if cat.age_gate_ok and age_gated:
            out.append(
                Finding(
                    "age_gated_content",
                    field,
                    WARNING,
                    f"{cat.label} content{how}: allowed only behind an age gate (30883 risk)",
                )
            )
        else:
            out.append(
                Finding(
                    "prohibited_content",
                    field,
                    ERROR,
                    f"{cat.label} content{how} is not allowed on US A2P ({cat.key}; {cat.ref})",
                )
            )
    tricks = [
        f"{found.hidden[c.key]} hide {c.key}" for c in found.categories if c.key in found.hidden
    ]
    tricks.extend(found.signals)
    if tricks:
        out.append(
            Finding(
                "filter_evasion",
                field,
                ERROR,
                "content designed to evade filters is forbidden (seed 003): " + "; ".join(tricks),
            )
        )
    shorteners = [
        link for link in links if content.link_host(link) in content.URL_SHORTENER_DOMAINS
    ]
    if shorteners:
        out.append(
            Finding(
                "url_shortener",
                field,
                ERROR,
                f"public URL shortener {content.link_host(shorteners[0])}: use a "
                "branded domain you own (30892)",
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class BodyFacts:
    """What the pattern scans of content.py find in a body: everything the message rules need
    besides the body's length, encoding and the brand / opt-out sentence substrings.
    ``template_lint`` derives them from a template's literal text when a value cannot change
    them."""

    scan: content.ContentScan
    links: tuple[str, ...]
    phone: bool
    nonstandard_opt_out: bool
    opt_out_language: bool  # a standard "Reply STOP" instruction


def body_facts(body: str) -> BodyFacts:
    return BodyFacts(
        content.scan(body),
        tuple(content.find_links(body)),
        content.PHONE_RE.search(body) is not None,
        content.NONSTANDARD_OPT_OUT_RE.search(body) is not None,
        content.OPT_OUT_LANGUAGE_RE.search(body) is not None,
    )


@lru_cache(maxsize=16384)
def lint_body(
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
    return lint_with_facts(
        body,
        body_facts(body),
        has_links,
        has_phone,
        age_gated,
        usecase,
        brand_name,
        first_message,
        proactive,
        opt_out_language,
    )


def lint_with_facts(
    body: str,
    facts: BodyFacts,
    has_links: bool,
    has_phone: bool,
    age_gated: bool,
    usecase: str,
    brand_name: str | None,
    first_message: bool,
    proactive: bool,
    opt_out_language: str | None,
) -> tuple[Finding, ...]:
    """The message rules for ``body``, given its pattern scans ``facts``."""
    return body_findings(
        body,
        facts,
        fact_findings(facts, has_links, has_phone, age_gated, usecase, proactive),
        brand_name,
        first_message,
        proactive,
        opt_out_language,
    )


def fact_findings(
    facts: BodyFacts,
    has_links: bool,
    has_phone: bool,
    age_gated: bool,
    usecase: str,
    proactive: bool,
) -> tuple[Finding, ...]:
    """The findings that follow from the scans and the campaign alone, in report order: the
    same for every body of a template whose scans are its literals' (template_lint.py caches
    them per template)."""
    out: list[Finding] = []
    if proactive and is_conversational(usecase):
        out.append(
            Finding(
                "campaign_drift",
                "us_app_to_person_usecase",
                ERROR,
                f"proactive send on a {usecase} campaign is campaign drift",
            )
        )
    out.extend(_content_findings(facts.scan, facts.links, "body", age_gated))
    if not has_links and facts.links:
        out.append(
            Finding(
                "undeclared_link",
                "body",
                ERROR,
                "body has a link but the campaign has has_embedded_links=false",
            )
        )
    if not has_phone and facts.phone:
        out.append(
            Finding(
                "undeclared_phone",
                "body",
                ERROR,
                "body has a phone number but the campaign has has_embedded_phone=false",
            )
        )
    if facts.nonstandard_opt_out:
        out.append(
            Finding(
                "nonstandard_opt_out",
                "body",
                ERROR,
                "opt-out must use a standard keyword such as STOP",
            )
        )
    return tuple(out)


def body_findings(
    body: str,
    facts: BodyFacts,
    found: tuple[Finding, ...],
    brand_name: str | None,
    first_message: bool,
    proactive: bool,
    opt_out_language: str | None,
) -> tuple[Finding, ...]:
    """Every finding on ``body``: its length, ``found`` (:func:`fact_findings`), the brand name
    and opt-out instruction, its encoding and segments."""
    if not body.strip():
        return (Finding("body_empty", "body", ERROR, "message body is empty"),)
    out: list[Finding] = []
    units = utf16_units(body)
    if units > MAX_BODY_CHARS:
        out.append(
            Finding(
                "body_too_long",
                "body",
                ERROR,
                f"{units} characters; Twilio's limit is {MAX_BODY_CHARS} (21617)",
            )
        )
    out.extend(found)
    severity = ERROR if first_message else WARNING
    tail = "" if first_message else " (compose() adds it to first messages)"
    if brand_name and brand_name.strip().casefold() not in body.casefold():
        out.append(
            Finding(
                "missing_brand_name",
                "body",
                severity,
                f"body does not name the brand {brand_name!r}{tail}",
            )
        )
    if proactive and not (
        facts.opt_out_language
        or (opt_out_language and opt_out_language.strip().casefold() in body.casefold())
    ):
        out.append(
            Finding(
                "missing_opt_out_language",
                "body",
                severity,
                f"no opt-out instruction such as 'Reply STOP to opt out'{tail}",
            )
        )
    seg = segments(body)
    if seg.encoding == "UCS-2":
        chars = "".join(non_gsm7_characters(body)[:5])
        out.append(
            Finding(
                "ucs2_encoding",
                "body",
                WARNING,
                f"characters {chars!r} force UCS-2 (70 per segment instead of 160)",
            )
        )
    if len(body) > LONG_MESSAGE_CHARS:
        out.append(
            Finding(
                "long_message",
                "body",
                WARNING,
                f"{seg.count} segments; Twilio recommends at most {LONG_MESSAGE_CHARS} characters",
            )
        )
    return tuple(out)


def lint_message(
    body: str,
    campaign: Any,
    *,
    brand_name: str | None = None,
    first_message: bool = False,
    proactive: bool = True,
    opt_out_language: str | None = None,
) -> list[Finding]:
    """Findings for ``body`` sent on ``campaign`` (any object with Campaign's attributes).

    ``first_message=True`` lints a composed first message: missing brand / opt-out language are
    errors then, warnings otherwise (templates: compose() adds them)."""
    return list(
        lint_body(
            body,
            bool(getattr(campaign, "has_embedded_links", False)),
            bool(getattr(campaign, "has_embedded_phone", False)),
            bool(getattr(campaign, "age_gated", False)),
            str(getattr(campaign, "us_app_to_person_usecase", "") or ""),
            brand_name,
            first_message,
            proactive,
            opt_out_language,
        )
    )
