"""The ready-message stores a Queue keeps its undelivered messages in.

Rules of this module:
- A store holds QueuedMessage entries and hands them out in delivery order; it knows
  nothing about consumers, acks or limits (the Queue does).
- Requeued entries go back to their ORIGINAL position (RabbitMQ since 2.7.0): fresh entries
  sit in a deque in seq order, requeued ones in a heap keyed by seq, and ``take`` returns
  the smaller head of the two, so a requeue costs O(log n) and never scans.
- ``PriorityReady`` is the classic priority queue (x-max-priority, docs "Priority Queue
  Support"): one ReadyFifo per level, highest level first, FIFO within a level; a message
  without priority is level 0, one above the maximum is the maximum.
- With paging (broker/paging.py) a store counts what its entries in memory cost against
  the broker's budget (``Paging.cost``), and with delta files (docs/storage.md "Paging")
  a ``ReadyFifo`` is three parts in delivery order: ``_fresh``, the head, in memory;
  ``_delta``, entries on disk (their descriptors, ``Paging.encode``); ``_tail``, entries
  bound for the delta that must wait in memory until the log has committed the record
  their body is in (about one commit batch; written out by an ``after_commit`` callback,
  or at the next append). An entry appended while the budget is
  exceeded, or while the delta or the tail is not empty (order!), goes to the tail side;
  when ``_fresh`` runs empty the next chunk (``CHUNK_ENTRIES`` / ``CHUNK_BYTES``) is read
  back from the delta, then the tail. Requeued entries always stay in memory (the heap):
  their seq is below every delta entry's, so ``take`` still returns them first.
- After a restart a ``ReadyFifo`` may also have a *logged* part (``attach_logged``, only
  while it is empty: broker/restore.py): the restored messages still in the durable log,
  as ranges of it (restore.RestoredTail over storage/logtail.py), between ``_fresh`` and
  the delta. Nothing of it is in memory or counted against the budget until ``_fresh``
  runs empty and its next chunk (``CHUNK_ENTRIES`` / ``CHUNK_BYTES``) is read; while it
  is not empty every append goes behind it (to the delta and tail as above; without
  delta files, to the tail, in memory).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from amqpd.broker.paging import CHUNK_BYTES, CHUNK_ENTRIES

if TYPE_CHECKING:
    from amqpd.broker.paging import Paging
    from amqpd.broker.queue import QueuedMessage
    from amqpd.storage.delta import DeltaQueue


class ReadyStore(Protocol):
    def append(self, entry: QueuedMessage) -> None: ...

    def put_back(self, entry: QueuedMessage) -> None: ...

    def take(self) -> QueuedMessage | None: ...

    def peek(self) -> QueuedMessage | None:
        """The entry ``take`` would return, left in place."""
        ...

    def clear(self) -> None: ...

    def attach_paging(self, paging: Paging) -> None:
        """Count against ``paging`` from now on (the entries already held too)."""
        ...

    def __len__(self) -> int: ...


class LoggedPart(Protocol):
    """A restored queue's messages still in the durable log (restore.RestoredTail)."""

    body_bytes: int  # of the entries not taken yet

    def __len__(self) -> int: ...

    def take(self, max_count: int, max_bytes: int) -> list[QueuedMessage]:
        """The next entries in order: at least one unless empty, at most ``max_count``."""
        ...

    def stored(self) -> tuple[Sequence[int], Sequence[int]]:
        """Ids and record segments of the entries not taken yet, then forgotten (a purge
        logs them)."""
        ...

    def clear(self) -> None: ...


