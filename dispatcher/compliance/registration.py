"""Lint a UsAppToPerson registration against TCR's rules.

Rules (seed 004, "Campaign Troubleshooting Guide", §4.2 parameter table, and
../shared/compliance.md §2, §6): description 40–4,096 chars; message_flow 40–2,048; 2–5
message_samples of 20–1,024 chars each, ≥ 1 naming the brand (30893) and carrying opt-out language
([E30893]); no public URL shorteners (30892); opt-in/opt-out/help messages 20–320 chars with their
required content; keywords alphanumeric, ≤ 255 chars per list; embedded-link / embedded-phone flags
matching the samples; SHAFT / cannabis content (30883) and age-gated content with ``age_gated``;
lending content with ``direct_lending``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dispatcher.compliance import content
from dispatcher.compliance.findings import ERROR, WARNING, Finding
from dispatcher.compliance.lint import content_findings, is_conversational
from dispatcher.errors import InputError

# Twilio's Usecases endpoint codes [UC] (documentation example list); others only warn.
KNOWN_USECASES: frozenset[str] = frozenset(
    {
        "2FA",
        "ACCOUNT_NOTIFICATION",
        "AGENTS_FRANCHISES",
        "CHARITY",
        "PROXY",
        "CUSTOMER_CARE",
        "DELIVERY_NOTIFICATION",
        "EMERGENCY",
        "FRAUD_ALERT",
        "HIGHER_EDUCATION",
        "K12_EDUCATION",
        "LOW_VOLUME",
        "MARKETING",
        "MIXED",
        "POLITICAL",
        "POLLING_VOTING",
        "PUBLIC_SERVICE_ANNOUNCEMENT",
        "SECURITY_ALERT",
        "SOCIAL",
        "SOLE_PROPRIETOR",
        "SWEEPSTAKE",
        "CONVERSATIONAL",
        "PLATFORM_FREE_TRIAL",
        "UCAAS_HIGH",
        "UCAAS_LOW",
    }
)

KEYWORD_RE = re.compile(r"^[A-Za-z0-9]+$")
_HELP_CONTACT_RE = re.compile(
    r"(?i)(?:@|https?://|www\.|\.com\b|\.org\b|\.net\b|\d{3}\D{0,2}\d{3}\D?\d{4}|\bcall\b|\bvisit\b|\bemail\b|\bcontact\b)"
)
_OPT_OUT_ACK_RE = re.compile(
    r"(?i)\b(?:unsubscribed|opted[\s-]?out|opt[\s-]?out|removed|stopped|no\s+(?:longer|more|further)"
    r"|will\s+not\s+(?:receive|get)|won't\s+(?:receive|get)|not\s+receive)\b"
)
_HELP_WORD_RE = re.compile(r"(?i)\b(?:help|info)\b")


def _text(
    reg: Mapping[str, Any], name: str, lo: int, hi: int, required: bool, out: list[Finding]
) -> str | None:
    value = reg.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            out.append(Finding("missing_field", name, ERROR, f"{name} is required"))
        return None
    if not isinstance(value, str):
        out.append(Finding("bad_type", name, ERROR, f"{name} must be a string"))
        return None
    n = len(value)
    if n < lo:
        out.append(Finding("too_short", name, ERROR, f"{name} is {n} characters; minimum {lo}"))
    elif n > hi:
        out.append(Finding("too_long", name, ERROR, f"{name} is {n} characters; maximum {hi}"))
    return value


def _keywords(reg: Mapping[str, Any], name: str, out: list[Finding]) -> list[str]:
    value = reg.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        value = [w.strip() for w in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        out.append(Finding("bad_type", name, ERROR, f"{name} must be a list of strings"))
        return []
    bad = [w for w in value if not KEYWORD_RE.match(w)]
    if bad:
        out.append(
            Finding(
                "keyword_format",
                name,
                ERROR,
                f"keywords must be alphanumeric: {', '.join(map(repr, bad[:3]))}",
            )
        )
    joined = ",".join(value)
    if len(joined) > 255:
        out.append(
            Finding("too_long", name, ERROR, f"{name} is {len(joined)} characters; maximum 255")
        )
    return [w.upper() for w in value]


def _flag(reg: Mapping[str, Any], name: str, required: bool, out: list[Finding]) -> bool | None:
    value = reg.get(name)
    if value is None:
        if required:
            out.append(Finding("missing_field", name, ERROR, f"{name} is required"))
        return None
    if not isinstance(value, bool):
        out.append(Finding("bad_type", name, ERROR, f"{name} must be true or false"))
        return None
    return value


def _declared(
    out: list[Finding],
    field: str,
    declared: bool | None,
    found: list[str],
    code: str,
    what: str,
    example: str,
) -> None:
    """A registration flag (embedded links / phone) against what the samples contain."""
    if declared is False and found:
        out.append(
            Finding(
                f"{code}_undeclared", field, ERROR, f"samples contain {what} but {field} is false"
            )
        )
    if declared and not found:
        out.append(
            Finding(
                f"{code}_not_in_samples",
                field,
                WARNING,
                f"{field} is true: include {example} in a sample",
            )
        )


def lint_campaign(
    registration: Mapping[str, Any], *, brand_name: str | None = None
) -> list[Finding]:
    """Findings for a UsAppToPerson registration (the JSON Twilio returns / the create parameters).

    ``brand_name`` (or a non-Twilio ``"brand_name"`` key in ``registration``) enables the brand
    checks; without it they are skipped (UsAppToPerson itself does not carry the brand's name)."""
    if not isinstance(registration, Mapping):
        raise InputError("a campaign registration must be a JSON object")
    reg = registration
    out: list[Finding] = []
    brand = brand_name or (
        reg.get("brand_name") if isinstance(reg.get("brand_name"), str) else None
    )

    description = _text(reg, "description", 40, 4096, True, out)
    flow = _text(reg, "message_flow", 40, 2048, True, out)
    opt_in_msg = _text(reg, "opt_in_message", 20, 320, False, out)
    opt_out_msg = _text(reg, "opt_out_message", 20, 320, False, out)
    help_msg = _text(reg, "help_message", 20, 320, False, out)
    out += _usecase_findings(reg.get("us_app_to_person_usecase"))

    has_links = _flag(reg, "has_embedded_links", True, out)
    has_phone = _flag(reg, "has_embedded_phone", True, out)
    age_gated = _flag(reg, "age_gated", False, out)
    direct_lending = _flag(reg, "direct_lending", False, out)

    samples = _samples(reg.get("message_samples"), out)
    if samples:
        out += _sample_findings(samples, brand, has_links, has_phone)

    out += _content_rules(
        {
            "description": description,
            "message_flow": flow,
            "message_samples": "\n".join(samples),
            "opt_in_message": opt_in_msg,
            "opt_out_message": opt_out_msg,
            "help_message": help_msg,
        },
        age_gated=age_gated,
        direct_lending=direct_lending,
    )
    _keyword_rules(reg, out, opt_in_msg=opt_in_msg, opt_out_msg=opt_out_msg, help_msg=help_msg)
    out += _message_rules(brand, opt_in_msg=opt_in_msg, opt_out_msg=opt_out_msg, help_msg=help_msg)
    if flow and "privacy" not in flow.casefold():
        out.append(
            Finding(
                "message_flow_privacy",
                "message_flow",
                WARNING,
                "message_flow should link the privacy policy and terms",
            )
        )
    return out


def _usecase_findings(usecase: Any) -> list[Finding]:
    """The use case code: present, a string, a known code, not conversational."""
    field = "us_app_to_person_usecase"
    if not usecase:
        return [Finding("missing_field", field, ERROR, f"{field} is required")]
    if not isinstance(usecase, str):
        return [Finding("bad_type", field, ERROR, "must be a string")]
    out = []
    if usecase != usecase.upper() or usecase not in KNOWN_USECASES:
        out.append(
            Finding(
                "unknown_usecase",
                field,
                WARNING,
                f"{usecase!r} is not a known Twilio use case code (21720)",
            )
        )
    if is_conversational(usecase):
        out.append(
            Finding(
                "conversational_usecase",
                field,
                WARNING,
                "automated or proactive sends on a conversational campaign are campaign drift",
            )
        )
    return out


def _samples(raw: Any, out: list[Finding]) -> list[str]:
    """``message_samples`` if it is a list of strings (else []), its count and lengths checked."""
    field = "message_samples"
    if raw is None:
        out.append(Finding("missing_field", field, ERROR, f"{field} is required"))
        return []
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        out.append(Finding("bad_type", field, ERROR, "must be a list of strings"))
        return []
    if not 2 <= len(raw) <= 5:
        out.append(
            Finding("sample_count", field, ERROR, f"{len(raw)} samples; 2 to 5 are required")
        )
    for i, s in enumerate(raw, 1):
        if len(s) < 20:
            out.append(
                Finding("too_short", field, ERROR, f"sample {i} is {len(s)} characters; minimum 20")
            )
        elif len(s) > 1024:
            out.append(
                Finding(
                    "too_long", field, ERROR, f"sample {i} is {len(s)} characters; maximum 1024"
                )
            )
    return raw


def _sample_findings(
    samples: list[str], brand: str | None, has_links: bool | None, has_phone: bool | None
) -> list[Finding]:
    """What the samples must show (30893): the brand, opt-out language with a standard keyword,
    and links / phone numbers exactly when the registration declares them."""
    field = "message_samples"
    out: list[Finding] = []
    if brand and not any(brand.casefold() in s.casefold() for s in samples):
        out.append(
            Finding(
                "sample_missing_brand",
                field,
                ERROR,
                f"no sample names the brand {brand!r} (30893)",
            )
        )
    if not any(content.has_opt_out_language(s) for s in samples):
        out.append(
            Finding(
                "sample_missing_opt_out",
                field,
                ERROR,
                "no sample carries opt-out language such as 'Reply STOP' (30893)",
            )
        )
    _declared(
        out,
        "has_embedded_links",
        has_links,
        [link for s in samples for link in content.find_links(s)],
        "links",
        "links",
        "a link",
    )
    _declared(
        out,
        "has_embedded_phone",
        has_phone,
        [p for s in samples for p in content.find_phones(s)],
        "phone",
        "a phone number",
        "the number",
    )
    if any(content.NONSTANDARD_OPT_OUT_RE.search(s) for s in samples):
        out.append(
            Finding(
                "nonstandard_opt_out",
                field,
                ERROR,
                "opt-out must use a standard keyword such as STOP",
            )
        )
    return out


def _content_rules(
    texts: Mapping[str, str | None], *, age_gated: bool | None, direct_lending: bool | None
) -> list[Finding]:
    """Content rules over every free-text field (by field name), then the flags that content
    requires: ``age_gated`` (30883) and ``direct_lending``."""
    out: list[Finding] = []
    gated_hits = False
    for name, text in texts.items():
        if not text:
            continue
        out += content_findings(text, name, bool(age_gated))
        if any(gate for _c, _l, gate in content.prohibited_categories(text)):
            gated_hits = True
    if age_gated is False and gated_hits:
        out.append(
            Finding(
                "age_gated_required",
                "age_gated",
                ERROR,
                "alcohol / firearms / tobacco content needs age_gated=true (30883)",
            )
        )
    lending_text = " ".join(t for t in (texts["description"], texts["message_samples"]) if t)
    if direct_lending is not True and content.LENDING_RE.search(lending_text):
        out.append(
            Finding(
                "direct_lending_required",
                "direct_lending",
                ERROR,
                "lending content: set direct_lending=true if the brand lends",
            )
        )
    return out


def _keyword_rules(
    reg: Mapping[str, Any],
    out: list[Finding],
    *,
    opt_in_msg: str | None,
    opt_out_msg: str | None,
    help_msg: str | None,
) -> None:
    """The three keyword lists: well formed, disjoint, STOP among the opt-out ones, and each
    list that is set has its auto-response message."""
    opt_in_kw = _keywords(reg, "opt_in_keywords", out)
    opt_out_kw = _keywords(reg, "opt_out_keywords", out)
    help_kw = _keywords(reg, "help_keywords", out)
    for a_name, a, b_name, b in (
        ("opt_out_keywords", opt_out_kw, "opt_in_keywords", opt_in_kw),
        ("opt_out_keywords", opt_out_kw, "help_keywords", help_kw),
        ("opt_in_keywords", opt_in_kw, "help_keywords", help_kw),
    ):
        clash = sorted(set(a) & set(b))
        if clash:
            out.append(
                Finding(
                    "keyword_conflict",
                    b_name,
                    ERROR,
                    f"{', '.join(clash)} is in both {a_name} and {b_name}",
                )
            )
    if opt_out_kw and "STOP" not in opt_out_kw:
        out.append(
            Finding(
                "stop_keyword_missing",
                "opt_out_keywords",
                WARNING,
                "STOP must always opt out (Twilio keeps it regardless)",
            )
        )
    for kw, msg, field, when in (
        (opt_in_kw, opt_in_msg, "opt_in_message", "opt_in_keywords are set"),
        (opt_out_kw, opt_out_msg, "opt_out_message", "you manage opt_out_keywords"),
        (help_kw, help_msg, "help_message", "you manage help_keywords"),
    ):
        if kw and not msg:
            out.append(Finding("missing_field", field, ERROR, f"{field} is required when {when}"))


def _message_rules(
    brand: str | None, *, opt_in_msg: str | None, opt_out_msg: str | None, help_msg: str | None
) -> list[Finding]:
    """What each auto-response message must say (the brand, HELP / STOP, a confirmation, a
    support contact)."""
    out: list[Finding] = []
    if opt_in_msg:
        out += _must_include(
            "opt_in_message",
            opt_in_msg,
            [
                part
                for part, ok in (
                    ("the brand name", _names(brand, opt_in_msg)),
                    ("how to get help (HELP)", _HELP_WORD_RE.search(opt_in_msg)),
                    (
                        "how to opt out (STOP)",
                        content.has_opt_out_language(opt_in_msg) or "stop" in opt_in_msg.casefold(),
                    ),
                )
                if not ok
            ],
        )
    if opt_out_msg:
        if not _OPT_OUT_ACK_RE.search(opt_out_msg):
            out.append(
                Finding(
                    "opt_out_message_content",
                    "opt_out_message",
                    ERROR,
                    "opt_out_message must confirm the opt-out and that no further "
                    "messages will be sent",
                )
            )
        if not _names(brand, opt_out_msg):
            out.append(
                Finding(
                    "opt_out_message_brand",
                    "opt_out_message",
                    WARNING,
                    "opt_out_message should name the brand",
                )
            )
    if help_msg:
        out += _must_include(
            "help_message",
            help_msg,
            [
                part
                for part, ok in (
                    ("the brand name", _names(brand, help_msg)),
                    ("a support contact (phone, email or URL)", _HELP_CONTACT_RE.search(help_msg)),
                )
                if not ok
            ],
        )
    return out


def _names(brand: str | None, text: str) -> bool:
    """Whether ``text`` names the brand (true when there is no brand to name)."""
    return not brand or brand.casefold() in text.casefold()


def _must_include(field: str, text: str, missing: list[str]) -> list[Finding]:
    """One error for ``field`` naming every required part its text lacks (none if complete)."""
    if not missing:
        return []
    return [
        Finding(f"{field}_content", field, ERROR, f"{field} must include " + ", ".join(missing))
    ]
