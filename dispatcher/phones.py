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


@lru_cache(maxsize=65536)
def normalize_phone(raw: str, default_region: str = "US") -> str:
    """``"(415) 555-1234"`` -> ``"+14155551234"``; raises InvalidPhoneError with the reason."""
    text = (raw or "").strip()
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
    import phonenumbers

    try:
        num = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as e:
        raise InvalidPhoneError(f"phone number {text!r} cannot be parsed: {e._msg}") from e
    region = _region(num.country_code or 0, str(num.national_number)[:7], num)
    if region is None or not phonenumbers.is_valid_number_for_region(num, region):
        raise InvalidPhoneError(f"phone number {text!r} is not a valid number")
    if region not in US_REGIONS:
        raise InvalidPhoneError(
            f"phone number {text!r} is in region {region}, outside US A2P 10DLC coverage"
        )
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


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
