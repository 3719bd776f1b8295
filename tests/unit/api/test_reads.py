"""The read side (issue 23.4): runs listed with filters and a cursor, a run's messages with
their states (phones masked without contacts:read), one contact; the client's iterators."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from dispatcher import outbox, runs
from dispatcher.client import DispatcherClient
from dispatcher.errors import NotFoundError
from tests.unit.api.conftest import (
    LIST_TEMPLATE,
    ApiClient,
    SyncAsgiTransport,
    launch_list,
    make_key,
)


def _pages(client: ApiClient, path: str) -> tuple[list[dict[str, Any]], int]:
    """Every item of a listing and the number of requests it took."""
    items, requests, cursor = [], 0, None
    while True:
        r = client.get(path + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200, r.text
        requests += 1
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items, requests


def test_runs_newest_first_in_pages_with_filters(client, world, db):
    ids = [launch_list(client, world, 2) for _ in range(5)]
    client.post(f"/v1/runs/{ids[1]}:pause")
    client.post(f"/v1/runs/{ids[3]}:cancel")
    items, requests = _pages(client, "/v1/runs?limit=2")
    assert [r["id"] for r in items] == ids[::-1] and requests == 3
    assert items[1] == client.get(f"/v1/runs/{ids[3]}").json()  # the run document itself
    paused, _ = _pages(client, "/v1/runs?state=paused&limit=2")
    assert [r["id"] for r in paused] == [ids[1]]
    mine, _ = _pages(client, f"/v1/runs?campaign={world['campaign']}&state=scheduled")
    assert [r["id"] for r in mine] == [ids[4], ids[2], ids[0]]
    by_id, _ = _pages(client, f"/v1/runs?campaign={world['campaign_id']}&limit=50")
    assert len(by_id) == 5
    r = client.get("/v1/runs?campaign=QE" + "0" * 32)
    assert r.status_code == 404 and "campaign" in r.json()["detail"]
    assert client.get("/v1/runs?state=done").status_code == 422
    assert client.get("/v1/runs?cursor=abc").status_code == 422
    assert client.get("/v1/runs?cursor=99999999999999999999").status_code == 422  # 20 digits
    far, _ = _pages(client, "/v1/runs?cursor=9999999999999999999")  # past 2**63: the end
    assert [r["id"] for r in far] == ids[::-1]


def test_a_page_boundary_skips_and_repeats_nothing_when_runs_are_added(client, world):
    first = [launch_list(client, world, 1) for _ in range(3)]
    page = client.get("/v1/runs?limit=2").json()
    newer = launch_list(client, world, 1)  # added between two pages: not in the older ones
    rest = client.get(f"/v1/runs?limit=2&cursor={page['next_cursor']}").json()
    assert [r["id"] for r in page["items"] + rest["items"]] == first[::-1]
    assert newer not in [r["id"] for r in rest["items"]]


def test_messages_of_a_run_with_states_and_masked_phones(client, app, world, db):
    run_id = launch_list(client, world, 7)
    with db.session() as s:
        s.connection().execute(
            update(runs.OB)
            .where(runs.OB.c.run_id == run_id, runs.OB.c.to_phone == "+14155550003")
            .values(state=outbox.SUPPRESSED, suppress_reason="opted_out")
        )
    items, requests = _pages(client, f"/v1/runs/{run_id}/messages?limit=3")
    assert requests == 3 and len(items) == 7
    assert [m["phone"] for m in items] == [f"+1415555{i:04d}" for i in range(7)]
    assert items[3]["state"] == "suppressed" and items[3]["suppress_reason"] == "opted_out"
    assert all(m["state"] == "queued" for i, m in enumerate(items) if i != 3)
    suppressed, _ = _pages(client, f"/v1/runs/{run_id}/messages?state=suppressed")
    assert [m["phone"] for m in suppressed] == ["+14155550003"]
    reader = ApiClient(app, make_key(db, "reader", "runs:read"))
    page = reader.get(f"/v1/runs/{run_id}/messages").json()
    assert page["phones_masked"] is True
    assert [m["phone"] for m in page["items"]][:2] == ["+1415555****", "+1415555****"]
    assert client.get(f"/v1/runs/{run_id}/messages").json()["phones_masked"] is False
    assert client.get("/v1/runs/999/messages").status_code == 404
    assert client.get(f"/v1/runs/{run_id}/messages?state=lost").status_code == 422


def test_messages_need_runs_read(app, world, db):
    c = ApiClient(app, make_key(db, "writer", "runs:write,contacts:read"))
    assert c.get("/v1/runs/1/messages").status_code == 403
    assert c.get("/v1/runs").status_code == 403


def test_read_a_contact(client, app, db):
    client.put("/v1/contacts/4155550100", json={"name": "Ann", "attributes": {"plan": "gold"}})
    r = client.get("/v1/contacts/(415)%20555-0100")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["phone"] == "+14155550100" and doc["attributes"] == {"plan": "gold"}
    assert doc["name"] == "Ann" and doc["created_at"] and doc["updated_at"]
    assert client.get("/v1/contacts/4155550199").status_code == 404
    only_write = ApiClient(app, make_key(db, "w", "contacts:write"))
    r = only_write.get("/v1/contacts/4155550100")
    assert r.status_code == 403 and "contacts:read" in r.json()["detail"]


def test_client_iterators(app, token, world, db):
    with DispatcherClient("http://testserver", token, transport=SyncAsgiTransport(app)) as api:
        ids = [
            api.create_run(
                world["campaign"], LIST_TEMPLATE, [f"+1415555{i:04d}" for i in range(n)]
            ).run.id
            for n in (3, 250)
        ]
        assert [r.id for r in api.iter_runs(page_size=1)] == ids[::-1]
        assert [r.id for r in api.iter_runs(state="completed")] == []
        messages = list(api.iter_messages(ids[1], page_size=100))  # three pages
        assert len(messages) == 250 and len({m.contact_id for m in messages}) == 250
        assert messages[0].phone == "+14155550000" and messages[0].state == "queued"
        assert next(api.iter_messages(ids[0], state="queued")).attempts == 0
        api.upsert_contact("+1 415 555 0001", name="Bo")
        assert api.get_contact("415-555-0001").name == "Bo"
        with pytest.raises(NotFoundError):
            api.get_contact("4155559999")
        with pytest.raises(NotFoundError):
            list(api.iter_messages(999))


def test_message_rows_are_read_by_the_run_contact_index(db, world, client):
    """The page query is keyed on (run_id, contact_id): the outbox's unique index (SQLite's
    plan; on PostgreSQL the same index serves it)."""
    from sqlalchemy import select

    from dispatcher.api.reads import MESSAGE_COLUMNS

    run_id = launch_list(client, world, 2)
    q = select(*MESSAGE_COLUMNS).where(runs.OB.c.run_id == run_id).order_by(runs.OB.c.contact_id)
    with db.session() as s:
        plan = " ".join(
            str(r)
            for r in s.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + str(q.compile(compile_kwargs={"literal_binds": True}))
            )
        )
    assert "USING INDEX" in plan and "(run_id=?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # the index gives the order: no sort


@pytest.mark.parametrize("cursor", ["2147483648", "15596100476006", "9999999999999999999"])
def test_a_cursor_past_every_key_is_the_end_on_both_databases(any_db, cursor):
    """PostgreSQL refused to compare an INTEGER id with a larger number (a 400 'out of
    range', found by schemathesis): a cursor past every key reads as the end, from the top."""
    from dispatcher.api import create_api_app
    from tests.unit.api.conftest import make_runtime, make_world

    world = make_world(any_db)
    client = ApiClient(create_api_app(make_runtime(any_db)), make_key(any_db, "k"))
    run_id = launch_list(client, world, 2)
    r = client.get(f"/v1/runs?cursor={cursor}")
    assert r.status_code == 200 and [x["id"] for x in r.json()["items"]] == [run_id]
    r = client.get(f"/v1/runs/{run_id}/messages?cursor={cursor}")
    assert r.status_code == 200 and r.json()["items"] == []
