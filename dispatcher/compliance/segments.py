"""SMS encoding and segment count, as Twilio counts them.

Sources: [SEG] twilio.com/docs/glossary/what-sms-character-limit, [UCS2]
twilio.com/docs/glossary/what-is-ucs-2-character-encoding, [GSM] 3GPP TS 23.038 default alphabet and
extension table, and Twilio's own calculator (github TwilioDevEd/message-segment-calculator,
``src/libs/UnicodeToGSM.ts`` and ``SegmentedMessage.ts``), whose character table we copy:

* GSM-7 when every character is in the basic table or the extension table; one other character
  makes the whole message UCS-2 [UCS2].  Extension characters (``^ { } \\ [ ~ ] | €`` and form
  feed) are sent as ESC + char and cost **2 septets** [GSM].  Note: Twilio's table has capital
  ``Ç`` but not ``ç``, and no TAB; both force UCS-2, as they do in the calculator.
* One segment holds 160 septets / 70 UCS-2 units (140 bytes); a concatenated segment loses 6 bytes
  to the UDH: 153 septets / 67 units [SEG], [UCS2].
* A 2-septet character is never split across two segments; a surrogate pair (emoji: 2 UTF-16
  units) is never split either, nor is a grapheme cluster (base + combining marks / variation
  selectors / skin tones / ZWJ sequences / flag pairs), as the calculator packs graphemes whole.
  Our grapheme grouping is an approximation of UAX #29 that covers these cases.
* Smart Encoding (Messaging Service option that replaces curly quotes etc.) is **not** applied:
  we count what we send.  lint_message warns about the characters that force UCS-2.

``characters`` is the number of Unicode code points (``len(text)``).  An empty text is one
segment, as Twilio counts it (the calculator's ``SegmentedMessage`` starts with one segment; an
inbound message with no text, an MMS of media only, carries ``NumSegments=1``).  This is the one
segment counter of the package: the sandbox carrier counts with it too.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Literal, NamedTuple

GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION: frozenset[str] = frozenset("^{}\\[~]|€\f")
GSM7_CHARS: frozenset[str] = GSM7_BASIC | GSM7_EXTENSION
_EXTENSION = tuple(GSM7_EXTENSION)  # str.count each: ~5x faster than a loop over the text

#: the ASCII characters that are not one septet (outside the table, or extension characters):
#: an ASCII text without them is GSM-7 of one septet each (one C scan instead of a set test and
#: a count per extension character)
_ASCII_NOT_PLAIN = re.compile(
    "[" + "".join(f"\\x{c:02x}" for c in range(128) if chr(c) not in GSM7_BASIC) + "]"
)

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67
MAX_BODY_CHARS = 1600  # Twilio error 21617 [SEG], [E21617]

Encoding = Literal["GSM-7", "UCS-2"]


class Segments(NamedTuple):
    encoding: Encoding
    count: int  # type: ignore[assignment]  # the field shadows tuple.count, on purpose: the name Twilio uses
    characters: int


def non_gsm7_characters(text: str) -> list[str]:
    """The distinct characters that force UCS-2, in order of appearance."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in GSM7_CHARS:
            seen.setdefault(ch, None)
    return list(seen)


def utf16_units(text: str) -> int:
    """Length in UTF-16 code units (what UCS-2 segments carry; emoji count 2)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _pack(sizes: list[int], capacity: int) -> int:
    count, free = 1, capacity
    for size in sizes:
        if size > free:
            count += 1
            free = capacity
        free -= size
    return count


def _joins_previous(ch: str, prev: str) -> bool:
    cp = ord(ch)
    if prev == "\u200d":  # after a zero-width joiner
        return True
    if cp == 0x200D or 0xFE00 <= cp <= 0xFE0F or 0x1F3FB <= cp <= 0x1F3FF:
        return True
    if 0xE0020 <= cp <= 0xE007F:  # tag characters (subdivision flags)
        return True
    return unicodedata.category(ch) in ("Mn", "Me", "Mc")


def _grapheme_units(text: str) -> list[int]:
    """UTF-16 units per (approximate) grapheme cluster."""
    sizes: list[int] = []
    prev = ""
    ri_open = False  # an unpaired regional indicator (flag half) is open
    for ch in text:
        units = 2 if ord(ch) > 0xFFFF else 1
        is_ri = 0x1F1E6 <= ord(ch) <= 0x1F1FF
        if sizes and (_joins_previous(ch, prev) or (is_ri and ri_open)):
            sizes[-1] += units
            ri_open = False
        else:
            sizes.append(units)
            ri_open = is_ri
        prev = ch
    return sizes


@lru_cache(maxsize=8192)
def segments(text: str) -> Segments:
    """Encoding and segment count of ``text`` as Twilio sends it (see the module docstring)."""
    n = len(text)
    if n == 0:
        return Segments("GSM-7", 1, 0)
    if text.isascii() and _ASCII_NOT_PLAIN.search(text) is None:
        return Segments("GSM-7", 1 if n <= GSM7_SINGLE else -(-n // GSM7_MULTI), n)
    if GSM7_CHARS.issuperset(text):
        if n + n <= GSM7_SINGLE:  # even if every character were an extension one
            return Segments("GSM-7", 1, n)
        ext = sum(map(text.count, _EXTENSION))
        if n + ext <= GSM7_SINGLE:
            return Segments("GSM-7", 1, n)
        if not ext:
            return Segments("GSM-7", -(-n // GSM7_MULTI), n)
        sizes = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return Segments("GSM-7", _pack(sizes, GSM7_MULTI), n)
    units = utf16_units(text)
    if units <= UCS2_SINGLE:
        return Segments("UCS-2", 1, n)
    if units == n and all(not _joins_previous(ch, "") for ch in text):
        return Segments("UCS-2", -(-n // UCS2_MULTI), n)
    return Segments("UCS-2", _pack(_grapheme_units(text), UCS2_MULTI), n)
