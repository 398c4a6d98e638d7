"""x-max-length / x-max-length-bytes / x-overflow (docs "Queue Length Limit"; each case
checked against a live RabbitMQ)."""

from __future__ import annotations

from typing import Any

from amqpd.broker.message import Message
from amqpd.broker.queue import Queue


def drain(q: Queue) -> list[bytes]:
    out = []
    while (e := q.get()) is not None:
        q.ack(e)
        out.append(e.message.body)
    return out


def test_drop_head(msg: Any) -> None:
    dropped: list[tuple[bytes, str]] = []
    q = Queue("q", arguments={"x-max-length": 2})
    q.on_dead_letter = lambda queue, m, reason, now: dropped.append((m.body, reason))
    for b in (b"0", b"1", b"2", b"3"):
        assert q.enqueue(msg(b))
    assert drain(q) == [b"2", b"3"]
    assert dropped == [(b"0", "maxlen"), (b"1", "maxlen")]
    assert q.statistics().dropped == 2


def test_max_length_bytes_counts_bodies(msg: Any) -> None:
    q = Queue("q", arguments={"x-max-length-bytes": 5})
    for b in (b"aa", b"bbb", b"c", b"dddddd", b"e"):
        q.enqueue(msg(b))
    assert drain(q) == [b"e"]
    assert q.statistics().messages_ready_bytes == 0


def test_reject_publish(msg: Any) -> None:
    for overflow in ("reject-publish", "reject-publish-dlx"):
        q = Queue("q", arguments={"x-max-length": 1, "x-overflow": overflow})
        assert [q.enqueue(msg(b)) for b in (b"0", b"1", b"2")] == [True, False, False]
        assert drain(q) == [b"0"]
        assert q.statistics().rejected == 2


def test_unacked_do_not_count(msg: Any) -> None:
    q = Queue("q", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert q.enqueue(msg(b"0"))
    assert q.get() is not None
    assert q.enqueue(msg(b"1"))
    assert not q.enqueue(msg(b"2"))


def test_requeue_can_overflow_and_drops_head(msg: Any) -> None:
    q = Queue("q", arguments={"x-max-length": 2})
    q.enqueue(msg(b"0"))
    q.enqueue(msg(b"1"))
    e = q.get()
    assert e is not None
    q.enqueue(msg(b"2"))
    q.requeue([e])  # "0" goes back to the head, over the limit: the head is dropped
    assert drain(q) == [b"1", b"2"]


def test_zero_length_delivers_to_a_waiting_consumer(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q", arguments={"x-max-length": 0})
    q.enqueue(msg(b"x"))
    assert q.message_count == 0  # nobody waiting: dropped at once
    c = consumer_factory()
    q.add_consumer(c)
    q.enqueue(msg(b"y"))
    assert c.bodies() == [b"y"]


def test_zero_length_reject_publish_refuses_even_with_consumer(
    msg: Any, consumer_factory: Any
) -> None:
    # will_overflow/2 is checked before any delivery attempt.
    q = Queue("q", arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    c = consumer_factory()
    q.add_consumer(c)
    assert not q.enqueue(msg(b"x"))
    assert c.delivered == []


def test_discard_dead_letter_hook() -> None:
    seen: list[str] = []
    q = Queue("q")
    q.on_dead_letter = lambda queue, m, reason, now: seen.append(reason)
    q.enqueue(Message("", "q", b"", b"x"))
    e = q.get()
    assert e is not None
    q.discard(e)
    q.discard(e)  # settled already: no second dead-letter
    assert seen == ["rejected"]


def test_requeue_that_overflows_drops_before_delivering(consumer_factory: Any) -> None:
    # requeue_and_run: maybe_drop_head, drop_expired_msgs, then run_message_queue (oracle).
    dropped: list[bytes] = []
    q = Queue("q", arguments={"x-max-length": 1})
    q.on_dead_letter = lambda queue, m, reason, now: dropped.append(m.body)
    c = consumer_factory(credit=1)
    q.add_consumer(c)
    q.enqueue(Message("", "q", b"", b"m0"))
    q.enqueue(Message("", "q", b"", b"m1"))
    [m0] = c.delivered
    c.credit = 1  # the nack gives the credit back before the queue acts
    q.unblock(c)
    q.requeue([m0])
    assert dropped == [b"m0"] and c.bodies() == [b"m0", b"m1"]
    assert not c.delivered[1].redelivered


def test_requeue_over_the_limit_drops_nothing_under_reject_publish(msg: Any) -> None:
    # rabbit_amqqueue_process:maybe_drop_head/1 does nothing under reject-publish(-dlx);
    # oracle: x-max-length 1, reject-publish, m0 delivered, m1 ready, m0 nacked: 2 ready.
    for overflow in ("reject-publish", "reject-publish-dlx"):
        q = Queue("q", arguments={"x-max-length": 1, "x-overflow": overflow})
        q.enqueue(msg(b"0"))
        e = q.get()
        assert e is not None
        q.enqueue(msg(b"1"))
        q.requeue([e])
        assert drain(q) == [b"0", b"1"]
