"""`consent revoke --file`: every good row is revoked through the single revoke's code (so its
halt is signalled and the workers suppress its rows), in one transaction, bad rows rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import func, select

from dispatcher import consent, outbox
from dispatcher.consent_file import Recorder, revoke_csv
from dispatcher.errors import InputError
from dispatcher.models import ConsentEvent, Contact


def _recorder(s, harness) -> Recorder:
    return Recorder(
        target=consent.target(s, harness.brand_id, None),
        source="email",
        actor="ops",
        halts=harness.rt.halts,
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_file_revokes_every_good_row_and_suppresses_their_rows(harness, tmp_path):
    ids = [harness.contact(f"+1212555000{i}") for i in range(4)]
    run_id = harness.launch()
    hk = harness.release_loop()
    assert hk.release() == 4
    f = _write(
        tmp_path / "stop.csv",
        "phone,evidence,occurred_at\n"
        "(212) 555-0001,asked by email,2026-01-05T09:00\n"
        "555-12,,\n"  # rejected: too short
        "+12125550003,,\n"
        "+12125550003,,\n"  # repeated: revoked once
        "+13125550999,,\n",  # not a contact yet: created, revoked
    )
    with harness.db.session() as s:
        rep = revoke_csv(s, f, _recorder(s, harness), default_tz="America/New_York")
    assert (rep.rows, rep.revoked, rep.new_contacts, rep.repeated) == (5, 3, 1, 1)
    assert (rep.rejected, rep.reasons) == (1, {"invalid_phone": 1})
    rejects = Path(rep.rejects_file).read_text().splitlines()
    assert rejects[0] == "row,reason,detail,phone,evidence,occurred_at"
    assert rejects[1].startswith("3,invalid_phone,")

    redis, halts = harness.rt.redis, harness.rt.halts
    assert all(redis.exists(halts.contact_key(ids[i])) for i in (1, 3))  # before any send
    assert not redis.exists(halts.contact_key(ids[0]))

    # the revocations suppressed the rows in their transaction (the consent service): the
    # workers skip them
    p = harness.pipeline()
    outcomes = {harness.row(r).contact_id: p.deliver(r) for r in harness.released}
    assert outcomes == {
        ids[0]: "sent",
        ids[1]: "skip:suppressed",
        ids[2]: "sent",
        ids[3]: "skip:suppressed",
    }
    assert {r.to_phone for r in harness.rows(run_id) if r.state == outbox.SUPPRESSED} == {
        "+12125550001",
        "+12125550003",
    }
    with harness.db.session() as s:
        first = s.exec(
            select(ConsentEvent).where(
                ConsentEvent.contact_id == ids[1], ConsentEvent.action == "revoke"
            )
        ).one()
    assert (first.evidence_text, first.source, first.actor) == ("asked by email", "email", "ops")
    assert first.note == "from stop.csv row 2"
    assert first.occurred_at.replace(tzinfo=None).isoformat() == "2026-01-05T14:00:00"


def test_a_file_is_one_transaction(harness, tmp_path, monkeypatch):
    from dispatcher import consent_events

    for i in range(3):
        harness.contact(f"+1212555000{i}")
    real, calls = consent_events.append_once, []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*a, **kw)

    monkeypatch.setattr(consent_events, "append_once", failing)
    f = _write(
        tmp_path / "p.csv", "phone\n+12125550000\n+12125550001\n+12125550002\n+13125550000\n"
    )

    def count(model) -> int:
        with harness.db.session() as s:
            return s.exec(select(func.count()).select_from(model)).one()

    events, contacts = count(ConsentEvent), count(Contact)
    with pytest.raises(RuntimeError), harness.db.session() as s:
        revoke_csv(s, f, _recorder(s, harness))
    assert (count(ConsentEvent), count(Contact)) == (events, contacts)  # nothing of it stays


@pytest.mark.parametrize(
    "text, needle",
    [("name\nAnn\n", "no 'phone' column"), (b"\xff\xfe\x00bad".decode("latin-1"), "phone")],
)
def test_an_unusable_file_is_one_error(harness, tmp_path, text, needle):
    f = _write(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as e, harness.db.session() as s:
        revoke_csv(s, f, _recorder(s, harness))
    assert needle in str(e.value)
