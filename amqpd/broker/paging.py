"""Paging: the memory budget for the bodies of ready messages (RabbitMQ's lazy / CQv2 mode).

Rules of this module (docs/storage.md "Paging"):
- One ``Paging`` per broker counts the body bytes of every READY message of every queue
  (``ready_bytes``; queues report each change). Unacked messages are not counted: their
  number is bounded by the consumers' prefetch, and they are usually settled soon.
- A message appended to a ready store while ``ready_bytes`` is over ``budget`` is paged
  out: the newest part of the backlog goes to disk, the head (what consumers take next)
  stays in memory, as in RabbitMQ's classic queues v2, which keep the head in memory and
  write the rest to their message store. So the bodies in memory stay within about
  ``budget`` (plus one message, and the last batch not yet committed, below) however long
  the backlog grows. A paged-out body is read back when a consumer or basic.get needs it
  and not kept (``Message.body``), so draining a backlog does not refill memory.
- Where it goes: a persistent message whose every queue is durable is already in the log
  (``enqueue_routed`` told it where, ``Message.on_disk``); it simply forgets its body once
  its record is committed (before that it is only in the log's write buffer; such messages
  wait in ``_pending``, a batch at most). Every other message is written to the spill
  files (storage/bodies.py). If the spill files fail (disk full) the body stays in memory.
- Sans-I/O in the sense that matters: nothing here awaits; the spill write and the
  read-back are synchronous file calls on files the storage layer owns.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqpd.broker.message import Message
    from amqpd.storage.bodies import SpillFiles
    from amqpd.storage.disklog import DiskDurableLog

DEFAULT_BUDGET = 256 * 1024 * 1024


class Paging:
    def __init__(
        self,
        budget: int = DEFAULT_BUDGET,
        *,
        log: DiskDurableLog | None = None,
        spill: SpillFiles | None = None,
    ) -> None:
        self.budget = budget
        self.log = log
        self.spill = spill
        self.ready_bytes = 0
        self.paged_out = 0  # messages whose body left memory (statistics)
        self.spill_failures = 0
        self._pending: deque[tuple[int, Message]] = deque()

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
