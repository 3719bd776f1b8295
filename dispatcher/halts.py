"""Halt signals: one Redis round trip tells a worker, right before a send, whether a STOP, a run
pause/cancel or a campaign pause may have touched the message since it loaded the batch.

A worker claims a batch of outbox rows in one SQL statement and then sends them one by one, so
the claim no longer re-checks consent and run state per row.  Everything that halts sending
(``ledger.append`` of a revoke, ``runs.pause_run`` / ``cancel_run`` / ``pause_campaign_runs``)
calls ``note(session, ...)``; ``install(db, halts)`` makes the database's sessions set the noted
keys (``<prefix>:c:<contact>``, ``:r:<run>``, ``:k:<campaign>``, value ``"1"``) in a
``before_commit`` hook.  Before each send the worker calls ``clear(epoch, ...)`` (one MGET): True
means no halt can have committed since it read the database; otherwise it re-checks the row in
the database.

Why this is enough:

* **Keys are set before the commit.**  A halt is visible to the worker's database read only once
  it has committed, and by then its key exists: a check made after the commit sees it.
* **The epoch detects lost keys.**  ``<prefix>:epoch`` holds a random value (no TTL).  The worker
  reads it (``epoch()``) before it reads the database for a batch and hands it to every
  ``clear``; a Redis flush removes or changes the epoch, ``clear`` answers False and the worker
  falls back to the database.  A restart that reloads a snapshot, or a failover to a replica,
  can bring the same epoch back without the newest keys: the epoch also carries the client's
  connect count (``Reconnects``), and a worker's connections all reconnect after either.
* **TTL and max_age_s.**  Keys expire after ``ttl_s`` (300 s), so they stay few.  A worker must
  not trust ``clear`` for a batch read more than ``max_age_s`` = ``ttl_s / 2.5`` (120 s) ago:
  a halt that committed after the batch's database read set its key less than a commit's
  duration before, so the key is still alive at any check within ``max_age_s`` of that read.
* **A rolled-back transaction** (the key was set, then the commit failed) only costs the worker
  a database check: a key says "look", never "don't send" on its own.
* **Redis down at commit:** the halt is committed anyway (a STOP must be recorded); the failure is
  logged as an error.  Nothing then tells workers that Redis missed a key while its epoch
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
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event

from dispatcher import keys
from dispatcher.errors import ConfigError

log = logging.getLogger(__name__)

#: session.info key of the ids noted in the session's current transaction
_INFO_KEY = "dispatcher.halts"
_KINDS = ("contacts", "runs", "campaigns")
_install_lock = threading.Lock()


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
        prefix: str = keys.halt_prefix(),
        reconnects: Reconnects | None = None,
    ) -> None:
        if ttl_s < 1:
            raise ValueError("halt keys need a TTL of at least 1 s")
        self.redis = redis
        self.reconnects = reconnects or Reconnects()  # fakeredis: never reconnects
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.epoch_key = f"{prefix}:epoch"

    @property
    def max_age_s(self) -> float:
        """A worker falls back to the database for a batch read longer ago than this."""
        return self.ttl_s / 2.5

    # ------------------------------------------------------------------------------- names
    def contact_key(self, contact_id: int) -> str:
        return f"{self.prefix}:c:{contact_id}"

    def run_key(self, run_id: int) -> str:
        return f"{self.prefix}:r:{run_id}"

    def campaign_key(self, campaign_id: int) -> str:
        return f"{self.prefix}:k:{campaign_id}"

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
        """Set the keys (``"1"``, TTL ``ttl_s``) in one pipeline.  The epoch is not touched."""
        names = (
            [self.contact_key(i) for i in contacts]
            + [self.run_key(i) for i in runs]
            + [self.campaign_key(i) for i in campaigns]
        )
        if not names:
            return
        ttl_ms = int(self.ttl_s * 1000)
        p = self.redis.pipeline(transaction=False)
        for name in names:
            p.set(name, "1", px=ttl_ms)
        p.execute()


class NoHaltKeys:
    """No halt keys a worker can trust (the embedded mode, whose fakeredis another process
    cannot see): every claimed row is checked in the database before its send."""

    max_age_s = float("inf")

    def epoch(self) -> None:
        return None

    def clear(
        self, epoch: tuple[object, int] | None, *, contact_id: int, run_id: int, campaign_id: int
    ) -> bool:
        return False


def note(
    session: Any,
    *,
    contacts: Iterable[int] = (),
    runs: Iterable[int] = (),
    campaigns: Iterable[int] = (),
) -> None:
    """Remember halts of this session's transaction, signalled just before it commits (by the
    hook ``install`` registers; without one, nothing happens)."""
    noted = session.info.get(_INFO_KEY)
    if noted is None:
        noted = session.info[_INFO_KEY] = {k: set() for k in _KINDS}
    noted["contacts"].update(int(i) for i in contacts)
    noted["runs"].update(int(i) for i in runs)
    noted["campaigns"].update(int(i) for i in campaigns)


def _ids(ids: set[int], most: int = 20) -> str:
    if not ids:
        return "-"
    shown = ",".join(map(str, sorted(ids)[:most]))
    return shown if len(ids) <= most else f"{shown},... ({len(ids)} in all)"


def install(db: Any, halts: Halts | Callable[[], Halts]) -> None:
    """Make ``db``'s sessions signal what they noted right before they commit.

    ``halts`` may be a zero-argument callable returning the Halts, called only by a commit with
    something to signal (so opening the database needs no Redis client).
    Installing again does not register the hooks twice; the latest ``halts`` is the one used.
    A Redis error is logged and the commit goes on."""
    with _install_lock:  # two Runtimes may open the same (process-wide) Database at once
        state = db.__dict__.get("_halts")
        if state is not None:
            state["source"] = halts
            return
        state = db.__dict__["_halts"] = {"source": halts}
        event.listen(db._factory, "before_commit", _before_commit(state))
        event.listen(db._factory, "after_transaction_end", _after_transaction_end)


def _before_commit(state: dict[str, Any]) -> Callable[[Any], None]:
    """The hook of one Database: signals with whatever ``state["source"]`` is at commit time."""

    def before_commit(session: Any) -> None:
        if _INFO_KEY not in session.info or session.in_nested_transaction():
            return  # nothing noted (every commit passes here), or a SAVEPOINT release
        noted = session.info.pop(_INFO_KEY)
        if not any(noted.values()):
            return
        try:
            src = state["source"]
            (src if hasattr(src, "signal") else src()).signal(**noted)
        except ConfigError:
            raise  # no shared Redis to signal: the halt must not commit unseen by workers
        except Exception as e:  # noqa: BLE001 - a halt is recorded even when Redis is down
            log.error(
                "halt signal failed, committing anyway: workers may still send rows they "
                "claimed before it (contact ids %s, run ids %s, campaign ids %s): %s: %s",
                _ids(noted["contacts"]),
                _ids(noted["runs"]),
                _ids(noted["campaigns"]),
                type(e).__name__,
                e,
            )

    return before_commit


def _after_transaction_end(session: Any, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost one ended (committed or rolled back)
        session.info.pop(_INFO_KEY, None)
