"""Busy consumers are parked: a publish does not ask every busy consumer again.

broker/consumers.py: a consumer whose ready() said no leaves the round robin until the
queue is told it may take deliveries again (``Queue.unblock``, or ``dispatch`` with
recheck), and then comes back at the tail of its priority level, as RabbitMQ's
rabbit_queue_consumers:unblock does.
"""

from __future__ import annotations

from amqpd.broker.message import Message
from amqpd.broker.queue import Queue, QueuedMessage

from .conftest import FakeConsumer


class CountingConsumer(FakeConsumer):
    """A FakeConsumer that counts how often the queue asks whether it is ready."""

    def __init__(self, tag: str, *, credit: int | None = None, priority: int = 0) -> None:
        super().__init__(tag, credit=credit, priority=priority)
        self.asked = 0

    def ready(self) -> bool:
        self.asked += 1
        return super().ready()


def publish(q: Queue, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        q.enqueue(Message("", "q", b"", f"m{i}".encode()), now=0.0)


def test_publishing_while_every_consumer_is_busy_asks_none_of_them_again() -> None:
    q = Queue("q")
    consumers = [CountingConsumer(f"c{i}", credit=1, priority=i % 3) for i in range(50)]
    for c in consumers:
        q.add_consumer(c)
    publish(q, 51)  # one each, then the 51st finds them all busy
    asked = sum(c.asked for c in consumers)
    publish(q, 1000, 51)
    assert sum(c.asked for c in consumers) == asked
    assert q.message_count == 1001 and sum(len(c.delivered) for c in consumers) == 50


def test_an_unblocked_consumer_gets_the_next_message_and_rejoins_at_the_tail() -> None:
    q = Queue("q")
    a, b, c = (CountingConsumer(t, credit=1) for t in "abc")
    for consumer in (a, b, c):
        q.add_consumer(consumer)
    publish(q, 4)  # m0 a, m1 b, m2 c; m3 waits with everyone busy
    assert [x.bodies() for x in (a, b, c)] == [[b"m0"], [b"m1"], [b"m2"]]
    # b's ack gives its credit back: it takes m3; a and c stay parked.
    b.credit = 1
    q.unblock(b)
    q.dispatch(recheck=False)
    assert b.bodies() == [b"m1", b"m3"] and a.bodies() == [b"m0"]
    # Everyone has credit again. b was never found busy after m3 (nobody asked it), so it
    # kept its place; the parked a and c come back behind it, in the order unblocked.
    a.credit = c.credit = b.credit = 5
    for consumer in (c, a, b):
        q.unblock(consumer)
    publish(q, 3, 4)
    assert [x.bodies()[-1] for x in (b, c, a)] == [b"m4", b"m5", b"m6"]


def test_dispatch_with_recheck_finds_credit_given_back_without_unblock() -> None:
    q = Queue("q")
    c = CountingConsumer("c", credit=1)
    q.add_consumer(c)
    publish(q, 3)
    assert c.bodies() == [b"m0"]
    c.credit = 2
    q.dispatch(recheck=False)  # nobody said c is ready: it stays parked
    assert c.bodies() == [b"m0"]
    q.dispatch()  # the default re-examines every parked consumer
    assert c.bodies() == [b"m0", b"m1", b"m2"]


def test_a_parked_consumer_can_be_removed_and_its_level_goes() -> None:
    q = Queue("q")
    high = CountingConsumer("high", credit=1, priority=5)
    low = CountingConsumer("low", credit=10)
    q.add_consumer(high)
    q.add_consumer(low)
    publish(q, 2)  # m0 to high, which is then parked; m1 to low
    assert high.bodies() == [b"m0"] and low.bodies() == [b"m1"]
    q.remove_consumer(high)
    assert q.consumer_count == 1
    q.unblock(high)  # gone: nothing to unblock, no error
    publish(q, 1, 2)
    assert low.bodies() == [b"m1", b"m2"]
    # A new consumer at the removed priority starts a fresh level.
    again = CountingConsumer("again", priority=5)
    q.add_consumer(again)
    publish(q, 1, 3)
    assert again.bodies() == [b"m3"]


def test_requeue_goes_to_the_consumer_whose_credit_came_back() -> None:
    q = Queue("q")
    a, b = CountingConsumer("a", credit=1), CountingConsumer("b", credit=1)
    q.add_consumer(a)
    q.add_consumer(b)
    publish(q, 2)
    [m0] = a.delivered
    # The session's nack: a's credit first, then the requeue runs the queue.
    a.credit = 1
    q.unblock(a)
    q.requeue([m0])
    last: QueuedMessage = a.delivered[-1]
    assert last.message.body == b"m0" and last.redelivered and b.bodies() == [b"m1"]
