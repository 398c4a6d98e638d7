"""The consumers of one queue, and which of them gets the next message.

Rules of this module (RabbitMQ ``rabbit_queue_consumers.erl``; docs "Consumer Priorities",
"Single Active Consumer"):
- Consumer priorities (``x-priority`` consume argument, an integer, default 0): the next
  message goes to the highest-priority consumer that can take one now (``ready()``: qos
  credit). Consumers of one priority share round robin. A blocked high-priority consumer
  lets lower ones have messages until it has credit again ("consumers with lower priority
  receive messages only when the higher-priority ones are blocked").
- Single active consumer (``x-single-active-consumer`` queue argument): only one consumer
  gets deliveries; the others wait (they got consume-ok and simply receive nothing). The
  first consumer of a queue without an active one becomes active. When the active one goes
  (cancel, channel close), the next takes over: the highest-priority waiting consumer,
  and among equals the one registered first, which without x-priority is plain
  registration order (``rabbit_amqqueue_process:new_single_active_consumer_after_basic_
  cancel`` -> ``rabbit_queue_consumers:get_consumer/1``, the head of its priority queue;
  checked on the oracle). The hand-over delivers nothing by itself (see Queue).
- A consumer found not ready by ``next_ready`` is parked: taken out of its level's round
  robin, so that a queue whose consumers are all busy (prefetch used up) costs O(1) per
  publish, not O(consumers) (benchmarks/scaling.py "consumers"). It comes back at the tail
  of its level (RabbitMQ moves a blocked consumer back to the end of its priority queue,
  ``rabbit_queue_consumers:unblock``) when the queue is told it may take deliveries again:
  ``unblock(consumer)``, or ``unblock_all()`` for a caller that does not know which.
- Every table is keyed by ``id(consumer)`` (each level's round robin an OrderedDict), so
  adding, cancelling, parking and unblocking a consumer are O(1) whatever their number.
- Pure bookkeeping: never delivers, never calls back into the queue.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqpd.broker.queue import Consumer


class ConsumerSet:
    __slots__ = (
        "_active",
        "_counts",
        "_levels",
        "_order",
        "_parked",
        "_priorities",
        "_priority",
        "single_active",
    )

    def __init__(self, *, single_active: bool = False) -> None:
        self.single_active = single_active
        # Registration order: what `consumers` reports and where SAC picks the active one.
        # Keyed by id(consumer) (as every table here), so a cancel is O(1), not O(consumers).
        self._order: dict[int, Consumer] = {}
        # priority -> its round robin, head first (OrderedDict: O(1) rotate and removal
        # anywhere); priorities kept sorted, highest first (negated).
        self._levels: dict[int, OrderedDict[int, Consumer]] = {}
        self._priorities: list[int] = []
        self._priority: dict[int, int] = {}  # id(consumer) -> priority
        self._counts: dict[int, int] = {}  # priority -> consumers, parked ones included
        # id(consumer) -> consumer found not ready, out of its level until unblocked, in
        # the order they were parked.
        self._parked: dict[int, Consumer] = {}
        self._active: Consumer | None = None

    def __len__(self) -> int:
        return len(self._order)

    def __bool__(self) -> bool:
        return bool(self._order)

    def __iter__(self) -> Iterator[Consumer]:
        return iter(self._order.values())

    def __contains__(self, consumer: object) -> bool:
        return self._order.get(id(consumer)) is consumer

    @property
    def active(self) -> Consumer | None:
        """With single active consumer: the one that gets deliveries (else None)."""
        return self._active

    def add(self, consumer: Consumer, priority: int = 0) -> None:
        key = id(consumer)
        self._order[key] = consumer
        self._priority[key] = priority
        if self.single_active and self._active is None:
            self._active = consumer
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = OrderedDict()
            bisect.insort(self._priorities, -priority)
        level[key] = consumer
        self._counts[priority] = self._counts.get(priority, 0) + 1

    def remove(self, consumer: Consumer) -> bool:
        """Forget ``consumer``; False if it was not here."""
        if self._order.get(id(consumer)) is not consumer:
            return False
        del self._order[id(consumer)]
        key = self._priority.pop(id(consumer))
        if self._parked.pop(id(consumer), None) is None:
            del self._levels[key][id(consumer)]
        left = self._counts[key] - 1
        if left:
            self._counts[key] = left
        else:
            del self._counts[key]
            del self._levels[key]
            self._priorities.remove(-key)
        if self._active is consumer:
            self._active = self._successor()
        return True

    def unblock(self, consumer: Consumer) -> None:
        """``consumer`` may take deliveries again: back into the round robin if parked."""
        key = id(consumer)
        parked = self._parked.pop(key, None)
        if parked is not None:
            self._levels[self._priority[key]][key] = parked

    def unblock_all(self) -> None:
        """Every parked consumer back into the round robin, in the order they were parked."""
        if not self._parked:
            return
        levels = self._levels
        priority = self._priority
        for key, consumer in self._parked.items():
            levels[priority[key]][key] = consumer
        self._parked.clear()

    def _successor(self) -> Consumer | None:
        # Highest priority first; registration order among equals (max() keeps the first).
        if not self._order:
            return None
        priority = self._priority
        return max(self._order.values(), key=lambda c: priority[id(c)])

    def clear(self) -> None:
        self._order.clear()
        self._levels.clear()
        self._priorities.clear()
        self._priority.clear()
        self._counts.clear()
        self._parked.clear()
        self._active = None

    def next_ready(self) -> Consumer | None:
        """The consumer the next message goes to, or None if nobody can take one now.

        Advances the round robin of the chosen consumer's priority level; parks the
        consumers it finds not ready (see the module rules).
        """
        if self.single_active:
            active = self._active
            return active if active is not None and active.ready() else None
        levels = self._levels
        parked = self._parked
        for neg in self._priorities:
            level = levels[-neg]
            while level:
                key = next(iter(level))
                consumer = level[key]
                if consumer.ready():
                    level.move_to_end(key)  # the round robin moves on
                    return consumer
                del level[key]
                parked[key] = consumer
        return None
