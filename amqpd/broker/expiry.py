"""The time-keeping of one queue: message expiry, the x-expires lease, reported deadlines.

Rules of this module (reference 2.2; docs "Time-To-Live and Expiration"):
- Time is ``now``, monotonic seconds, given by the caller; nothing here reads a clock.
  ``advance(None)`` means "the latest time we were given": a high-water mark, so time
  never runs backwards for a queue.
- A message's expiry is fixed at enqueue: ``now`` + the lower of the queue's
  ``x-message-ttl`` and the message's ``expiration`` (ms), None when neither is set
  ("when both are specified, the lower value is chosen").
- ``expiring`` turns True once any entry may carry an expiry; until then the queue skips
  its TTL checks, so queues without TTL pay nothing on the hot path.
- The TTL and x-expires come from the queue's effective settings (queue_settings.py) and
  may change live (``set_limits``, a policy change): a message's expiry stays what it was
  given at enqueue (rabbit_amqqueue_process:init_ttl/2 only sets the TTL for later
  publishes; oracle).
- x-expires (> 0 ms, validated at declare): the lease runs from the last use (declare,
  passive declare, basic.get, the last consumer going); the queue is due for deletion when
  it has no consumers and the lease is over.
- ``scheduled`` is the earliest deadline reported to the vhost and not yet ticked: only a
  deadline earlier than it needs reporting (a later one is found when the old one fires).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amqpd.broker.arguments import is_int
from amqpd.broker.message import Message


def _ms(value: object) -> int | None:
    return int(value) if isinstance(value, int) and is_int(value) else None


class QueueClock:
    __slots__ = ("expires", "expiring", "last_used", "now", "scheduled", "ttl_ms")

    def __init__(self, arguments: Mapping[str, Any], now: float) -> None:
        self.now = now
        self.expiring = False
        self.ttl_ms: int | None = None
        self.expires: float | None = None
        self.set_limits(_ms(arguments.get("x-message-ttl")), _ms(arguments.get("x-expires")))
        self.last_used = now
        self.scheduled: float | None = None

    def set_limits(self, ttl_ms: int | None, expires_ms: int | None) -> None:
        """The queue's TTL and x-expires (ms), from its effective settings (a policy may
        change them live). Entries already queued keep the expiry they were given."""
        self.ttl_ms = ttl_ms
        if ttl_ms is not None:
            self.expiring = True  # never back to False: queued entries may carry one
        self.expires = expires_ms / 1000 if expires_ms is not None else None

    def advance(self, now: float | None) -> float:
        if now is not None and now > self.now:
            self.now = now
        return self.now

    def expiry(self, message: Message, now: float) -> float | None:
        ttl = self.ttl_ms
        per_message = message.expiration_ms
        if per_message is not None:
            self.expiring = True
            if ttl is None or per_message < ttl:
                ttl = per_message
        return None if ttl is None else now + ttl / 1000

    def lease_end(self) -> float | None:
        """When an unused queue expires (None without x-expires)."""
        expires = self.expires
        return None if expires is None else self.last_used + expires

    def to_report(self, deadline: float) -> bool:
        """True (and remembered) if ``deadline`` is earlier than the one last reported."""
        if self.scheduled is None or deadline < self.scheduled:
            self.scheduled = deadline
            return True
        return False
