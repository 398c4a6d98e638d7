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
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from amqpd.broker.queue import QueuedMessage


class ReadyStore(Protocol):
    def append(self, entry: QueuedMessage) -> None: ...

    def put_back(self, entry: QueuedMessage) -> None: ...

    def take(self) -> QueuedMessage | None: ...

    def peek(self) -> QueuedMessage | None:
        """The entry ``take`` would return, left in place."""
        ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...


class ReadyFifo:
    __slots__ = ("_fresh", "_requeued")

    def __init__(self) -> None:
        self._fresh: deque[QueuedMessage] = deque()
        self._requeued: list[tuple[int, QueuedMessage]] = []

    def append(self, entry: QueuedMessage) -> None:
        self._fresh.append(entry)

    def put_back(self, entry: QueuedMessage) -> None:
        heapq.heappush(self._requeued, (entry.seq, entry))

    def take(self) -> QueuedMessage | None:
        requeued = self._requeued
        fresh = self._fresh
        if requeued and (not fresh or requeued[0][0] < fresh[0].seq):
            return heapq.heappop(requeued)[1]
        if fresh:
            return fresh.popleft()
        return None

    def peek(self) -> QueuedMessage | None:
        requeued = self._requeued
        fresh = self._fresh
        if requeued and (not fresh or requeued[0][0] < fresh[0].seq):
            return requeued[0][1]
        if fresh:
            return fresh[0]
        return None

    def clear(self) -> None:
        self._fresh.clear()
        self._requeued.clear()

    def __len__(self) -> int:
        return len(self._fresh) + len(self._requeued)


class PriorityReady:
    __slots__ = ("_count", "_levels", "_max")

    def __init__(self, max_priority: int) -> None:
        self._max = max_priority
        self._levels = [ReadyFifo() for _ in range(max_priority + 1)]
        self._count = 0

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
