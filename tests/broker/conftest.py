"""Shared fixtures for the broker tests: a fresh vhost and fake consumers (no mocks)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amqpd.broker.message import Message
from amqpd.broker.queue import Queue, QueuedMessage
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties


class FakeConsumer:
    """Implements the Consumer protocol; ``credit`` None means always ready."""
    no_ack = False  # a manual-ack consumer (queue.Consumer)

    def __init__(
        self,
        tag: str = "c",
        *,
        exclusive: bool = False,
        credit: int | None = None,
        priority: int = 0,
    ):
        self.tag = tag
        self.exclusive = exclusive
        self.priority = priority
        self.credit = credit
        self.delivered: list[QueuedMessage] = []
        self.cancelled: list[Queue] = []

    def ready(self) -> bool:
        return self.credit is None or self.credit > 0

    def deliver(self, queue: Queue, entry: QueuedMessage) -> None:
        assert entry.seq in queue._unacked  # the queue moved it to unacked first
        self.delivered.append(entry)
        if self.credit is not None:
            self.credit -= 1

    def cancelled_by_server(self, queue: Queue) -> None:
        self.cancelled.append(queue)

    def bodies(self) -> list[bytes]:
        return [e.message.body for e in self.delivered]


@pytest.fixture
def vhost() -> VirtualHost:
    return VirtualHost("/")


@pytest.fixture
def consumer_factory() -> type[FakeConsumer]:
    return FakeConsumer


MessageFactory = Callable[..., Message]


@pytest.fixture
def msg() -> MessageFactory:
    def make(
        body: bytes = b"x",
        routing_key: str = "",
        exchange: str = "",
        **props: object,
    ) -> Message:
        raw = BasicProperties(**props).encode()  # type: ignore[arg-type]
        return Message(exchange, routing_key, raw, body)

    return make
