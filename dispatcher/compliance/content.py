"""Content detectors shared by compose, lint and decide: links, URL shorteners, phone numbers,
opt-out language, prohibited content.  Data tables live here, each with its source.

* Public URL shorteners → TCR rejects the campaign (error 30892, seed 004); carriers filter them in
  traffic too ([FILT-C], [E30857]).  The list is the common public services; a branded short domain
  you own is fine (seed 004) and is not in it.
* Prohibited content: SHAFT (sex, hate, alcohol, firearms, tobacco) and marijuana → 30883
  (seed 004); cannabis/CBD and prescription drugs without prescription are forbidden in the US
  (seed 003).
  Alcohol, firearms and tobacco are federally legal with an age gate (``age_gated`` flag, seed 004).
  The term lists are deliberately short and specific (e.g. "weed" and "prescription" alone are not
  flagged: lawn care and "your prescription is ready" are legitimate).
* Opt-out language: "Reply STOP" style instruction with a standard keyword (seed 002; [FILT-C]:
  "text 2 to opt out" is non-compliant).
"""

from __future__ import annotations

import re

URL_SHORTENER_DOMAINS: frozenset[str] = frozenset(
    {
        "bit.ly",
        "bitly.com",
        "bitly.is",
        "tinyurl.com",
        "tiny.cc",
        "tiny.one",
        "goo.gl",
        "t.co",
        "ow.ly",
        "is.gd",
        "v.gd",
        "buff.ly",
        "rebrand.ly",
        "cutt.ly",
        "shorturl.at",
        "rb.gy",
        "t.ly",
        "s.id",
        "lnkd.in",
        "shorte.st",
        "adf.ly",
        "bl.ink",
        "soo.gd",
        "clck.ru",
        "qr.ae",
        "surl.li",
        "short.gy",
        "trib.al",
        "dlvr.it",
        "fb.me",
        "ift.tt",
        "x.co",
        "u.to",
        "tr.im",
        "1url.com",
        "2.gp",
        "hyperurl.co",
        "urlz.fr",
        "shorturl.com",
        "tinycc.com",
        "lstu.fr",
    }
)

_TLDS = (
    "com|net|org|io|co|us|ly|gl|at|gd|me|info|biz|app|link|ai|to|cc|ru|li|fr|in|it|gp|ae|id|"
    "gy|is|st|edu|gov|health|shop|store|online|site|xyz|ca|uk|de"
)
LINK_RE = re.compile(
    r"(?i)\b(?:https?://|www\.)[^\s<>\"]+|\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:"
    + _TLDS
    + r")\b(?:/[^\s<>\"]*)?"
)
_HOST_RE = re.compile(r"(?i)^(?:https?://)?(?:www\.)?([^/\s:?#]+)")

PHONE_RE = re.compile(
    r"(?<![\w/])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\w)"
    r"|(?<![\w/])\+\d{10,15}(?!\w)"
    r"|(?<![\w/])1?-?8(?:00|33|44|55|66|77|88)-?[A-Z0-9]{3}-?[A-Z0-9]{4}(?!\w)"
)

_OPT_OUT_WORDS = r"(?:stop|stopall|end|cancel|unsubscribe|quit|optout|revoke|stop\s+all)"
OPT_OUT_LANGUAGE_RE = re.compile(
    r"(?i)\b(?:reply|replying|text|texting|txt|send|sending|respond|responding|msg)\b"
    r"(?:\s+(?:with|back|the\s+word|word|us|to\s+us))*\s*[\"'“‘(]?\s*" + _OPT_OUT_WORDS + r"\b"
)
NONSTANDARD_OPT_OUT_RE = re.compile(
    r"(?i)\b(?:reply|text|txt|send|press)\s+[\"'“]?(?:\d+|[a-z])[\"'”]?\s+to\s+"
    r"(?:opt[\s-]?out|stop|unsubscribe|cancel|end)\b"
)

