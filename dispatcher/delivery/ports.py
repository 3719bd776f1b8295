"""What the path of one message needs from the world: one Protocol per seam.

Each port has a real adapter, built only by the composition root (``dispatcher/runtime.py``), and
an in-memory fake that subclasses the port, so that it cannot drift from it
(``dispatcher/delivery/fakes.py``; Dramatiq's StubBroker beside its RedisBroker is the model):

=============  ======================================  =========================================
port           real adapter                            fake
=============  ======================================  =========================================
``Throttle``   ``throttle.redis.RedisThrottle``        ``MemoryThrottle``
``Gateway``    ``gateway.client.TwilioGateway``        ``FakeGateway``
``HaltKeys``   ``halts.Halts`` (``NoHaltKeys``)        ``MemoryHalts``
``HaltSignal`` ``halts.Halts``                         ``MemoryHalts``
``Metrics``    ``metrics.Metrics``                     ``RecordingMetrics``
``Clock``      ``clock.SystemClock``                   ``clock.FakeClock``
=============  ======================================  =========================================

The real adapters satisfy their ports structurally (they do not import this module); mypy checks
it where the composition root hands them over, and ``tests/unit/delivery/test_ports.py`` runs the
same contract over each real adapter and its fake.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from dispatcher.clock import Clock

if TYPE_CHECKING:
    from dispatcher.gateway.outcomes import SendResult
    from dispatcher.metrics import OptOutKind
    from dispatcher.throttle.policy import Bucket
    from dispatcher.throttle.reservation import Reservation, SendStatus

__all__ = [
    "Booking",
    "Clock",
    "Enqueue",
    "Epoch",
    "Gateway",
    "HaltKeys",
    "HaltSignal",
    "Metrics",
    "Throttle",
]

#: a throttle booking as a queue message carries it (``Reservation.to_dict``, JSON)
Booking = dict[str, Any]
#: put booked rows on the delivery queue as ONE message due in ``delay_s`` seconds:
#: ``enqueue([(row_id, booking), ...], delay_s)`` (rows in the order of their slots)
Enqueue = Callable[[Sequence[tuple[int, Booking]], float], None]
#: what the halt keys looked like before a batch was read (opaque to the caller)
Epoch = tuple[object, int]


class Throttle(Protocol):
    """Atomic reservations across every bucket of a message (``throttle.redis`` has the proof
    that a booked slot, sent within its grace, keeps every window under its limit)."""

    def reserve(
        self,
        buckets: Sequence[Bucket],
        *,
        max_wait_s: float = 0.0,
        row: int | None = None,
        unsent: Collection[int] = (),
    ) -> Reservation:
        """Book the earliest slot free in every bucket, if within ``max_wait_s``; ``row``: the
        outbox row it is for (a re-seed's in-flight entry for it is replaced); ``unsent``: the
        claimed rows the caller holds and has not handed over (a re-seed does not count them)."""
        ...

    def reserve_many(
        self,
        requests: Sequence[Sequence[Bucket]],
        *,
        max_wait_s: float = 0.0,
        rows: Sequence[int] | None = None,
        unsent: Collection[int] = (),
    ) -> list[Reservation]:
        """``reserve`` for several messages in one round trip, answered in order."""
        ...

    def release(self, reservation: Reservation) -> bool:
        """Give a booked slot back (never for a message that was sent); idempotent."""
        ...

    def send_status(self, reservation: Reservation) -> SendStatus:
        """May a booked message be sent now: send, early, late, lost or denied."""
        ...


class Gateway(Protocol):
    """The carrier.  A failed call raises ``GatewayError`` or the subclass that says how to react
    (``RetryableSendError``, ``RejectedSendError``, ``AmbiguousSendError``)."""

    def send(
        self,
        to: str,
        body: str,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        validity_period: int | None = None,
    ) -> SendResult:
        """Create one message (``messages.create``)."""
        ...

    def find_sent(
        self, to: str, from_or_service: str, since: datetime, digest: str
    ) -> SendResult | None:
        """The message sent to ``to`` since ``since`` whose body hashes to ``digest``, if any."""
        ...

    def fetch(self, sid: str) -> SendResult:
        """A message's current status."""
        ...


class HaltKeys(Protocol):
    """The worker's side of the halt keys (``dispatcher/halts.py`` explains them): read the
    epoch before a batch is read, then ask right before each send whether anything halted the
    row's contact, run or campaign since."""

    @property
    def max_age_s(self) -> float:
        """A batch read longer ago than this must not trust ``clear``."""
        ...

    def epoch(self) -> Epoch | None:
        """The keys' epoch now; None: no key can be trusted (check every row in the database)."""
        ...

    def clear(self, epoch: Epoch, *, contact_id: int, run_id: int, campaign_id: int) -> bool:
        """True iff nothing halted this contact, run or campaign since ``epoch`` was read."""
        ...


class HaltSignal(Protocol):
    """The halter's side: a STOP, pause or cancel calls ``signal`` inside its transaction, before
    it commits, so that a worker's check after the commit sees the key."""

    def signal(
        self,
        *,
        contacts: Iterable[int] = (),
        runs: Iterable[int] = (),
        campaigns: Iterable[int] = (),
    ) -> None:
        """Set the keys; a Redis failure is logged, never raised (the halt commits anyway)."""
        ...


class Metrics(Protocol):
    """What the path of one message records.  Called directly: a method missing from the real
    ``dispatcher.metrics.Metrics`` fails mypy and the port test, not silently at run time."""

    def sent(
        self,
        campaign: str,
        sender: str,
        segments: int = 1,
        *,
        brand: str | None = None,
        body: str | None = None,
        body_hash: str | None = None,
        duration_s: float | None = None,
    ) -> None: ...

    def failed(self, campaign: str, sender: str, error_code: int | str | None) -> None: ...

    def delivered(self, campaign: str, sender: str) -> None: ...

    def undelivered(self, campaign: str, sender: str, error_code: int | str | None) -> None: ...

    def suppressed(self, campaign: str, reason: str, n: int = 1) -> None: ...

    def guard_event(self, campaign: str, kind: str) -> None: ...

    def guard_paused(self, campaign: str, reason: str) -> None: ...

    def deferred(self, campaign: str, reason: str) -> None: ...

    def throttle_wait_seconds(self, bucket_kind: str, wait_s: float, allowed: bool) -> None: ...

    def opt_out(self, campaign: str, kind: OptOutKind = "keyword") -> None: ...

    def daily_batch(self) -> AbstractContextManager[None]:
        """The daily Redis records of the sends inside go to Redis in one round trip."""
        ...
