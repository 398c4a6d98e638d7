"""Paging: the memory budget for ready entries (RabbitMQ's classic queues v2 "delta").

Rules of this module (docs/storage.md "Paging"):
- One ``Paging`` per broker counts what the READY entries of every queue held in memory
  cost (``ready_bytes``; the ready stores, broker/ready.py, report each change). Unacked
  messages are not counted: their number is bounded by the consumers' prefetch, and they
  are usually settled soon.
- With ``deltas`` (the server always gives them): an entry costs ``ENTRY_OVERHEAD`` plus
  its body if the body is in memory (``cost``). One appended while the budget would be
  exceeded goes to its FIFO's delta on disk, entry and all (ready.py keeps the order); the
  head stays in memory, read back from the delta in chunks (``CHUNK_ENTRIES``,
  ``CHUNK_BYTES``) as it drains, so RAM does not grow with the backlog's length.
- The delta descriptor (``encode`` / ``decode``; the storage layer sees bytes only) holds
  everything the queue needs of the entry. A body already in the durable log (a persistent
  message whose every queue is durable: ``enqueue_routed`` told it where,
  ``Message.on_disk``) is kept as its place only, once its record is committed
  (``wait_token``, ``when_committed``: the log's write buffer cannot be read back); every
  other body goes inline. So with deltas nothing is spilled, and no descriptor ever refers
  to a spill file a ``SpilledMessage`` could free.
- Without ``deltas`` (the earlier body-only paging, kept for its tests): ``ready_bytes``
  is the body bytes of every ready message, and a message admitted over the budget has its
  body paged out: forgotten once its log record is committed (``_pending``) if the log has
  it, else written to the spill files (storage/bodies.py; kept in memory if they fail).
- A body in the log is read back when a consumer or basic.get needs it and not kept
  (``Message.body``), so draining a backlog does not refill memory.
- Sans-I/O in the sense that matters: nothing here awaits; delta writes and reads and body
  read-backs are synchronous file calls on files the storage layer owns.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from amqpd.broker.message import Message

if TYPE_CHECKING:
    from amqpd.broker.queue import QueuedMessage
    from amqpd.storage.bodies import SpillFiles
    from amqpd.storage.delta import DeltaFiles
    from amqpd.storage.disklog import DiskDurableLog

# Small, as RabbitMQ CQv2 keeps only a short head of each queue in memory: entries read
# back from a delta in chunks drain about as fast as ones that never left memory, and a
# backlog's RAM is then mostly what the budget cannot page (docs/performance.md, the
# choice of 32 MiB: a 1M 1 KiB persistent backlog under 300 MB peak RSS).
DEFAULT_BUDGET = 32 * 1024 * 1024
#: What one ready entry in memory costs besides its body (the QueuedMessage, its Message,
#: the properties bytes, routing key and exchange strings, the deque slot, the body's
#: bytes header and allocator rounding): measured by benchmarks/entry_overhead.py, 405 B
#: with 16 B bodies and 437 B with 1 KiB ones (a 7-character routing key, delivery-mode
#: property only), so an estimate, not an exact count.
ENTRY_OVERHEAD = 440
#: A read-back from a delta brings at most this many entries (and bytes of inline bodies
#: and properties) into memory: consumers never wait on one read per message, and 1 MB
#: bodies do not fill RAM.
CHUNK_ENTRIES = 256
CHUNK_BYTES = 256 * 1024

# The delta descriptor of a ready entry (little-endian): seq, expires_at (NaN: never),
# flags (1 redelivered, 2 body in the durable log), store_id, store_segment, body size,
# lengths of exchange and routing key, count of BCC keys, length of the raw properties;
# then the body's location in the log (u64) when flag 2; then exchange, routing key, each
# BCC key (u16 length + UTF-8), the properties and, without flag 2, the body itself.
_HEAD = struct.Struct("<QdBQIIHHHI")
_U64 = struct.Struct("<Q")
_U16 = struct.Struct("<H")
_REDELIVERED = 1
_IN_LOG = 2


class Paging:
    def __init__(
        self,
        budget: int = DEFAULT_BUDGET,
        *,
        log: DiskDurableLog | None = None,
        spill: SpillFiles | None = None,
        deltas: DeltaFiles | None = None,
    ) -> None:
        self.budget = budget
        self.log = log
        self.spill = spill
        self.deltas = deltas
        # With deltas: what the ready entries in memory cost (``cost``); without: the body
        # bytes of every ready message, paged out or not.
        self.ready_bytes = 0
        self.to_delta = 0  # entries written to a delta (statistics)
        self.from_delta = 0  # entries read back from one
        self.paged_out = 0  # messages whose body left memory (statistics)
        self.spill_failures = 0
        self._pending: deque[tuple[int, Message]] = deque()

    def cost(self, message: Message) -> int:
        """What a ready entry for ``message`` in memory counts against the budget."""
        if self.deltas is None:
            return message.size
        return ENTRY_OVERHEAD + message.size if message.resident else ENTRY_OVERHEAD

    def over(self, cost: int) -> bool:
        return self.ready_bytes + cost > self.budget

    def wait_token(self, message: Message) -> int:
        """The log token to wait for before ``message`` may go to a delta with only its
        body's place (its record may still be in the log's write buffer); 0: no wait."""
        log = self.log
        if log is None or not message.resident or message.place[0] is not log.bodies:
            return 0
        token = log.last_token
        return token if token > log.committed_token else 0

    def when_committed(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything logged so far is committed."""
        assert self.log is not None
        self.log.after_commit(callback)

    @property
    def committed_token(self) -> int:
        return 0 if self.log is None else self.log.committed_token

    def encode(self, entry: QueuedMessage) -> bytes:
        """The delta descriptor of ``entry``; the body as its place in the log if it is
        there (the log's catalog keeps that segment while the queue holds the message),
        inline otherwise."""
        message = entry.message
        exchange = message.exchange.encode()
        routing_key = message.routing_key.encode()
        props = message.properties_raw
        expires = entry.expires_at
        source, where = message.place
        in_log = self.log is not None and source is self.log.bodies
        flags = (_REDELIVERED if entry.redelivered else 0) | (_IN_LOG if in_log else 0)
        parts = [
            _HEAD.pack(
                entry.seq,
                math.nan if expires is None else expires,
                flags,
                message.store_id,
                message.store_segment,
                message.size,
                len(exchange),
                len(routing_key),
                len(message.bcc),
                len(props),
            )
        ]
        if in_log:
            parts.append(_U64.pack(where))
        parts += (exchange, routing_key)
        for key in message.bcc:
            raw = key.encode()
            parts += (_U16.pack(len(raw)), raw)
        parts.append(props)
        if not in_log:
            parts.append(message.body)
        self.to_delta += 1
        return b"".join(parts)

    def decode(self, data: bytes) -> QueuedMessage:
        """The entry ``encode`` wrote; a body in the log stays there until delivered."""
        from amqpd.broker.queue import QueuedMessage  # queue.py imports this module

        seq, expires, flags, store_id, segment, size, elen, rlen, nbcc, plen = _HEAD.unpack_from(
            data
        )
        pos = _HEAD.size
        where = 0
        if flags & _IN_LOG:
            (where,) = _U64.unpack_from(data, pos)
            pos += 8
        exchange = data[pos : pos + elen].decode()
        pos += elen
        routing_key = data[pos : pos + rlen].decode()
        pos += rlen
        bcc: list[str] = []
        for _ in range(nbcc):
            (n,) = _U16.unpack_from(data, pos)
            bcc.append(data[pos + 2 : pos + 2 + n].decode())
            pos += 2 + n
        props = data[pos : pos + plen]
        pos += plen
        if flags & _IN_LOG:
            assert self.log is not None
            message = Message(exchange, routing_key, props, b"", None, tuple(bcc))
            message.size = size
            message.on_disk(self.log.bodies, where)
            message.drop_body()
        else:
            message = Message(
                exchange, routing_key, props, data[pos : pos + size], None, tuple(bcc)
            )
        message.store_id = store_id
        message.store_segment = segment
        self.from_delta += 1
        return QueuedMessage(
            message, seq, bool(flags & _REDELIVERED), None if math.isnan(expires) else expires
        )

    def admit(self, message: Message) -> None:
        """``message`` was appended to a ready store: count it; page it out if over budget."""
        self.ready_bytes += message.size
        if self._pending:
            self._drop_committed()
        if self.ready_bytes <= self.budget or not message.resident:
            return
        if message.pageable:
            log = self.log
            assert log is not None
            token = log.last_token
            if token <= log.committed_token:
                message.drop_body()
            else:
                self._pending.append((token, message))
            self.paged_out += 1
            return
        spill = self.spill
        if spill is None:
            return
        try:
            where = spill.write(message.body)
        except OSError:
            self.spill_failures += 1
            return
        message.spill(spill, where)
        self.paged_out += 1

    def _drop_committed(self) -> None:
        log = self.log
        assert log is not None
        committed = log.committed_token
        pending = self._pending
        while pending and pending[0][0] <= committed:
            pending.popleft()[1].drop_body()

    def close(self) -> None:
        self._pending.clear()
        if self.spill is not None:
            self.spill.close()
        if self.deltas is not None:
            self.deltas.close()
