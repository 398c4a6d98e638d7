"""basic.qos for one channel: the per-consumer default and the shared (global) limit.

Rules of this module (reference 2.7; RabbitMQ ``rabbit_channel`` basic.qos clauses,
``rabbit_limiter``, ``rabbit_queue_consumers``):
- ``prefetch_size != 0`` is refused by the channel (540) before it gets here.
- ``global=false``: ``consumer_prefetch`` becomes the limit of each consumer created *after*
  the call; existing consumers keep theirs. RabbitMQ also *unlimits* the channel's shared
  limit here (``rabbit_limiter:unlimit_prefetch``); checked on the oracle: qos(2, global)
  then qos(5) lets a new consumer take 5.
- ``global=true``, count > 0: the channel's consumers share ``count`` unacked deliveries.
  When the limit switches on, its volume starts at the channel's current unacked count
  (basic.get deliveries included, ``limit_prefetch/3``); changing an active limit keeps the
  volume. count 0 unlimits.
- Volume grows only by ack-requiring consumer deliveries while active, and shrinks by
  settled consumer deliveries (basic.get settlements do not count: ``notify_limiter``).
- A no-ack consumer ignores its own prefetch and never adds to the volume, but is still held
  back while the shared volume is at the limit (``rabbit_limiter`` ``can_send``).
- basic.get ignores qos entirely.
"""

from __future__ import annotations


class Limiter:
    __slots__ = ("consumer_prefetch", "global_limit", "volume")

    def __init__(self) -> None:
        self.consumer_prefetch = 0
        self.global_limit = 0  # 0 = inactive
        self.volume = 0

    @property
    def active(self) -> bool:
        return self.global_limit > 0

    def qos(self, prefetch_count: int, global_: bool, unacked_count: int) -> None:
        if not global_:
            self.consumer_prefetch = prefetch_count
            self._unlimit()
        elif prefetch_count == 0:
            self._unlimit()
        else:
            if not self.active:
                self.volume = unacked_count
            self.global_limit = prefetch_count

    def _unlimit(self) -> None:
        self.global_limit = 0
        self.volume = 0

    def can_send(self) -> bool:
        return self.global_limit == 0 or self.volume < self.global_limit

    def sent(self) -> None:
        """An ack-requiring consumer delivery went out."""
        if self.global_limit:
            self.volume += 1

    def settled(self, count: int) -> bool:
        """``count`` consumer deliveries were settled; True if that reopened the limit."""
        if not self.global_limit or count == 0:
            return False
        was_full = self.volume >= self.global_limit
        self.volume = max(0, self.volume - count)
        return was_full and self.volume < self.global_limit
