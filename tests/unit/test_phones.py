import pytest

from dispatcher.errors import InvalidPhoneError
from dispatcher.logs import mask_phone, scrub
from dispatcher.phones import normalize_phone


@pytest.mark.parametrize(
    "raw, e164",
    [
        ("+14155551234", "+14155551234"),
        ("4155551234", "+14155551234"),
        ("(415) 555-1234", "+14155551234"),
        ("415.555.1234", "+14155551234"),
        (" 1 415 555 1234 ", "+14155551234"),
        ("+1 (808) 555-1234", "+18085551234"),  # Hawaii
        ("+1 787 555 1234", "+17875551234"),  # Puerto Rico
        ("+1 671 555 1234", "+16715551234"),  # Guam
        ("+15005550006", "+15005550006"),  # Twilio magic number
    ],
)
def test_normalises_us_formats(raw, e164):
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty"),
        ("415555123", "too short"),
        ("+1415", "too short"),
        ("+1 415 555 ABCD", "letters"),
        ("1-800-FLOWERS", "letters"),
        ("+49 30 1234567", "outside US"),  # Germany
        ("+1 416 555 1234", "outside US"),  # Toronto: +1 but Canada
        ("+1 415 555 1234 999999", "too long"),
        ("415#555#1234", "characters other than digits"),
        ("+1 099 555 1234", "not a valid number"),
    ],
)
def test_rejects_with_reason(raw, reason):
    with pytest.raises(InvalidPhoneError) as e:
        normalize_phone(raw)
    assert reason in str(e.value)
    assert "\n" not in str(e.value)


def test_masking_never_shows_last_four():
    assert mask_phone("+14155551234") == "+1415555****"
    assert "1234" not in scrub("sent to +14155551234 ok")


def test_an_invalid_number_does_not_poison_valid_ones_sharing_its_first_digits():
    """The region cache is keyed by the first 7 national digits: a 9-digit number (no region)
    must not make a valid 10-digit number with the same 7 digits invalid afterwards."""
    from dispatcher import phones

    normalize_phone.cache_clear()
    phones._regions.clear()
    with pytest.raises(InvalidPhoneError):
        normalize_phone("0260545166")  # a leading zero: national number 260545166 (9 digits)
    assert normalize_phone("2605451531") == "+12605451531"


@pytest.mark.parametrize(
    "text",
    [
        "connecting to 127.0.0.1:5432",
        "server at 10.20.30.40 port 5432",
        "peer 192.168.100.200 refused",
    ],
)
def test_scrub_leaves_ip_addresses_alone(text):
    assert scrub(text) == text


@pytest.mark.parametrize(
    "text, hidden",
    [
        ("STOP from +14155551234", "1234"),
        ("to 415.555.1234 ok", "1234"),
        ("to (415) 555-1234 ok", "1234"),
        ("to 4155551234, 127.0.0.1", "1234"),
    ],
)
def test_scrub_still_masks_phone_numbers(text, hidden):
    assert hidden not in scrub(text)


@pytest.mark.parametrize(
    "text",
    [
        'job "_job (trigger: interval[0:00:00.500000], next run at: 2026-12-07 00:57:25 UTC)"',
        "run 12 sent 1500 of 200000",
    ],
)
def test_scrub_leaves_times_and_counts_alone(text):
    """The demo printed APScheduler's line as 'interval[0:00:0050****], next run at:
    202612****:57:25': dates and short digit runs are no phone number."""
    assert scrub(text) == text


def test_a_number_right_after_a_date_is_still_masked():
    assert "1234" not in scrub("2026-12-07 4155551234 replied STOP")


def test_e164_input_takes_the_fast_path_with_the_same_answers():
    """One normaliser: a number already in NANP E.164 skips the parse but meets the same
    numbering-plan checks as any other spelling of it (valid, unassigned, outside the US)."""
    import random

    from dispatcher.phones import try_normalize

    rng = random.Random(7)
    numbers = [
        f"+1{rng.randrange(200, 1000)}{rng.randrange(2_000_000, 10_000_000)}" for _ in range(3000)
    ]
    numbers += ["+12005550100", "+13115550100", "+14165550100", "+15005550006"]  # 200, N11, Canada
    for e164 in numbers:
        normalize_phone.cache_clear()
        fast = try_normalize(e164)
        spelled = f"({e164[2:5]}) {e164[5:8]}-{e164[8:]}"
        slow = try_normalize(spelled)
        assert fast[0] == slow[0], (e164, fast, slow)
        assert (fast[1] is None) == (slow[1] is None)
    assert try_normalize("+14165550100")[0] is None  # Toronto: outside US A2P 10DLC


def test_a_listed_recipient_is_checked_even_when_written_in_e164():
    """runs.recipient_list took any +1NXXXXXXXXX as valid without asking the numbering plan."""
    from dispatcher.runs import LaunchRequest, recipient_list

    req = LaunchRequest(
        campaign="QE1",
        template="hi",
        audience={"kind": "list"},
        recipients=[{"phone": "+12005550100"}, {"phone": "+12125550100"}],
    )
    got = [(e164, why is None) for e164, why, _ in recipient_list(req)]
    assert got == [(None, False), ("+12125550100", True)]


def test_the_sandbox_and_its_cli_use_the_package_phone_checks():
    from dispatcher.phones import is_e164

    assert is_e164("+447700900123") and not is_e164("4155550100") and not is_e164("+0123")
    import dispatcher.sandbox.wire as wire

    assert not hasattr(wire, "E164") and not hasattr(wire, "segments")
