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
  way a stored message leaves it for good, naming each message by id and the segment of
  its record (``Message.store_segment``): the log keeps no per-message state of its own.
  Requeues are not logged: a message keeps its place in the log, which is its place in the
  queue.
- A message logged for every queue it was routed to is told where its body is in the log
  (``Message.on_disk``), so paging (paging.py) can drop it from memory once committed.
- A durable delayed exchange's pending message is a ``LoggedDelayed``; once paged out,
  ``DelayedCodec`` writes its descriptor (never the message) to the schedule's time
  buckets (delayed.py) and reads it back as a paged-out holder.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from amqpd.broker.delayed import IN_MEMORY, NOT_YET, PAGEABLE
from amqpd.broker.message import Message
from amqpd.protocol.fieldtable import Int64
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.bodies import READ_AHEAD, file_of
from amqpd.storage.durable import DurableLog

if TYPE_CHECKING:
    from amqpd.broker.queue import Queue, QueuedMessage
    from amqpd.storage.bodies import BodyReader as BodySource
    from amqpd.storage.logtail import RecoveredMessage


class QueueJournal:
    """Tells the durable log what happens to the stored messages of one durable queue."""

    __slots__ = ("_log", "queue", "vhost")

    def __init__(self, log: DurableLog, vhost: str, queue: str) -> None:
        self._log = log
        self.vhost = vhost
        self.queue = queue

    def delivered(self, entry: QueuedMessage) -> None:
        message = entry.message
        if message.store_id:
            # One message: the log batches these per queue until its next commit.
            self._log.message_delivered(
                self.vhost, self.queue, message.store_id, message.store_segment
            )

    def removed_one(self, message: Message) -> None:
        """``removed`` of one stored message (an ack): batched like ``delivered``."""
        self._log.message_removed(self.vhost, self.queue, message.store_id, message.store_segment)

    def removed_stored(self, ids: Sequence[int], segments: Sequence[int]) -> None:
        """Stored messages that never left the log (a restored tail) left for good."""
        if len(ids):
            self._log.messages_removed(self.vhost, self.queue, ids, segments)

    def removed(self, entries: Iterable[QueuedMessage]) -> None:
        stored = [e.message for e in entries if e.message.store_id]
        if stored:
            self._log.messages_removed(
                self.vhost,
                self.queue,
                [m.store_id for m in stored],
                [m.store_segment for m in stored],
            )


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
            message.store_segment = log.last_segment
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
                log.messages_removed(
                    vhost, queue.name, (message.store_id,), (message.store_segment,)
                )
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
    """The log's name for the pending messages of a durable delayed exchange (interned:
    the catalog keeps it once per pending message)."""
    return sys.intern(DELAYED_STORE_PREFIX + exchange)


def delayed_store_exchange(store: str) -> str | None:
    """The exchange a store name belongs to, or None if ``store`` names a real queue."""
    if store.startswith(DELAYED_STORE_PREFIX):
        return store[len(DELAYED_STORE_PREFIX) :]
    return None


