"""Fault 7 (CLI part): hypothesis-generated bad files and templates for the CLI's inputs —
``contacts import`` (CSV), ``campaign import`` / ``campaign lint`` (UsAppToPerson JSON),
``run launch --dry-run`` and ``message preview`` (templates).  Whatever the input: exit 0 or 1
(never 70 = internal error, never 2 = usage), a failure is exactly one ``error: ...`` line on
stderr, and no traceback anywhere.  The webhooks are fuzzed in tests/unit/webhooks and the HTTP
API by schemathesis; this covers the operator's files.

Each test builds one fresh SQLite environment (``cli_env``) shared by its examples."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dispatcher.cli.app import app

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"
SEED_DOC: dict[str, Any] = json.loads(SEED.read_text())
BRAND = "Acme Corporation"
CONTACT = "+14155551234"
# FUZZ_N=600 hunts with random seeds; CI runs 50 derandomized examples per target
_N = os.environ.get("FUZZ_N")
FUZZ = settings(
    max_examples=int(_N or 50),
    deadline=None,
    derandomize=not _N,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
FUZZ2 = settings(FUZZ, max_examples=2 * FUZZ.max_examples)  # two targets per test
COUNTS: Counter[str] = Counter()  # examples run per target, by the test running them


# ------------------------------------------------------------------------------------ harness
def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def _check(result: Any, target: str, *, findings_ok: bool = False) -> None:
    """Exit 0 or 1; a failure is one ``error:`` line (or, for lint, the findings); no traceback."""
    COUNTS[target] += 1
    out, err = result.stdout, result.stderr
    assert "Traceback" not in out + err, err[-2000:]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"uncaught {type(result.exception).__name__}: {result.exception}"
        ) from result.exception
    assert result.exit_code in (0, 1), f"exit {result.exit_code}: {err[-2000:]}"
    if result.exit_code == 1:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if findings_ok and not lines:  # lint: exit 1 with the findings as JSON on stdout
            doc = json.loads(out)
            assert any(f["severity"] == "error" for f in doc["findings"]), out
            return
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def _fuzzed(search: Callable[[Path], None], env: Path, *targets: str) -> None:
    """Run the hypothesis search ``search`` in ``env``, then check that it ran: every target
    got at least a quarter of ``FUZZ.max_examples`` examples (a strategy that collapsed to one
    branch, or a settings profile that skips generation, fails here instead of passing with
    nothing tested)."""
    COUNTS.clear()
    search(env)
    print("\nfuzz examples: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))
    for target in targets:
        assert COUNTS[target] >= FUZZ.max_examples // 4, dict(COUNTS)


@pytest.fixture
def env(cli_env):
    """A brand, the seed-004 campaign and one contact in a fresh SQLite database."""
    r = _invoke("brand", "add", BRAND, "--tier", "top")
    assert r.exit_code == 0, r.stderr
    r = _invoke("campaign", "import", str(SEED), "--json")
    assert r.exit_code == 0, r.stderr
    f = cli_env / "one.csv"
    f.write_text(f"phone,name,plan,date\n{CONTACT},Ann Lee,gold,2026-03-01\n")
    r = _invoke("contacts", "import", str(f))
    assert r.exit_code == 0, r.stderr
    return cli_env


# ------------------------------------------------------------------------------------ CSV
COLUMNS = [
    "phone",
    "name",
    "time_zone",
    "state",
    "consent_source",
    "consent_evidence",
    "consent_url",
    "consented_at",
    "plan",
    "date",
    "",
    "PHONE ",
    "phone",
    "évidence",
]
BAD_CELLS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "x" * 70_000,
        "\ufeff",
        "😀" * 50,
        "\u202e+1415",
        "NaN",
        "2026-02-30",
        "2026-13-01T25:61:00Z",
        "99999-01-01",
        "-1",
        "0",
        "+",
        "+1",
        "+1415555123",
        "+14155551234",
        "4155551234",
        "(415) 555-1234 ext 9",
        "+441632960000",
        "+1 000 000 0000",
        "1e400",
        "America/Nowhere",
        "Europe/Paris",
        "../../etc/passwd",
        "ZZ",
        "=cmd|' /C calc'!A0",
        "\r\n",
        '"',
        "'",
        "[first_name]",
        "2026-01-15T10:00:00Z",
        "yesterday",
    ]
)
CELL = st.one_of(BAD_CELLS, st.text(max_size=40))


@st.composite
def csv_files(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["bytes", "table", "table", "table"]))
    if kind == "bytes":
        return draw(st.binary(max_size=600))
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=8))
    if draw(st.booleans()):
        header = ["phone", *header]
    rows = draw(st.lists(st.lists(CELL, max_size=len(header) + 2), max_size=8))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    text = buf.getvalue()
    if draw(st.booleans()):  # raw quoting trouble: a stray quote or a NUL mid-file
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(['"', "\x00", "\r", "\n\n", ","])) + text[pos:]
    enc = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(enc, errors="replace")


@FUZZ
@given(data=csv_files(), brand=st.booleans(), rejects=st.booleans())
@example(data=b"phone\n\x00\n", brand=False, rejects=False)
@example(data=b'phone,name\n"+14155550000,unterminated\n', brand=False, rejects=False)
@example(data=b"\xff\xfe\x00garbage", brand=False, rejects=False)
@example(data=b"phone,consented_at\n4155550001,2026-02-30\n", brand=True, rejects=True)
@example(
    data=("phone,name\n4155550002," + "x" * 200_000 + "\n").encode(), brand=False, rejects=False
)
@example(data=b"phone,phone\n4155550003,4155550004\n", brand=False, rejects=False)
def _contacts_import(env: Path, data: bytes, brand: bool, rejects: bool) -> None:
    f = env / "fuzz.csv"
    f.write_bytes(data)
    args = ["contacts", "import", str(f)]
    if brand:
        args += ["--brand", BRAND]
    if rejects:
        args += ["--rejects", str(env / "rejects.csv")]
    _check(_invoke(*args), "contacts import")


def test_contacts_import_never_crashes(env: Path) -> None:
    _fuzzed(_contacts_import, env, "contacts import")


# ------------------------------------------------------------------------------------ JSON
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def campaign_docs(draw: Any) -> str:
    kind = draw(st.sampled_from(["random", "mutate", "mutate", "mutate", "text"]))
    if kind == "random":
        return json.dumps(draw(JSON))
    if kind == "text":
        return draw(st.text(max_size=200))
    doc = json.loads(json.dumps(SEED_DOC))
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(sorted(SEED_DOC) + ["extra_field"]))
        if draw(st.integers(0, 3)) == 0:
            doc.pop(key, None)
        else:
            doc[key] = draw(JSON)
    return json.dumps(doc)


@FUZZ2
@given(text=campaign_docs(), lint=st.booleans())
@example(text="[]", lint=False)
@example(text="[]", lint=True)
@example(text='{"sid": 5}', lint=False)
@example(text=json.dumps({**SEED_DOC, "rate_limits": "fast"}), lint=False)
@example(text=json.dumps({**SEED_DOC, "message_samples": [1, None]}), lint=True)
@example(text=json.dumps({**SEED_DOC, "opt_out_keywords": "STOP"}), lint=True)
@example(text=json.dumps({**SEED_DOC, "brand_name": 7}), lint=True)
@example(text=json.dumps({k: v for k, v in SEED_DOC.items() if k != "sid"}), lint=False)
def _campaign_files(env: Path, text: str, lint: bool) -> None:
    f = env / "campaign.json"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    if lint:
        _check(_invoke("campaign", "lint", str(f), "--json"), "campaign lint", findings_ok=True)
    else:
        _check(_invoke("campaign", "import", str(f), "--brand", BRAND), "campaign import")


def test_campaign_files_never_crash(env: Path) -> None:
    _fuzzed(_campaign_files, env, "campaign lint", "campaign import")


# ------------------------------------------------------------------------------------ templates
TEMPLATE = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.sampled_from(list("[]{}_ab \\%$\n\x00😀")), max_size=60),
    st.sampled_from(
        [
            "",
            " ",
            "[",
            "]",
            "[]",
            "[[name]]",
            "[name",
            "name]",
            "[first_name]",
            "[ first_name ]",
            "[plan]",
            "[nope]",
            "[" + "a" * 300 + "]",
            "x" * 5000,
            "{name}",
            "{{name}}",
            "%s",
            "\x00",
            "Hi [name]\x00",
            "[date|upper]",
            "a.txt",
            "../../etc/passwd.txt",
        ]
    ),
)


@FUZZ2
@given(template=TEMPLATE, preview=st.booleans())
@example(template="", preview=False)
@example(template="", preview=True)
@example(template="[", preview=True)
@example(template="[]", preview=False)
@example(template="x" * 5000, preview=True)
@example(template="\x00", preview=False)
@example(template="-0", preview=True)
@example(template="[A]", preview=True)
@example(template="--json", preview=False)
def _templates(env: Path, template: str, preview: bool) -> None:
    sid = SEED_DOC["sid"]
    if preview:
        r = _invoke(
            "message", "preview", "--campaign", sid, "--contact", CONTACT, "--json", "--", template
        )
        _check(r, "message preview")
    else:
        r = _invoke(
            "run",
            "launch",
            "--campaign",
            sid,
            "--template",
            template,
            "--audience",
            "all",
            "--dry-run",
            "--json",
        )
        _check(r, "run launch --dry-run")


def test_templates_never_crash(env: Path) -> None:
    _fuzzed(_templates, env, "message preview", "run launch --dry-run")


@pytest.mark.parametrize(
    "args",
    [
        ["run", "launch"],  # missing --campaign
        [
            "message",
            "preview",
            "-0",
            "--campaign",
            "x",
            "--contact",
            "y",
        ],  # template like an option
        ["contacts", "import"],
        ["campaign", "lint", "a.json", "--nope"],
    ],
)
def test_usage_errors_are_click_usage_not_internal_errors(cli_env, args):
    """Found by the template fuzz: Typer vendors Click, so its usage errors were not
    click.ClickException and the root reported them as ``internal error`` (exit 70).  A usage
    error is a user error: exit 1 and one ``error:`` line (issue 18 item 7)."""
    r = _invoke(*args)
    assert r.exit_code == 1, (r.exit_code, r.stderr)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("error: ") and line.endswith(" --help)")


def test_campaign_lint_non_string_brand_name(env):
    """Found by the campaign fuzz: ``brand_name: 7`` reached the linter as the brand's name
    (AttributeError, exit 70); now it is ignored there and linted as a finding."""
    f = env / "c.json"
    f.write_text(json.dumps({**SEED_DOC, "brand_name": 7}))
    r = _invoke("campaign", "lint", str(f), "--json")
    assert r.exit_code in (0, 1) and "internal error" not in r.stderr, r.stderr


def test_message_preview_missing_field(env):
    """Found by the template fuzz: a [field] the contact has no value for raised MissingField
    (a KeyError: exit 70); now one ``error:`` line naming the field."""
    r = _invoke("message", "preview", "Hi [A]", "--campaign", SEED_DOC["sid"], "--contact", CONTACT)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "[A]" in r.stderr, r.stderr
