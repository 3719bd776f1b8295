"""A throttle booking (pure data): what ``reserve`` answers, what a queue message carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dispatcher.errors import InputError

#: may a booked message be sent now?  (``RedisThrottle.send_status``)
SendStatus = Literal["send", "early", "late", "lost", "denied"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Answer of :meth:`RedisThrottle.reserve`.

    ``allowed``: a slot was booked in every bucket (``wait_s`` may be > 0: send at ``slot_at``).
    ``wait_s``: seconds from ``now`` to the slot (allowed) or to the earliest possible slot (not
    allowed; a lower bound when ``slot_at`` is None, i.e. beyond the calendar range the script saw).
    ``send_by``: a booked message may be sent only while ``slot_at <= now < send_by``.
    ``bound``: the kind of the bucket whose limit set the slot (``campaign``, ``sender_mps``,
    ``tmobile_daily``, ``recipient``, ...: ``throttle.policy.KINDS``), None when nothing held the
    message back (the slot is now).  What ``dispatcher_throttle_reservations_total`` counts by.
    """

    allowed: bool
    wait_s: float
    slot_at: float | None
    send_by: float | None
    grace_s: float
    now: float
    id: str
    epoch: str
    brand: str
    holds: tuple[tuple[str, str, str, int], ...] = field(default=())
    bound: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for carrying a booking in a queue message."""
        return {
            "allowed": self.allowed, "wait_s": self.wait_s, "slot_at": self.slot_at,
            "send_by": self.send_by, "grace_s": self.grace_s, "now": self.now, "id": self.id,
            "epoch": self.epoch, "brand": self.brand, "holds": [list(h) for h in self.holds],
            "bound": self.bound,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reservation:
        try:
            return cls(
                allowed=bool(d["allowed"]), wait_s=float(d["wait_s"]),
                slot_at=None if d["slot_at"] is None else float(d["slot_at"]),
                send_by=None if d["send_by"] is None else float(d["send_by"]),
                grace_s=float(d["grace_s"]), now=float(d["now"]), id=str(d["id"]),
                epoch=str(d["epoch"]), brand=str(d["brand"]),
                holds=tuple((str(k), str(key), str(m), int(c)) for k, key, m, c in d["holds"]),
                bound=None if d.get("bound") is None else str(d["bound"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"malformed reservation: {e}") from e