class LoggedDelayed:
    """A pending message of a durable delayed exchange, as its schedule entry holds it.

    Until its record is committed ``message`` is the whole message (the record is only in
    the log's write buffer); ``page_out`` then forgets it, keeping only where the record's
    properties and body are in the log, their sizes, the publish's exchange and routing key
    (interned) and the id, so a million pending messages cost a few hundred bytes each
    whatever their size. ``load`` reads the message back (one ``pread``), without the two
    headers of ours. With no place in the log (``where`` < 0) the message is never paged.
    """

    __slots__ = (
        "bcc",
        "body_size",
        "exchange",
        "message",
        "properties_size",
        "routing_key",
        "source",
        "store_id",
        "token",
        "where",
    )

    def __init__(
        self,
        store_id: int,
        message: Message,
        source: BodySource | None = None,
        where: int = -1,
        properties_size: int = 0,
        token: int = 0,
    ) -> None:
        self.store_id = store_id
        self.message: Message | None = message
        self.source = source
        self.where = where
        self.properties_size = properties_size
        self.body_size = message.size
        self.exchange = sys.intern(message.exchange)
        self.routing_key = sys.intern(message.routing_key)
        self.bcc = message.bcc
        self.token = token  # the log's token of the record: on disk once committed

    @property
    def segment(self) -> int:
        """The log segment of its record (0: not in the log)."""
        return file_of(self.where) if self.where >= 0 else 0

    @property
    def resident(self) -> bool:
        return self.message is not None

    def page_out(self) -> None:
        """The record is committed: forget the message (if it has a place in the log)."""
        if self.where >= 0 and self.source is not None:
            self.message = None
            self.token = 0  # a small int: no object of its own per entry

    @classmethod
    def paged(
        cls,
        store_id: int,
        source: BodySource,
        where: int,
        properties_size: int,
        body_size: int,
        exchange: str,
        routing_key: str,
        bcc: tuple[str, ...],
    ) -> LoggedDelayed:
        """A paged-out holder from its descriptor (read back from a bucket file)."""
        held = cls.__new__(cls)
        held.store_id = store_id
        held.message = None
        held.source = source
        held.where = where
        held.properties_size = properties_size
        held.body_size = body_size
        held.exchange = exchange
        held.routing_key = routing_key
        held.bcc = bcc
        held.token = 0
        return held

    def load(self, *, ahead: bool = False) -> Message:
        """The message as held (its original properties), read back if paged out."""
        message = self.message
        if message is not None:
            return message
        assert self.source is not None
        psize = self.properties_size
        data = self.source.read(self.where, psize + 4 + self.body_size, ahead=ahead)
        _due, _keys, props = read_delayed(data[:psize])
        return Message(
            self.exchange, self.routing_key, props.encode(), data[psize + 4 :], props, self.bcc
        )


_DESCRIPTOR = struct.Struct("<QqIQ")
_U32 = struct.Struct("<I")
_CODEC_CACHE = 4096


def _pack_strings(out: bytearray, strings: Sequence[str]) -> None:
    out += _U32.pack(len(strings))
    for text in strings:
        raw = text.encode()
        out += _U32.pack(len(raw))
        out += raw


def _unpack_strings(data: bytes, at: int) -> tuple[tuple[str, ...], int]:
    (count,) = _U32.unpack_from(data, at)
    at += 4
    out = []
    for _ in range(count):
        (size,) = _U32.unpack_from(data, at)
        at += 4
        out.append(sys.intern(data[at : at + size].decode()))
        at += size
    return tuple(out), at


