import pytest

from dispatcher.compliance import Finding, findings_to_dict, has_errors, lint_campaign, lint_message
from dispatcher.errors import InputError

from .helpers import DELETE, Camp, registration


def codes(findings, severity=None):
    return {(f.code, f.field) for f in findings if severity is None or f.severity == severity}


def test_valid_registration_has_no_errors():
    findings = lint_campaign(registration())
    assert not has_errors(findings), findings


def test_seed_004_fetch_sample_is_flagged():
    # The literal UsAppToPerson JSON in seed 004 is a placeholder: samples name no brand and carry
    # no opt-out language, and it declares links that no sample shows.
    reg = {
        "description": "Send marketing messages about sales to opted in customers.",
        "message_samples": [
            "EXPRESS: Denim Days Event is ON",
            "LAST CHANCE: Book your next flight for just 1 (ONE) EUR",
        ],
        "us_app_to_person_usecase": "MARKETING",
        "has_embedded_links": True,
        "has_embedded_phone": False,
        "age_gated": False,
        "direct_lending": False,
        "message_flow": "End users opt-in by visiting www.example.com and adding their phone "
        "number. They then check a box agreeing to receive text messages from "
        "Example Brand.",
        "opt_in_message": "Acme Corporation: You are now opted-in. For help, reply HELP. To "
        "opt-out, reply STOP",
        "opt_out_message": "You have successfully been unsubscribed from Acme Corporation. You "
        "will not receive any more messages from this number.",
        "help_message": "Acme Corporation: Please visit www.example.com to get support. To "
        "opt-out, reply STOP.",
        "opt_in_keywords": ["START"],
        "opt_out_keywords": ["STOP"],
        "help_keywords": ["HELP"],
    }
    found = codes(lint_campaign(reg, brand_name="Acme Corporation"))
    assert ("sample_missing_brand", "message_samples") in found
    assert ("sample_missing_opt_out", "message_samples") in found
    assert ("links_not_in_samples", "has_embedded_links") in found


S0 = registration()["message_samples"][0]
S1 = registration()["message_samples"][1]

MUTATIONS = [
    # (changes, code, field)
    ({"description": "Too short."}, "too_short", "description"),
    ({"description": "x" * 4097}, "too_long", "description"),
    ({"description": DELETE}, "missing_field", "description"),
    ({"message_flow": "Users opt in on our site."}, "too_short", "message_flow"),
    ({"message_flow": "x" * 2049}, "too_long", "message_flow"),
    ({"message_samples": [S0]}, "sample_count", "message_samples"),
    ({"message_samples": [S0, S1, S0, S1, S0, S1]}, "sample_count", "message_samples"),
    ({"message_samples": [S0, "Acme Sandwich STOP"]}, "too_short", "message_samples"),
    ({"message_samples": [S0, "Acme Sandwich " + "x" * 1020]}, "too_long", "message_samples"),
    ({"message_samples": DELETE}, "missing_field", "message_samples"),
    (
        {"message_samples": [s.replace("Acme Sandwich", "We") for s in (S0, S1)]},
        "sample_missing_brand",
        "message_samples",
    ),
    (
        {
            "message_samples": [
                S0.split(" If you would like")[0],
                S1.replace(" Reply STOP to opt out.", ""),
            ]
        },
        "sample_missing_opt_out",
        "message_samples",
    ),
    (
        {"message_samples": [S0, S1.replace("www.acmesandwich.com/t", "https://bit.ly/3xYz")]},
        "url_shortener",
        "message_samples",
    ),
    (
        {"message_flow": registration()["message_flow"] + " Short link: tinyurl.com/acme"},
        "url_shortener",
        "message_flow",
    ),
    ({"has_embedded_links": False}, "links_undeclared", "has_embedded_links"),
    ({"has_embedded_phone": False}, "phone_undeclared", "has_embedded_phone"),
    ({"has_embedded_links": DELETE}, "missing_field", "has_embedded_links"),
    ({"has_embedded_phone": "yes"}, "bad_type", "has_embedded_phone"),
    (
        {"message_samples": [S0, S1 + " Try our new craft beer menu!"]},
        "age_gated_required",
        "age_gated",
    ),
    (
        {"message_samples": [S0, S1 + " Get a payday loan today."]},
        "direct_lending_required",
        "direct_lending",
    ),
    (
        {"message_samples": [S0, S1 + " Ask about CBD gummies."]},
        "prohibited_content",
        "message_samples",
    ),
    ({"opt_in_message": "Opted in."}, "too_short", "opt_in_message"),
    ({"opt_in_message": "x" * 321}, "too_long", "opt_in_message"),
    (
        {"opt_in_message": "Acme Sandwich: you are now subscribed to order alerts."},
        "opt_in_message_content",
        "opt_in_message",
    ),
    ({"opt_in_message": DELETE}, "missing_field", "opt_in_message"),
    (
        {"opt_out_message": "Acme Sandwich: thanks for your message, have a nice day."},
        "opt_out_message_content",
        "opt_out_message",
    ),
    ({"opt_out_message": "y" * 321}, "too_long", "opt_out_message"),
    (
        {"help_message": "Acme Sandwich is here for you, always."},
        "help_message_content",
        "help_message",
    ),
    ({"help_message": "Short"}, "too_short", "help_message"),
    ({"opt_out_keywords": ["STOP", "OPT-OUT"]}, "keyword_format", "opt_out_keywords"),
    ({"help_keywords": ["HELP", "AIDE "]}, "keyword_format", "help_keywords"),
    ({"opt_in_keywords": ["K" * 50] * 6}, "too_long", "opt_in_keywords"),
    ({"help_keywords": ["HELP", "STOP"]}, "keyword_conflict", "help_keywords"),
    ({"us_app_to_person_usecase": DELETE}, "missing_field", "us_app_to_person_usecase"),
    (
        {"message_samples": [S0, S1.replace("Reply STOP to opt out.", "Text 2 to opt out.")]},
        "nonstandard_opt_out",
        "message_samples",
    ),
]


