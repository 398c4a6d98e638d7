"""Rebuild the broker from a recovered durable log (``recover``), then attach the log.

Rules of this module (docs/storage.md "Restoring the broker"):
- Order: vhosts, every durable exchange, every durable queue, every binding (so
  exchange-to-exchange bindings find both ends), then each queue's messages in log order,
  which is queue order; requeued messages were never moved in the log, so they come back
  at their original place.
- A message comes back ``redelivered`` if the log says it was delivered from that queue, or
  if the broker did not stop cleanly: then we cannot know whether a delivery made it to a
  consumer in the moment before the crash, and RabbitMQ promises that redelivered=false
  means "never seen before". Those marks are logged, so they survive the next restart too.
  An empty log (a new data directory) is not a crash.
- Declarations go through the vhost as a client's would (same validation), while the vhost
  still has the no-op log, so nothing is logged twice. Something the vhost now refuses
  (an argument a newer version rejects) is skipped and counted, never a crash.
- The durable log is attached (broker.attach_durable_log) only at the end.
- A plain queue (``Queue.accepts_logged``: no priorities, length limits or TTL, and no
  message of it with a per-message TTL, which replay notes) gets its messages as ranges of
  the log (``DiskDurableLog.take_tail``, a ``RestoredTail``): nothing is read at restore;
  each chunk's records are read back when the queue's head runs empty (ready.py). Every
  other queue's messages are read back from their records now (``DiskDurableLog
  .recovered_messages``: exchange, routing key, properties, in log order with read-ahead)
  and enqueued one by one, so limits and expiry apply as they did. Either way replay kept
  only ids and record locations, and message bodies are not read: a restored message
  reads its body back when it is delivered (paging), so a restart with a backlog larger
  than memory fits. A delayed message's body is not read either: its
  schedule entry keeps only its place in the log and reads it back when it is due.
- A durable delayed exchange's store (``durability.delayed_store``) is not a queue: its
  messages go back to the exchange's schedule (``VirtualHost.restore_delayed``), due at the
  same wall-clock time; those of an exchange that is gone are dropped, and logged so.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from amqpd.broker.durability import (
    QueueJournal,
    delayed_store_exchange,
    restored_delayed,
)
from amqpd.broker.message import Message
from amqpd.broker.queue import QueuedMessage
from amqpd.errors import AMQPError
from amqpd.storage.disklog import DiskDurableLog

if TYPE_CHECKING:
    from amqpd.broker.broker import Broker
    from amqpd.broker.message import BodySource
    from amqpd.storage.delta import DeltaQueue
    from amqpd.storage.logtail import RecoveredMessage


@attrs.define
class RestoreResult:
    exchanges: int = 0
    queues: int = 0
    bindings: int = 0
    messages: int = 0
    delayed: int = 0
    skipped: list[str] = attrs.Factory(list)


def recover(broker: Broker, log: DiskDurableLog) -> RestoreResult:
    """Recreate what ``log`` recovered in ``broker`` and attach ``log`` to it."""
    catalog = log.catalog
    result = RestoreResult()
    # An empty log (a new data directory) has no CleanShutdown record but was no crash.
    crashed = not catalog.clean_shutdown and not log.report.empty
    for (vhost_name, name), item in catalog.exchanges.items():
        entry = item.entry
        try:
            broker.add_vhost(vhost_name).declare_exchange(
                name,
                entry.type,
                durable=True,
                auto_delete=entry.auto_delete,
                internal=entry.internal,
                arguments=dict(entry.arguments),
            )
            result.exchanges += 1
        except AMQPError as exc:
            result.skipped.append(f"exchange '{name}' in vhost '{vhost_name}': {exc}")
    for (vhost_name, name), queue_item in catalog.queues.items():
        if delayed_store_exchange(name) is not None:
            continue  # a delayed exchange's pending messages, not a queue: below
        qentry = queue_item.entry
        try:
            broker.add_vhost(vhost_name).declare_queue(
                name,
                durable=True,
                auto_delete=qentry.auto_delete,
                arguments=dict(qentry.arguments),
                recovered=True,
            )
            result.queues += 1
        except AMQPError as exc:
            result.skipped.append(f"queue '{name}' in vhost '{vhost_name}': {exc}")
    for binding in catalog.bindings.values():
        b = binding.entry
        vhost = broker.add_vhost(b.vhost)
        args = dict(b.arguments)
        try:
            if b.to_exchange:
                vhost.bind_exchange(b.destination, b.source, b.routing_key, args)
            else:
                vhost.bind_queue(b.destination, b.source, b.routing_key, args)
            result.bindings += 1
        except AMQPError as exc:
            result.skipped.append(f"binding of '{b.destination}' to '{b.source}': {exc}")
    for vhost_name, name in catalog.queues:
        exchange_name = delayed_store_exchange(name)
        if exchange_name is not None:
            _restore_delayed(broker, log, vhost_name, exchange_name, name, result)
            continue
        queue = broker.add_vhost(vhost_name).queues.get(name)
        if queue is None:
            continue
        # Attached before the messages go in: a drop-head while refilling is logged.
        queue.journal = QueueJournal(log, vhost_name, name)
        replayed = log.catalog.queues[(vhost_name, name)].replayed
        if replayed and not replayed.expiring and queue.accepts_logged():
            deltas = broker.paging.deltas if broker.paging is not None else None
            blocks = deltas.new_queue() if deltas is not None else None
            tail = RestoredTail(log, vhost_name, name, crashed, blocks)
            result.messages += len(tail)
            queue.restore_logged(tail)
            continue
        marked_ids = array("Q")
        marked_segments = array("Q")
        enqueue, bodies = queue.enqueue, log.bodies
        restored = 0
        # One pass per message: this loop is the restart's cost per message.
        for stored in log.recovered_messages(vhost_name, name):
            delivered = stored.delivered
            if crashed and not delivered:
                delivered = True
                marked_ids.append(stored.id)
                marked_segments.append(stored.segment)
            enqueue(_restored_message(stored, bodies), redelivered=delivered)
            restored += 1
        result.messages += restored
        log.messages_delivered(vhost_name, name, marked_ids, marked_segments)
    logged = {(vhost_name, name) for vhost_name, name in catalog.queues}
    log.replay_done()
    broker.attach_durable_log(log)
    for vhost in broker.vhosts.values():
        vhost.ensure_delayed_stores({name for v, name in logged if v == vhost.name})
    return result


def _restored_message(stored: RecoveredMessage, bodies: BodySource) -> Message:
    """The message of a recovered record, as the queue holds it."""
    message = Message(stored.exchange, stored.routing_key, stored.properties_raw, b"")
    if stored.body_size:
        # Its body stays in the log (docs/storage.md "Paging"), read back on delivery.
        message.size = stored.body_size
        message.on_disk(bodies, stored.body_at)
        message.drop_body()
    message.store_id = stored.id
    message.store_segment = stored.segment
    return message


class RestoredTail:
    """A restored queue's messages left in the log (storage/logtail.py), handed out as
    queue entries a chunk at a time (ready.py's logged part): what the restore loop above
    makes of each record, made when the queue's head needs it."""

    __slots__ = ("_bodies", "_crashed", "_next_seq", "_tail", "body_bytes", "first_seq")

    def __init__(
        self,
        log: DiskDurableLog,
        vhost: str,
        queue: str,
        crashed: bool,
        blocks: DeltaQueue | None = None,
    ) -> None:
        tail = log.take_tail(vhost, queue)
        assert tail is not None  # the caller saw live replayed messages
        self._tail = tail
        self._bodies = log.bodies
        # After a crash every message comes back redelivered, and the never-delivered
        # ones are marked so in the log now (module rules), as the loop above does.
        self._crashed = crashed
        if crashed:
            ids, segments = tail.undelivered()
            log.messages_delivered(vhost, queue, ids, segments)
        if blocks is not None:
            # Beyond its first block the tail's own arrays wait on disk too (logtail.py).
            tail.page_out(blocks)
        self.body_bytes = tail.body_bytes
        self.first_seq = 0  # set by Queue.restore_logged
        self._next_seq = -1

    def __len__(self) -> int:
        return len(self._tail)

    def take(self, max_count: int, max_bytes: int) -> list[QueuedMessage]:
        if self._next_seq < 0:
            self._next_seq = self.first_seq
        seq = self._next_seq
        bodies, crashed = self._bodies, self._crashed
        entries = []
        for stored in self._tail.read(max_count, max_bytes):
            message = _restored_message(stored, bodies)
            entries.append(QueuedMessage(message, seq, crashed or stored.delivered))
            seq += 1
        self._next_seq = seq
        self.body_bytes = self._tail.body_bytes
        return entries

    def stored(self) -> tuple[Sequence[int], Sequence[int]]:
        stored = self._tail.stored()
        self.body_bytes = 0
        return stored

    def copy(self) -> RestoredTail:
        """An independent copy of the entries not taken yet, with the same seqs."""
        other = object.__new__(RestoredTail)
        other._tail = self._tail.copy()
        other._bodies = self._bodies
        other._crashed = self._crashed
        other.body_bytes = self.body_bytes
        other.first_seq = self.first_seq
        other._next_seq = self._next_seq if self._next_seq >= 0 else self.first_seq
        return other

    def clear(self) -> None:
        self._tail.clear()
        self.body_bytes = 0


def _restore_delayed(
    broker: Broker,
    log: DiskDurableLog,
    vhost_name: str,
    exchange_name: str,
    store: str,
    result: RestoreResult,
) -> None:
    """Hand a durable delayed exchange its pending messages back (due ones go at once)."""
    vhost = broker.add_vhost(vhost_name)
    dropped: list[int] = []
    segments: list[int] = []
    for stored in log.recovered_messages(vhost_name, store):
        # Only the properties (read back from the record) are decoded; the body stays in
        # the log until the message is due (durability.LoggedDelayed).
        due_wall_ms, routing_keys, held = restored_delayed(stored, log.bodies)
        if vhost.restore_delayed(exchange_name, routing_keys, held, due_wall_ms):
            result.delayed += 1
        else:
            dropped.append(stored.id)
            segments.append(stored.segment)
    if dropped:
        result.skipped.append(
            f"{len(dropped)} delayed message(s) of exchange '{exchange_name}' in vhost "
            f"'{vhost_name}': the exchange is gone"
        )
        log.messages_removed(vhost_name, store, dropped, segments)