class DelayedCodec:
    """How a schedule entry of a durable delayed exchange is written to a bucket file
    (delayed.EntryCodec; docs/storage.md "Delayed messages"): the ``LoggedDelayed``
    descriptor, never the message. Only a paged-out holder (its record committed) is
    written; one still resident waits; a transient exchange's ``Message`` and a holder
    with no place in the log stay in memory.

    Payload after the schedule's own fields: store id u64, where i64, properties size
    u32, body size u64, then string lists (u32 count, each u32 length + UTF-8): the routing
    keys, [the publish's exchange, its routing key], the BCC keys.
    """

    __slots__ = ("_decoded", "_encoded", "source")

    def __init__(self) -> None:
        # The log's body reader, learnt from the holders written (all of one log).
        self.source: BodySource | None = None
        # The string part of recent records, both ways: a million entries usually share
        # a handful of routing keys (caches only, cleared when they grow).
        self._encoded: dict[tuple[object, ...], bytes] = {}
        self._decoded: dict[bytes, tuple[tuple[str, ...], str, str, tuple[str, ...]]] = {}

    def pageable(self, held: Message | LoggedDelayed) -> int:
        if not isinstance(held, LoggedDelayed) or held.where < 0 or held.source is None:
            return IN_MEMORY
        return NOT_YET if held.message is not None else PAGEABLE

    def encode(self, routing_keys: tuple[str, ...], held: Message | LoggedDelayed) -> bytes:
        assert isinstance(held, LoggedDelayed) and held.message is None
        self.source = held.source
        key = (routing_keys, held.exchange, held.routing_key, held.bcc)
        strings = self._encoded.get(key)
        if strings is None:
            out = bytearray()
            _pack_strings(out, routing_keys)
            _pack_strings(out, (held.exchange, held.routing_key))
            _pack_strings(out, held.bcc)
            strings = bytes(out)
            if len(self._encoded) >= _CODEC_CACHE:
                self._encoded.clear()
            self._encoded[key] = strings
        descriptor = _DESCRIPTOR.pack(
            held.store_id, held.where, held.properties_size, held.body_size
        )
        return descriptor + strings

    def decode(self, data: bytes, at: int) -> tuple[tuple[str, ...], LoggedDelayed]:
        assert self.source is not None, "nothing was written"
        store_id, where, psize, bsize = _DESCRIPTOR.unpack_from(data, at)
        raw = data[at + _DESCRIPTOR.size :]
        strings = self._decoded.get(raw)
        if strings is None:
            keys, end = _unpack_strings(raw, 0)
            (exchange, routing_key), end = _unpack_strings(raw, end)
            bcc, _ = _unpack_strings(raw, end)
            strings = (keys, exchange, routing_key, bcc)
            if len(self._decoded) >= _CODEC_CACHE:
                self._decoded.clear()
            self._decoded[raw] = strings
        keys, exchange, routing_key, bcc = strings
        held = LoggedDelayed.paged(
            store_id, self.source, where, psize, bsize, exchange, routing_key, bcc
        )
        return keys, held


def load_delayed(held: Sequence[LoggedDelayed]) -> list[Message]:
    """``held[i].load()`` for each, the paged-out ones read in log order: neighbours in
    the log share one read-ahead window, an isolated one costs one exact ``pread``."""
    out: list[Message | None] = [h.message for h in held]
    paged = sorted((h.where, i) for i, h in enumerate(held) if h.message is None)
    for n, (where, i) in enumerate(paged):
        near = n + 1 < len(paged) and paged[n + 1][0] - where < READ_AHEAD
        out[i] = held[i].load(ahead=near)
    return [m for m in out if m is not None]


def log_delayed(
    log: DurableLog,
    vhost: str,
    exchange: str,
    message: Message,
    routing_keys: Sequence[str],
    due_wall_ms: int,
) -> LoggedDelayed:
    """Log a message a durable delayed exchange holds; returns its schedule entry's
    holder (``message`` itself until ``page_out``)."""
    headers: dict[str, Any] = message.headers()
    headers[_DUE_HEADER] = Int64(due_wall_ms)
    headers[_KEYS_HEADER] = list(routing_keys)
    props_raw = attrs.evolve(message.properties, headers=headers).encode()
    store_id = log.message_published(
        vhost,
        (delayed_store(exchange),),
        message.exchange,
        message.routing_key,
        props_raw,
        message.body,
    )
    where = log.last_body()
    if where is None:
        return LoggedDelayed(store_id, message)
    source, body_at = where
    # The record ends with u32 len(properties), properties, u32 len(body), body
    # (entries.MessagePublished.encode): the properties start just before the body.
    return LoggedDelayed(
        store_id, message, source, body_at - 4 - len(props_raw), len(props_raw), log.last_token
    )


def restored_delayed(
    published: RecoveredMessage, source: BodySource
) -> tuple[int, tuple[str, ...], LoggedDelayed]:
    """A recovered delayed message's (due wall-clock ms, routing keys, paged-out holder):
    only its properties (read back from its record) are decoded; its body is not read."""
    due, keys, props = read_delayed(published.properties_raw)
    message = Message(published.exchange, published.routing_key, props.encode(), b"", props)
    message.size = published.body_size
    psize = len(published.properties_raw)
    held = LoggedDelayed(published.id, message, source, published.body_at - 4 - psize, psize)
    held.page_out()
    return due, keys, held


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
