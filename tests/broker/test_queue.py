"""Queue: FIFO order, requeue at the original position, consumers and dispatch."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.queue import Queue
from amqpd.errors import AccessRefused


def fill(queue: Queue, msg: Any, n: int) -> None:
    for i in range(n):
        queue.enqueue(msg(str(i).encode()))


def bodies(entries: Any) -> list[bytes]:
    return [e.message.body for e in entries]


def test_fifo_get(msg: Any) -> None:
    q = Queue("q")
    fill(q, msg, 3)
    got = [q.get(), q.get(), q.get()]
    assert bodies(got) == [b"0", b"1", b"2"]
    assert [e.seq for e in got if e] == [1, 2, 3]
    assert q.get() is None
    assert q.message_count == 0 and q.unacked_count == 3


def test_requeue_goes_back_to_original_position(msg: Any) -> None:
    q = Queue("q")
    fill(q, msg, 5)
    e0, e1, e2 = q.get(), q.get(), q.get()
    assert e0 and e1 and e2
    q.requeue([e2])
    q.requeue([e0])
    # 0 and 2 come back before 3 and 4, in their original order; 1 is still unacked
    rest = [q.get() for _ in range(4)]
    assert bodies(rest) == [b"0", b"2", b"3", b"4"]
    assert all(e and e.redelivered for e in rest[:2])
    assert not any(e and e.redelivered for e in rest[2:])


def test_requeue_ignores_settled_entries(msg: Any) -> None:
    q = Queue("q")
    fill(q, msg, 1)
    e = q.get()
    assert e
    q.ack(e)
    q.requeue([e])
    assert q.message_count == 0
    q.ack(e)  # double ack: no-op here (the session answers 406 unknown delivery tag)


def test_discard(msg: Any) -> None:
    q = Queue("q")
    fill(q, msg, 1)
    e = q.get()
    assert e
    q.discard(e)
    assert q.message_count == 0 and q.unacked_count == 0


def test_purge_keeps_unacked(msg: Any) -> None:
    q = Queue("q")
    fill(q, msg, 4)
    e = q.get()
    assert e
    q.requeue([q.get()])  # type: ignore[list-item]
    assert q.purge() == 3
    assert q.unacked_count == 1
    q.requeue([e])
    assert bodies([q.get()]) == [b"0"]


def test_enqueue_delivers_to_ready_consumer(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q")
    c = consumer_factory()
    q.add_consumer(c)
    fill(q, msg, 2)
    assert c.bodies() == [b"0", b"1"]
    assert q.message_count == 0 and q.unacked_count == 2


def test_add_consumer_drains_backlog(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q")
    fill(q, msg, 3)
    c = consumer_factory(credit=2)
    q.add_consumer(c)
    assert c.bodies() == [b"0", b"1"]
    assert q.message_count == 1
    c.credit = 5
    q.dispatch()
    assert c.bodies() == [b"0", b"1", b"2"]


def test_round_robin(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q")
    a, b, c = consumer_factory("a"), consumer_factory("b"), consumer_factory("c")
    for x in (a, b, c):
        q.add_consumer(x)
    fill(q, msg, 7)
    assert a.bodies() == [b"0", b"3", b"6"]
    assert b.bodies() == [b"1", b"4"]
    assert c.bodies() == [b"2", b"5"]


def test_round_robin_skips_busy_consumers(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q")
    a, b = consumer_factory("a", credit=1), consumer_factory("b")
    q.add_consumer(a)
    q.add_consumer(b)
    fill(q, msg, 4)
    assert a.bodies() == [b"0"]
    assert b.bodies() == [b"1", b"2", b"3"]


def test_no_ready_consumer_keeps_messages(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q")
    c = consumer_factory(credit=0)
    q.add_consumer(c)
    fill(q, msg, 2)
    assert c.delivered == [] and q.message_count == 2


def test_requeue_redelivers_in_order(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q")
    c = consumer_factory(credit=3)
    q.add_consumer(c)
    fill(q, msg, 5)
    first = list(c.delivered)
    c.credit = 10
    q.unblock(c)  # as the session does when a settlement gives credit back
    c.delivered.clear()
    q.requeue(reversed(first))  # the order of the requeue call does not matter
    assert c.bodies() == [b"0", b"1", b"2", b"3", b"4"]
    assert [e.redelivered for e in c.delivered] == [True, True, True, False, False]


def test_exclusive_consumer_conflicts(consumer_factory: Any) -> None:
    text = "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    q = Queue("q")
    q.add_consumer(consumer_factory("x", exclusive=True))
    for other in (consumer_factory("a"), consumer_factory("b", exclusive=True)):
        with pytest.raises(AccessRefused) as info:
            q.add_consumer(other)
        assert info.value.reply_text == text
    q2 = Queue("q")
    q2.add_consumer(consumer_factory("a"))
    with pytest.raises(AccessRefused) as info:
        q2.add_consumer(consumer_factory("x", exclusive=True))
    assert info.value.reply_text == text
    assert q2.consumer_count == 1


def test_exclusive_consumer_leaving_frees_queue(consumer_factory: Any) -> None:
    q = Queue("q")
    x = consumer_factory("x", exclusive=True)
    q.add_consumer(x)
    q.remove_consumer(x)
    q.add_consumer(consumer_factory("a"))
    assert q.consumer_count == 1


def test_remove_unknown_consumer_is_noop(consumer_factory: Any) -> None:
    q = Queue("q", auto_delete=True)
    deleted: list[Queue] = []
    q.on_unused = deleted.append
    q.remove_consumer(consumer_factory())
    assert deleted == []


def test_delete_cancels_consumers(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q")
    a, b = consumer_factory("a"), consumer_factory("b")
    q.add_consumer(a)
    q.add_consumer(b)
    fill(q, msg, 1)
    q.add_consumer(consumer_factory("c", credit=0))
    assert q.delete() == 0
    assert a.cancelled == [q] and b.cancelled == [q]
    assert q.deleted and q.consumer_count == 0


def test_statistics_counts(msg: Any, consumer_factory: Any) -> None:
    q = Queue("q")
    fill(q, msg, 3)
    e = q.get()
    assert e
    q.ack(e)
    s = q.statistics()
    assert (s.published, s.delivered, s.acked, s.messages_ready) == (3, 1, 1, 2)


def test_enqueue_on_deleted_queue_is_dropped(msg: Any) -> None:
    q = Queue("q")
    q.delete()
    q.enqueue(msg())
    assert q.message_count == 0


def test_priority_queue_order() -> None:
    # Highest first, FIFO within one priority, none = 0, above the max = the max (oracle).
    from amqpd.broker.message import Message
    from amqpd.protocol.properties import BasicProperties

    q = Queue("q", arguments={"x-max-priority": 5})
    pri = [None, 1, 5, 3, 9, 0, 5, 3]
    for i, p in enumerate(pri):
        q.enqueue(Message("", "q", BasicProperties(priority=p).encode(), str(i).encode()))
    got = [q.get() for _ in pri]
    assert bodies(got) == [b"2", b"4", b"6", b"3", b"7", b"1", b"0", b"5"]
    assert got[1] is not None and got[1].message.properties.priority == 9  # untouched
    # requeue returns to the original position within the level
    q.requeue([got[2], got[0]])  # type: ignore[list-item]
    assert bodies([q.get(), q.get()]) == [b"2", b"6"]
