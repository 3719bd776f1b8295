"""The pipeline's tunables (one object, handed to every step by the composition root)."""

from __future__ import annotations

from dataclasses import dataclass

#: A throttled message books a slot up to this far ahead and rides a delayed queue message to
#: it; the scheduler releases no more rows of a run than can book within it (release_loop.py),
#: so a long backlog waits in the outbox at no queue cost (docs/throttle.md: ~2 queue ops per
#: send).
BOOK_HORIZON_S = 6 * 3600.0


@dataclass
class DeliverConfig:
    book_horizon_s: float = BOOK_HORIZON_S  # how far ahead a throttled message may book
    max_attempts: int = 8  # retryable carrier errors before giving up
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    first_message_days: int = 30  # STOP language at least once a month (compliance.md 2.1)
    history_days: int = 31
    now_epsilon_s: float = 0.002  # a booking this close to now is "now"
    #: the least grace of a bucket: how late after its booked slot a send may still reach the
    #: carrier (a bucket's own grace is 1 % of its period, at most 1 s: policy.Bucket.grace).
    #: It must cover the lateness left once a booked row's message came ``wake_lead_s`` early
    #: (a free thread, the rows before it in its message, the halt check, the HTTP call); it
    #: costs g/(T+g) of a window's throughput (docs/throttle.md "Grace")
    min_grace_s: float = 0.5
    #: a message carrying booked rows is due this long before its first slot: it covers the
    #: queue's wake-up lateness (Dramatiq moves a due delayed message every worker_timeout, 100
    #: ms, and a worker fetches it within another) and the group's load, gate and claim; the
    #: worker then waits for each row's slot (0.25 s: carried rows 0.19 s late at the median on
    #: a loaded machine, 0.5 s: 0.03 s; bench/utilisation.py)
    wake_lead_s: float = 0.5
    #: a worker thread waits for a row's slot when it is this close, else the row is carried
    #: again; one message carries rows whose slots lie within ``max_hold_s - wake_lead_s``
    max_hold_s: float = 1.25
    #: carried rows are held in their process until this long before their slots, then put on
    #: the queue grouped with every row the process's batches booked for the same stretch (as
    #: long again): a window's rows ride a few messages, not one or more per batch
    #: (``carry.py``); ``math.inf`` puts each batch's rows on the queue when it ends
    enqueue_ahead_s: float = 2.0
    #: a process holds carried rows at most this far ahead of their slots (what it holds is
    #: bounded by its throughput); rows further ahead ride a message due half of it before
    #: their slots, and are held again by the process that receives it (``carry.py``)
    hold_s: float = 120.0
    campaign_cache_s: float = 2.0
    #: a batch's rows not reached after this long go back to the outbox (well inside the
    #: reconciler's sending lease, and inside the halt keys' ``max_age_s``)
    batch_max_s: float = 30.0
    #: accepted sends wait at most this long to be recorded together (a STOP webhook waits for
    #: its contact's claimed rows; early status callbacks are retried meanwhile)
    mark_within_s: float = 0.5
