"""The broker's side of durability: which changes reach the DurableLog, and how.

Rules of this module (docs/internals.md "broker/", docs/storage.md):
- What is durable is RabbitMQ's rule: durable exchanges and queues, bindings whose source
  and destination are both durable, persistent (delivery-mode 2) messages on durable
  queues. Everything else lives in memory only and is gone after a restart.
- A persistent message routed to several durable queues is logged once
  (``enqueue_routed``); its id goes into ``Message.store_id`` (0: not stored). It is logged
  *before* it is enqueued, so a delivery or a drop that enqueue causes is logged after it.
  A Message object is logged at most once: code that later puts a message into more queues
  (dead-lettering, say) must pass a new Message (they carry new headers anyway).
- Each durable queue (when a log is attached) has a ``QueueJournal``: the queue calls it
  for the first delivery of a stored message (so it comes back redelivered) and for every
  way a stored message leaves it for good. Requeues are not logged: a message keeps its
  place in the log, which is its place in the queue.
- A message logged for every queue it was routed to is told where its body is in the log
  (``Message.on_disk``), so paging (paging.py) can drop it from memory once committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from amqpd.protocol.fieldtable import Int64
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.durable import DurableLog

if TYPE_CHECKING:
    from amqpd.broker.message import Message
    from amqpd.broker.queue import Queue, QueuedMessage


class QueueJournal:
    """Tells the durable log what happens to the stored messages of one durable queue."""

    __slots__ = ("_log", "queue", "vhost")

    def __init__(self, log: DurableLog, vhost: str, queue: str) -> None:
        self._log = log
        self.vhost = vhost
        self.queue = queue

    def delivered(self, entry: QueuedMessage) -> None:
        store_id = entry.message.store_id
        if store_id:
            self._log.messages_delivered(self.vhost, self.queue, (store_id,))

    def removed(self, entries: Iterable[QueuedMessage]) -> None:
        ids = [e.message.store_id for e in entries if e.message.store_id]
        if ids:
            self._log.messages_removed(self.vhost, self.queue, ids)


def enqueue_routed(
    log: DurableLog,
    vhost: str,
    message: Message,
    queues: list[Queue],
    now: float | None = None,
) -> bool:
    """Enqueue a routed publish in every queue, logging it first if it is durable.

    Returns False if a queue refused it (x-overflow reject-publish: the publish is nacked).
    ``message.store_id`` is set afterwards when the message went to the log, in which case
    its confirm must wait for ``log.after_commit``.
    """
    if log.enabled and message.persistent:
        # Streams keep their own segment files (stream_disk.py): their messages
        # are not logged here, or the log would keep every message a retention dropped.
        durable = [
            q.name for q in queues if q.durable and not q.deleted and q.queue_type != "stream"
        ]
        if durable:
            message.store_id = log.message_published(
                vhost,
                durable,
                message.exchange,
                message.routing_key,
                message.properties_raw,
                message.body,
            )
            if len(durable) == len(queues):
                # Only then does the log keep the body alive as long as the broker holds
                # the message (paging.py): a non-durable queue's copy would outlive it.
                where = log.last_body()
                if where is not None:
                    message.on_disk(*where)
    accepted = True
    for queue in queues:
        if queue.enqueue(message, now) is False:
            accepted = False
            if message.store_id and queue.durable:
                log.messages_removed(vhost, queue.name, (message.store_id,))
    return accepted


# -- delayed messages of durable delayed-message exchanges --------------------------------
#
# A durable x-delayed-message exchange keeps its pending messages in the log as the messages
# of a store named after it: ``amq.delayed-message.<exchange>``, logged like a durable queue
# (declared with the exchange, deleted with it) but never a queue clients can see; no
# client can name a queue ``amq.*`` (403), so it cannot collide with one. The stored copy
# carries two headers of ours: when it is due (wall-clock ms, so a restart knows how long
# is left) and the routing keys it was published with (CC and BCC ones included; BCC is
# gone from the message itself). Both are removed again when the store is read back.

DELAYED_STORE_PREFIX = "amq.delayed-message."
_DUE_HEADER = "x-amqpd-delayed-due"
_KEYS_HEADER = "x-amqpd-delayed-keys"


def delayed_store(exchange: str) -> str:
    """The log's name for the pending messages of a durable delayed exchange."""
    return DELAYED_STORE_PREFIX + exchange


def delayed_store_exchange(store: str) -> str | None:
    """The exchange a store name belongs to, or None if ``store`` names a real queue."""
    if store.startswith(DELAYED_STORE_PREFIX):
        return store[len(DELAYED_STORE_PREFIX) :]
    return None


def log_delayed(
    log: DurableLog,
    vhost: str,
    exchange: str,
    message: Message,
    routing_keys: Sequence[str],
    due_wall_ms: int,
) -> int:
    """Log a message a durable delayed exchange holds; returns its id in the log."""
    headers: dict[str, Any] = message.headers()
    headers[_DUE_HEADER] = Int64(due_wall_ms)
    headers[_KEYS_HEADER] = list(routing_keys)
    props = attrs.evolve(message.properties, headers=headers)
    return log.message_published(
        vhost,
        (delayed_store(exchange),),
        message.exchange,
        message.routing_key,
        props.encode(),
        message.body,
    )


def read_delayed(properties_raw: bytes) -> tuple[int, tuple[str, ...], BasicProperties]:
    """A stored delayed message's (due wall-clock ms, routing keys, its own properties)."""
    props = BasicProperties.decode(properties_raw) if properties_raw else BasicProperties()
    headers = dict(props.headers or {})
    due = headers.pop(_DUE_HEADER, 0)
    keys = headers.pop(_KEYS_HEADER, [])
    routing_keys = tuple(
        k.decode() if isinstance(k, bytes) else str(k)
        for k in (keys if isinstance(keys, list) else [])
    )
    due = due if isinstance(due, int) else 0
    return int(due), routing_keys, attrs.evolve(props, headers=headers or None)
