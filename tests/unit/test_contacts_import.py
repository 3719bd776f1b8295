"""CSV import: bad rows rejected with row number and reason, idempotent, all-or-nothing."""

from __future__ import annotations

import csv

import pytest
from sqlmodel import func, select

from dispatcher import contacts, registry
from dispatcher.models import ConsentEvent, Contact

GOOD_AND_BAD = """phone,name,consent_source,consent_evidence,consented_at,plan
(415) 555-1234,Ann,web_form,Checked box at example.com/signup,2025-03-01T10:00:00Z,gold
415555123,Bob,web_form,form 1,2025-03-01,silver
+1 212 555 0100,Cy,web_form,,2025-03-01,
4155551234,Ann again,web_form,form 2,2025-03-01,
+13055550199,Dee,web_form,form 7,2025-13-01,
+13055550198,Eve,keyword,Texted START,2025-01-01,
+13055550197,Fay,web_form,form 9,2099-01-01,
"""


@pytest.fixture
def brand(sqlite_db):
    with sqlite_db.session() as s:
        return registry.add_brand(s, name="Acme Corporation")


def _import(db, path, brand, **kw):
    with db.session() as s:
        return contacts.import_csv(s, path, brand=brand, **kw)


def _counts(db):
    with db.session() as s:
        return (
            s.exec(select(func.count()).select_from(Contact)).one(),
            s.exec(select(func.count()).select_from(ConsentEvent)).one(),
        )


def test_bad_rows_are_rejected_with_row_and_reason(sqlite_db, brand, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text(GOOD_AND_BAD)
    rep = _import(sqlite_db, f, brand)
    assert (rep.rows, rep.created, rep.consent_events, rep.rejected) == (7, 2, 2, 5)
    assert rep.reasons == {
        "invalid_phone": 1,
        "missing_consent_evidence": 1,
        "duplicate": 1,
        "bad_date": 2,
    }
    with open(rep.rejects_file) as fh:
        rejects = list(csv.DictReader(fh))
    assert [(r["row"], r["reason"]) for r in rejects] == [
        ("3", "invalid_phone"),
        ("4", "missing_consent_evidence"),
        ("5", "duplicate"),
        ("6", "bad_date"),
        ("8", "bad_date"),
    ]
    assert rejects[0]["name"] == "Bob"  # the original cells, ready to fix and re-import
    with sqlite_db.session() as s:
        ann = contacts.get_contact(s, "+14155551234")
        assert ann.attributes == {"plan": "gold"}


def test_reimport_changes_nothing(sqlite_db, brand, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text(GOOD_AND_BAD)
    _import(sqlite_db, f, brand)
    before = _counts(sqlite_db)
    rep = _import(sqlite_db, f, brand)
    assert (rep.created, rep.updated, rep.consent_events, rep.unchanged) == (0, 0, 0, 2)
    assert _counts(sqlite_db) == before


def test_fixed_rejects_file_reimports(sqlite_db, brand, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text(GOOD_AND_BAD)
    rep = _import(sqlite_db, f, brand)
    with open(rep.rejects_file) as fh:
        rows = list(csv.DictReader(fh))
    fixed = tmp_path / "fixed.csv"
    with fixed.open("w", newline="") as fh:
        w = csv.DictWriter(
            fh, fieldnames=[k for k in rows[0] if k not in ("row", "reason", "detail")]
        )
        w.writeheader()
        for r in rows:
            if r["reason"] == "bad_date":
                r["consented_at"] = "2025-02-01"
                w.writerow({k: v for k, v in r.items() if k in w.fieldnames})
    rep2 = _import(sqlite_db, fixed, brand)
    assert rep2.created == 2 and rep2.rejected == 0 and rep2.rejects_file is None


def test_crash_mid_import_leaves_database_as_before(sqlite_db, brand, tmp_path, monkeypatch):
    f = tmp_path / "big.csv"
    with f.open("w") as fh:
        fh.write("phone,name\n")
        for i in range(contacts.BATCH * 2 + 5):
            fh.write(f"+1212555{i:04d},n{i}\n")
    calls = {"n": 0}
    real = contacts._write_batch

    def boom(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(*a, **kw)

    monkeypatch.setattr(contacts, "_write_batch", boom)
    with pytest.raises(RuntimeError):
        _import(sqlite_db, f, brand)
    assert _counts(sqlite_db) == (0, 0)


def test_consent_columns_need_a_brand(sqlite_db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text(GOOD_AND_BAD)
    with pytest.raises(contacts.InputError, match="--brand"):
        _import(sqlite_db, f, None)


def test_file_without_phone_column(sqlite_db, brand, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("name\nAnn\n")
    with pytest.raises(contacts.InputError, match="'phone' column"):
        _import(sqlite_db, f, brand)
