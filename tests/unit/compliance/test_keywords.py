import pytest

from dispatcher.compliance import classify_keyword, detect_revocation

from .helpers import Camp

KEYWORDS = [
    # (text, expected)
    ("STOP", "STOP"),
    ("stop", "STOP"),
    ("sToP", "STOP"),
    (" stop ", "STOP"),
    ("STOP.", "STOP"),
    ("Stop!", "STOP"),
    ("STOPALL", "STOP"),
    ("stop all", "STOP"),
    ("UNSUBSCRIBE", "STOP"),
    ("cancel", "STOP"),
    ("End", "STOP"),
    ("QUIT", "STOP"),
    ("revoke", "STOP"),
    ("OPTOUT", "STOP"),
    ("opt-out", "STOP"),
    ("Opt Out", "STOP"),
    ("ＳＴＯＰ", "STOP"),
    ('"stop"', "STOP"),
    ("START", "START"),
    ("yes", "START"),
    ("Unstop", "START"),
    ("start.", "START"),
    ("HELP", "HELP"),
    ("info", "HELP"),
    ("help?", "HELP"),
    # near misses
    ("Stop please", None),
    ("STOP PLEASE", None),
    ("PLEASE CANCEL", None),
    ("I'll stop by tomorrow", None),
    ("stopp", None),
    ("sto p", "STOP"),
    ("stops", None),
    ("yes please", None),
    ("yess", None),
    ("helpful", None),
    ("information", None),
    ("ending", None),
    ("", None),
    ("   ", None),
    ("?!", None),
    ("start tomorrow", None),
    ("cancel my appointment", None),
    ("quite", None),
]


@pytest.mark.parametrize(("text", "expected"), KEYWORDS)
def test_standard_keywords(text, expected):
    assert classify_keyword(text) == expected


def test_campaign_keywords_extend_the_sets():
    camp = Camp(opt_out_keywords=["BASTA"], opt_in_keywords=["JOIN"], help_keywords=["SUPPORT"])
    assert classify_keyword("basta", camp) == "STOP"
    assert classify_keyword("Join", camp) == "START"
    assert classify_keyword("support.", camp) == "HELP"
    assert classify_keyword("STOP", camp) == "STOP"
    assert classify_keyword("join us", camp) is None
    assert classify_keyword("basta", None) is None


def test_opt_out_wins_conflicts():
    camp = Camp(help_keywords=["END"], opt_in_keywords=["STOP"])
    assert classify_keyword("end", camp) == "STOP"
    assert classify_keyword("stop", camp) == "STOP"


REVOCATIONS = [
    "stop texting me",
    "please remove me from this list",
    "don't text me anymore",
    "unsubscribe me",
    "STOP please",
    "Please stop",
    "stop sending me these messages",
    "Quit messaging me!!",
    "take me off your list",
    "I do not want these texts",
    "no more texts please",
    "Wrong number",
    "opt me out",
    "how do I opt out?",
    "stop the reminders",
    "No más",
    "no me envíen mensajes",
    "STOP",
    "Don’t contact me again",
    "remove my number",
    "leave me alone",
    "I no longer want to receive these messages",
]
NOT_REVOCATIONS = [
    "don't stop the reminders",
    "can you stop by at 5?",
    "I'll stop by tomorrow",
    "The bus stop is near the store",
    "Thanks, see you then",
    "end of the day works",
    "cancel my appointment",
    "Do not stop sending updates",
    "Please remove the old address",
    "Yes",
    "Can you send me the info",
    "I want more messages",
    "",
    "What time do you close?",
    "Please text me when it's ready",
    "I never stop texting my mom",
]


@pytest.mark.parametrize("text", REVOCATIONS)
def test_revocations(text):
    assert detect_revocation(text)


@pytest.mark.parametrize("text", NOT_REVOCATIONS)
def test_not_revocations(text):
    assert not detect_revocation(text)
