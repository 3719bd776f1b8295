"""Natural-language revocation of consent.

The FCC's 2024 rule (47 CFR 64.1200(a)(10), order FCC 24-18) says consent may be revoked by "any
reasonable means" and a sender may not insist on one keyword ([FCC1], [FCC2], [CPT] in
../shared/compliance.md §1.4).  ``detect_revocation`` flags free text that a reasonable person reads
as "stop messaging me", so that the caller suppresses the contact (design: immediately, well inside
the 10 business days) and flags the message for review.

How it works: a standard opt-out keyword (``classify_keyword`` == "STOP") is a revocation; otherwise
a small set of English (and a few Spanish) patterns, each anchored on a verb *and* an object that
refers to the messages or the recipient ("stop texting", "remove me", "take me off", "don't text
me", "unsubscribe me", "no more texts", "wrong number", "no más").  A stop-verb directly preceded by
a negation ("don't stop the reminders") is not a revocation; "stop" followed by an unrelated object
("can you stop by at 5?") is not either.

Limits (documented in docs/compliance.md): it is a pattern list, not a language model.  It misses
paraphrases it has no pattern for ("I've had enough of you people"), sarcasm, most languages other
than English/Spanish, and typos beyond the few spelled out; and it flags questions about opting out
("how do I unsubscribe?") as revocations on purpose (the conservative reading).  It is case- and
accent-insensitive and ignores punctuation.
"""

from __future__ import annotations

import re
import unicodedata

from dispatcher.compliance.keywords import classify_keyword

_MSG = (
    r"(?:texts?|txts?|messages?|msgs?|sms|notifications?|alerts?|reminders?|updates?|promos?"
    r"|offers?|emails?|calls?)"
)
_SEND = (
    r"(?:text(?:ing)?|txt(?:ing)?|texing|messag(?:e|ing)|msg(?:ing)?|send(?:ing)?|contact(?:ing)?"
    r"|call(?:ing)?|spam(?:ming)?|bother(?:ing)?|sms(?:ing)?|email(?:ing)?)"
)
_NEG = (
    r"(?<!\bdon't )(?<!\bdont )(?<!\bdo not )(?<!\bnever )(?<!\bnot )(?<!\bwon't )"
    r"(?<!\bplease don't )"
)
_DET = r"(?:the|these|those|this|your|ur|any|all)"

_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # stop texting me / quit sending these messages / stop the reminders
        _NEG
        + r"\b(?:stop|quit|cease|end)\s+(?:"
        + _SEND
        + r"|(?:all\s+)?"
        + _DET
        + r"\s+(?:\w+\s+)?"
        + _MSG
        + r")\b",
        # don't text me / do not message me anymore / never contact me again
        r"\b(?:don'?t|do\s+not|never|dont|pls\s+don'?t)\s+(?:ever\s+)?"
        + _SEND
        + r"\s+(?:me|us|this\s+number|my\s+(?:phone|number|cell))\b",
        # remove me / take me off / delete my number / unsubscribe me / opt me out
        r"\b(?:remove|delete|erase|drop)\s+(?:me|us|my\s+(?:phone\s+)?(?:number|info|cell|phone))\b",
        r"\btake\s+(?:me|us|my\s+(?:phone\s+)?number)\s+off\b",
        r"\b(?:un-?subscribe|unsub|opt\s*-?\s*out|optout)\b",
        r"\bopt\s+(?:me|us)\s+out\b",
        # no more texts / I don't want these messages
        r"\bno\s+(?:more|further)\s+(?:\w+\s+)?" + _MSG + r"\b",
        r"\b(?:don'?t|do\s+not|no\s+longer)\s+want\s+(?:to\s+(?:get|receive)\s+)?"
        r"(?:any\s+(?:more\s+)?)?(?:these|those|your|the|this|ur|any|more)?\s*(?:\w+\s+)?"
        + _MSG
        + r"\b",
        r"\bstop\s+(?:it|now|please|pls|plz|already|immediately)\b",
        r"^(?:please|pls|plz|ok|okay|just|now|and)?\s*(?:stop|cancel|quit|end|revoke|stopall)"
        r"(?:\s+(?:it|now|please|pls|plz|thanks|thank\s+you|all|everything|already))*\s*$",
        r"\b(?:wrong|not\s+my)\s+number\b",
        r"\bleave\s+me\s+alone\b",
        r"\b(?:lose|forget)\s+my\s+number\b",
        # Spanish: no más / no me envíen mensajes / cancelar / baja / alto
        r"^no\s+mas(?:\s+(?:mensajes|textos|por\s+favor))*\s*$",
        r"\bno\s+mas\s+(?:mensajes|textos)\b",
        r"\bno\s+me\s+(?:envien|envies|mande[ns]?|escriba[ns]?|escribas|contacte[ns]?)\b",
        r"^(?:cancelar|parar|alto|baja|darme\s+de\s+baja)\s*$",
        r"\bdarme\s+de\s+baja\b",
    )
)

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})
_PUNCT = re.compile(r"[^\w\s']+")
_SPACES = re.compile(r"\s+")


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = _PUNCT.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def detect_revocation(text: str | None) -> bool:
    """True when ``text`` reads as a request to stop messaging (see the module docstring)."""
    if not text:
        return False
    if classify_keyword(text) == "STOP":
        return True
    folded = _fold(text)
    return any(p.search(folded) for p in _PATTERNS)
