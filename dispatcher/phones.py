"""Phone numbers: parse and normalise to E.164 with ``phonenumbers``; invalid input raises
``InvalidPhoneError`` with the reason.  Pure (no I/O)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from dispatcher.errors import InvalidPhoneError

if TYPE_CHECKING:  # imported on first use: `run show` / `run pause` never parse a number
    import phonenumbers

#: US A2P 10DLC reaches the US and its NANP territories.
US_REGIONS = frozenset({"US", "PR", "GU", "VI", "AS", "MP"})
_LETTERS = re.compile(r"[A-Za-z]")
_ALLOWED = re.compile(r"^[\d\s+().\-/]+$")
#: Phone numbers as the HTTP API takes them, before the numbering plan is asked
#: (:func:`normalize_phone`): 10 to 15 ASCII digits, with at most two of space, bracket, dot,
#: dash, slash or plus sign around each (``+1 (415) 555-0100``); in a URL path, no slash.
PHONE_PATTERN = r"^[ ().+/-]{0,2}(?:[0-9][ ().+/-]{0,2}){10,15}$"
PATH_PHONE_PATTERN = r"^[ ().+-]{0,2}(?:[0-9][ ().+-]{0,2}){10,15}$"


#: E.164 as Twilio's API takes a number: "+", a country code, at most 15 digits (what the
#: sandbox carrier accepts as a To; not a check that the number exists)
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
#: A NANP number already in E.164 (+1 NPA NXX XXXX), the shape :func:`normalize_phone` returns
#: for every number it accepts: checked without parsing (a cache key, a fast path)
NANP_E164 = re.compile(r"^\+1[2-9]\d{2}[2-9]\d{6}$")


@lru_cache(maxsize=65536)
def normalize_phone(raw: str, default_region: str = "US") -> str:
    """``"(415) 555-1234"`` -> ``"+14155551234"``; raises InvalidPhoneError with the reason.

    The one phone normaliser of the package.  A number already in NANP E.164 skips the parse
    and meets the same numbering-plan checks, so both paths give the same answer
    (tests/unit/test_phones.py): 54 against 96 us per number, 30 000 random NANP numbers
    uncached, load average 5.8 on 2 cores."""
    text = (raw or "").strip()
    import phonenumbers

    if NANP_E164.match(text):
        num = phonenumbers.PhoneNumber(country_code=1, national_number=int(text[2:]))
        return _checked(num, text)
    if not text:
        raise InvalidPhoneError("phone number is empty")
    if _LETTERS.search(text):
        raise InvalidPhoneError(f"phone number {text!r} contains letters")
    if not _ALLOWED.match(text):
        raise InvalidPhoneError(f"phone number {text!r} contains characters other than digits")
    digits = re.sub(r"\D", "", text)
    if len(digits) < 10:
        raise InvalidPhoneError(f"phone number {text!r} is too short")
    if len(digits) > 15:
        raise InvalidPhoneError(f"phone number {text!r} is too long")
    try:
        num = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as e:
        raise InvalidPhoneError(f"phone number {text!r} cannot be parsed: {e._msg}") from e
    return _checked(num, text)


def _checked(num: phonenumbers.PhoneNumber, text: str) -> str:
    """E.164 of a parsed number the numbering plan knows, in US A2P 10DLC coverage."""
    import phonenumbers

    region = _region(num.country_code or 0, str(num.national_number)[:7], num)
    if region is None or not phonenumbers.is_valid_number_for_region(num, region):
        raise InvalidPhoneError(f"phone number {text!r} is not a valid number")
    if region not in US_REGIONS:
        raise InvalidPhoneError(
            f"phone number {text!r} is in region {region}, outside US A2P 10DLC coverage"
        )
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def is_e164(text: str) -> bool:
    """``text`` is written in E.164 (the wire format; whether the number exists is
    :func:`normalize_phone`'s question)."""
    return bool(E164.match(text))


_regions: dict[tuple[int, str], str] = {}


def _region(country: int, prefix: str, num: phonenumbers.PhoneNumber) -> str | None:
    """Region of a number, cached by country code and the first 7 national digits: NANP
    metadata tells regions apart by NPA-NXX, and the lookup walks ~25 regions each time.

    Only a region found is remembered: a number with no region (a 9-digit one, an unassigned
    one) says nothing about the valid numbers that share its first 7 digits."""
    import phonenumbers

    key = (country, prefix)
    region = _regions.get(key)
    if region is None:
        region = phonenumbers.region_code_for_number(num)
        if region is not None:
            if len(_regions) > 200_000:
                _regions.clear()
            _regions[key] = region
    return region


def try_normalize(raw: str) -> tuple[str | None, str | None]:
    """(e164, None) or (None, reason)."""
    try:
        return normalize_phone(raw), None
    except InvalidPhoneError as e:
        return None, str(e)
