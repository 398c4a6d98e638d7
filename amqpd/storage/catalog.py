"""Catalog: what the durable log says exists, and which records keep which segments alive.

Rules of this module (docs/storage.md "Replay and liveness", "Reclamation"):
- ``apply(entry, segment)`` interprets a replayed record; at run time the durable log calls
  ``apply`` for declarations and deletions and ``hold`` / ``settle`` for messages, with the
  segments the broker names. Both paths tell the log the same liveness (pin / release /
  depend), so what replay rebuilds and what run time kept alive can never disagree.
- A record that creates something (a declare, a binding) pins its segment while that thing
  lives; a message pins its record's segment once per durable queue holding it, and its
  removal from a queue releases that pin. One that ends something (a delete, an unbind, a
  removal, a delivered marker) depends on the segments of what it refers to, so it stays on
  disk exactly as long as the records it cancels do.
- No per-message state at run time: per durable queue (a delayed exchange's store counts
  as one) the catalog keeps only how many of the queue's messages each segment holds. The
  broker knows each message's segment (``Message.store_segment``) and passes it along with
  the id. Deleting a queue releases all its pins at once.
- While replaying, per queue: compact arrays of ids, record locations, record sizes and
  body sizes, in log order (= id order: ids are handed out increasing), and a flag byte
  each (delivered, removed), so a removal is found by bisect; never the content (only
  whether some message of the queue carries a per-message TTL, ``expiring``).
  ``end_replay`` switches to run time; ``replay_done`` drops the arrays once the broker
  has read the messages back or taken them over (``take_replayed``: a restored queue's
  tail as ranges of the log, storage/logtail.py).
- Deleting a queue or an exchange also ends its bindings (and a queue's messages), as the
  broker's vhost does; the broker logs only the delete.
- Entities are keyed by (vhost, name); a record naming something that does not exist (a
  binding to a queue deleted earlier, an ack of an unknown id) changes nothing: log order
  makes that exactly what happened at run time.
- ``amq.*`` exchanges are predeclared in every vhost and never logged; they always exist.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from amqpd.storage.bodies import LOCATION_SHIFT as SEGMENT_SHIFT
from amqpd.storage.entries import (
    BindingAdded,
    BindingRemoved,
    CleanShutdown,
    Entry,
    ExchangeDeclared,
    ExchangeDeleted,
    MessagesDelivered,
    MessagesRemoved,
    QueueDeclared,
    QueueDeleted,
)

BindingKey = tuple[str, str, bool, str, str, bytes]
K = TypeVar("K")


class Liveness(Protocol):
    """What the catalog tells the segment log (log.SegmentLog implements it)."""

    def pin(self, segment: int, count: int = 1) -> None: ...

    def release(self, segment: int, count: int = 1) -> None: ...

    def depend(self, segment: int, targets: set[int]) -> None: ...


class ReplayLiveness:
    """Liveness gathered during replay, before the segment log exists: net pins per
    segment and the distinct (record segment, targets) dependencies (a thousand acks in one
    segment of messages in another are one dependency), handed over by ``transfer``."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}
        self.depends: set[tuple[int, frozenset[int]]] = set()

    def pin(self, segment: int, count: int = 1) -> None:
        self.live[segment] = self.live.get(segment, 0) + count

    def release(self, segment: int, count: int = 1) -> None:
        self.live[segment] = self.live.get(segment, 0) - count

    def depend(self, segment: int, targets: set[int]) -> None:
        targets.discard(segment)
        if targets:
            self.depends.add((segment, frozenset(targets)))

    def transfer(self, log: Liveness) -> None:
        for segment, count in self.live.items():
            assert count >= 0, "released more than pinned"
            if count:
                log.pin(segment, count)
        for segment, targets in sorted(self.depends, key=lambda d: d[0]):
            log.depend(segment, set(targets))


class PublishedAt(NamedTuple):
    """A ``MessagePublished`` record as replay reads it: who holds it and where it is,
    not its content (restore reads that back, broker/restore.py). For ``apply``; the
    durable log's replay calls ``Catalog.published`` with the fields directly."""

    id: int
    vhost: str
    queues: tuple[str, ...]
    where: int  # location of the record (storage.bodies.location), -1 if not known yet
    size: int  # of the whole record, header included
    body_size: int = 0
    expiring: bool = False  # it has an ``expiration`` property (a per-message TTL)


_E = TypeVar("_E", ExchangeDeclared, QueueDeclared, BindingAdded)


