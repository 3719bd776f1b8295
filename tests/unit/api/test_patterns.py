"""The patterns the OpenAPI document states agree with the code that enforces them: a request
matching a pattern is never refused by the parser behind it (other than with the documented
problem type), and the template pattern is exactly the template grammar."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.audience import SEGMENT_PATTERN, parse_segment
from dispatcher.contacts import TIME_ZONE_PATTERN, check_time_zone
from dispatcher.errors import InputError, InvalidPhoneError, UnknownTimeZoneError
from dispatcher.phones import PATH_PHONE_PATTERN, PHONE_PATTERN, normalize_phone
from dispatcher.templates import _SPACE, TEMPLATE_PATTERN, parse_template

EXAMPLES = settings(max_examples=300, deadline=None, derandomize=True)


def test_the_blank_class_is_what_str_strip_removes():
    blank = re.compile(f"[{_SPACE}]")
    assert [c for c in map(chr, range(0x110000)) if c.isspace()] == [
        c for c in map(chr, range(0x110000)) if blank.fullmatch(c)
    ]


def _parses(text: str) -> bool:
    try:
        parse_template(text)
    except InputError:
        return False
    return "\x00" not in text


@EXAMPLES
@given(st.text(alphabet="[]ab_.1 \t\n\x00\u3000\x1c=", max_size=24))
def test_template_pattern_is_the_template_grammar(text):
    assert (re.fullmatch(TEMPLATE_PATTERN, text) is not None) == _parses(text)


@pytest.mark.parametrize(
    "text", ["Hi [name]", "[[literal]]", "[ a.b ]", "x]]", " \u3000y", "Acme: [date]. STOP"]
)
def test_template_pattern_examples(text):
    assert re.fullmatch(TEMPLATE_PATTERN, text) and _parses(text)


@EXAMPLES
@given(st.from_regex(SEGMENT_PATTERN, fullmatch=True))
def test_every_segment_the_pattern_allows_parses(query):
    assert parse_segment(query)


_SEPARATORS = st.text(alphabet=" ().+/-", max_size=2)


@st.composite
def _phones(draw: st.DrawFn) -> str:
    """Strings of the phone pattern within its 32 characters (``from_regex`` draws them long):
    10 to 15 digits, each with a few separators before it, and some after the last."""
    digits = draw(st.lists(st.sampled_from("0123456789"), min_size=10, max_size=15))
    text = "".join(draw(_SEPARATORS) + d for d in digits) + draw(_SEPARATORS)
    return text[:32] if re.fullmatch(PHONE_PATTERN, text[:32]) else "".join(digits)


@EXAMPLES
@given(_phones())
def test_a_phone_the_pattern_allows_is_a_number_or_a_documented_invalid_phone(phone):
    assert re.fullmatch(PHONE_PATTERN, phone)
    try:
        assert normalize_phone(phone).startswith("+1")
    except InvalidPhoneError:
        pass  # 400 invalid-phone: the numbering plan's answer, never another error


def test_path_phones_are_phones_without_a_slash():
    assert PATH_PHONE_PATTERN == PHONE_PATTERN.replace("/", "")


@EXAMPLES
@given(st.from_regex(TIME_ZONE_PATTERN, fullmatch=True).filter(lambda z: len(z) <= 64))
def test_a_time_zone_the_pattern_allows_is_a_zone_or_a_documented_unknown_one(name):
    try:
        assert check_time_zone(name) == name
    except UnknownTimeZoneError:
        pass  # 400 unknown-time-zone, never another error (a folder name used to be a 500)
