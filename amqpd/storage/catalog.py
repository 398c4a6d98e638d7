"""Catalog: what the durable log says exists, and which records keep which segments alive.

Rules of this module (docs/storage.md "Replay and liveness"):
- ``apply(entry, segment)`` is the one interpretation of a record. It runs for every record
  appended at run time and for every record replayed at start, so the liveness the log is
  told (pin / release / depend) and the state replay rebuilds can never disagree.
- A record that creates something (a declare, a binding, a message) pins its segment while
  that thing lives; one that ends something (a delete, an unbind, a removal, a delivered
  marker) depends on the segments of what it refers to, so it stays on disk exactly as long
  as the records it cancels do.
- Deleting a queue or an exchange also ends its bindings (and a queue's messages), as the
  broker's vhost does; the broker logs only the delete.
- Entities are keyed by (vhost, name); a record naming something that does not exist (a
  binding to a queue deleted earlier, an ack of an unknown id) changes nothing: log order
  makes that exactly what happened at run time.
- Message content (properties, body) is kept only while replaying (``keep_content``); at
  run time the broker holds the messages and the catalog only their ids and segments.
- ``amq.*`` exchanges are predeclared in every vhost and never logged; they always exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from amqpd.storage.entries import (
    BindingAdded,
    BindingRemoved,
    CleanShutdown,
    Entry,
    ExchangeDeclared,
    ExchangeDeleted,
    MessagePublished,
    MessagesDelivered,
    MessagesRemoved,
    QueueDeclared,
    QueueDeleted,
)

BindingKey = tuple[str, str, bool, str, str, bytes]
K = TypeVar("K")


class Liveness(Protocol):
    """What the catalog tells the segment log (log.SegmentLog implements it)."""

    def pin(self, segment: int) -> None: ...

    def release(self, segment: int) -> None: ...

    def depend(self, segment: int, targets: set[int]) -> None: ...


_E = TypeVar("_E", ExchangeDeclared, QueueDeclared, BindingAdded)


class Declared(Generic[_E]):
    """An exchange, queue or binding and the segments of the records that declared it."""

    __slots__ = ("entry", "segments")

    def __init__(self, entry: _E) -> None:
        self.entry: _E = entry
        self.segments: list[int] = []


class DurableQueue(Declared[QueueDeclared]):
    __slots__ = ("messages",)

    def __init__(self, entry: QueueDeclared) -> None:
        super().__init__(entry)
        # Message ids in log (= queue) order; a dict is an ordered set.
        self.messages: dict[int, None] = {}


class StoredMessage:
    # One per stored message for the life of the broker: tuples, not sets (a set costs
    # 200+ bytes even empty); a message is on one queue or a handful.
    __slots__ = ("delivered", "entry", "queues", "segment")

    def __init__(
        self, segment: int, queues: tuple[str, ...], entry: MessagePublished | None
    ) -> None:
        self.segment = segment
        self.queues = queues  # the durable queues still holding it
        self.entry = entry
        self.delivered: tuple[str, ...] = ()  # queues that handed it out (replay only)


_D = TypeVar("_D", Declared[ExchangeDeclared], DurableQueue, Declared[BindingAdded])


class Catalog:
    def __init__(self, liveness: Liveness, *, keep_content: bool = False) -> None:
        self._live = liveness
        self.keep_content = keep_content
        self.exchanges: dict[tuple[str, str], Declared[ExchangeDeclared]] = {}
        self.queues: dict[tuple[str, str], DurableQueue] = {}
        self.bindings: dict[BindingKey, Declared[BindingAdded]] = {}
        self.messages: dict[int, StoredMessage] = {}
        self.max_message_id = 0
        self.clean_shutdown = False

    def forget_content(self) -> None:
        """Replay is over: drop message bodies and delivered marks (the broker has them)."""
        self.keep_content = False
        for message in self.messages.values():
            message.entry = None
            message.delivered = ()

    def exchange_exists(self, vhost: str, name: str) -> bool:
        return name.startswith("amq.") or (vhost, name) in self.exchanges

    # -- the one interpretation of every record ---------------------------------------------
    def apply(self, entry: Entry, segment: int) -> None:
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
            for msg_id in queue.messages:
                self._drop_ref(msg_id, entry.name, targets)
        self._live.depend(segment, targets)

    def _drop_ref(self, msg_id: int, queue: str, targets: set[int]) -> None:
        message = self.messages[msg_id]
        message.queues = tuple(q for q in message.queues if q != queue)
        targets.add(message.segment)
        if not message.queues:
            del self.messages[msg_id]
            self._live.release(message.segment)

    def _published(self, entry: MessagePublished, segment: int) -> None:
        self.max_message_id = max(self.max_message_id, entry.id)
        if entry.id in self.messages:
            return  # ids are unique while alive; a duplicate is a bug we do not amplify
        vhost = entry.vhost
        held = [name for name in entry.queues if (vhost, name) in self.queues]
        if not held:
            return
        content = entry if self.keep_content else None
        self.messages[entry.id] = StoredMessage(segment, tuple(dict.fromkeys(held)), content)
        self._live.pin(segment)
        for name in held:
            self.queues[(vhost, name)].messages[entry.id] = None

    def _settled(self, entry: MessagesDelivered, segment: int, *, removed: bool) -> None:
        """A delivered marker, or a removal."""
        targets: set[int] = set()
        queue = self.queues.get((entry.vhost, entry.queue))
        if queue is not None:
            held = queue.messages
            for msg_id in entry.ids:
                if msg_id not in held:
                    continue
                if removed:
                    del held[msg_id]
                    self._drop_ref(msg_id, entry.queue, targets)
                    continue
                message = self.messages[msg_id]
                targets.add(message.segment)
                if self.keep_content and entry.queue not in message.delivered:
                    message.delivered += (entry.queue,)
        if entry.ids:
            # Ids named by surviving records are never handed out again (docs/storage.md).
            self.max_message_id = max(self.max_message_id, max(entry.ids))
        self._live.depend(segment, targets)


# One handler per record kind (exact type: BindingRemoved and MessagesRemoved subclass the
# kinds they undo). CleanShutdown has none: it only sets ``clean_shutdown``.
_APPLY: dict[type, Callable[[Catalog, Any, int], None]] = {
    ExchangeDeclared: Catalog._exchange_declared,
    ExchangeDeleted: Catalog._exchange_deleted,
    QueueDeclared: Catalog._queue_declared,
    QueueDeleted: Catalog._queue_deleted,
    BindingAdded: Catalog._binding_added,
    BindingRemoved: Catalog._binding_removed,
    MessagePublished: Catalog._published,
    MessagesDelivered: Catalog._delivered,
    MessagesRemoved: Catalog._removed,
}