class Declared(Generic[_E]):
    """An exchange, queue or binding and the segments of the records that declared it."""

    __slots__ = ("entry", "segments")

    def __init__(self, entry: _E) -> None:
        self.entry: _E = entry
        self.segments: list[int] = []


DELIVERED = 1
REMOVED = 2
_COMPACT_MIN = 4096  # dead entries worth a compaction


class ReplayedMessages:
    """One queue's messages while replaying, in log order: 25 bytes each, no objects.

    ``ids`` is sorted (ids grow in log order), so a removal or a delivered marker finds its
    message by bisect from ``head`` (everything before it is removed: acks mostly come in
    order). A removal out of order only sets a flag; the arrays are compacted when most of
    what they hold is dead, so they stay proportional to the live messages.
    """

    __slots__ = ("bodies", "expiring", "flags", "head", "ids", "removed", "sizes", "where")

    def __init__(self) -> None:
        self.ids = array("Q")
        self.where = array("Q")
        self.sizes = array("I")  # of the whole record, header included
        self.bodies = array("I")  # body sizes: what x-max-length-bytes counts, exactly
        self.flags = bytearray()
        # Some message (live or not) has an ``expiration`` property: a restore must give
        # each its expiry, so it cannot leave them unread in the log.
        self.expiring = False
        self.head = 0  # every entry before it is removed
        self.removed = 0  # removed entries from ``head`` on

    def __len__(self) -> int:
        return len(self.ids) - self.head - self.removed

    def add(self, msg_id: int, where: int, size: int, body_size: int = 0) -> None:
        self.ids.append(msg_id)
        self.where.append(where)
        self.sizes.append(size)
        self.bodies.append(body_size)
        self.flags.append(0)

    def find(self, msg_id: int) -> int:
        """The index of live message ``msg_id``, or -1."""
        ids = self.ids
        i = bisect_left(ids, msg_id, self.head)
        if i < len(ids) and ids[i] == msg_id and not self.flags[i] & REMOVED:
            return i
        return -1

    def remove(self, i: int) -> None:
        flags = self.flags
        flags[i] |= REMOVED
        self.removed += 1
        head, n = self.head, len(flags)
        while head < n and flags[head] & REMOVED:
            head += 1
            self.removed -= 1
        self.head = head
        if head >= _COMPACT_MIN and 2 * head > n:
            for column in (self.ids, self.where, self.sizes, self.bodies, self.flags):
                del column[:head]
            self.head = 0
        elif self.removed >= _COMPACT_MIN and 2 * self.removed > n - head:
            self._compact()

    def _compact(self) -> None:
        keep = [i for i in range(self.head, len(self.flags)) if not self.flags[i] & REMOVED]
        self.ids = array("Q", [self.ids[i] for i in keep])
        self.where = array("Q", [self.where[i] for i in keep])
        self.sizes = array("I", [self.sizes[i] for i in keep])
        self.bodies = array("I", [self.bodies[i] for i in keep])
        self.flags = bytearray(self.flags[i] for i in keep)
        self.head = self.removed = 0

    def compact(self) -> None:
        """Drop the removed entries: afterwards every entry from ``head`` on is live."""
        if self.removed:
            self._compact()

    def live_ids(self) -> Iterator[int]:
        flags = self.flags
        ids = self.ids
        for i in range(self.head, len(ids)):
            if not flags[i] & REMOVED:
                yield ids[i]

    def __iter__(self) -> Iterator[tuple[int, int, int, bool]]:
        """``(id, record location, record size, delivered)`` of each live one, in order."""
        flags, ids, where, sizes = self.flags, self.ids, self.where, self.sizes
        for i in range(self.head, len(ids)):
            flag = flags[i]
            if not flag & REMOVED:
                yield ids[i], where[i], sizes[i], bool(flag & DELIVERED)


class DurableQueue(Declared[QueueDeclared]):
    __slots__ = ("count", "pins", "replayed")

    def __init__(self, entry: QueueDeclared) -> None:
        super().__init__(entry)
        # segment -> how many of this queue's messages have their record there: all the
        # run-time catalog knows of messages (module rules).
        self.pins: dict[int, int] = {}
        self.count = 0  # messages held (the sum of ``pins``)
        self.replayed: ReplayedMessages | None = None  # while replaying and restoring

    def unpin(self, segment: int) -> None:
        """One of this queue's messages with its record in ``segment`` left it for good."""
        pins = self.pins
        held = pins[segment]
        if held == 1:
            del pins[segment]
        else:
            pins[segment] = held - 1
        self.count -= 1


