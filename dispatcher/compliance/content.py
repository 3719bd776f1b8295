"""Content detectors shared by compose, lint and decide: links, URL shorteners, phone numbers,
opt-out language, prohibited content.  Data tables live here, each with its source.

* Public URL shorteners → TCR rejects the campaign (error 30892, seed 004); carriers filter them in
  traffic too ([FILT-C], [E30857]).  The list is the common public services; a branded short domain
  you own is fine (seed 004) and is not in it.
* Prohibited content (``CATEGORIES``; compliance.md §2.4):
  - SHAFT (sex, hate, alcohol, firearms, tobacco) and marijuana → 30883 (seed 004).  Alcohol,
    firearms and tobacco are federally legal with an age gate (``age_gate_ok``, seed 004).
  - Illegal substances: cannabis/CBD and prescription drugs without prescription (seed 003;
    [FORBID]), and street drugs ([FORBID] "illegal substances").
  - Twilio's forbidden categories for the US and Canada ([FORBID]): high-risk financial services
    (payday, short-term high-interest and title loans, crypto offers), third-party lead generation,
    debt collection or forgiveness (30863 third-party debt collection, 30943, 30949 debt
    reduction/consolidation), "get rich quick" (30868: work-from-home programs, risk investment,
    pyramid schemes).
  The term lists are deliberately short and specific: a term is listed only when a first-party
  service message has no use for it.  "weed" and "prescription" alone are not flagged (lawn care,
  "your prescription is ready"), nor are "loan", "credit", "balance", "payment due", "past due" or
  "debt" alone.  **Prescription drugs**: a pharmacy names the drug it fills ("Your Ozempic refill
  is ready for pickup"), so a drug name is flagged only where it is sold or offered ("buy
  Ozempic", "cheap Xanax", "Viagra for sale", "no prescription needed") or written in disguise
  ("v1agra": ``Category.disguised``, terms that count only when normalising the body reveals
  them).  **"xxx"** is a placeholder in service wording ("Order XXX-1234", "card ending XXXX"):
  it is flagged only beside adult words ("XXX videos", "free xxx", "rated XXX").
  **Debt collection boundary** ([FORBID]: "third-party" means anyone other than the party owed
  the debt; a hospital may text its own patients about their bills): a business
  reminding its own customer of its own balance is first-party and clean ("your balance of $40 is
  due on Friday", "your loan payment is due", even "unpaid balances are sent to a collection
  agency"); what is flagged is the wording of a third party (the sender presenting itself as a
  debt collector or collection agency, "attempt to collect a debt", "placed with our office",
  "original creditor") and of relief offers (debt relief / consolidation / settlement /
  forgiveness, "reduce your debt", credit repair, loan forgiveness).  A first-party creditor that
  words its own reminder like a collector (e.g. quotes the FDCPA notice) is flagged: rephrase it.
* Every category is matched on the text as written and once normalised against filter evasion
  (evasion.py: invisible characters, look-alike letters, spaced-out letters, digits for letters):
  ``scan`` says which categories only the normalised text shows and the evasion signals.
* Opt-out language: "Reply STOP" style instruction with a standard keyword (seed 002; [FILT-C]:
  "text 2 to opt out" is non-compliant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from dispatcher.compliance import evasion

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


@dataclass(frozen=True, slots=True)
class Category:
    """A prohibited content category.  ``terms``: a regex matched against lower-cased text
    (``(?i)`` costs several times more in Python's re), compiled on first use; ``age_gate_ok``:
    allowed, with a warning, on an age-gated campaign; ``ref``: the rejection code or source;
    ``disguised``: terms that are ordinary as written (a pharmacy names the drug it fills) but
    flagged when only undoing a filter-evasion trick shows them ("v1agra")."""

    key: str
    label: str
    age_gate_ok: bool
    ref: str
    terms: str
    disguised: str = ""


def _terms(*alternatives: str) -> str:
    return r"\b(?:" + "|".join(alternatives) + r")\b"


#: prescription drugs sold without one in spam (seed 003; [FORBID])
_RX_DRUGS = (
    r"(?:viagra|cialis|xanax|oxycodone|oxycontin|adderall|vicodin|valium|tramadol|percocet|"
    r"ozempic|semaglutide)"
)
#: words around "xxx" that make it adult content, not a placeholder ("Order XXX-1234")
_ADULT_NOUNS = (
    r"(?:videos?|vids?|movies?|films?|pics?|photos?|content|cams?|chat|sites?|girls?|babes?|"
    r"sex|porn|action|clips?|shows?|models?|dating|hookups?)"
)


# The term lists are deliberately specific: a term is listed only if a first-party service message
# has no use for it (compliance.md §2.4: "loan", "credit", "payment due", "debt" alone are not).
CATEGORIES: tuple[Category, ...] = (
    # SHAFT (seed 004, 30883)
    Category(
        "sex",
        "sexual content",
        False,
        "30883",
        _terms(
            r"porn\w*",
            r"xxx\s+(?:\w+\s+)?" + _ADULT_NOUNS,
            r"(?:hot|free|live|hardcore|watch|real|amateur|hd|rated)\s+xxx",
            r"nudes?",
            "nudity",
            r"sex\s*toys?",
            r"escorts?",
            r"camgirls?",
            "onlyfans",
            r"erotic\w*",
            r"adult\s+(?:content|videos?|entertainment)",
        ),
    ),
    Category(
        "hate",
        "hate speech / violence",
        False,
        "30883",
        _terms(
            r"white\s+power",
            r"kill\s+all",
            r"death\s+to",
            r"heil\s+hitler",
            r"ethnic\s+cleansing",
        ),
    ),
    Category(
        "alcohol",
        "alcohol",
        True,
        "30883",
        _terms(
            r"alcohol\w*",
            r"beers?",
            r"wines?",
            "vodka",
            r"whiske?y",
            "bourbon",
            "tequila",
            "liquor",
            r"cocktails?",
            "brewery",
            "winery",
            r"happy\s+hour",
            "champagne",
            "gin",
            "rum",
            r"hard\s+seltzers?",
        ),
    ),
    Category(
        "firearms",
        "firearms",
        True,
        "30883",
        _terms(
            r"guns?",
            r"firearms?",
            r"rifles?",
            r"pistols?",
            r"handguns?",
            r"shotguns?",
            "ammo",
            "ammunition",
            r"ar-?15",
            r"gun\s+show",
            r"concealed\s+carry",
        ),
    ),
    Category(
        "tobacco",
        "tobacco / vaping",
        True,
        "30883",
        _terms(
            "tobacco",
            r"cigarettes?",
            r"cigars?",
            r"vapes?",
            "vaping",
            r"e-?cigs?",
            r"e-?cigarettes?",
            "nicotine",
            "hookah",
            "juul",
            "smokeless",
        ),
    ),
    # Illegal substances (seed 003; [FORBID]; marijuana is 30883 in seed 004)
    Category(
        "cannabis",
        "cannabis / CBD",
        False,
        "30883",
        _terms(
            "cannabis",
            r"mari[jh]uana",
            "cbd",
            r"thca?",
            r"delta[\s-]?(?:8|9|10)",
            r"dispensar(?:y|ies)",
            r"pre-?rolls?",
            "edibles",
            "kush",
            "ganja",
            r"cannabinoids?",
            r"420\s+(?:deals?|specials?|sale)",
            r"weed\s+(?:delivery|deals?|strains?|shop)",
        ),
    ),
    Category(
        "rx",
        "prescription drugs without prescription",
        False,
        "seed 003",
        _terms(
            r"(?:buy|order|purchase|cheap|cheapest|discount(?:ed)?|sale\s+on)\s+"
            r"(?:cheap\s+|discount(?:ed)?\s+|generic\s+|brand\s+)?" + _RX_DRUGS,
            _RX_DRUGS + r"\s+(?:\w+\s+)?(?:for\s+sale|at\s+(?:the\s+)?lowest\s+prices?|"
            r"(?:is\s+)?(?:available\s+)?(?:online\s+)?without\s+(?:a\s+)?(?:prescription|rx|doctor)|"
            r"no\s+rx|shipped\s+(?:overnight|discreetly)|overnight\s+(?:shipping|delivery))",
            r"no\s+prescription\s+(?:needed|required)",
            r"without\s+(?:a\s+)?prescription",
            r"no\s+rx",
        ),
        disguised=_terms(_RX_DRUGS),
    ),
    Category(
        "drugs",
        "illegal drugs",
        False,
        "[FORBID]",
        _terms(
            "cocaine",
            "heroin",
            "methamphetamine",
            r"crystal\s+meth",
            "mdma",
            "lsd",
            "psilocybin",
            r"magic\s+mushrooms?",
            "shrooms",
        ),
    ),
    # Twilio's forbidden categories for the US and Canada ([FORBID], compliance.md §2.4)
    Category(
        "high_risk_financial",
        "high-risk financial services (payday / high-interest loans, crypto offers)",
        False,
        "[FORBID]",
        _terms(
            r"payday\s+(?:loans?|lenders?|advances?)",
            r"(?:quick|fast|easy|instant|emergency)\s+cash",
            r"(?:quick|fast|easy|instant|emergency|short[\s-]term|high[\s-]interest)\s+loans?",
            r"cash\s+loans?",
            r"title\s+loans?",
            r"(?:loans?|credit|funding|financing)\s+approved\s+(?:today|now|instantly|in\s+minutes)",
            r"guaranteed\s+(?:loans?|approval|credit)",
            r"no\s+credit\s+check",
            r"bad\s+credit\s+(?:ok|okay|welcome|accepted|no\s+problem)",
            r"(?:buy|invest\s+in|trade|free|double\s+your)\s+(?:crypto\w*|bitcoins?|btc|ethereum|"
            r"dogecoin)",
            r"(?:crypto\w*|bitcoin|btc|ethereum)\s+(?:investments?|opportunit\w+|signals|"
            r"giveaways?|airdrops?|trading\s+(?:bot|signals|opportunit\w+))",
        ),
    ),
    Category(
        "lead_generation",
        "third-party lead generation",
        False,
        "[FORBID]",
        _terms(
            r"(?:get|compare)\s+(?:free\s+)?(?:quotes|offers|rates)\s+from\s+(?:multiple|several|"
            r"top|local|up\s+to\s+\d+|\d+)\s+(?:\w+\s+)?(?:lenders|insurers|agents|providers|"
            r"companies|carriers|contractors|attorneys|lawyers)",
            r"(?:get|be)\s+matched\s+with\s+(?:a\s+|an\s+|the\s+)?(?:top\s+|local\s+|best\s+)?"
            r"(?:lenders?|insurers?|agents?|attorneys?|lawyers?|providers?|contractors?)",
            r"(?:our|a|one\s+of\s+our)\s+(?:partners?|affiliates?)\s+will\s+(?:contact|call|text|"
            r"reach\s+out\s+to)\s+you",
            r"you\s+may\s+(?:be\s+entitled\s+to|qualify\s+for)\s+(?:compensation|a\s+settlement|"
            r"a\s+cash\s+settlement)",
        ),
    ),
    Category(
        "debt",
        "debt collection or forgiveness (third-party collection, relief, credit repair)",
        False,
        "30863/30943/30949",
        _terms(
            r"debt\s+(?:relief|consolidation|settlement|forgiveness|reduction|negotiation|"
            r"elimination|help|free)",
            r"(?:consolidate|reduce|eliminate|erase|forgive|wipe\s+out|cut|lower)\s+(?:all\s+)?"
            r"(?:of\s+)?your\s+(?:\w+\s+)?(?:\w+\s+)?debts?",
            r"credit\s+repair",
            r"(?:repair|fix|restore|clean\s+up)\s+your\s+credit",
            r"(?:student\s+)?loan\s+(?:forgiveness|relief)",
            # the sender presenting itself as a collector (a creditor warning that an unpaid bill
            # goes "to a collection agency" is first-party and clean)
            r"(?:is|are|from)\s+(?:a\s+|an\s+|the\s+)?(?:debt\s+collectors?|"
            r"collections?\s+(?:agency|firm|office))",
            r"attempt\s+to\s+collect\s+a\s+debt",
            r"(?:placed|referred|assigned)\s+(?:to|with)\s+(?:our|this)\s+(?:office|agency|firm)",
            r"on\s+behalf\s+of\s+(?:your|the)\s+(?:original\s+)?creditor",
            r"original\s+creditor",
        ),
    ),
    Category(
        "get_rich_quick",
        '"get rich quick" schemes (work from home, risk investment, pyramid schemes)',
        False,
        "30868",
        _terms(
            r"make\s+(?:\$\s?\d[\d,]*\s+|big\s+|extra\s+|real\s+|serious\s+|easy\s+|fast\s+|quick\s+)?"
            r"money\s+(?:from\s+(?:home|your\s+phone|your\s+couch)|online|fast|quick(?:ly)?|"
            r"overnight|while\s+you\s+sleep)",
            r"(?:earn|make)\s+(?:up\s+to\s+)?\$\s?\d[\d,.]*k?\+?\s*(?:/|a|an|per|every)\s*"
            r"(?:day|week|hour|hr|month|wk)",
            r"work(?:ing)?[\s-]from[\s-]home\s+(?:opportunit\w+|jobs?|business|programs?|income)",
            r"be\s+your\s+own\s+boss",
            r"passive\s+income",
            r"get\s+rich",
            r"financial\s+freedom",
            r"(?:risk[\s-]free|guaranteed)\s+(?:investments?|returns?|profits?|income)",
            r"double\s+your\s+(?:money|investment|income)",
            r"(?:pyramid|ponzi)\s+schemes?",
            r"(?:become\s+a|paid)\s+mystery\s+shoppers?",
        ),
    ),
)


def _source(c: Category, squashed: bool, normalised: bool) -> str:
    terms = c.terms + ("|" + c.disguised if normalised and c.disguised else "")
    return evasion.squash(terms) if squashed else terms


@cache
def _tables(
    squashed: bool, normalised: bool = False
) -> tuple[re.Pattern[str], tuple[re.Pattern[str], ...]]:
    """(some term of some category, each category's terms), compiled on first use; ``squashed``:
    the tables for spaced-out runs (evasion.squash); ``normalised``: for a normalised stage of
    the text (with the ``disguised`` terms).  The usual body has no term: one scan of the
    combined regex costs about what one category's does, and its lookahead (every term starts
    with a letter or digit) lets re skip the other positions fast (~40 % less time)."""
    sources = [_source(c, squashed, normalised) for c in CATEGORIES]
    combined = re.compile("(?=[a-z0-9])(?:" + "|".join(sources) + ")")
    return combined, tuple(re.compile(t) for t in sources)


@cache
def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _revealed(c: Category, stage: evasion.Stage, lowered: str) -> bool:
    """Whether a category found in a normalised stage is there because of the trick: by its
    terms, or by a disguised term that the text as written does not have (a pharmacy's plain
    "Ozempic" stays ordinary in a body that needed normalising for another reason)."""
    if not c.disguised or _rx(_source(c, stage.squashed, False)).search(stage.text):
        return True
    shown = {m.group(0) for m in _rx(_source(c, stage.squashed, True)).finditer(stage.text)}
    return bool(shown - {m.group(0) for m in _rx(c.disguised).finditer(lowered)})


LENDING_RE = re.compile(
    r"(?i)\b(?:direct\s+lending|loans?|lending|lender|payday|mortgages?|line\s+of\s+credit|"
    r"credit\s+line|cash\s+advance|refinanc\w*|apr\s+\d)\b"
)


def find_links(text: str) -> list[str]:
    return [m.group(0).rstrip(".,;:!?)]") for m in LINK_RE.finditer(text)]


def link_host(link: str) -> str:
    m = _HOST_RE.match(link)
    return m.group(1).lower().rstrip(".") if m else ""


def find_phones(text: str) -> list[str]:
    return [m.group(0) for m in PHONE_RE.finditer(text)]


def has_opt_out_language(text: str, extra: str | None = None) -> bool:
    """True when ``text`` tells the reader how to opt out with a standard keyword ("Reply STOP"),
    or contains ``extra`` (the campaign's own opt-out sentence) verbatim, case-insensitive."""
    if OPT_OUT_LANGUAGE_RE.search(text):
        return True
    return bool(extra) and extra.strip().casefold() in text.casefold()  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class ContentScan:
    """``categories``: found as written or once the text is normalised (evasion.py);
    ``hidden``: category key -> the trick that hid it (found only once normalised);
    ``signals``: tricks that are evasion on their own (invisible character or mixed scripts inside
    a word)."""

    categories: tuple[Category, ...]
    hidden: dict[str, str]
    signals: tuple[str, ...]


_CLEAN = ContentScan((), {}, ())


def _found(lowered: str, squashed: bool = False, normalised: bool = False) -> list[Category]:
    any_, each = _tables(squashed, normalised)
    if any_.search(lowered) is None:  # one scan for the usual body with nothing to find
        return []
    return [c for c, rx in zip(CATEGORIES, each, strict=True) if rx.search(lowered)]


def scan(text: str) -> ContentScan:
    lowered = text.lower()
    found = _found(lowered)
    if not evasion.needs_normalising(lowered):
        return ContentScan(tuple(found), {}, ()) if found else _CLEAN
    hidden: dict[str, str] = {}
    seen = {c.key for c in found}
    for stage in evasion.stages(text):
        for c in _found(stage.text, stage.squashed, normalised=True):
            if c.key not in seen and _revealed(c, stage, lowered):
                seen.add(c.key)
                hidden[c.key] = stage.trick
                found.append(c)
    return ContentScan(tuple(found), hidden, tuple(evasion.signals(text)))


def prohibited_categories(text: str) -> list[tuple[str, str, bool]]:
    """``[(category, label, allowed_with_age_gate), ...]`` found in ``text`` (as written or once
    normalised)."""
    return [(c.key, c.label, c.age_gate_ok) for c in scan(text).categories]