@pytest.mark.parametrize(
    ("changes", "code", "field"), MUTATIONS, ids=[f"{c}-{f}" for _ch, c, f in MUTATIONS]
)
def test_mutation_raises_finding_on_field(changes, code, field):
    findings = lint_campaign(registration(**changes))
    match = [f for f in findings if f.code == code and f.field == field]
    assert match, findings
    assert match[0].severity == "error"


def test_warnings():
    found = codes(lint_campaign(registration(us_app_to_person_usecase="CONVERSATIONAL")), "warning")
    assert ("conversational_usecase", "us_app_to_person_usecase") in found
    found = codes(lint_campaign(registration(opt_out_keywords=["END"])), "warning")
    assert ("stop_keyword_missing", "opt_out_keywords") in found
    found = codes(
        lint_campaign(
            registration(message_samples=[S0, S1 + " Try our new craft beer menu!"], age_gated=True)
        )
    )
    assert ("age_gated_content", "message_samples") in found
    assert ("age_gated_required", "age_gated") not in found


def test_not_a_dict():
    with pytest.raises(InputError):
        lint_campaign(["not", "a", "dict"])  # type: ignore[arg-type]


def test_finding_to_dict():
    f = Finding("too_short", "description", "error", "x")
    assert findings_to_dict([f]) == {
        "findings": [
            {"code": "too_short", "field": "description", "severity": "error", "message": "x"}
        ]
    }


# ------------------------------------------------------------------------------ messages
CAMP = Camp()

MESSAGE_CASES = [
    ("Acme: your order shipped. Reply STOP to opt out.", set()),
    ("Acme: check https://bit.ly/x Reply STOP to opt out.", {"url_shortener", "undeclared_link"}),
    ("Acme: visit www.acme.com. Reply STOP to opt out.", {"undeclared_link"}),
    ("Acme: call 333-444-1212. Reply STOP to opt out.", {"undeclared_phone"}),
    ("Acme: 20% off vapes and e-cigs! Reply STOP to opt out.", {"prohibited_content"}),
    ("Acme: buy xanax without a prescription. Reply STOP to opt out.", {"prohibited_content"}),
    ("Acme: fresh cannabis edibles. Reply STOP to opt out.", {"prohibited_content"}),
    ("Acme: your prescription is ready for pickup. Reply STOP to opt out.", set()),
    ("Acme: order ready. Text 2 to opt out.", {"nonstandard_opt_out"}),
    ("", {"body_empty"}),
    ("a" * 1601, {"body_too_long"}),
]


@pytest.mark.parametrize(("body", "expected"), MESSAGE_CASES)
def test_lint_message_errors(body, expected):
    errors = {f.code for f in lint_message(body, CAMP) if f.severity == "error"}
    assert errors == expected


def test_lint_message_declared_links_and_age_gate():
    camp = Camp(has_embedded_links=True, has_embedded_phone=True, age_gated=True)
    body = (
        "Acme: happy hour wine tasting at www.acme.com, call 333-444-1212. Reply STOP to opt out."
    )
    found = lint_message(body, camp)
    assert not has_errors(found)
    assert "age_gated_content" in {f.code for f in found}


def test_lint_message_drift_and_first_message():
    drift = lint_message(
        "Acme: sale! Reply STOP to opt out.", Camp(us_app_to_person_usecase="CONVERSATIONAL")
    )
    assert ("campaign_drift", "us_app_to_person_usecase") in codes(drift, "error")
    reply = lint_message(
        "Sure, 5pm works", Camp(us_app_to_person_usecase="CONVERSATIONAL"), proactive=False
    )
    assert not has_errors(reply)
    template = lint_message("Your order shipped", CAMP, brand_name="Acme")
    assert {"missing_brand_name", "missing_opt_out_language"} <= codes_only(template, "warning")
    first = lint_message("Your order shipped", CAMP, brand_name="Acme", first_message=True)
    assert {"missing_brand_name", "missing_opt_out_language"} <= codes_only(first, "error")


def test_lint_message_segment_warnings():
    found = codes_only(
        lint_message("Acme: it’s ready. Reply STOP to opt out." + "x" * 300, CAMP), "warning"
    )
    assert {"ucs2_encoding", "long_message"} <= found


def codes_only(findings, severity):
    return {f.code for f in findings if f.severity == severity}