_D = TypeVar("_D", Declared[ExchangeDeclared], DurableQueue, Declared[BindingAdded])


class Catalog:
    def __init__(self, liveness: Liveness, *, replaying: bool = False) -> None:
        self._live = liveness
        self.replaying = replaying
        self.exchanges: dict[tuple[str, str], Declared[ExchangeDeclared]] = {}
        self.queues: dict[tuple[str, str], DurableQueue] = {}
        self.bindings: dict[BindingKey, Declared[BindingAdded]] = {}
        self.max_message_id = 0
        self.clean_shutdown = False
        # Replay: the run of message records in progress (``_Run``), for as long as
        # records name the same (vhost, names) objects in the same segment (the replayer
        # passes the same ones while records repeat them) and no other record comes.
        self._run: _Run | None = None

    def end_replay(self, liveness: Liveness) -> None:
        """Replay is over: from now on records come from the broker, with segments, and
        liveness goes to ``liveness`` (the segment log). The arrays stay for restore."""
        self.replaying = False
        self._live = liveness
        # The last run's pins go to ``liveness`` itself: the replay's were handed over
        # already (DiskDurableLog.open transfers them first).
        self._end_run()

    def take_replayed(self, vhost: str, name: str) -> ReplayedMessages | None:
        """Restore takes over queue ``name``'s replay arrays (compacted: every entry from
        ``head`` on is live), or None if it has no live message; until ``replay_done``."""
        queue = self.queues.get((vhost, name))
        replayed = queue.replayed if queue is not None else None
        if queue is None or replayed is None or not len(replayed):
            return None
        queue.replayed = None
        replayed.compact()
        return replayed

    def replay_done(self) -> None:
        """The broker has read the messages back: drop the replay arrays."""
        for queue in self.queues.values():
            queue.replayed = None

    def message_count(self) -> int:
        """Distinct messages held by the durable queues (a fanout counts once). Exact while
        the replay arrays exist; afterwards, the copies (the catalog keeps no ids)."""
        self._end_run()
        held = [q for q in self.queues.values() if q.count]
        if len(held) <= 1 or any(q.replayed is None for q in held):
            return sum(q.count for q in held)
        count = 0
        last = -1
        for msg_id in heapq.merge(*(q.replayed.live_ids() for q in held if q.replayed)):
            if msg_id != last:
                count += 1
                last = msg_id
        return count

    def exchange_exists(self, vhost: str, name: str) -> bool:
        return name.startswith("amq.") or (vhost, name) in self.exchanges

    # -- interpretation of every record -----------------------------------------------------
    def apply(self, entry: Entry | PublishedAt | object, segment: int) -> None:
        if self._run is not None:
            self._end_run()  # its counts are due before anything else looks at them
        self.clean_shutdown = isinstance(entry, CleanShutdown)
        handler = _APPLY.get(type(entry))
        if handler is not None:
            handler(self, entry, segment)

    def _exchange_declared(self, entry: ExchangeDeclared, segment: int) -> None:
        self._declare(self.exchanges, (entry.vhost, entry.name), Declared(entry), segment)

    def _queue_declared(self, entry: QueueDeclared, segment: int) -> None:
        self._declare(self.queues, (entry.vhost, entry.name), DurableQueue(entry), segment)

    def _binding_removed(self, entry: BindingRemoved, segment: int) -> None:
        targets: set[int] = set()
        self._end(self.bindings.pop(entry.key(), None), targets)
        self._live.depend(segment, targets)

    def _binding_added(self, entry: BindingAdded, segment: int) -> None:
        dest_exists = (
            self.exchange_exists(entry.vhost, entry.destination)
            if entry.to_exchange
            else (entry.vhost, entry.destination) in self.queues
        )
        if dest_exists and self.exchange_exists(entry.vhost, entry.source):
            self._declare(self.bindings, entry.key(), Declared(entry), segment)

    def _delivered(self, entry: MessagesDelivered, segment: int) -> None:
        self._settled(entry, segment, removed=False)

    def _removed(self, entry: MessagesRemoved, segment: int) -> None:
        self._settled(entry, segment, removed=True)

    def _declare(self, table: dict[K, _D], key: K, new: _D, segment: int) -> None:
        item = table.get(key)
        if item is None:
            item = table[key] = new
        else:
            # A redeclare (not logged by the broker, but harmless): the newest entry wins
            # and every declaring record stays pinned until the thing is deleted.
            item.entry = new.entry
        item.segments.append(segment)
        self._live.pin(segment)

    def _end(self, item: _D | None, targets: set[int]) -> None:
        if item is None:
            return
        for seg in item.segments:
            self._live.release(seg)
            targets.add(seg)

    def _drop_bindings(self, vhost: str, name: str, *, queue: bool, targets: set[int]) -> None:
        for key in [
            k
            for k in self.bindings
            if k[0] == vhost
            and (
                (k[3] == name and k[2] != queue)  # bindings to it
                or (not queue and k[1] == name)  # an exchange's bindings as the source
            )
        ]:
            self._end(self.bindings.pop(key), targets)

    def _exchange_deleted(self, entry: ExchangeDeleted, segment: int) -> None:
        targets: set[int] = set()
        item = self.exchanges.pop((entry.vhost, entry.name), None)
        if item is not None:
            self._end(item, targets)
            self._drop_bindings(entry.vhost, entry.name, queue=False, targets=targets)
        self._live.depend(segment, targets)

    def _queue_deleted(self, entry: QueueDeleted, segment: int) -> None:
        targets: set[int] = set()
        queue = self.queues.pop((entry.vhost, entry.name), None)
        if queue is not None:
            self._end(queue, targets)
            self._drop_bindings(entry.vhost, entry.name, queue=True, targets=targets)
            # Its messages go with it: every pin at once.
            for seg, count in queue.pins.items():
                self._live.release(seg, count)
                targets.add(seg)
            queue.pins = {}
            queue.count = 0
            queue.replayed = None
        self._live.depend(segment, targets)

    # -- messages ---------------------------------------------------------------------------
    def hold(self, vhost: str, queues: Iterable[str], segment: int) -> None:
        """Run time: a message whose record is in ``segment`` went to ``queues``."""
        self.clean_shutdown = False
        count = 0
        for name in dict.fromkeys(queues):
            queue = self.queues.get((vhost, name))
            if queue is not None:
                queue.pins[segment] = queue.pins.get(segment, 0) + 1
                queue.count += 1
                count += 1
        if count:
            self._live.pin(segment, count)

    def holders(self, vhost: str, queues: Iterable[str]) -> tuple[DurableQueue, ...]:
        """The distinct durable queues of ``queues`` that exist, for ``hold_queues`` (valid
        until a queue is declared or deleted)."""
        found = (self.queues.get((vhost, name)) for name in dict.fromkeys(queues))
        return tuple(queue for queue in found if queue is not None)

    def hold_queues(self, queues: tuple[DurableQueue, ...], segment: int) -> None:
        """``hold`` with the queues looked up already (``holders``): once per publish."""
        self.clean_shutdown = False
        for queue in queues:
            pins = queue.pins
            pins[segment] = pins.get(segment, 0) + 1
            queue.count += 1
        if queues:
            self._live.pin(segment, len(queues))

    def settle(
        self,
        vhost: str,
        name: str,
        segments: Iterable[int],
        segment: int,
        *,
        removed: bool,
    ) -> None:
        """Run time: a delivered marker (``removed`` False) or a removal record in
        ``segment`` for messages of queue ``name`` whose records are in ``segments``."""
        self.clean_shutdown = False
        targets: set[int] = set()
        queue = self.queues.get((vhost, name))
        if queue is not None:
            pins = queue.pins
            for seg in segments:
                held = pins.get(seg, 0)
                if held <= 0:
                    continue  # not held: changes nothing, as at replay
                targets.add(seg)
                if removed:
                    queue.unpin(seg)
                    self._live.release(seg)
        self._live.depend(segment, targets)

    def _published(self, entry: PublishedAt, segment: int) -> None:
        queues = tuple(dict.fromkeys(entry.queues))
        self.published(
            entry.id,
            entry.vhost,
            queues,
            entry.where,
            entry.size,
            segment,
            entry.body_size,
            entry.expiring,
        )
        self._end_run()  # one record at a time: its counts at once

    def published(
        self,
        msg_id: int,
        vhost: str,
        queues: tuple[str, ...],
        where: int,
        size: int,
        segment: int,
        body_size: int = 0,
        expiring: bool = False,
    ) -> None:
        """Replay: a message record (the hot kind: no entry object, no dispatch), on the
        distinct ``queues`` it names, at ``where`` (``size`` bytes, its body
        ``body_size``) in ``segment``; ``expiring``: it has a per-message TTL. Its ids go
        into the arrays at once; the pins and counts of a run of such records are added
        when the run ends (another segment or set of names, the next ``apply``,
        ``message_count``, ``end_replay``)."""
        self.clean_shutdown = False
        if msg_id <= self.max_message_id:
            return  # ids only grow in the log; a repeat is a bug we do not amplify
        self.max_message_id = msg_id
        run = self._run
        if (
            run is None
            or run.vhost is not vhost
            or run.queues is not queues
            or (run.segment != segment)
        ):
            run = self._start_run(vhost, queues, segment)
        run.count += 1
        # ReplayedMessages.add, inlined: once per message and queue.
        for add_id, add_where, add_size, add_body, add_flag in run.appends:
            add_id(msg_id)
            add_where(where)
            add_size(size)
            add_body(body_size)
            add_flag(0)
        if expiring:
            for queue in run.held:
                replayed = queue.replayed
                assert replayed is not None
                replayed.expiring = True

    def _start_run(self, vhost: str, queues: tuple[str, ...], segment: int) -> _Run:
        self._end_run()
        held = [q for n in queues if (q := self.queues.get((vhost, n))) is not None]
        appends: list[tuple[Callable[[int], None], ...]] = []
        for queue in held:
            replayed = queue.replayed
            if replayed is None:
                replayed = queue.replayed = ReplayedMessages()
            appends.append(
                (
                    replayed.ids.append,
                    replayed.where.append,
                    replayed.sizes.append,
                    replayed.bodies.append,
                    replayed.flags.append,
                )
            )
        run = self._run = _Run(vhost, queues, segment, held, appends)
        return run

    def _end_run(self) -> None:
        """Count the run's messages in its queues' pins and the liveness, once per run
        (not once per message), and forget it: the next record may change the queues or
        compact their arrays (the bound appends would then miss the new ones)."""
        run = self._run
        if run is None:
            return
        self._run = None
        count, segment = run.count, run.segment
        if not count or not run.held:
            return
        for queue in run.held:
            pins = queue.pins
            pins[segment] = pins.get(segment, 0) + count
            queue.count += count
        self._live.pin(segment, count * len(run.held))

    def _settled(self, entry: MessagesDelivered, segment: int, *, removed: bool) -> None:
        """A replayed delivered marker, or a removal: the messages found by id."""
        targets: set[int] = set()
        queue = self.queues.get((entry.vhost, entry.queue))
        replayed = queue.replayed if queue is not None else None
        if queue is not None and replayed is not None:
            for msg_id in entry.ids:
                i = replayed.find(msg_id)
                if i < 0:
                    continue
                seg = replayed.where[i] >> SEGMENT_SHIFT
                targets.add(seg)
                if not removed:
                    replayed.flags[i] |= DELIVERED
                    continue
                replayed.remove(i)
                queue.unpin(seg)
                self._live.release(seg)
        if entry.ids:
            # Ids named by surviving records are never handed out again (docs/storage.md).
            self.max_message_id = max(self.max_message_id, max(entry.ids))
        self._live.depend(segment, targets)


class _Run:
    """Replay: consecutive message records for the same queues in one segment."""

    __slots__ = ("appends", "count", "held", "queues", "segment", "vhost")

    def __init__(
        self,
        vhost: str,
        queues: tuple[str, ...],
        segment: int,
        held: list[DurableQueue],
        appends: list[tuple[Callable[[int], None], ...]],
    ) -> None:
        self.vhost = vhost
        self.queues = queues
        self.segment = segment
        self.held = held
        self.appends = appends
        self.count = 0


# One handler per record kind (exact type: BindingRemoved and MessagesRemoved subclass the
# kinds they undo). CleanShutdown has none: it only sets ``clean_shutdown``.
_APPLY: dict[type, Callable[[Catalog, Any, int], None]] = {
    ExchangeDeclared: Catalog._exchange_declared,
    ExchangeDeleted: Catalog._exchange_deleted,
    QueueDeclared: Catalog._queue_declared,
    QueueDeleted: Catalog._queue_deleted,
    BindingAdded: Catalog._binding_added,
    BindingRemoved: Catalog._binding_removed,
    PublishedAt: Catalog._published,
    MessagesDelivered: Catalog._delivered,
    MessagesRemoved: Catalog._removed,
}
