"""Content written to evade filters: normalise a body for matching, and name the tricks it uses.

Content designed to evade filters is itself forbidden (seed 003; compliance.md §2.4).  The tricks a
lint can see, and how each is undone before the prohibited-term tables of content.py are matched:

* **invisible characters** — every format character (Unicode category Cf: zero-width space/joiners
  U+200B–U+200D, word joiner U+2060, BOM U+FEFF, soft hyphen U+00AD, bidi controls) and the other
  Default_Ignorable_Code_Points (Unicode DerivedCoreProperties.txt: U+034F, Hangul fillers,
  variation selectors, …) are removed.  One *inside a Latin word* is reported on its own (a
  zero-width joiner between emoji is not: it builds the emoji; one between Persian or Hindi letters
  is not: those scripts use ZWNJ/ZWJ in ordinary words).
* **look-alike letters** — NFKD (fullwidth, mathematical and circled letters become plain ones),
  combining marks dropped ("marijuána"), then every letter that Unicode's TR39 confusables table
  says looks like a Latin letter becomes that letter (Cyrillic "с" → "c", Greek "ο" → "o").  The
  table comes from the ``confusable-homoglyphs`` package (MIT; Unicode's confusables.txt and
  Scripts.txt as JSON), loaded on the first body that has a non-ASCII character (~40 ms of CPU,
  once per process).  A word that mixes Latin letters with another script's look-alikes ("СBD"
  with a Cyrillic С) is reported on its own; a word wholly in another script is not (Russian text
  is not evasion) unless it spells a prohibited term.
* **spaced-out letters** — three or more single letters/digits joined by one space, dot, dash,
  underscore, asterisk, tilde or slash ("c a s h", "c.b.d") are joined; the runs are also
  matched with the spaces of a term made optional ("q u i c k c a s h").
* **digits or symbols for letters** — inside a word that has letters, 0→o 1→i (and 1→l) 3→e 4→a
  5→s 7→t 8→b 9→g @→a $→s !→i |→l +→t ("m4rijuana", "c@nnabis", "v1agra").  Times, ordinals,
  units and codes ("4pm", "2nd", "10mg", "3x", "save10", "b12") are left as they are.

Spaced-out letters and digits for letters are reported only when undoing them reveals a prohibited
term (content.scan): "B2B", "P@ssw0rd" and "9 a.m." are ordinary.

Fast path: an ASCII body with no word mixing letters and digits/symbols (other than the ordinary
ones above) and no run of single letters is already its own normal form (needs_normalising; a
hypothesis test checks it against stages); only the other bodies pay for the normalisation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import cache
from typing import NamedTuple

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt), which holds every Cf character that is
# invisible, plus the remaining Cf characters (Arabic/Syriac number marks, interlinear annotation,
# Egyptian/shorthand format controls): a unit test checks that every Cf character is in the set.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_INVISIBLE_CLASS = "".join(
    f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in _INVISIBLE_RANGES
)
INVISIBLE_RE = re.compile(f"[{_INVISIBLE_CLASS}]+")
_MARKS_RE = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")

# Tricks, as named in findings (compliance.md §2.4).
INVISIBLE = "invisible characters"
LOOK_ALIKE = "look-alike letters"
SPACED = "spaced-out letters"
LEET = "digits or symbols for letters"

_SEP = r"[ .\-_*~/]"
_SINGLE = r"[a-z0-9@$|]"
_SPACED_RE = re.compile(rf"(?<![a-z0-9]){_SINGLE}(?:{_SEP}{_SINGLE}){{2,}}(?![a-z0-9])")
_SEP_RE = re.compile(_SEP)
_SPACES_RE = re.compile(r"\\s\+|\[\\s-\]\??")  # "\s+", "[\s-]" and "[\s-]?" in a term's regex
_LEET_TOKEN_RE = re.compile(  # a word mixing letters with digits/symbols
    r"[a-z0-9@$|!+]*(?:[a-z][0-9@$|!+]|[0-9@$|!+][a-z])[a-z0-9@$|!+]*"
)
_LEET = str.maketrans("01345789@$!|+", "oieastbgasilt")
_LEET_ALT = str.maketrans("01345789@$!|+", "oleastbgasiit")  # "1" read as "l" ("a1cohol")
# Words that mix letters and digits without standing for letters: times, ordinals, units and
# multipliers ("4pm", "2nd", "10mg", "3x"), codes of letters then two or more digits ("save10",
# "covid19") or one letter then digits ("b12").  They are left as they are.
_ORDINARY_TOKEN_RE = re.compile(
    r"\d+(?:am|pm|a|p|st|nd|rd|th|x|k|m|h|hr|hrs|min|mins|s|d|w|wk|wks|mo|yr|yrs|g|kg|mg|mcg|ml|"
    r"l|lb|lbs|oz|ft|in|mi|km|cm|mm|gb|mb|tb|mph|pc|pcs)|[a-z]+\d{2,}|[a-z]\d+"
)
# A cheap first look: an ASCII body with none of these is its own normal form (a hypothesis test
# checks needs_normalising against stages).
_LEET_HINT_RE = re.compile(r"[0-9@$|!+][a-z]|[a-z][0-9@$|]|[a-z][!+]+[a-z0-9@$|]")
_HINT_RE = re.compile(f"{_LEET_HINT_RE.pattern}|{_SPACED_RE.pattern}")


class _Confusables(NamedTuple):
    table: dict[str, str]  # non-ASCII character -> the ASCII letter it looks like
    any_bmp: re.Pattern[str]  # one of those characters (below U+10000: a fast bitmap in re)
    any_all: re.Pattern[str]  # ... any of them (~25x slower: only for text beyond the BMP)
    foreign_bmp: re.Pattern[str]  # one of those not of the Latin or Common script
    foreign_all: re.Pattern[str]

    def any(self, text: str) -> re.Pattern[str]:
        return self.any_all if text and max(text) > "\uffff" else self.any_bmp

    def foreign(self, text: str) -> re.Pattern[str]:
        return self.foreign_all if text and max(text) > "\uffff" else self.foreign_bmp


def _char_class(chars: Iterable[str]) -> re.Pattern[str]:
    ranges: list[list[int]] = []
    for cp in sorted(ord(c) for c in chars):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    parts = (re.escape(chr(a)) + ("" if a == b else "-" + re.escape(chr(b))) for a, b in ranges)
    return re.compile("[" + "".join(parts) + "]")


@cache
def _confusables() -> _Confusables:
    """TR39 confusables.txt, as the ``confusable-homoglyphs`` package ships it; only characters
    that NFKD leaves alone (the others, e.g. mathematical letters, are plain letters by then)."""
    from confusable_homoglyphs import confusables  # loads ~1 MB of JSON: only when needed

    table: dict[str, str] = {}
    for ch, glyphs in confusables.confusables_data.items():
        if len(ch) != 1 or ch.isascii() or unicodedata.normalize("NFKD", ch) != ch:
            continue
        for g in glyphs:
            c = g["c"]
            if len(c) == 1 and c.isascii() and c.isalpha():
                # TR39 maps capital I to "l" (its skeleton); an upper-case source reads as "I"
                table[ch] = "i" if c == "l" and ch.isupper() else c.lower()
                break
    foreign = [c for c in table if _script(c) not in ("LATIN", "COMMON", "INHERITED")]
    return _Confusables(
        table,
        _char_class(c for c in table if c <= "\uffff"),
        _char_class(table),
        _char_class(c for c in foreign if c <= "\uffff"),
        _char_class(foreign),
    )


def _script(ch: str) -> str:
    from confusable_homoglyphs import categories

    return str(categories.alias(ch))


def needs_normalising(lowered: str) -> bool:
    """False when ``lowered`` (a lower-cased body) is already its own normal form."""
    if not lowered.isascii():
        return True
    if _HINT_RE.search(lowered) is None:
        return False
    if _SPACED_RE.search(lowered):
        return True
    return any(
        _deleet_token(m.group(0), _LEET) != m.group(0) for m in _LEET_TOKEN_RE.finditer(lowered)
    )


def _unspace(m: re.Match[str]) -> str:  # "c a s h" -> "cash"
    return _SEP_RE.sub("", m.group(0))


def _deleet_token(token: str, table: dict[int, int]) -> str:
    core = token.rstrip("!+")  # "cash!" and "C++" end in punctuation, not letters
    if _ORDINARY_TOKEN_RE.fullmatch(core):
        return token
    return core.translate(table) + token[len(core) :]


def _deleet(table: dict[int, int]) -> Callable[[re.Match[str]], str]:
    return lambda m: _deleet_token(m.group(0), table)


_DELEET = _deleet(_LEET)
_DELEET_ALT = _deleet(_LEET_ALT)


class Stage(NamedTuple):
    """The text once ``trick`` is undone (lower-cased, building on the previous stage).
    ``squashed``: the text is only the spaced-out runs, each joined without its separators
    ("q u i c k c a s h" → "quickcash"): match it with the spaces of a term made optional."""

    trick: str
    text: str
    squashed: bool = False


def stages(text: str) -> list[Stage]:
    """The normalisation of ``text``, step by step; only the tricks that changed something are
    listed (digits for letters may appear twice: "1" read as "i", then as "l")."""
    out: list[Stage] = []
    cur = text.lower()
    if not cur.isascii():
        visible = INVISIBLE_RE.sub("", cur)
        if visible != cur:
            out.append(Stage(INVISIBLE, visible))
        folded = _MARKS_RE.sub("", unicodedata.normalize("NFKD", visible)).lower()
        conf = _confusables()
        look_alike = conf.any(folded)
        if look_alike.search(folded):
            folded = look_alike.sub(lambda m: conf.table[m.group(0)], folded)
        if folded != visible:
            out.append(Stage(LOOK_ALIKE, folded))
        cur = folded
    runs = [_unspace(m) for m in _SPACED_RE.finditer(cur)]
    if runs:
        out.append(Stage(SPACED, _SPACED_RE.sub(_unspace, cur)))
        out.append(Stage(SPACED, " ".join(r.translate(_LEET) for r in runs), squashed=True))
        cur = out[-2].text
    deleeted = _LEET_TOKEN_RE.sub(_DELEET, cur) if _LEET_HINT_RE.search(cur) else cur
    if deleeted != cur:
        out.append(Stage(LEET, deleeted))
        alt = _LEET_TOKEN_RE.sub(_DELEET_ALT, cur) if "1" in cur or "|" in cur else deleeted
        if alt != deleeted:
            out.append(Stage(LEET, alt))
    return out


def squash(pattern: str) -> str:
    """``pattern`` (a term table's ``\\b(?:...)\\b``) for squashed runs: spaces optional, and a
    term may run into the next word ("quickcashloans") but must start a word ("drums" is no rum)."""
    return _SPACES_RE.sub(
        lambda m: r"\s*" if m.group(0) == r"\s+" else r"[\s-]*", pattern.removesuffix(r"\b")
    )


# Latin letters: ASCII, Latin-1 Supplement to Latin Extended-B, Latin Extended Additional.
_LATIN_LETTER_RE = re.compile(r"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]")


def _latinish(ch: str) -> bool:
    return ch.isascii() and ch.isalnum() or "\u00c0" <= ch <= "\u024f" or ch in _confusables().table


def signals(text: str) -> list[str]:
    """Tricks that are evasion whatever the words mean: an invisible character inside a Latin word,
    and a word mixing Latin letters with look-alike letters of another script.  ``[]`` for ASCII."""
    if text.isascii():
        return []
    out: list[str] = []
    nfkc = visible = unicodedata.normalize("NFKC", text)
    if INVISIBLE_RE.search(nfkc):
        visible = INVISIBLE_RE.sub("", nfkc)
        for m in INVISIBLE_RE.finditer(nfkc):
            a, b = m.start(), m.end()
            if a > 0 and b < len(nfkc) and _latinish(nfkc[a - 1]) and _latinish(nfkc[b]):
                word = _word_around(nfkc, a, b)
                out.append(f"invisible character U+{ord(nfkc[a]):04X} inside the word {word!r}")
                break
    conf = _confusables()
    for m in conf.foreign(visible).finditer(visible):
        word = _word_around(visible, m.start(), m.end())
        if any(_LATIN_LETTER_RE.match(c) for c in word):
            c = m.group(0)
            out.append(
                f"{_script(c).title()} {c!r} (U+{ord(c):04X}) looks like Latin "
                f"{conf.table[c]!r} in the word {word!r}"
            )
            break
    return out


def _word_around(text: str, a: int, b: int) -> str:
    def inside(c: str) -> bool:
        return c.isalnum() or INVISIBLE_RE.match(c) is not None

    while a > 0 and inside(text[a - 1]):
        a -= 1
    while b < len(text) and inside(text[b]):
        b += 1
    return text[a:b]
