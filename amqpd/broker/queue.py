"""Queue: ready messages, unacked messages and consumers of one queue.

Rules of this module:
- The Queue is the one owner of its messages and its consumer list. Consumers (the session's
  objects) are told about deliveries through the ``Consumer`` protocol and never touch the
  queue's state directly.
- Every message gets a sequence number on enqueue. Ready messages live in a ready store
  (ready.py): a requeued message goes back to its ORIGINAL position (RabbitMQ since 2.7.0,
  docs "Negative Acknowledgement and Requeuing"), O(log n) per requeue; with
  x-max-priority, higher priorities first and FIFO within one.
- Unacked entries (delivered or got, not yet settled) are kept by seq.
- Length limits (x-max-length, x-max-length-bytes; docs "Queue Length Limit") count READY
  messages only (unacked ones do not) and body bytes only. Overflow drop-head drops from the
  head after a publish or requeue; reject-publish / reject-publish-dlx refuse the publish
  that would overflow (checked before any delivery attempt, as rabbit_amqqueue_process
  will_overflow/2 does), and ``enqueue`` returns False so the session can nack it.
- Never calls into the vhost except through ``on_unused``, the auto-delete hook, and
  ``on_dead_letter``, the dead-letter hook (unset until dead-lettering lands).
- ``journal`` (a ``QueueJournal``, set on durable queues when the broker has a data
  directory) is told about the first delivery of each message and about every message that
  leaves the queue for good (ack, discard, drop-head, purge). Any new path that removes a
  message for good (expiry, ...) must call ``self._removed``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from amqpd.broker.arguments import is_int
from amqpd.broker.durability import QueueJournal
from amqpd.broker.message import Message
from amqpd.broker.ready import PriorityReady, ReadyFifo, ReadyStore
from amqpd.errors import AccessRefused

# Why a message leaves a queue without being acked (x-death "reason" values).
DeadLetterHook = Callable[["Queue", Message, str], None]


def _int_arg(value: object) -> int | None:
    return int(value) if isinstance(value, int) and is_int(value) else None


@attrs.frozen(slots=True)
class QueuedMessage:
    message: Message
    seq: int
    redelivered: bool = False


class Consumer(Protocol):
    """What a queue needs from a consumer (the session implements it)."""

    tag: str
    exclusive: bool

    def ready(self) -> bool:
        """May this consumer take another delivery now (qos credit, flow)?"""
        ...

    def deliver(self, queue: Queue, entry: QueuedMessage) -> None:
        """Deliver ``entry``; the queue has already put it in its unacked set.

        Must not call back into ``queue.dispatch``.
        """
        ...

    def cancelled_by_server(self, queue: Queue) -> None:
        """The queue was deleted; the consumer is gone from it."""
        ...


@attrs.frozen(slots=True)
class QueueStatistics:
    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    published: int
    delivered: int
    acked: int
    messages_ready_bytes: int
    dropped: int
    rejected: int


class Queue:
    def __init__(
        self,
        name: str,
        *,
        vhost: str = "/",
        durable: bool = False,
        exclusive_owner: Hashable | None = None,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        queue_type: str = "classic",
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: Mapping[str, Any] = dict(arguments or {})
        self.queue_type = queue_type
        self.deleted = False
        # Called once when an auto-delete queue loses its last consumer (the vhost deletes
        # it); None for queues nobody registered.
        self.on_unused: Callable[[Queue], None] | None = None
        # Called with (queue, message, reason) for a message dropped by max-length
        # ("maxlen") or rejected without requeue ("rejected"); the DLX issue sets it.
        self.on_dead_letter: DeadLetterHook | None = None
        # The durable log's view of this queue (durable queues with a data directory only).
        self.journal: QueueJournal | None = None

        self._next_seq = 1
        max_priority = _int_arg(self.arguments.get("x-max-priority"))
        # x-max-priority 0 has a single level: a plain FIFO behaves the same, faster.
        self._ready: ReadyStore = PriorityReady(max_priority) if max_priority else ReadyFifo()
        self._unacked: dict[int, QueuedMessage] = {}
        self._consumers: deque[Consumer] = deque()
        self._had_consumer = False
        self._exclusive_consumer: Consumer | None = None
        self._published = 0
        self._delivered = 0
        self._acked = 0
        self._dropped = 0
        self._rejected = 0
        self._ready_bytes = 0
        args = self.arguments
        self._max_length = _int_arg(args.get("x-max-length"))
        self._max_bytes = _int_arg(args.get("x-max-length-bytes"))
        self._limited = self._max_length is not None or self._max_bytes is not None
        overflow = args.get("x-overflow", "drop-head")
        if isinstance(overflow, bytes):
            overflow = overflow.decode()
        self._reject_publish = overflow in ("reject-publish", "reject-publish-dlx")

    # -- introspection -----------------------------------------------------------------------
    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Ready messages (what queue.declare-ok and basic.get-ok report)."""
        return len(self._ready)

    @property
    def unacked_count(self) -> int:
        return len(self._unacked)

    @property
    def consumer_count(self) -> int:
        return len(self._consumers)

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(self._consumers)

    def resource(self) -> str:
        """RabbitMQ's rabbit_misc:rs/1 rendering, used in error texts."""
        return f"queue '{self.name}' in vhost '{self.vhost}'"

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            name=self.name,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            messages_ready=self.message_count,
            messages_unacknowledged=len(self._unacked),
            consumers=len(self._consumers),
            published=self._published,
            delivered=self._delivered,
            acked=self._acked,
            messages_ready_bytes=self._ready_bytes,
            dropped=self._dropped,
            rejected=self._rejected,
        )

    # -- messages ----------------------------------------------------------------------------
    def enqueue(self, message: Message, *, redelivered: bool = False) -> bool:
        """Add a message; delivered at once if a consumer is ready.

        False when the queue refused it (overflow reject-publish / reject-publish-dlx): the
        publisher gets a basic.nack if it uses confirms. ``redelivered`` is for messages
        recovered from disk that had been delivered before.
        """
        if self.deleted:
            # A publish routed before the queue went (e.g. held in a tx until commit) is
            # dropped with it, as RabbitMQ drops deliveries to a dead queue process.
            return True
        if self._limited and self._reject_publish and self._would_overflow(message):
            self._rejected += 1
            return False
        seq = self._next_seq
        self._next_seq = seq + 1
        self._published += 1
        self._ready.append(QueuedMessage(message, seq, redelivered))
        self._ready_bytes += len(message.body)
        if self._consumers:
            self.dispatch()
        if self._limited:
            self._drop_head()
        return True

    def _would_overflow(self, message: Message) -> bool:
        # rabbit_amqqueue_process:will_overflow/2: would this publish exceed a limit?
        if self._max_length is not None and self.message_count + 1 > self._max_length:
            return True
        return (
            self._max_bytes is not None and self._ready_bytes + len(message.body) > self._max_bytes
        )

    def _drop_head(self) -> None:
        # rabbit_amqqueue_process:maybe_drop_head/2: drop (dead-letter, reason maxlen) the
        # oldest ready messages until both limits hold. With reject-publish the limits are
        # enforced at publish, but a requeue can still overflow: drop then too.
        max_length, max_bytes = self._max_length, self._max_bytes
        while (max_length is not None and self.message_count > max_length) or (
            max_bytes is not None and self._ready_bytes > max_bytes
        ):
            entry = self._take()
            if entry is None:
                return
            self._dropped += 1
            self._removed(entry)
            if self.on_dead_letter is not None:
                self.on_dead_letter(self, entry.message, "maxlen")

    def _take(self) -> QueuedMessage | None:
        """Remove and return the next ready entry in delivery order."""
        entry = self._ready.take()
        if entry is not None:
            self._ready_bytes -= len(entry.message.body)
        return entry

    def get(self) -> QueuedMessage | None:
        """basic.get: the next message, now unacked (the session acks at once for no-ack)."""
        entry = self._take()
        if entry is None:
            return None
        self._unacked[entry.seq] = entry
        self._delivered += 1
        if self.journal is not None and not entry.redelivered:
            self.journal.delivered(entry)
        return entry

    def _removed(self, entry: QueuedMessage) -> None:
        """``entry`` left this queue for good: tell the durable log, if it holds it."""
        if self.journal is not None and entry.message.store_id:
            self.journal.removed((entry,))

    def ack(self, entry: QueuedMessage) -> None:
        """Settle an unacked entry (basic.ack, or no-ack delivery)."""
        if self._unacked.pop(entry.seq, None) is not None:
            self._acked += 1
            self._removed(entry)

    def discard(self, entry: QueuedMessage) -> None:
        """Reject without requeue: dead-lettered with reason ``rejected`` (if a hook is set)."""
        if self._unacked.pop(entry.seq, None) is None:
            return
        self._removed(entry)
        if self.on_dead_letter is not None:
            self.on_dead_letter(self, entry.message, "rejected")

    def requeue(self, entries: Iterable[QueuedMessage]) -> None:
        """Put unacked entries back at their original position, redelivered=True."""
        ready = self._ready
        for entry in entries:
            if self._unacked.pop(entry.seq, None) is None:
                continue  # already settled (or purged with the queue): nothing to put back
            ready.put_back(QueuedMessage(entry.message, entry.seq, True))
            self._ready_bytes += len(entry.message.body)
        if self._consumers:
            self.dispatch()
        if self._limited:
            self._drop_head()

    def purge(self) -> int:
        """Drop every ready message (unacked ones stay, as in RabbitMQ); returns the count."""
        count = self.message_count
        journal = self.journal
        if journal is not None:
            entries = []
            while (entry := self._ready.take()) is not None:
                entries.append(entry)
            journal.removed(entries)
        self._ready.clear()
        self._ready_bytes = 0
        return count

    # -- consumers ---------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        """Attach a consumer (basic.consume); 403 on an exclusive-consumer conflict."""
        # rabbit_queue_consumers / rabbit_amqqueue_process: an exclusive consumer needs the
        # queue to itself, and nobody may join a queue that has one.
        if self._exclusive_consumer is not None or (consumer.exclusive and self._consumers):
            raise AccessRefused(f"{self.resource()} in exclusive use")
        if consumer.exclusive:
            self._exclusive_consumer = consumer
        self._consumers.append(consumer)
        self._had_consumer = True
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Detach a consumer (basic.cancel, channel close). Auto-delete when the last goes."""
        try:
            self._consumers.remove(consumer)
        except ValueError:
            return
        if self._exclusive_consumer is consumer:
            self._exclusive_consumer = None
        # Auto-delete: "the queue is deleted when its last consumer is cancelled", only if it
        # ever had one (spec queue.declare auto-delete; RabbitMQ semantics).
        if self.auto_delete and not self._consumers and self.on_unused is not None:
            self.on_unused(self)

    def dispatch(self) -> None:
        """Deliver ready messages round robin while some consumer is ready."""
        consumers = self._consumers
        idle = 0
        # Structured as "pick the next consumer, then hand it one message" so consumer
        # priorities and single-active-consumer can later replace the picking step only.
        while consumers and len(self._ready):
            consumer = consumers[0]
            consumers.rotate(-1)
            if not consumer.ready():
                idle += 1
                if idle >= len(consumers):
                    return
                continue
            idle = 0
            entry = self._take()
            assert entry is not None
            self._unacked[entry.seq] = entry
            self._delivered += 1
            if self.journal is not None and not entry.redelivered:
                self.journal.delivered(entry)
            consumer.deliver(self, entry)

    def delete(self) -> int:
        """Mark deleted, cancel every consumer; returns the ready message count dropped.

        Called by the vhost, which also removes the queue's bindings.
        """
        if self.deleted:
            return 0
        self.deleted = True
        count = self.message_count
        consumers = list(self._consumers)
        self._consumers.clear()
        self._exclusive_consumer = None
        self._ready.clear()
        self._ready_bytes = 0
        self._unacked.clear()
        for consumer in consumers:
            consumer.cancelled_by_server(self)
        return count

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={self.message_count} unacked={len(self._unacked)}>"
