"""Halt signals: one Redis round trip tells a worker, right before a send, whether a STOP, a run
pause/cancel or a campaign pause may have touched the message since it loaded the batch.

A worker claims a batch of outbox rows in one SQL statement and then sends them one by one, so
the claim no longer re-checks consent and run state per row.  Everything that halts sending
calls ``halts.signal(...)`` itself, inside its transaction and before its caller commits: a
revoke (``consent.revoke_and_suppress(..., halts=...)``, through the ledger's append),
``runs.pause_run`` / ``cancel_run`` / ``pause_campaign_runs`` (each takes ``halts``).
``signal`` sets the keys (``dispatcher:{halt}:c:<contact>``, ``:r:<run>``, ``:k:<campaign>``, value
``"1"``; names built by dispatcher.keys, one hash tag so one MGET is one Cluster slot) at once.
Before each send the worker calls ``clear(epoch, ...)`` (one MGET; ``delivery/halt_check.py``):
True means no halt can have committed since it read the database; otherwise it re-checks the row in
the database.

Why this is enough:

* **Keys are set before the commit.**  A halt is visible to the worker's database read only once
  it has committed, and by then its key exists: a check made after the commit sees it.
* **The epoch detects lost keys.**  ``dispatcher:halt:epoch`` holds a random value (no TTL).  The
  worker reads it (``epoch()``) before it reads the database for a batch and hands it to every
  ``clear``; a Redis flush removes or changes the epoch, ``clear`` answers False and the worker
  falls back to the database.  A restart that reloads a snapshot, or a failover to a replica,
  can bring the same epoch back without the newest keys: the epoch also carries the client's
  connect count (``Reconnects``), and a worker's connections all reconnect after either.
* **TTL and max_age_s.**  Keys expire after ``ttl_s`` (300 s), so they stay few.  A worker must
  not trust ``clear`` for a batch read more than ``max_age_s`` = ``ttl_s / 2.5`` (120 s) ago.  A
  halt that committed after the batch's database read set its key at most the rest of its
  transaction before that commit, so the key is still alive at any check within ``max_age_s`` of
  the read as long as a halting transaction commits within ``ttl_s - max_age_s`` (180 s) of its
  ``signal``: the halting functions signal as their last step and their callers commit at once.
* **A rolled-back transaction** (the key was set, then the commit failed or never came) only
  costs the workers a database check for that contact, run or campaign: a key says "look",
  never "don't send" on its own.
* **Redis down at the halt:** the halt is committed anyway (a STOP must be recorded); the failure
  is logged as an error.  Nothing then tells workers that Redis missed a key while its epoch
  stayed the same (a worker that gets an error from ``epoch``/``clear`` itself must check the
  database).  The signal runs inside the open transaction: a slow Redis keeps its locks that
  much longer (the halts client has 1 s timeouts and no retries).

Not detected either: a key evicted while the epoch stays (run Redis with ``noeviction``, as the
throttle requires: halt keys carry a TTL and would go first under a ``volatile-*`` policy), a
halter that cannot reach Redis while the workers can (the error log above), and a flush or
restart that falls exactly between a halt's SET and its COMMIT while a worker read its epoch
after it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from dispatcher import keys
from dispatcher.errors import ConfigError

log = logging.getLogger(__name__)


class Reconnects:
    """Counts the (re)connections of a client's pool.  A Redis that restarted (and reloaded an
    old snapshot with the same epoch) or failed over (to a replica that missed the last keys)
    may have lost halt keys while the epoch looks unchanged; either way every connection of the
    client reconnects, so a count that moved since the epoch was read means: do not trust."""

    def __init__(self) -> None:
        self.n = 0

    def bump(self, _connection: Any) -> None:
        self.n += 1


def client(url: str, reconnects: Reconnects, **kwargs: Any) -> Any:
    """A redis-py client for ``url`` whose every connection counts its connects."""
    import redis

    class Pool(redis.ConnectionPool):
        def make_connection(self) -> Any:
            conn = super().make_connection()
            conn.register_connect_callback(reconnects.bump)
            return conn

    return redis.Redis(connection_pool=Pool.from_url(url, **kwargs))


class Halts:
    """Halt keys on ``redis`` (redis-py or fakeredis, decoding responses or not); with
    ``reconnects`` (the client's, see ``client``) a reconnect since the epoch was read is a
    changed epoch."""

    def __init__(
        self,
        redis: Any,
        *,
        ttl_s: float = 300.0,
        reconnects: Reconnects | None = None,
    ) -> None:
        if ttl_s < 1:
            raise ValueError("halt keys need a TTL of at least 1 s")
        self.redis = redis
        self.reconnects = reconnects or Reconnects()  # fakeredis: never reconnects
        self.ttl_s = ttl_s
        self.epoch_key = keys.halt_epoch_key()

    @property
    def max_age_s(self) -> float:
        """A worker falls back to the database for a batch read longer ago than this."""
        return self.ttl_s / 2.5

    # ------------------------------------------------------------------------------- names
    def contact_key(self, contact_id: int) -> str:
        return keys.halt_contact_key(contact_id)

    def run_key(self, run_id: int) -> str:
        return keys.halt_run_key(run_id)

    def campaign_key(self, campaign_id: int) -> str:
        return keys.halt_campaign_key(campaign_id)

    # ------------------------------------------------------------------------------ worker
    def epoch(self) -> tuple[object, int]:
        """The current epoch (created if missing), as Redis returns it (bytes or str), with the
        client's connect count after reading it: read it BEFORE reading the batch from the
        database.  One round trip."""
        p = self.redis.pipeline(transaction=True)
        p.set(self.epoch_key, uuid.uuid4().hex, nx=True)
        p.get(self.epoch_key)
        value = p.execute()[1]
        return value, self.reconnects.n

    def clear(
        self, epoch: tuple[object, int] | None, *, contact_id: int, run_id: int, campaign_id: int
    ) -> bool:
        """True iff Redis kept its keys since ``epoch`` was read and no halt of this contact,
        run or campaign was signalled within the TTL.  One command (MGET)."""
        if epoch is None:
            return False
        now, *halted = self.redis.mget(
            self.epoch_key,
            self.contact_key(contact_id),
            self.run_key(run_id),
            self.campaign_key(campaign_id),
        )
        return (now, self.reconnects.n) == epoch and all(v is None for v in halted)

    # ------------------------------------------------------------------------------ halter
    def signal(
        self,
        *,
        contacts: Iterable[int] = (),
        runs: Iterable[int] = (),
        campaigns: Iterable[int] = (),
    ) -> None:
        """Set the keys (``"1"``, TTL ``ttl_s``) in one pipeline; call it inside the halting
        transaction, before it commits.  The epoch is not touched.  A Redis error is logged and
        swallowed: the halt is recorded even when Redis is down."""
        ids = {"contacts": set(map(int, contacts)), "runs": set(map(int, runs))}
        ids["campaigns"] = set(map(int, campaigns))
        names = (
            [self.contact_key(i) for i in ids["contacts"]]
            + [self.run_key(i) for i in ids["runs"]]
            + [self.campaign_key(i) for i in ids["campaigns"]]
        )
        if not names:
            return
        ttl_ms = int(self.ttl_s * 1000)
        try:
            p = self.redis.pipeline(transaction=False)
            for name in names:
                p.set(name, "1", px=ttl_ms)
            p.execute()
        except Exception as e:  # noqa: BLE001 - a halt is recorded even when Redis is down
            log.error(
                "halt signal failed, committing anyway: workers may still send rows they "
                "claimed before it (contact ids %s, run ids %s, campaign ids %s): %s: %s",
                _ids(ids["contacts"]),
                _ids(ids["runs"]),
                _ids(ids["campaigns"]),
                type(e).__name__,
                e,
            )


class NoHaltKeys:
    """No halt keys a worker can trust (the embedded mode, whose fakeredis another process
    cannot see): every claimed row is checked in the database before its send.

    ``signal`` does nothing, or, given ``refusal``, raises it as a ``ConfigError``: a halt
    recorded in a database whose workers check keys this process cannot reach must not commit
    unseen by them."""

    max_age_s = float("inf")

    def __init__(self, refusal: str | None = None) -> None:
        self.refusal = refusal

    def epoch(self) -> None:
        return None

    def clear(
        self, epoch: tuple[object, int] | None, *, contact_id: int, run_id: int, campaign_id: int
    ) -> bool:
        return False

    def signal(
        self,
        *,
        contacts: Iterable[int] = (),
        runs: Iterable[int] = (),
        campaigns: Iterable[int] = (),
    ) -> None:
        if self.refusal is not None and [*contacts, *runs, *campaigns]:
            raise ConfigError(self.refusal)


def _ids(ids: set[int], most: int = 20) -> str:
    if not ids:
        return "-"
    shown = ",".join(map(str, sorted(ids)[:most]))
    return shown if len(ids) <= most else f"{shown},... ({len(ids)} in all)"