class ReadyFifo:
    __slots__ = ("_cost", "_delta", "_fresh", "_logged", "_paging", "_requeued", "_tail")

    def __init__(self, paging: Paging | None = None) -> None:
        self._fresh: deque[QueuedMessage] = deque()
        self._requeued: list[tuple[int, QueuedMessage]] = []
        self._paging: Paging | None = None
        self._cost = 0  # what the entries in memory count in paging.ready_bytes
        self._delta: DeltaQueue | None = None
        self._tail: deque[tuple[int, QueuedMessage]] = deque()  # (log token to wait, entry)
        self._logged: LoggedPart | None = None  # after a restart: the rest is in the log
        if paging is not None:
            self.attach_paging(paging)

    def attach_paging(self, paging: Paging) -> None:
        self._paging = paging
        cost = sum(paging.cost(e.message) for e in self._fresh)
        cost += sum(paging.cost(e.message) for _, e in self._requeued)
        cost += sum(paging.cost(e.message) for _, e in self._tail)  # behind a logged part
        if paging.deltas is None and self._logged is not None:
            # Body-only paging counts every ready body, read back or not (paging.py).
            cost += self._logged.body_bytes
        self._cost += cost
        paging.ready_bytes += cost

    def attach_logged(self, part: LoggedPart) -> None:
        """``part`` (a restored queue's messages in the log) is this empty FIFO's backlog."""
        assert not len(self)
        self._logged = part if len(part) else None

    def append(self, entry: QueuedMessage) -> None:
        paging = self._paging
        if paging is None:
            if self._logged or self._tail:
                self._tail.append((0, entry))  # behind the logged part: order
                return
            self._fresh.append(entry)
            return
        message = entry.message
        if paging.deltas is None:
            if self._logged or self._tail:
                self._tail.append((0, entry))
            else:
                self._fresh.append(entry)
            self._cost += message.size
            paging.admit(message)  # counts it; may page the body out (the backlog's tail)
            return
        cost = paging.cost(message)
        if self._tail or self._delta or self._logged or paging.over(cost):
            self._to_delta(paging, entry, cost)
            return
        self._fresh.append(entry)
        self._cost += cost
        paging.ready_bytes += cost

    def _to_delta(self, paging: Paging, entry: QueuedMessage, cost: int) -> None:
        tail = self._tail
        token = paging.wait_token(entry.message)
        if token or tail:
            waiting = bool(tail)
            tail.append((token, entry))
            self._cost += cost
            paging.ready_bytes += cost
            self._flush_tail(paging)
            if token and not waiting:
                # Written out when the record is committed even if nothing else comes.
                paging.when_committed(self._committed)
        else:
            self._write(paging, entry)

    def _committed(self) -> None:
        paging = self._paging
        if paging is None or not self._tail:
            return
        self._flush_tail(paging)
        if self._tail:
            paging.when_committed(self._committed)

    def _flush_tail(self, paging: Paging) -> None:
        """Entries at the front of the tail whose record is committed go to the delta."""
        tail = self._tail
        committed = paging.committed_token
        while tail and tail[0][0] <= committed:
            entry = tail.popleft()[1]
            cost = paging.cost(entry.message)
            self._cost -= cost
            paging.ready_bytes -= cost
            self._write(paging, entry)

    def _write(self, paging: Paging, entry: QueuedMessage) -> None:
        delta = self._delta
        if delta is None:
            assert paging.deltas is not None
            delta = self._delta = paging.deltas.new_queue()
        delta.append(paging.encode(entry))

    def _refill(self) -> None:
        """``_fresh`` is empty: bring the next chunk of the logged part, the delta (or the
        tail) into memory."""
        paging = self._paging
        fresh = self._fresh
        logged = self._logged
        if logged is not None:
            entries = logged.take(CHUNK_ENTRIES, CHUNK_BYTES)
            fresh.extend(entries)
            if not len(logged):
                self._logged = None
            if paging is not None and paging.deltas is not None:
                # (Body-only paging counted the part's bodies when it was attached.)
                cost = sum(paging.cost(entry.message) for entry in entries)
                self._cost += cost
                paging.ready_bytes += cost
            return
        delta = self._delta
        if delta:
            assert paging is not None
            cost = 0
            for record in delta.read(CHUNK_ENTRIES, CHUNK_BYTES):
                entry = paging.decode(record)
                cost += paging.cost(entry.message)
                fresh.append(entry)
            self._cost += cost
            paging.ready_bytes += cost
            return
        # The delta is drained: the tail is next, already in memory and counted.
        fresh.extend(entry for _, entry in self._tail)
        self._tail.clear()

    def put_back(self, entry: QueuedMessage) -> None:
        heapq.heappush(self._requeued, (entry.seq, entry))
        paging = self._paging
        if paging is not None:
            cost = paging.cost(entry.message)
            self._cost += cost
            paging.ready_bytes += cost

    def take(self) -> QueuedMessage | None:
        requeued = self._requeued
        fresh = self._fresh
        if not fresh and (self._logged or self._delta or self._tail):
            self._refill()
        if requeued and (not fresh or requeued[0][0] < fresh[0].seq):
            entry = heapq.heappop(requeued)[1]
        elif fresh:
            entry = fresh.popleft()
        else:
            return None
        paging = self._paging
        if paging is not None:
            cost = paging.cost(entry.message)
            self._cost -= cost
            paging.ready_bytes -= cost
        return entry

    def peek(self) -> QueuedMessage | None:
        requeued = self._requeued
        fresh = self._fresh
        if not fresh and (self._logged or self._delta or self._tail):
            self._refill()
        if requeued and (not fresh or requeued[0][0] < fresh[0].seq):
            return requeued[0][1]
        if fresh:
            return fresh[0]
        return None

    def take_logged(self) -> LoggedPart | None:
        """Hand over the logged part (not read yet) and forget it: a purge logs its ids
        without reading every record back."""
        logged, self._logged = self._logged, None
        return logged

    def clear(self) -> None:
        self._fresh.clear()
        self._requeued.clear()
        self._tail.clear()
        if self._logged is not None:
            self._logged.clear()
            self._logged = None
        if self._delta is not None:
            self._delta.clear()  # its files go
        if self._paging is not None:
            self._paging.ready_bytes -= self._cost
        self._cost = 0

    def __len__(self) -> int:
        delta = self._delta
        n = len(self._fresh) + len(self._requeued) + len(self._tail)
        if self._logged is not None:
            n += len(self._logged)
        return n + len(delta) if delta is not None else n


class PriorityReady:
    __slots__ = ("_count", "_levels", "_max")

    def __init__(self, max_priority: int) -> None:
        self._max = max_priority
        self._levels = [ReadyFifo() for _ in range(max_priority + 1)]
        self._count = 0

    def attach_paging(self, paging: Paging) -> None:
        for level in self._levels:  # each level has its own delta
            level.attach_paging(paging)

    def _level(self, entry: QueuedMessage) -> ReadyFifo:
        priority = entry.message.properties.priority
        if priority is None:
            return self._levels[0]
        return self._levels[min(priority, self._max)]

    def append(self, entry: QueuedMessage) -> None:
        self._level(entry).append(entry)
        self._count += 1

    def put_back(self, entry: QueuedMessage) -> None:
        self._level(entry).put_back(entry)
        self._count += 1

    def take(self) -> QueuedMessage | None:
        if not self._count:
            return None
        for level in reversed(self._levels):
            if len(level):
                self._count -= 1
                return level.take()
        return None  # pragma: no cover - _count says otherwise

    def peek(self) -> QueuedMessage | None:
        if not self._count:
            return None
        for level in reversed(self._levels):
            if len(level):
                return level.peek()
        return None  # pragma: no cover - _count says otherwise

    def clear(self) -> None:
        for level in self._levels:
            level.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count
