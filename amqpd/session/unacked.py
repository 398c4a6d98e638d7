"""Per-channel bookkeeping of deliveries awaiting basic.ack / nack / reject.

Rules of this module (RabbitMQ ``rabbit_channel``: ``unacked_message_q``, ``collect_acks/3``):
- Delivery tags are per channel, 64-bit, start at 1 and only grow; basic.deliver and
  basic.get-ok share the sequence. The channel hands out tags; this tracker only records the
  ones that await an ack (no-ack deliveries never enter it).
- ``collect(tag, multiple)``:
  * ``multiple=False``: exactly that tag.
  * ``multiple=True``: every outstanding tag up to and including ``tag``; ``tag`` itself must
    be outstanding (RabbitMQ walks the queue until it meets the tag and fails if it never
    does, even when smaller tags were collected on the way).
  * ``tag == 0`` with ``multiple=True``: everything outstanding, even nothing (AMQP 0-9-1
    basic.ack "delivery-tag" rule; the oracle accepts it on an empty channel).
  * anything else: 406 PRECONDITION_FAILED "unknown delivery tag N" (this covers a double ack
    and a tag from another channel, reference 2.6).
- Records come back oldest first (ascending tag), the order RabbitMQ settles acks in.
- The records are kept in an OrderedDict in ascending tag order, so a single ack is O(1)
  and a multiple ack is O(number acked). Not a plain dict: iterating a dict walks the
  slots of the records already removed from its front until the next resize, which made
  each multiple ack O(number acked since then) (benchmarks/scaling.py "unacked").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from amqpd.errors import PreconditionFailed


class Unacked:
    """One delivery awaiting settlement.

    ``queue`` and ``entry`` are what ``Queue.ack/requeue/discard`` take; ``consumer`` is the
    channel's consumer it went to (``None`` for basic.get), whose prefetch credit the
    settlement gives back.
    """

    __slots__ = ("consumer", "entry", "queue", "tag")

    def __init__(self, tag: int, queue: Any, entry: Any, consumer: Any) -> None:
        self.tag = tag
        self.queue = queue
        self.entry = entry
        self.consumer = consumer

    def __repr__(self) -> str:
        return f"Unacked({self.tag}, consumer={getattr(self.consumer, 'tag', None)!r})"


class UnackedTracker:
    """Outstanding deliveries of one channel, keyed by delivery tag (ascending)."""

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: OrderedDict[int, Unacked] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Unacked]:
        return iter(self._records.values())

    def __contains__(self, tag: object) -> bool:
        return tag in self._records

    def add(self, record: Unacked) -> None:
        # Tags come from the channel's counter, so insertion order is ascending order.
        self._records[record.tag] = record

    def collect(self, tag: int, multiple: bool) -> list[Unacked]:
        """Remove and return the records a basic.ack/nack/reject names (see module rules)."""
        records = self._records
        if not multiple:
            record = records.pop(tag, None)
            if record is None:
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            return [record]
        if tag == 0:
            return self.pop_all()
        if tag not in records:
            raise PreconditionFailed(f"unknown delivery tag {tag}")
        collected: list[Unacked] = []
        while True:
            # The oldest record first (O(1) in an OrderedDict); ``tag`` is outstanding, so
            # this stops at it.
            key, record = records.popitem(last=False)
            collected.append(record)
            if key == tag:
                return collected

    def pop_all(self) -> list[Unacked]:
        """Remove and return every record, oldest first (recover, channel close)."""
        collected = list(self._records.values())
        self._records.clear()
        return collected

    def restore(self, records: Iterable[Unacked]) -> None:
        """Put settled-but-uncommitted records back (tx.rollback).

        RabbitMQ merges them back sorted (``lists:usort(AcksL ++ UAMQ)``), so the tracker
        stays in ascending tag order.
        """
        merged = list(self._records.values())
        merged.extend(records)
        merged.sort(key=lambda r: r.tag)
        self._records = OrderedDict((r.tag, r) for r in merged)
