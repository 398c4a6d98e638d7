"""x-expires (reference 2.2): a queue unused for that long is deleted, without dead-lettering."""

from __future__ import annotations

import pytest

from amqpd.broker.message import Message
from amqpd.broker.vhost import VirtualHost

from .conftest import FakeConsumer


@pytest.fixture
def vh() -> VirtualHost:
    return VirtualHost("/", wall_clock=lambda: 0.0)


def declare(vh: VirtualHost, now: float, **kw: object) -> None:
    vh.declare_queue("q", arguments={"x-expires": 1000}, now=now, **kw)  # type: ignore[arg-type]


def test_deleted_after_being_unused(vh: VirtualHost) -> None:
    declare(vh, 10.0)
    assert vh.next_deadline() == 11.0
    vh.tick(10.999)
    assert "q" in vh.queues
    vh.tick(11.0)
    assert "q" not in vh.queues and vh.next_deadline() is None


@pytest.mark.parametrize("passive", [False, True])
def test_a_declare_renews_the_lease(vh: VirtualHost, passive: bool) -> None:
    declare(vh, 0.0)
    vh.tick(0.5)
    declare(vh, 0.6, passive=passive)
    vh.tick(1.0)  # the first lease's deadline: stale now
    assert "q" in vh.queues
    assert vh.next_deadline() == 1.6
    vh.tick(1.6)
    assert "q" not in vh.queues


def test_basic_get_renews_the_lease_even_when_empty(vh: VirtualHost) -> None:
    declare(vh, 0.0)
    assert vh.queues["q"].get(now=0.9) is None
    vh.tick(1.0)
    assert "q" in vh.queues
    vh.tick(1.9)
    assert "q" not in vh.queues


def test_a_publish_is_not_use(vh: VirtualHost) -> None:
    declare(vh, 0.0)
    vh.queues["q"].enqueue(Message("", "q", b"", b"x"), now=0.9)
    vh.tick(1.0)
    assert "q" not in vh.queues


def test_consumers_keep_it_and_the_lease_starts_when_the_last_goes(vh: VirtualHost) -> None:
    declare(vh, 0.0)
    q = vh.queues["q"]
    a, b = FakeConsumer("a"), FakeConsumer("b")
    q.add_consumer(a, now=0.5)
    q.add_consumer(b, now=0.5)
    vh.tick(5.0)
    assert "q" in vh.queues and q.next_deadline() is None
    q.remove_consumer(a, now=6.0)
    assert q.next_deadline() is None
    q.remove_consumer(b, now=7.0)
    assert q.next_deadline() == 8.0
    vh.tick(8.0)
    assert "q" not in vh.queues
    assert a.cancelled == [] and b.cancelled == []  # nobody was left to cancel


def test_expiry_does_not_dead_letter(vh: VirtualHost) -> None:
    vh.declare_queue("dlq")
    vh.declare_queue(
        "q",
        arguments={
            "x-expires": 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dlq",
        },
        now=0.0,
    )
    vh.queues["q"].enqueue(Message("", "q", b"", b"x"), now=0.0)
    vh.tick(1.0)
    assert "q" not in vh.queues and vh.queues["dlq"].message_count == 0


def test_unacked_messages_of_an_expired_queue_settle_harmlessly(vh: VirtualHost) -> None:
    declare(vh, 0.0)
    q = vh.queues["q"]
    q.enqueue(Message("", "q", b"", b"x"), now=0.0)
    entry = q.get(now=0.0)
    assert entry is not None
    vh.tick(1.0)
    assert q.deleted
    q.requeue([entry], now=1.0)
    q.discard(entry, now=1.0)
    q.ack(entry)
    assert q.message_count == 0


def test_message_ttl_and_expires_share_the_timer(vh: VirtualHost) -> None:
    vh.declare_queue("q", arguments={"x-expires": 5000, "x-message-ttl": 1000}, now=0.0)
    q = vh.queues["q"]
    q.enqueue(Message("", "q", b"", b"x"), now=0.0)
    assert vh.next_deadline() == 1.0
    vh.tick(1.0)
    assert q.message_count == 0 and vh.next_deadline() == 5.0
    vh.tick(5.0)
    assert "q" not in vh.queues