# category -> pattern.  "age_gate" categories are allowed (with a warning) on age-gated campaigns.
PROHIBITED: dict[str, tuple[str, bool, re.Pattern[str]]] = {
    "sex": (
        "sexual content",
        False,
        re.compile(
            r"(?i)\b(?:porn\w*|xxx|nudes?|nudity|sex\s*toys?|escorts?|camgirls?|onlyfans|erotic\w*|"
            r"adult\s+(?:content|videos?|entertainment))\b"
        ),
    ),
    "hate": (
        "hate speech / violence",
        False,
        re.compile(
            r"(?i)\b(?:white\s+power|kill\s+all|death\s+to|heil\s+hitler|ethnic\s+cleansing)\b"
        ),
    ),
    "cannabis": (
        "cannabis / CBD",
        False,
        re.compile(
            r"(?i)\b(?:cannabis|marijuana|cbd|thc|delta[\s-]?8|dispensar(?:y|ies)|pre-?rolls?|"
            r"edibles|kush|420\s+(?:deals?|specials?|sale))\b"
        ),
    ),
    "rx": (
        "prescription drugs without prescription",
        False,
        re.compile(
            r"(?i)\b(?:viagra|cialis|xanax|oxycodone|oxycontin|adderall|vicodin|valium|tramadol|"
            r"percocet|ozempic|semaglutide|no\s+prescription\s+(?:needed|required)|"
            r"without\s+(?:a\s+)?prescription|no\s+rx)\b"
        ),
    ),
    "alcohol": (
        "alcohol",
        True,
        re.compile(
            r"(?i)\b(?:alcohol\w*|beers?|wines?|vodka|whiske?y|bourbon|tequila|liquor|cocktails?|"
            r"brewery|winery|happy\s+hour|champagne|gin|rum|hard\s+seltzers?)\b"
        ),
    ),
    "firearms": (
        "firearms",
        True,
        re.compile(
            r"(?i)\b(?:guns?|firearms?|rifles?|pistols?|handguns?|shotguns?|ammo|ammunition|"
            r"ar-?15|gun\s+show|concealed\s+carry)\b"
        ),
    ),
    "tobacco": (
        "tobacco / vaping",
        True,
        re.compile(
            r"(?i)\b(?:tobacco|cigarettes?|cigars?|vapes?|vaping|e-?cigs?|e-?cigarettes?|nicotine|"
            r"hookah|juul|smokeless)\b"
        ),
    ),
}

LENDING_RE = re.compile(
    r"(?i)\b(?:direct\s+lending|loans?|lending|lender|payday|mortgages?|line\s+of\s+credit|"
    r"credit\s+line|cash\s+advance|refinanc\w*|apr\s+\d)\b"
)


def find_links(text: str) -> list[str]:
    return [m.group(0).rstrip(".,;:!?)]") for m in LINK_RE.finditer(text)]


def link_host(link: str) -> str:
    m = _HOST_RE.match(link)
    return m.group(1).lower().rstrip(".") if m else ""


def shortener_links(text: str) -> list[str]:
    return [link for link in find_links(text) if link_host(link) in URL_SHORTENER_DOMAINS]


def find_phones(text: str) -> list[str]:
    return [m.group(0) for m in PHONE_RE.finditer(text)]


def has_opt_out_language(text: str, extra: str | None = None) -> bool:
    """True when ``text`` tells the reader how to opt out with a standard keyword ("Reply STOP"),
    or contains ``extra`` (the campaign's own opt-out sentence) verbatim, case-insensitive."""
    if OPT_OUT_LANGUAGE_RE.search(text):
        return True
    return bool(extra) and extra.strip().casefold() in text.casefold()  # type: ignore[union-attr]


def prohibited_categories(text: str) -> list[tuple[str, str, bool]]:
    """``[(category, label, allowed_with_age_gate), ...]`` found in ``text``."""
    return [(cat, label, gate) for cat, (label, gate, rx) in PROHIBITED.items() if rx.search(text)]
