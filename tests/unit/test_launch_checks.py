"""dispatcher.launch_checks: the pure checks every launch passes (no I/O; the time is given)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from dispatcher.launch_checks import (
    SEND_AT_TOLERANCE,
    FieldStats,
    LaunchRefused,
    WarningsNotAccepted,
    check_launch,
    looks_like_path,
)

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
CAMPAIGN = SimpleNamespace(
    sid="QE" + "1" * 32,
    sender=None,
    messaging_service_sid="MG" + "1" * 32,
    has_embedded_links=True,
    has_embedded_phone=False,
    age_gated=False,
    us_app_to_person_usecase="MARKETING",
)
NO_LINKS = SimpleNamespace(**{**vars(CAMPAIGN), "has_embedded_links": False})
CONVERSATIONAL = SimpleNamespace(**{**vars(CAMPAIGN), "us_app_to_person_usecase": "PROXY"})


def stats(total: int = 10, known: set[str] | None = None, **holders: int) -> FieldStats:
    return FieldStats(total=total, holders=holders, known=frozenset(known or ()))


def check(template: str, fields: FieldStats | None = None, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("campaign", CAMPAIGN)
    kw.setdefault("brand_name", "Northwind Dental")
    kw.setdefault("now", NOW)
    return check_launch(template, fields=fields or stats(), **kw)


def rules(issues) -> list[str]:  # type: ignore[no-untyped-def]
    return [i.rule for i in issues]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("reminder.txt", True),
        ("templates/reminder", True),
        ("./r.tmpl", True),
        ("~/notes/r.template", True),
        ("C:/temp/r.TXT", True),
        ("Northwind Dental: reminder.txt tomorrow", False),
        ("https://northwind.example/book", False),
        ("Hi [name], see you soon.", False),
        ("Hello", False),
        ("r" * 300 + ".txt", False),
    ],
)
def test_looks_like_path(text, path):
    assert looks_like_path(text) is path


def test_a_clean_template_passes():
    c = check("Hi [first_name], your cleaning is on [date].", stats(first_name=10, date=10))
    assert c.errors == () and c.warnings == ()


def test_path_like_template_is_an_error():
    c = check("reminder.txt")
    assert rules(c.errors) == ["template_looks_like_path"]
    assert c.errors[0].field == "template" and "reminder.txt" in c.errors[0].message


def test_unknown_field_names_the_closest_known_name():
    c = check("Hi [fist_name]", stats(known={"name", "first_name", "date"}, fist_name=0))
    [e] = c.errors
    assert e.rule == "unknown_field" and "[fist_name]" in e.message
    assert "did you mean [first_name]" in e.message


def test_unknown_field_without_a_close_name_lists_the_known_ones():
    c = check("Hi [zzz]", stats(known={"name", "first_name", "date"}, zzz=0))
    assert "known fields: date, first_name, name" in c.errors[0].message


def test_field_some_lack_is_a_warning_with_the_count():
    c = check("On [date] at [time]", stats(total=482, date=449, time=482))
    assert c.errors == ()
    [w] = c.warnings
    assert (w.rule, w.count, w.field) == ("field_missing", 33, "template")
    assert "33 of 482" in w.message and "[date]" in w.message
    assert "template_variable_missing" in w.message


def test_field_that_everyone_lacks_is_an_error():
    c = check("On [date]", stats(total=482, known={"date"}, date=0))
    assert rules(c.errors) == ["field_missing"] and c.errors[0].count == 482


def test_an_empty_audience_has_no_field_issues():
    c = check("On [date]", stats(total=0, date=0))
    assert c.errors == () and c.warnings == ()


@pytest.mark.parametrize(
    ("template", "campaign", "rule"),
    [
        ("Book at https://bit.ly/3xYz", CAMPAIGN, "url_shortener"),
        ("Book at https://northwind.example/b", NO_LINKS, "undeclared_link"),
        ("Our CBD oil is back.", CAMPAIGN, "prohibited_content"),
        ("Call us at 415-555-0100.", CAMPAIGN, "undeclared_phone"),
        ("Text 1 to unsubscribe.", CAMPAIGN, "nonstandard_opt_out"),
        ("Your order shipped.", CONVERSATIONAL, "campaign_drift"),
        ("x" * 1590, CAMPAIGN, "message_too_long"),
    ],
)
def test_message_lint_errors(template, campaign, rule):
    c = check(template, campaign=campaign)
    assert rule in rules(c.errors)
    assert all(e.field == "template" for e in c.errors)


def test_lint_warnings_are_not_launch_issues():
    c = check("Your order shipped \U0001f4e6")  # UCS-2: a lint warning, not a launch warning
    assert c.errors == () and c.warnings == ()


def test_lint_runs_on_the_template_with_placeholders():
    assert rules(check("Track: bit.ly/[code]", stats(code=10)).errors) == ["url_shortener"]
    assert check("Hi [url]", stats(url=10)).errors == ()


@pytest.mark.parametrize(
    ("ago", "refused"),
    [
        (None, False),
        (-timedelta(hours=1), False),
        (timedelta(0), False),
        (SEND_AT_TOLERANCE, False),
        (SEND_AT_TOLERANCE + timedelta(seconds=1), True),
        (NOW - datetime(2000, 1, 1, tzinfo=UTC), True),
    ],
)
def test_send_at_in_the_past(ago, refused):
    c = check("Hi", send_at=None if ago is None else NOW - ago)
    assert rules(c.errors) == (["send_at_in_past"] if refused else [])
    if refused:
        assert c.errors[0].field == "send_at"
        assert "2026-01-05 15:00:00 UTC" in c.errors[0].message  # now


def test_send_at_message_shows_the_time_given():
    [e] = check("Hi", send_at=datetime(2000, 1, 1, tzinfo=UTC)).errors
    assert "2000-01-01 00:00:00 UTC" in e.message


def test_send_at_message_in_the_operators_zone():
    ny = ZoneInfo("America/New_York")
    [e] = check("Hi", send_at=datetime(2000, 1, 1, tzinfo=ny), zone=ny).errors
    assert "start time 2000-01-01 00:00:00 EST" in e.message
    assert "now 2026-01-05 10:00:00 EST" in e.message


def test_errors_come_in_one_line_in_a_fixed_order():
    c = check(
        "Hi [fist_name]: https://bit.ly/x",
        stats(known={"first_name"}, fist_name=0),
        send_at=datetime(2000, 1, 1, tzinfo=UTC),
    )
    assert rules(c.errors) == ["unknown_field", "url_shortener", "send_at_in_past"]
    e = LaunchRefused(c.errors)
    assert "\n" not in str(e) and e.rule == "unknown_field" and e.field == "template"
    for i in c.errors:
        assert i.message in str(e) and i.rule in str(e)


def test_warnings_not_accepted_says_how_to_accept():
    w = check("On [date]", stats(date=7)).warnings
    e = WarningsNotAccepted(w)
    assert isinstance(e, LaunchRefused) and e.rule == "field_missing"
    assert "force" in str(e) and "3 of 10" in str(e)
    assert "--force" in str(WarningsNotAccepted(w, accept="run again with --force"))


@pytest.mark.parametrize(
    ("sender", "service", "refused"),
    [
        (None, None, True),
        ("", "", True),
        ("+12125550100", None, False),
        (None, "MG" + "2" * 32, False),
    ],
)
def test_a_campaign_needs_a_sender_or_a_messaging_service(sender, service, refused):
    """Neither: every send would fail as an input error at the gateway; refuse the launch."""
    camp = SimpleNamespace(**{**vars(CAMPAIGN), "sender": sender, "messaging_service_sid": service})
    c = check("Hi [first_name].", stats(first_name=10), campaign=camp)
    assert ("no_sender" in rules(c.errors)) == refused
    if refused:
        (issue,) = [i for i in c.errors if i.rule == "no_sender"]
        assert issue.field == "campaign" and CAMPAIGN.sid in issue.message
        assert "--sender" in issue.message
