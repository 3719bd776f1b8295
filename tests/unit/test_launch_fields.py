"""dispatcher.launch.audience_fields: per-field counts of an audience, in SQL, on SQLite and
PostgreSQL, agree with what rendering the template would find (templates.contact_values)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import func, select

from dispatcher import contacts, runs
from dispatcher.launch import audience_fields
from dispatcher.models import OutboxMessage
from dispatcher.templates import contact_values
from tests.unit.api.conftest import make_world

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
FIELDS = ["name", "first_name", "date", "plan", "appt.time", "n", "flag", "zzz"]
PEOPLE: list[tuple[str, str | None, dict[str, Any]]] = [
    ("+12125550001", "Ann Lee", {"date": "May 1", "plan": "gold"}),
    ("+12125550002", None, {"plan": "gold", "date": ""}),
    ("+12125550003", "   ", {"plan": "silver", "first_name": "Cy"}),
    ("+12125550004", "Dee", {"plan": "gold", "appt.time": "9am", "n": 0, "flag": False}),
    ("+12125550005", "Eve Ray", {"plan": "gold", "name": ""}),
]


@pytest.fixture
def seeded(any_db):
    world = make_world(any_db)
    with any_db.session() as s:
        for phone, name, attrs in PEOPLE:
            contacts.upsert_contact(s, phone, name=name, attributes=attrs)
    return any_db, world


def _expected(rows: list[tuple[str | None, dict[str, Any], dict[str, Any] | None]]) -> dict:
    holders = {}
    for f in FIELDS:
        holders[f] = sum(
            1
            for name, attrs, variables in rows
            if contact_values(name, attrs, variables).get(f) not in (None, "")
        )
    return holders


def _launch(db: Any, world: dict, audience: dict, recipients: list | None = None) -> Any:
    with db.session() as s:
        req = runs.LaunchRequest(
            campaign=world["campaign"],
            template="Hi",
            audience=audience,
            recipients=recipients,
        )
        run, _ = runs.launch(s, req, now=NOW)
        stats = audience_fields(s, run, FIELDS)
        s.rollback()
    return stats


def test_all_and_segment(seeded):
    db, world = seeded
    stats = _launch(db, world, {"kind": "all"})
    assert stats.total == 5
    assert dict(stats.holders) == _expected([(n, a, None) for _, n, a in PEOPLE])
    # first_name: Ann, Cy (attribute), Dee, Eve; name: Ann, Dee (Eve's empty attribute hides hers)
    assert (stats.holders["first_name"], stats.holders["name"]) == (4, 2)
    assert stats.known == {"name", "first_name", "date", "plan", "appt.time", "n", "flag"}
    gold = _launch(db, world, {"kind": "segment", "query": "plan=gold"})
    assert gold.total == 4
    assert dict(gold.holders) == _expected(
        [(n, a, None) for _, n, a in PEOPLE if a["plan"] == "gold"]
    )


def test_a_list_audience_uses_variables_first(seeded):
    db, world = seeded
    recipients = [
        {"phone": "+12125550001", "variables": {"date": "June 2"}},
        {"phone": "+12125550002", "variables": {}},
        {"phone": "+13125550100", "variables": {"date": "July 3", "room": "4"}},
        {"phone": "+12125550004", "variables": {"plan": "", "appt.time": None}},
        {"phone": "+12125550005", "variables": {"date": None}},
    ]
    stats = _launch(db, world, {"kind": "list"}, recipients)
    people = {p: (n, a) for p, n, a in PEOPLE}
    rows = [(*people.get(r["phone"], (None, {})), r["variables"]) for r in recipients]
    assert stats.total == 5
    assert dict(stats.holders) == _expected(rows)
    assert stats.holders["appt.time"] == 1  # a null variable leaves Dee's own value
    assert stats.holders["plan"] == 3  # Ann, Bob, Eve: an empty variable hides Dee's own
    assert {"room", "date", "plan", "appt.time"} <= stats.known


def test_nothing_is_counted_when_every_field_is_held(seeded):
    db, world = seeded
    with db.session() as s:
        run, _ = runs.launch(
            s, runs.LaunchRequest(world["campaign"], "Hi", {"kind": "all"}), now=NOW
        )
        stats = audience_fields(s, run, ["plan"])
        assert stats is not None and stats.known == frozenset()  # not needed: not computed
        assert audience_fields(s, run, []) is None
        assert s.exec(select(func.count()).select_from(OutboxMessage)).one() == 0
