"""The consumers of one queue, and which of them gets the next message.

Rules of this module (RabbitMQ ``rabbit_queue_consumers.erl``; docs "Consumer Priorities",
"Single Active Consumer"):
- Consumer priorities (``x-priority`` consume argument, an integer, default 0): the next
  message goes to the highest-priority consumer that can take one now (``ready()``: qos
  credit). Consumers of one priority share round robin. A blocked high-priority consumer
  lets lower ones have messages until it has credit again ("consumers with lower priority
  receive messages only when the higher-priority ones are blocked").
- Single active consumer (``x-single-active-consumer`` queue argument): only the consumer
  registered first gets deliveries; the others wait (they got consume-ok and simply receive
  nothing). When the active one goes (cancel, channel close), the next in registration
  order takes over (``rabbit_queue_consumers`` with ``single_active_consumer_on``: the
  active consumer is the head of the registration list; classic queues do not take
  consumer priorities into account for the choice).
- Pure bookkeeping: never delivers, never calls back into the queue.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqpd.broker.queue import Consumer


class ConsumerSet:
    __slots__ = ("_levels", "_order", "_priorities", "single_active")

    def __init__(self, *, single_active: bool = False) -> None:
        self.single_active = single_active
        # Registration order: what `consumers` reports and where SAC picks the active one.
        self._order: list[Consumer] = []
        # priority -> round-robin deque; priorities kept sorted, highest first (negated).
        self._levels: dict[int, deque[Consumer]] = {}
        self._priorities: list[int] = []

    def __len__(self) -> int:
        return len(self._order)

    def __bool__(self) -> bool:
        return bool(self._order)

    def __iter__(self) -> Iterator[Consumer]:
        return iter(self._order)

    def __contains__(self, consumer: object) -> bool:
        return consumer in self._order

    @property
    def active(self) -> Consumer | None:
        """With single active consumer: the one that gets deliveries (else None)."""
        if self.single_active and self._order:
            return self._order[0]
        return None

    def add(self, consumer: Consumer, priority: int = 0) -> None:
        self._order.append(consumer)
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = deque()
            bisect.insort(self._priorities, -priority)
        level.append(consumer)

    def remove(self, consumer: Consumer) -> bool:
        """Forget ``consumer``; False if it was not here."""
        try:
            self._order.remove(consumer)
        except ValueError:
            return False
        for key, level in self._levels.items():
            if consumer in level:
                level.remove(consumer)
                if not level:
                    del self._levels[key]
                    self._priorities.remove(-key)
                break
        return True

    def clear(self) -> None:
        self._order.clear()
        self._levels.clear()
        self._priorities.clear()

    def next_ready(self) -> Consumer | None:
        """The consumer the next message goes to, or None if nobody can take one now.

        Advances the round robin of the chosen consumer's priority level.
        """
        if self.single_active:
            head = self._order[0] if self._order else None
            return head if head is not None and head.ready() else None
        levels = self._levels
        for neg in self._priorities:
            level = levels[-neg]
            for _ in range(len(level)):
                consumer = level[0]
                level.rotate(-1)
                if consumer.ready():
                    return consumer
        return None
