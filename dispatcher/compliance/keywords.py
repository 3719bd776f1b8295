"""Inbound keyword classification (STOP / START / HELP).

Rules (sources: ../shared/compliance.md §1):

* Opt-out: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT (Twilio's classic list, [E23002], [BRAZE])
  plus REVOKE and OPTOUT (Twilio's current default list, [AOO]).  "STOP ALL" and "OPT OUT" written
  as two words match too: the FCC names "opt out" as a reasonable-per-se revocation word [FCC1],
  and Telnyx uses "STOP ALL" [TNXAOO]; we compare with inner spaces/hyphens removed.
* Opt-in: START, YES, UNSTOP ([E23002], [KW]).  Help: HELP, INFO ([E23002]).
* The whole message must be the keyword, case-insensitive ([OOT]: "Stop please" is not STOP).
  Surrounding whitespace and punctuation are ignored (design, compliance.md §1.2: "STOP." and
  " stop " match).  Text is NFKC-normalised and case-folded, so full-width "ＳＴＯＰ" matches.
* A campaign's own registered keywords (``opt_out_keywords`` …) are added to the standard sets.
* Precedence when a word is in two classes: STOP over START over HELP (never miss an opt-out).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

KeywordClass = Literal["STOP", "START", "HELP"]

OPT_OUT_KEYWORDS: frozenset[str] = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS: frozenset[str] = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS: frozenset[str] = frozenset({"HELP", "INFO"})

# Folded forms (what normalize_keyword returns) -> class, precomputed once.
_STANDARD: dict[str, KeywordClass] = {}
_CLASSES = (("HELP", HELP_KEYWORDS), ("START", OPT_IN_KEYWORDS), ("STOP", OPT_OUT_KEYWORDS))
for _cls, _words in _CLASSES:
    for _w in _words:
        _STANDARD[_w.casefold()] = _cls  # type: ignore[assignment]

_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
_INNER = re.compile(r"[\s\-_.]+")
_MAX_KEYWORD_LEN = 64  # nothing longer can be a keyword; skip the work


def normalize_keyword(text: str) -> str:
    """Fold ``text`` the way keywords are compared: NFKC, casefold, trim punctuation/space at both
    ends, drop inner whitespace, hyphens, dots and underscores ("Opt-Out" -> "optout")."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = _EDGE.sub("", folded)
    return _INNER.sub("", folded)


def _campaign_words(campaign: Any) -> dict[str, KeywordClass]:
    words: dict[str, KeywordClass] = {}
    for attr, cls in (
        ("help_keywords", "HELP"),
        ("opt_in_keywords", "START"),
        ("opt_out_keywords", "STOP"),
    ):
        for word in getattr(campaign, attr, None) or ():
            if isinstance(word, str) and word.strip():
                words[normalize_keyword(word)] = cls  # type: ignore[assignment]
    return words


def classify_keyword(text: str | None, campaign: Any = None) -> KeywordClass | None:
    """ "STOP", "START" or "HELP" when the whole message is such a keyword, else ``None``."""
    if not text or len(text) > _MAX_KEYWORD_LEN:
        return None
    key = normalize_keyword(text)
    if not key:
        return None
    if campaign is not None:
        own = _campaign_words(campaign)
        if own:
            found = {own.get(key), _STANDARD.get(key)} - {None}
            for cls in ("STOP", "START", "HELP"):
                if cls in found:
                    return cls
            return None
    return _STANDARD.get(key)
