import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.compliance import compose, segments
from dispatcher.compliance.segments import GSM7_BASIC, GSM7_CHARS, GSM7_EXTENSION
from dispatcher.errors import InputError, MessageTooLongError

CASES = [
    ("", "GSM-7", 1),  # as Twilio counts it: one segment, never 0 (the calculator, NumSegments)
    ("a", "GSM-7", 1),
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("a" * 306, "GSM-7", 2),
    ("a" * 307, "GSM-7", 3),
    ("€" * 80, "GSM-7", 1),  # 160 septets
    ("€" * 81, "GSM-7", 2),
    ("a" * 159 + "^", "GSM-7", 2),  # 161 septets
    # 152 + ext char: the escape pair cannot straddle segments 1 and 2
    ("a" * 152 + "€" + "a" * 10, "GSM-7", 2),
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 3),
    ("a" * 153 + "€" + "a" * 151, "GSM-7", 2),
    ("é" * 160, "GSM-7", 1),
    ("ç", "UCS-2", 1),  # not in Twilio's GSM table (only Ç)
    ("\t", "UCS-2", 1),
    ("’", "UCS-2", 1),
    ("a" * 70 + "’", "UCS-2", 2),
    ("a" * 69 + "’", "UCS-2", 1),
    ("😀" * 35, "UCS-2", 1),  # 70 UTF-16 units
    ("😀" * 36, "UCS-2", 2),
    ("a" * 66 + "😀", "UCS-2", 1),  # 68 units, single segment
    ("a" * 66 + "😀" + "a" * 4, "UCS-2", 2),  # 72 units; emoji moves to segment 2
    ("a" * 66 + "😀" + "a" * 66, "UCS-2", 3),  # 66 | 2+65 | 1 : pair not split
    ("👍🏽" * 23, "UCS-2", 2),  # 92 units, graphemes of 4
    ("a" * 134, "UCS-2" if False else "GSM-7", 1),
]


@pytest.mark.parametrize(("text", "encoding", "count"), CASES)
def test_segment_table(text, encoding, count):
    s = segments(text)
    assert (s.encoding, s.count) == (encoding, count)
    assert s.characters == len(text)


def test_tuple_shape():
    encoding, count, characters = segments("hello")
    assert (encoding, count, characters) == ("GSM-7", 1, 5)


gsm_text = st.text(alphabet=sorted(GSM7_CHARS), max_size=800)


@given(gsm_text)
def test_gsm_only_never_ucs2(text):
    assert segments(text).encoding == "GSM-7"


@given(st.text(max_size=400), st.text(max_size=50))
@settings(max_examples=300)
def test_count_monotonic_in_length(text, more):
    assert segments(text + more).count >= segments(text).count


@given(st.text(alphabet=sorted(GSM7_BASIC), max_size=600))
def test_basic_only_matches_formula(text):
    n = len(text)
    expected = 1 if n <= 160 else -(-n // 153)
    assert segments(text).count == expected


def test_extension_table():
    assert GSM7_EXTENSION == frozenset("^{}\\[~]|€\f")


# ------------------------------------------------------------------------------- compose
def test_compose_first_message_adds_brand_and_stop():
    out = compose(
        "Your order is ready",
        brand_name="Acme",
        opt_out_language="Reply STOP to opt out.",
        first_message=True,
    )
    assert out == "Acme: Your order is ready. Reply STOP to opt out."


def test_compose_keeps_present_elements():
    body = "Thanks for contacting ACME. Reply STOP at any time to opt-out."
    assert (
        compose(
            body, brand_name="Acme", opt_out_language="Reply STOP to opt out.", first_message=True
        )
        == body
    )


def test_compose_subsequent_messages_untouched():
    assert (
        compose("See you at 5", brand_name="Acme", opt_out_language=None, first_message=False)
        == "See you at 5"
    )


def test_compose_custom_language():
    out = compose("Hi", brand_name="Acme", opt_out_language="Unsub? Send Q.", first_message=True)
    assert out == "Acme: Hi Unsub? Send Q." or out == "Acme: Hi. Unsub? Send Q."


def test_compose_too_long_raises():
    with pytest.raises(MessageTooLongError, match="1600"):
        compose("a" * 1590, brand_name="Acme", opt_out_language=None, first_message=True)
    with pytest.raises(MessageTooLongError):
        compose("😀" * 801, brand_name="Acme", opt_out_language=None, first_message=False)
    compose("a" * 1600, brand_name="Acme", opt_out_language=None, first_message=False)


def test_compose_empty():
    with pytest.raises(InputError):
        compose("  ", brand_name="Acme", opt_out_language=None, first_message=True)
    with pytest.raises(InputError):
        compose("hi", brand_name="", opt_out_language=None, first_message=True)


brands = st.text(min_size=1, max_size=30).filter(lambda s: s.strip())
languages = st.one_of(
    st.none(),
    st.just("Reply STOP to opt out."),
    st.text(min_size=1, max_size=40).filter(lambda s: s.strip()),
)


@given(
    st.text(min_size=1, max_size=300).filter(lambda s: s.strip()), brands, languages, st.booleans()
)
@settings(max_examples=300)
def test_compose_idempotent(body, brand, language, first):
    try:
        once = compose(body, brand_name=brand, opt_out_language=language, first_message=first)
    except MessageTooLongError:
        return
    assert compose(once, brand_name=brand, opt_out_language=language, first_message=first) == once


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=400))
def test_ascii_segments_equal_the_septet_count(text):
    """ASCII text takes a one-scan path (segments.py): it must count as the tables do, with
    every extension character 2 septets and every other ASCII character outside the table
    forcing UCS-2."""
    got = segments.__wrapped__(text)  # type: ignore[attr-defined]
    n = len(text)
    if all(ch in GSM7_CHARS for ch in text):
        sizes = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        count, free = 1, 160 if sum(sizes) <= 160 else 153
        if sum(sizes) > 160:
            for size in sizes:
                if size > free:
                    count, free = count + 1, 153
                free -= size
        assert got == ("GSM-7", count, n)
    else:
        assert got == ("UCS-2", 1 if n <= 70 else -(-n // 67), n)
