"""The broker's timer: one task that runs the core's queue timers (TTL, x-expires).

Rules of this module:
- The core never reads a clock: this task sleeps until ``broker.next_deadline()`` and calls
  ``broker.tick(trio.current_time())``. The broker calls ``on_deadline_moved`` (from inside
  whatever task changed its state) when a new deadline is earlier than the one we sleep
  for; that only sets an event, so the tick never runs inside another task's call stack.
- Output a tick produces for clients (a dead-lettered message delivered to a consumer)
  reaches them the way any cross-connection delivery does: ``Connection.send`` calls that
  connection's ``on_output``, which wakes its writer task.
- A bug in a tick is logged and the timer goes on: one bad queue must not stop every
  other queue's timers, nor the server's nursery.
- Time is ``trio.current_time()``, so tests run on ``autojump_clock``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import structlog
import trio

log = structlog.get_logger("amqpd.server")


class TimedBroker(Protocol):
    """What the timer needs from the broker (docs/internals.md, broker/)."""

    on_deadline_moved: Callable[[], None] | None

    def next_deadline(self) -> float | None: ...

    def tick(self, now: float) -> None: ...


class BrokerTimer:
    def __init__(self, broker: TimedBroker) -> None:
        self.broker = broker
        self._moved = trio.Event()
        self.ticks = 0

    def wake(self) -> None:
        """``broker.on_deadline_moved``: a deadline earlier than the current one appeared."""
        self._moved.set()

    async def run(self) -> None:
        broker = self.broker
        broker.on_deadline_moved = self.wake
        try:
            while True:
                self._moved = trio.Event()
                deadline = broker.next_deadline()
                now = trio.current_time()
                if deadline is None or now < deadline:
                    with trio.move_on_at(math.inf if deadline is None else deadline):
                        await self._moved.wait()
                    continue
                self.ticks += 1
                try:
                    broker.tick(now)
                except Exception as exc:
                    log.error("broker timer tick failed", exc_info=exc)
                await trio.lowlevel.checkpoint()
        finally:
            broker.on_deadline_moved = None
