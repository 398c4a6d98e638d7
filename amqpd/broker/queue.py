"""Queue: ready messages, unacked messages and consumers of one queue.

Rules of this module:
- The Queue is the one owner of its messages and its consumer list. Consumers (the session's
  objects) are told about deliveries through the ``Consumer`` protocol and never touch the
  queue's state directly. Which consumer gets the next message (consumer priorities, single
  active consumer) is ``ConsumerSet``'s business (consumers.py).
- A consumer whose ``ready()`` said no is parked (consumers.py) and not asked again until
  the queue is told it may be ready: ``unblock(consumer)`` (the session, when it gave that
  consumer credit back) or ``dispatch(now)``, which re-examines every parked consumer. A
  publish, a requeue and ``dispatch(now, recheck=False)`` ask only the unparked ones, so
  their cost does not grow with the number of busy consumers.
- Every message gets a sequence number on enqueue. Ready messages live in a ready store
  (ready.py): a requeued message goes back to its ORIGINAL position (RabbitMQ since 2.7.0,
  docs "Negative Acknowledgement and Requeuing"), O(log n) per requeue; with
  x-max-priority, higher priorities first and FIFO within one.
- Unacked entries (delivered or got, not yet settled) are kept by seq.
- Paging (``paging``, set when the broker has a data directory) is the ready store's
  business (ready.py): it counts its entries in memory against the budget and keeps those
  beyond it in a delta on disk. The queue sees every entry the same, in order: counts and
  length limits include the delta's.
- A restart may hand a queue its recovered messages as ranges of the log instead of one
  ``enqueue`` each (``restore_logged``; restore.py): only a plain FIFO (no x-max-priority)
  without length limits or TTL, and only while it is empty. Its entries get the seqs
  they would have had, and its count and body bytes are counted as enqueued.
- Settings: TTL, x-expires, length limits and the DLX come from ``settings``, the x-args
  combined with the policy that applies (queue_settings.py); ``apply_policy`` re-applies
  a changed policy to the live queue.
- Length limits (length_limits.py) count READY messages and body bytes only: drop-head
  drops from the head after a publish or requeue; reject-publish(-dlx) refuses the
  publish that would overflow before any delivery attempt (will_overflow/2), and
  ``enqueue`` returns False so the session can nack it; -dlx also dead-letters it (reason
  ``maxlen``); it never drops from the head.
- TTL (reference 2.2): an entry's expiry is fixed at enqueue (expiry.py) and kept across
  requeues. Expired messages are never delivered nor got; as in classic queues they are
  removed (dead-lettered, reason ``expired``) only at the head: before each delivery and
  basic.get, after a publish or requeue, and by ``tick`` at the head's expiry. A fresh
  publish handed straight to a ready consumer is delivered whatever its TTL: TTL 0 means
  "expires unless a consumer takes it at once" (rabbit_amqqueue_process:deliver_or_enqueue
  tries delivery before the TTL applies).
- Queue expiry (x-expires): the queue is deleted (``on_unused``, no dead-lettering) once it
  has had no consumers and no declare or basic.get for that long.
- Time comes in as ``now`` (monotonic seconds). Each method that needs it takes
  ``now: float | None``; None means "the latest time this queue was given" (expiry.py).
- Deadlines: ``next_deadline()`` is the head's expiry or the end of the x-expires lease;
  whenever it may have moved EARLIER than what was last reported, the queue calls
  ``on_deadline(queue, deadline)`` (the vhost's timer heap); a deadline that moved later is
  found out when the old one fires and ``tick(now)`` reports the new one.
- Never calls into the vhost except through the hooks ``on_unused`` (auto-delete, x-expires),
  ``on_dead_letter`` and ``on_deadline``. Hooks run after the queue's state is consistent,
  so they may re-enter it (a dead-letter loop through the same queue).
- ``journal`` (a ``QueueJournal``, set on durable queues when the broker has a data
  directory) is told about the first delivery of each message and about every message that
  leaves the queue for good (ack, discard, drop-head, reject-publish never enters, expiry at
  the head, purge). Any new path that removes a message for good must call
  ``self._removed``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from amqpd.broker.arguments import is_int
from amqpd.broker.consumers import ConsumerSet
from amqpd.broker.durability import QueueJournal
from amqpd.broker.expiry import QueueClock
from amqpd.broker.length_limits import LengthLimits
from amqpd.broker.message import Message
from amqpd.broker.paging import Paging
from amqpd.broker.policies import Policy
from amqpd.broker.queue_settings import QueueSettings, effective_settings
from amqpd.broker.ready import LoggedPart, PriorityReady, ReadyFifo, ReadyStore
from amqpd.errors import AccessRefused

# (queue, message, reason, now): reason is an x-death reason ("rejected", "expired",
# "maxlen"); the vhost republishes through the queue's dead-letter exchange.
DeadLetterHook = Callable[["Queue", Message, str, float], None]
DeadlineHook = Callable[["Queue", float], None]
_PURGE_CHUNK = 4096  # stored ids per MessagesRemoved record when a purge logs them


def _int_arg(value: object) -> int | None:
    return int(value) if isinstance(value, int) and is_int(value) else None


def _truthy(value: object) -> bool:
    return value is True


# Not attrs.frozen, though nobody changes one (a requeue makes a new entry): one is built
# per message and queue, and a frozen class's __init__ costs a setattr call per field.
@attrs.define(slots=True, unsafe_hash=True)
class QueuedMessage:
    message: Message
    seq: int
    redelivered: bool = False
    # Monotonic time at which the message expires (None: never); fixed at enqueue.
    expires_at: float | None = None


class RestoredPart(LoggedPart, Protocol):
    """What ``restore_logged`` needs of a restored tail (restore.RestoredTail)."""

    first_seq: int
    body_bytes: int


class Consumer(Protocol):
    """What a queue needs from a consumer (the session implements it)."""

    tag: str
    exclusive: bool
    priority: int  # the x-priority consume argument (0 without it)
    # basic.consume no-ack: a delivery settles the message at once; the queue does that
    # before ``deliver`` and keeps no unacked entry.
    no_ack: bool

    def ready(self) -> bool:
        """May this consumer take another delivery now (qos credit, flow)?

        Once this says no, the queue does not ask again until ``Queue.unblock`` names the
        consumer or ``Queue.dispatch`` runs with ``recheck`` (see the module rules).
        """
        ...

    def deliver(self, queue: Queue, entry: QueuedMessage) -> None:
        """Deliver ``entry``; the queue has already put it in its unacked set (or, for a
        no-ack consumer, settled it).

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
    expired: int = 0


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
        now: float = 0.0,
        policy: Policy | None = None,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: Mapping[str, Any] = dict(arguments or {})
        self.queue_type = queue_type
        self.deleted = False
        # Called once when the queue is no longer wanted: an auto-delete queue lost its last
        # consumer, or the x-expires lease ran out (the vhost deletes it).
        self.on_unused: Callable[[Queue], None] | None = None
        self.on_dead_letter: DeadLetterHook | None = None
        self.on_deadline: DeadlineHook | None = None
        # The durable log's view of this queue (durable queues with a data directory only).
        self.journal: QueueJournal | None = None
        # The broker's memory budget for ready entries (paging.py), when it has a data dir.
        self._paging: Paging | None = None

        # The x-args combined with the policy that applies (queue_settings.py): what the
        # clock, the length limits and dead-lettering run on; apply_policy changes it.
        self.policy = policy
        self.settings: QueueSettings = effective_settings(self.arguments, policy)
        self._time = QueueClock({}, now)
        self._time.set_limits(self.settings.message_ttl, self.settings.expires)
        self._next_seq = 1
        args = self.arguments
        max_priority = _int_arg(args.get("x-max-priority"))
        # x-max-priority 0 has a single level: a plain FIFO behaves the same, faster.
        self._ready: ReadyStore = PriorityReady(max_priority) if max_priority else ReadyFifo()
        self._unacked: dict[int, QueuedMessage] = {}
        self._consumers = ConsumerSet(single_active=_truthy(args.get("x-single-active-consumer")))
        self._had_consumer = False
        self._exclusive_consumer: Consumer | None = None
        self._published = 0
        self._delivered = 0
        self._acked = 0
        self._dropped = 0
        self._rejected = 0
        self._expired = 0
        self._ready_bytes = 0
        self._limits = LengthLimits.from_settings(self.settings)

    @property
    def paging(self) -> Paging | None:
        return self._paging

    @paging.setter
    def paging(self, paging: Paging | None) -> None:
        # The ready store counts what it holds in memory against the budget (ready.py).
        self._paging = paging
        if paging is not None:
            self._ready.attach_paging(paging)

    # -- introspection -----------------------------------------------------------------------
    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Ready messages (what queue.declare-ok and basic.get-ok report).

        Expired messages not yet at the head still count, as in RabbitMQ.
        """
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

    @property
    def single_active_consumer(self) -> Consumer | None:
        """With x-single-active-consumer: the consumer that gets the deliveries."""
        return self._consumers.active

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
            expired=self._expired,
        )

    # -- time --------------------------------------------------------------------------------
    def _clock(self, now: float | None) -> float:
        return self._time.advance(now)

    def next_deadline(self) -> float | None:
        """When ``tick`` must run: the head's expiry or the end of the x-expires lease."""
        deadline: float | None = None
        if self._time.expiring:
            head = self._ready.peek()
            if head is not None:
                deadline = head.expires_at
        lease = None if self._consumers else self._time.lease_end()
        if lease is not None and (deadline is None or lease < deadline):
            deadline = lease
        return deadline

    @property
    def scheduled_deadline(self) -> float | None:
        """The earliest deadline reported through ``on_deadline`` and not yet ticked."""
        return self._time.scheduled

    def tick(self, now: float) -> None:
        """Expire messages at the head and the queue itself, as due at ``now``."""
        now = self._clock(now)
        self._time.scheduled = None
        if self.deleted:
            return
        self._expire_head(now)
        lease = None if self._consumers else self._time.lease_end()
        if lease is not None and now >= lease:
            # x-expires: deleted, messages and all, without dead-lettering (docs "Queue TTL").
            if self.on_unused is not None:
                self.on_unused(self)
            return
        self._reschedule()

    def apply_policy(self, policy: Policy | None, now: float | None = None) -> None:
        """The policy that applies to this queue changed (added, edited, removed).

        rabbit_amqqueue_process:process_args_policy/1, in its order: the x-expires timer
        restarts from now (init_exp/2; oracle: a policy ``expires`` counts from the policy
        change), the DLX and DLRK apply to the next dead-lettering, a new TTL to the next
        publishes only, new length limits drop from the head at once (init_max_length/2)
        when the overflow behaviour before *or* after is drop-head (the limits are set
        before the overflow, init_overflow/2; oracle: {max-length 2, overflow
        reject-publish} on a drop-head queue of 5 leaves 2, max-length 2 on a
        reject-publish queue of 5 leaves 5), then expired messages at the head go
        (drop_expired_msgs/1).
        """
        now = self._clock(now)
        before = self.settings
        self.policy = policy
        settings = self.settings = effective_settings(self.arguments, policy)
        if self.deleted:
            return
        self._time.set_limits(settings.message_ttl, settings.expires)
        self._time.last_used = now
        limits = self._limits = LengthLimits.from_settings(settings)
        if limits is not None and (before.drop_head or settings.drop_head):
            self._drop_over_limits(limits, now)
        self._expire_head(now)
        self._reschedule()  # an earlier deadline (a shorter lease) is reported here

    def touch(self, now: float | None = None) -> None:
        """A queue.declare (passive or not): renews the x-expires lease."""
        self._time.last_used = self._clock(now)
        self._reschedule()

    def _reschedule(self) -> None:
        if self.deleted or self.on_deadline is None:
            return
        deadline = self.next_deadline()
        if deadline is not None and self._time.to_report(deadline):
            self.on_deadline(self, deadline)

    def _expire_head(self, now: float) -> None:
        # rabbit_amqqueue_process:drop_expired_msgs/2: from the head only.
        if not self._time.expiring:
            return
        ready = self._ready
        while True:
            head = ready.peek()
            if head is None or head.expires_at is None or head.expires_at > now:
                return
            self._take()
            self._expired += 1
            self._removed(head)
            if self.on_dead_letter is not None:
                self.on_dead_letter(self, head.message, "expired", now)

    # -- messages ----------------------------------------------------------------------------
    def enqueue(
        self, message: Message, now: float | None = None, *, redelivered: bool = False
    ) -> bool:
        """Add a message; delivered at once if a consumer is ready.

        False when the queue refused it (overflow reject-publish / reject-publish-dlx): the
        publisher gets a basic.nack if it uses confirms. ``redelivered`` is for messages
        recovered from disk that had been delivered before.
        """
        if self.deleted:
            # A publish routed before the queue went (e.g. held in a tx until commit) is
            # dropped with it, as RabbitMQ drops deliveries to a dead queue process.
            return True
        time = self._time
        now = time.advance(now)
        limits = self._limits
        if (
            limits is not None
            and limits.reject_publish
            and limits.would_overflow(len(self._ready), self._ready_bytes, message.size)
        ):
            self._rejected += 1
            if limits.reject_dlx and self.on_dead_letter is not None:
                self.on_dead_letter(self, message, "maxlen", now)
            return False
        seq = self._next_seq
        self._next_seq = seq + 1
        self._published += 1
        # No TTL at all is the common case: skip the expiry arithmetic (and its call).
        if time.ttl_ms is None and message.expiration_ms is None:
            entry = QueuedMessage(message, seq, redelivered)
        else:
            entry = QueuedMessage(message, seq, redelivered, time.expiry(message, now))
        ready = self._ready
        if self._consumers and not len(ready):
            consumer = self._consumers.next_ready()
            if consumer is not None:
                self._hand_to(consumer, entry)
                return True
        ready.append(entry)
        self._ready_bytes += message.size
        self._settle_head(now)
        return True

    def accepts_logged(self) -> bool:
        """May ``restore_logged`` hand this queue its messages as ranges of the log? Not
        when it needs each one enqueued: priorities, length limits, a TTL, or messages
        already there; nor under body-only paging (no delta files), which counts every
        ready body, read or not."""
        ready = self._ready
        paging = self._paging
        return (
            isinstance(ready, ReadyFifo)
            and (paging is None or paging.deltas is not None)
            and self._limits is None
            and not self._time.expiring
            and not len(ready)
            and not self.deleted
        )

    def restore_logged(self, part: RestoredPart) -> None:
        """Restore: ``part``, this queue's recovered messages left in the log, becomes its
        ready backlog, as if each had been enqueued (no consumer, limit or TTL to apply;
        ``accepts_logged`` said so)."""
        ready = self._ready
        assert isinstance(ready, ReadyFifo) and self.accepts_logged()
        count = len(part)
        part.first_seq = self._next_seq
        self._next_seq += count
        self._published += count
        self._ready_bytes += part.body_bytes
        ready.attach_logged(part)

    def _settle_head(self, now: float) -> None:
        """After a publish or requeue: drop over the limits, expire, then deliver.

        rabbit_amqqueue_process:requeue_and_run/2 runs maybe_drop_head, drop_expired_msgs,
        then run_message_queue: a requeue that overflows drops the (requeued) head even when
        a consumer could take it (oracle: x-max-length 1, nack of the delivered m0 with m1
        ready: m0 is dropped, m1 delivered).
        """
        if self._limits is not None:
            self._drop_head(self._limits, now)
        if self._time.expiring:
            self._expire_head(now)
        if self._consumers:
            self.dispatch(now, recheck=False)
        if self._time.expiring:
            self._reschedule()

    def _drop_head(self, limits: LengthLimits, now: float) -> None:
        # rabbit_amqqueue_process:maybe_drop_head/1: only under drop-head. With
        # reject-publish(-dlx) the limits are enforced at publish only: a requeue past the
        # limit drops nothing (oracle: x-max-length 1, reject-publish, a nacked m0 comes
        # back beside m1: 2 ready).
        if not limits.reject_publish:
            self._drop_over_limits(limits, now)

    def _drop_over_limits(self, limits: LengthLimits, now: float) -> None:
        # maybe_drop_head/2: drop (dead-letter, reason maxlen) the oldest ready messages
        # until both limits hold.
        while limits.over(len(self._ready), self._ready_bytes):
            entry = self._take()
            if entry is None:
                return
            self._dropped += 1
            self._removed(entry)
            if self.on_dead_letter is not None:
                self.on_dead_letter(self, entry.message, "maxlen", now)

    def _take(self) -> QueuedMessage | None:
        """Remove and return the next ready entry in delivery order."""
        entry = self._ready.take()
        if entry is not None:
            self._ready_bytes -= entry.message.size
        return entry

    def _hand_to(self, consumer: Consumer, entry: QueuedMessage) -> None:
        self._delivered += 1
        journal = self.journal
        if consumer.no_ack:
            # Settled as it goes out (the ack of ``ack`` without the unacked round trip).
            self._acked += 1
            if journal is not None and entry.message.store_id:
                # Removed at once: no delivered marker first (the log would drop it anyway).
                journal.removed_one(entry.message)
            consumer.deliver(self, entry)
            return
        self._unacked[entry.seq] = entry
        if journal is not None and not entry.redelivered:
            journal.delivered(entry)
        consumer.deliver(self, entry)

    def get(self, now: float | None = None) -> QueuedMessage | None:
        """basic.get: the next message, now unacked (the session acks at once for no-ack).

        Counts as use of the queue for x-expires, even when it finds nothing.
        """
        now = self._clock(now)
        self._time.last_used = now
        self._expire_head(now)
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
            self.journal.removed_one(entry.message)

    def ack(self, entry: QueuedMessage) -> None:
        """Settle an unacked entry (basic.ack, or no-ack delivery)."""
        if self._unacked.pop(entry.seq, None) is not None:
            self._acked += 1
            self._removed(entry)

    def discard(self, entry: QueuedMessage, now: float | None = None) -> None:
        """Reject without requeue: dead-lettered with reason ``rejected``."""
        if self._unacked.pop(entry.seq, None) is None:
            return
        self._removed(entry)
        if self.on_dead_letter is not None:
            self.on_dead_letter(self, entry.message, "rejected", self._clock(now))

    def requeue(self, entries: Iterable[QueuedMessage], now: float | None = None) -> None:
        """Put unacked entries back at their original position, redelivered=True.

        They keep their original expiry (docs "Time-To-Live and Expiration").
        """
        now = self._clock(now)
        ready = self._ready
        for entry in entries:
            if self._unacked.pop(entry.seq, None) is None:
                continue  # already settled (or purged with the queue): nothing to put back
            ready.put_back(QueuedMessage(entry.message, entry.seq, True, entry.expires_at))
            self._ready_bytes += entry.message.size
        self._settle_head(now)

    def purge(self) -> int:
        """Drop every ready message (unacked ones stay, as in RabbitMQ); returns the count."""
        count = self.message_count
        journal = self.journal
        ready = self._ready
        logged = ready.take_logged() if isinstance(ready, ReadyFifo) else None
        if logged is not None:
            # Restored messages still in the log: their ids, without reading them back.
            if journal is not None:
                ids, segments = logged.stored()
                for i in range(0, len(ids), _PURGE_CHUNK):
                    journal.removed_stored(
                        ids[i : i + _PURGE_CHUNK], segments[i : i + _PURGE_CHUNK]
                    )
            logged.clear()
        if journal is not None:
            # Every stored id is logged as removed; read in chunks (a backlog's entries in
            # a delta are read back from disk), so a huge purge never holds them all.
            entries = []
            while (entry := self._ready.take()) is not None:
                entries.append(entry)
                if len(entries) >= _PURGE_CHUNK:
                    journal.removed(entries)
                    entries = []
            journal.removed(entries)
        self._ready.clear()
        self._ready_bytes = 0
        return count

    # -- consumers ---------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer, now: float | None = None) -> None:
        """Attach a consumer (basic.consume); 403 on an exclusive-consumer conflict."""
        # rabbit_queue_consumers / rabbit_amqqueue_process: an exclusive consumer needs the
        # queue to itself, and nobody may join a queue that has one.
        if self._exclusive_consumer is not None or (consumer.exclusive and self._consumers):
            raise AccessRefused(f"{self.resource()} in exclusive use")
        self._clock(now)
        if consumer.exclusive:
            self._exclusive_consumer = consumer
        self._consumers.add(consumer, consumer.priority)
        self._had_consumer = True
        self.dispatch(recheck=False)  # only the newcomer can change anything

    def remove_consumer(self, consumer: Consumer, now: float | None = None) -> None:
        """Detach a consumer (basic.cancel, channel close). Auto-delete when the last goes."""
        now = self._clock(now)
        if not self._consumers.remove(consumer):
            return
        if self._exclusive_consumer is consumer:
            self._exclusive_consumer = None
        if self._consumers:
            # A single-active hand-over does not run the queue: the new active consumer gets
            # the ready messages at the next queue event (publish, settle, requeue, channel
            # down). RabbitMQ 3.13 rabbit_amqqueue_process basic_cancel replies without
            # run_message_queue (4.x runs it); oracle: pika's channel.close cancels first,
            # and the requeued message still comes to the new active consumer first.
            return
        # Auto-delete: "the queue is deleted when its last consumer is cancelled", only if it
        # ever had one (spec queue.declare auto-delete; RabbitMQ semantics).
        if self.auto_delete and self.on_unused is not None:
            self.on_unused(self)
            return
        # Unused from now on: the x-expires lease starts.
        self._time.last_used = now
        self._reschedule()

    def unblock(self, consumer: Consumer) -> None:
        """``consumer`` may take deliveries again (credit given back, consume-ok sent).

        Delivers nothing by itself: call ``dispatch(now, recheck=False)`` next.
        """
        self._consumers.unblock(consumer)

    def dispatch(self, now: float | None = None, *, recheck: bool = True) -> None:
        """Deliver ready messages while some consumer can take one (consumers.py decides).

        ``recheck`` asks the parked consumers again too (a caller that changed some
        consumer's readiness without ``unblock``-ing it); ``recheck=False`` only the others.
        """
        consumers = self._consumers
        if not consumers:
            return
        if recheck:
            consumers.unblock_all()
        now = self._clock(now)
        ready = self._ready
        clock = self._time
        while len(ready):
            if clock.expiring:
                self._expire_head(now)
                if not len(ready):
                    return
            consumer = consumers.next_ready()
            if consumer is None:
                return
            entry = self._take()
            assert entry is not None
            self._hand_to(consumer, entry)

    def delete(self) -> int:
        """Mark deleted, cancel every consumer; returns the ready message count dropped.

        Called by the vhost, which also removes the queue's bindings.
        """
        if self.deleted:
            return 0
        self.deleted = True
        self._time.scheduled = None
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
