"""What became of a row handed to the pipeline: an ``Outcome`` and, for some, a detail.

A ``Result`` is also the string logs and tests read (``"sent"``, ``"suppressed:no_consent"``,
``"run:paused"``), so callers that only print it need nothing else; callers that decide on it
read ``result.outcome`` (an enum), never the string.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    # handed to the carrier
    SENT = "sent"  # accepted; recorded with the batch
    FAILED = "failed"  # refused for good (detail: the error code, or why)
    RETRY = "retry"  # refused before acceptance: back to queued with a backoff
    UNKNOWN = "unknown"  # may have reached the carrier and the carrier could not be asked yet
    RESOLVED = "resolved"  # an unknown row, after asking the carrier (detail: sent | requeued)
    # not handed over
    BOOKED = "booked"  # a future slot: a delayed queue message carries the row to it
    EARLY = "early"  # its booked slot has not come: carried there again
    THROTTLED = "throttled"  # no slot within the horizon: due again later, no queue message
    DEFERRED = "deferred"  # a gate said later (detail: why)
    SUPPRESSED = "suppressed"  # a gate said never (detail: why)
    PAUSED = "paused"  # a campaign-level gate paused the run (detail: why)
    CANCELLED = "cancelled"  # its run was cancelled
    HALTED = "run"  # its run is not running (detail: the run's state)
    SKIPPED = "skip"  # not queued any more (detail: its state)
    MISSING = "missing"  # no such row
    LOST_CLAIM = "lost_claim"  # someone else moved it first (a STOP, a pause, another worker)
    UNCLAIMED = "unclaimed"  # the batch did not reach it in time: back to queued, unchanged
    # a sent row's status, asked of the carrier
    REFRESHED = "refreshed"  # detail: the carrier's status
    UNCHANGED = "unchanged"


class Result(str):
    """An ``Outcome`` with an optional detail; as a string, ``"outcome"`` or
    ``"outcome:detail"``."""

    outcome: Outcome
    detail: str | None

    def __new__(cls, outcome: Outcome, detail: object = None) -> Result:
        # an Outcome is a str: no enum property on this per-row path
        self = super().__new__(cls, outcome if detail is None else f"{outcome}:{detail}")
        self.outcome = outcome
        self.detail = None if detail is None else str(detail)
        return self

    def __repr__(self) -> str:
        return f"Result({str.__repr__(self)})"
