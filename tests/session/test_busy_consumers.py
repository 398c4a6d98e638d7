"""Busy consumers get deliveries again when, and only when, the channel gives credit back.

The queue parks a consumer whose prefetch is used up (broker/consumers.py); the channel
unblocks it on every path that gives credit back: ack / nack / reject (also at tx.commit),
a shared (global) limit reopening, basic.qos. These check the deliveries on each path.
"""

from __future__ import annotations

import pytest

from amqpd.protocol import methods as M
from amqpd.session.channel import Channel

from .fakes_channel import FakeConnection
from .test_channel import consume, declare, deliveries, fill, publish


@pytest.fixture
def conn() -> FakeConnection:
    return FakeConnection()


@pytest.fixture
def ch(conn: FakeConnection) -> Channel:
    return conn.open(1)


def test_work_queue_each_ack_frees_the_acking_worker(conn: FakeConnection, ch: Channel) -> None:
    ch2 = conn.open(2)
    declare(conn, ch, "q")
    fill(conn, ch, "q", 6)
    conn.call(ch, M.BasicQos(prefetch_count=1))
    conn.call(ch2, M.BasicQos(prefetch_count=1))
    conn.take()
    consume(conn, ch, "q", "a")
    assert [body for _, _, body in deliveries(conn)] == [b"m0"]
    consume(conn, ch2, "q", "b")
    assert [body for _, _, body in deliveries(conn)] == [b"m1"]
    # Both busy: publishing more delivers nothing.
    publish(conn, ch, "q", b"m6")
    assert conn.take() == []
    conn.call(ch2, M.BasicAck(delivery_tag=1))
    got = conn.take()
    assert [(c.method.consumer_tag, c.body) for c in got] == [("b", b"m2")]
    conn.call(ch, M.BasicReject(delivery_tag=1, requeue=False))
    got = conn.take()
    assert [(c.method.consumer_tag, c.body) for c in got] == [("a", b"m3")]
    # A nack with requeue goes back to the consumer whose credit it freed.
    conn.call(ch2, M.BasicNack(delivery_tag=2, multiple=False, requeue=True))
    got = conn.take()
    assert [(c.method.consumer_tag, c.body, c.method.redelivered) for c in got] == [
        ("b", b"m2", True)
    ]


def test_raising_the_shared_limit_unblocks_parked_consumers(
    conn: FakeConnection, ch: Channel
) -> None:
    declare(conn, ch, "q")
    fill(conn, ch, "q", 5)
    conn.call(ch, M.BasicQos(prefetch_count=1, global_=True))
    conn.take()
    consume(conn, ch, "q", "a")
    assert len(deliveries(conn)) == 1
    consume(conn, ch, "q", "b")
    assert deliveries(conn) == []  # the shared limit of 1 holds both
    conn.call(ch, M.BasicQos(prefetch_count=3, global_=True))
    got = conn.take()
    assert [type(c.method) for c in got] == [M.BasicQosOk, M.BasicDeliver, M.BasicDeliver]
    assert {c.method.consumer_tag for c in got[1:]} <= {"a", "b"}


def test_acks_in_a_transaction_free_the_worker_at_commit(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch, "q")
    fill(conn, ch, "q", 3)
    conn.call(ch, M.BasicQos(prefetch_count=1))
    conn.call(ch, M.TxSelect())
    conn.take()
    consume(conn, ch, "q", "a")
    assert [body for _, _, body in deliveries(conn)] == [b"m0"]
    conn.call(ch, M.BasicAck(delivery_tag=1))
    assert conn.take() == []  # not settled before the commit
    conn.call(ch, M.TxCommit())
    got = conn.take()
    assert [type(c.method) for c in got] == [M.BasicDeliver, M.TxCommitOk] or [
        type(c.method) for c in got
    ] == [M.TxCommitOk, M.BasicDeliver]
    assert [c.body for c in got if isinstance(c.method, M.BasicDeliver)] == [b"m1"]
