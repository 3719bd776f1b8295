"""Status callbacks across a crash of ``dispatcher serve``: every callback answered 200 is
applied, exactly once, whatever instant the process is killed at.

The route answers 200 only after the group commit that applied the callback (webhooks/status.py):
there is no moment between the acknowledgement and the write for a crash to fall into.  Twilio
never sends a 200'd callback again, so that is what must hold; a callback whose request failed
(the connection died with the process) is sent again, as a sender does on a failed request.
The batch path (one UPDATE per batch) and its reactions run on the real server and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import urllib3
from sqlmodel import select

from dispatcher.models import ConsentEvent, Contact, OutboxMessage, Run
from dispatcher.sandbox.callbacks import Callback, signed_callback
from dispatcher.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from tests.harness import seed

N = 90
OPT_OUT = {7, 41, 88}  # these rows end failed with 21610: one brand-wide revocation each
UNDELIVERED = {k for k in range(N) if k % 5 == 0}  # 30007


def sid(k: int) -> str:
    return "SM" + f"{k:032x}"


def final_of(k: int) -> tuple[str, str, int | None]:
    """(state, Twilio status, error code) row ``k`` must end with."""
    if k in OPT_OUT:
        return "failed", "failed", 21610
    if k in UNDELIVERED:
        return "undelivered", "undelivered", 30007
    return "delivered", "delivered", None


def _rows(db: Any, tmp_path: Any) -> list[str]:
    """N rows handed to the carrier (``sent``, with their SIDs), one contact each."""
    seeded = seed(db, tmp_path / "seed", consented=N)
    now = datetime.now(UTC)
    with db.session() as s:
        run = Run(campaign_id=seeded.campaign_id, template="Hi", state="running", total=N)
        s.add(run)
        s.flush()
        ids = {c.phone: c.id for c in s.exec(select(Contact))}
        for k, p in enumerate(seeded.consented):
            s.add(
                OutboxMessage(
                    run_id=run.id,
                    campaign_id=seeded.campaign_id,
                    contact_id=ids[p],
                    to_phone=p,
                    state="sent",
                    provider_sid=sid(k),
                    provider_status="sent",
                    sent_at=now,
                )
            )
    return seeded.consented


def _callbacks(url: str, phones: list[str]) -> list[Callback]:
    """Per row: queued, sent and its final status, each twice, a row's final status sometimes
    before its lower ones (callbacks overtake each other)."""
    out = []
    for k, p in enumerate(phones):
        _, final, code = final_of(k)
        seq = ["queued", "sent", final] if k % 3 else [final, "queued", "sent"]
        for st in seq * 2:
            params = {
                "MessageSid": sid(k),
                "SmsSid": sid(k),
                "AccountSid": SANDBOX_ACCOUNT_SID,
                "From": "+15005550006",
                "To": p,
                "MessageStatus": st,
                "SmsStatus": st,
            }
            if st == final and code:
                params["ErrorCode"] = str(code)
            out.append(signed_callback(SANDBOX_AUTH_TOKEN, url, params))
    return out


def _post_all(cbs: list[Callback], answered: dict[int, int], kill: threading.Event | None) -> None:
    """Post every callback from 8 threads; ``answered[i]`` is callback i's status code (absent:
    the request failed).  ``kill`` is set once a third of them are answered."""
    lock = threading.Lock()
    http = urllib3.PoolManager(maxsize=8, retries=False, timeout=10.0)

    def one(i: int) -> None:
        cb = cbs[i]
        try:
            r = http.request("POST", cb.url, body=urlencode(cb.params), headers=cb.headers)
        except urllib3.exceptions.HTTPError:
            return
        with lock:
            answered[i] = r.status
            if kill is not None and len(answered) >= len(cbs) // 3:
                kill.set()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(len(cbs))))
    http.clear()


def test_a_killed_webhook_server_loses_no_acknowledged_callback(dist, tmp_path):
    stack, db = dist
    stack.start_webhooks()
    phones = _rows(db, tmp_path)
    cbs = _callbacks(stack.webhook_url + "/twilio/status", phones)
    answered: dict[int, int] = {}
    kill = threading.Event()
    poster = threading.Thread(target=_post_all, args=(cbs, answered, kill))
    poster.start()
    assert kill.wait(60), "callbacks never answered"
    stack.procs["webhooks"].kill9()  # mid-stream: some callbacks in a batch, some queued
    poster.join(120)
    acked = {i for i, code in answered.items() if code == 200}
    assert set(answered.values()) <= {200}, Counter(answered.values())
    assert len(acked) < len(cbs), "the server was killed after it had answered everything"

    with db.session() as s:
        rows = {r.provider_sid: r for r in s.exec(select(OutboxMessage))}
    rank = {"sent": 2, "delivered": 3, "undelivered": 3, "failed": 3}
    for i in acked:  # an acknowledged callback is in the database, with its error code
        st = cbs[i].params["MessageStatus"]
        row = rows[cbs[i].params["MessageSid"]]
        assert rank[row.state] >= rank.get(st, 2), (i, st, row.state)
        if st in ("delivered", "undelivered", "failed"):
            k = int(cbs[i].params["MessageSid"][2:], 16)
            assert (row.state, row.provider_status, row.error_code) == final_of(k)

    # restarted: the callbacks whose request failed are sent again, and every one again
    # (duplicates): nothing moves twice, nothing reacts twice
    stack.start_webhooks()
    again: dict[int, int] = {}
    _post_all(cbs, again, None)
    assert set(again.values()) == {200} and len(again) == len(cbs)
    with db.session() as s:
        rows = {r.provider_sid: r for r in s.exec(select(OutboxMessage))}
        events = list(s.exec(select(ConsentEvent).where(ConsentEvent.source == "carrier")))
    for k in range(N):
        r = rows[sid(k)]
        assert (r.state, r.provider_status, r.error_code) == final_of(k), k
    assert sorted(e.evidence_ref for e in events) == sorted(sid(k) for k in OPT_OUT)
