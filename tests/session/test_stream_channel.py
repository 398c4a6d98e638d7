"""Stream queues through a Channel: consume checks, offsets, credit, and what streams refuse.

Expected behaviour is RabbitMQ 3.13's (rabbit_channel + rabbit_stream_queue); the error texts
were checked on the oracle (interop/test_pika_streams.py runs the same cases there)."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.broker import Broker
from amqpd.protocol import methods as M
from amqpd.protocol.fieldtable import Int64
from amqpd.protocol.properties import BasicProperties
from amqpd.session.channel import Channel

from .fakes_channel import FakeConnection

STREAM = {"x-queue-type": "stream"}
RES = "queue 's' in vhost '/'"


@pytest.fixture
def conn() -> FakeConnection:
    return FakeConnection(Broker(wall_clock=lambda: 1_000_000.0))


@pytest.fixture
def ch(conn: FakeConnection) -> Channel:
    ch = conn.open(1)
    conn.call(ch, M.QueueDeclare(queue="s", durable=True, arguments=STREAM))
    conn.take()
    return ch


def publish(conn: FakeConnection, ch: Channel, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        conn.call(ch, M.BasicPublish(routing_key="s"), BasicProperties(), b"m%d" % i)


def qos(conn: FakeConnection, ch: Channel, count: int, global_: bool = False) -> None:
    conn.call(ch, M.BasicQos(prefetch_count=count, global_=global_))
    assert conn.methods() == [M.BasicQosOk()]


def consume(conn: FakeConnection, ch: Channel, tag: str = "c", offset: Any = None) -> None:
    args = {} if offset is None else {"x-stream-offset": offset}
    conn.call(ch, M.BasicConsume(queue="s", consumer_tag=tag, arguments=args))
    first, *rest = conn.take()
    assert first.method == M.BasicConsumeOk(consumer_tag=tag)
    conn.unread(rest)


def deliveries(conn: FakeConnection) -> list[tuple[str, int, bytes, int]]:
    out = []
    for cmd in conn.take():
        assert isinstance(cmd.method, M.BasicDeliver), cmd.method
        assert cmd.method.redelivered is False
        props = BasicProperties.decode(cmd.properties_raw or b"")
        offset = (props.headers or {})["x-stream-offset"]
        assert type(offset) is Int64
        out.append((cmd.method.consumer_tag, cmd.method.delivery_tag, cmd.body or b"", offset))
    return out


def error(conn: FakeConnection, ch: Channel, method: M.Method) -> tuple[int, bool, str]:
    exc = conn.fails(ch, method)
    return exc.reply_code, exc.hard, exc.reply_text


# -- consume checks ------------------------------------------------------------------------------
def test_consume_needs_a_per_consumer_prefetch(conn: FakeConnection, ch: Channel) -> None:
    text = f"PRECONDITION_FAILED - consumer prefetch count is not set for '{RES}'"
    assert error(conn, ch, M.BasicConsume(queue="s")) == (406, False, text)
    ch2 = conn.open(2)
    qos(conn, ch2, 10, global_=True)  # a global limit alone does not count (oracle)
    assert error(conn, ch2, M.BasicConsume(queue="s")) == (406, False, text)


def test_consume_refuses_no_ack_and_global_qos(conn: FakeConnection, ch: Channel) -> None:
    qos(conn, ch, 10)
    assert error(conn, ch, M.BasicConsume(queue="s", no_ack=True)) == (
        540,
        True,
        f"NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues {RES}",
    )
    ch2 = conn.open(2)
    qos(conn, ch2, 10)
    qos(conn, ch2, 5, global_=True)
    assert error(conn, ch2, M.BasicConsume(queue="s")) == (
        540,
        True,
        f"NOT_IMPLEMENTED - {RES} does not support global qos",
    )


@pytest.mark.parametrize(
    ("offset", "code", "text"),
    [
        (
            "3",
            406,
            f"PRECONDITION_FAILED - invalid arg 'x-stream-offset' for {RES}: "
            '{invalid_stream_offset_arg,{longstr,<<"3">>}}',
        ),
        ("bogus", 541, "INTERNAL_ERROR"),
        (True, 541, "INTERNAL_ERROR"),
    ],
)
def test_bad_offsets(conn: FakeConnection, ch: Channel, offset: Any, code: int, text: str) -> None:
    qos(conn, ch, 10)
    exc = conn.fails(ch, M.BasicConsume(queue="s", arguments={"x-stream-offset": offset}))
    assert (exc.reply_code, exc.reply_text) == (code, text)
    assert ch.consumers == {}


def test_bad_offset_is_checked_before_prefetch(conn: FakeConnection, ch: Channel) -> None:
    exc = conn.fails(ch, M.BasicConsume(queue="s", arguments={"x-stream-offset": "3"}))
    assert exc.reply_code == 406 and "invalid_stream_offset_arg" in exc.reply_text


# -- deliveries and credit -----------------------------------------------------------------------
def test_offsets_and_per_channel_tags(conn: FakeConnection, ch: Channel) -> None:
    publish(conn, ch, 5)
    qos(conn, ch, 10)
    consume(conn, ch, "a", "first")
    assert deliveries(conn) == [("a", t + 1, b"m%d" % t, t) for t in range(5)]
    consume(conn, ch, "b", 3)
    assert deliveries(conn) == [("b", 6, b"m3", 3), ("b", 7, b"m4", 4)]
    consume(conn, ch, "n")  # next: only new messages
    assert deliveries(conn) == []
    publish(conn, ch, 1, start=5)
    assert deliveries(conn) == [("a", 8, b"m5", 5), ("b", 9, b"m5", 5), ("n", 10, b"m5", 5)]


def test_acks_return_credit_only(conn: FakeConnection, ch: Channel) -> None:
    publish(conn, ch, 5)
    qos(conn, ch, 2)
    consume(conn, ch, "a", "first")
    assert [d[3] for d in deliveries(conn)] == [0, 1]
    conn.call(ch, M.BasicAck(delivery_tag=1))
    assert [d[3] for d in deliveries(conn)] == [2]
    conn.call(ch, M.BasicAck(delivery_tag=3, multiple=True))
    assert [d[3] for d in deliveries(conn)] == [3, 4]
    conn.call(ch, M.QueueDeclare(queue="s", passive=True))
    # rabbit_stream_queue:stat/1: the messages stay; declare-ok counts no consumers.
    assert conn.methods() == [M.QueueDeclareOk(queue="s", message_count=5, consumer_count=0)]


def test_cancel_and_channel_close_requeue_nothing(conn: FakeConnection, ch: Channel) -> None:
    publish(conn, ch, 3)
    qos(conn, ch, 2)
    consume(conn, ch, "a", "first")
    assert len(deliveries(conn)) == 2
    conn.call(ch, M.BasicCancel(consumer_tag="a"))
    assert conn.methods() == [M.BasicCancelOk(consumer_tag="a")]
    conn.call(ch, M.BasicAck(delivery_tag=2, multiple=True))  # acking after cancel is fine
    consume(conn, ch, "b", "first")
    assert [d[3] for d in deliveries(conn)] == [0, 1]
    ch.on_closed()
    other = conn.open(2)
    qos(conn, other, 10)
    publish(conn, other, 1, start=3)
    consume(conn, other, "c", "last")
    assert deliveries(conn) == [("c", 1, b"m3", 3)]  # nothing was requeued by the close


def test_queue_delete_cancels_stream_consumers() -> None:
    conn = FakeConnection(capabilities={"consumer_cancel_notify": True})
    ch = conn.open(1)
    conn.call(ch, M.QueueDeclare(queue="s", durable=True, arguments=STREAM))
    conn.take()
    publish(conn, ch, 2)
    qos(conn, ch, 1)
    consume(conn, ch, "a", "first")
    assert len(deliveries(conn)) == 1
    ch2 = conn.open(2)
    conn.call(ch2, M.QueueDelete(queue="s", if_unused=True, if_empty=True))
    # Another channel's consumer hears the cancel at once; delete-ok reports 0 (oracle).
    assert conn.methods() == [
        M.BasicCancel(consumer_tag="a", no_wait=True),
        M.QueueDeleteOk(message_count=0),
    ]
    assert ch.consumers == {}


# -- what streams refuse -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "text"),
    [
        (M.BasicGet(queue="s"), f"basic.get not supported by stream queues {RES}"),
        (M.QueuePurge(queue="s"), f"queue.purge not supported by stream queues {RES}"),
    ],
)
def test_get_and_purge(conn: FakeConnection, ch: Channel, method: M.Method, text: str) -> None:
    publish(conn, ch, 1)
    assert error(conn, ch, method) == (540, True, f"NOT_IMPLEMENTED - {text}")


@pytest.mark.parametrize(
    "method",
    [M.BasicNack(delivery_tag=1, requeue=True), M.BasicReject(delivery_tag=1, requeue=False)],
)
def test_nack_and_reject(conn: FakeConnection, ch: Channel, method: M.Method) -> None:
    publish(conn, ch, 1)
    qos(conn, ch, 1)
    consume(conn, ch, "a", "first")
    deliveries(conn)
    assert error(conn, ch, method) == (
        540,
        True,
        f"NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues {RES}",
    )


def test_recover_with_stream_deliveries_crashes(conn: FakeConnection, ch: Channel) -> None:
    publish(conn, ch, 1)
    qos(conn, ch, 1)
    consume(conn, ch, "a", "first")
    deliveries(conn)
    assert error(conn, ch, M.BasicRecover(requeue=True)) == (541, True, "INTERNAL_ERROR")


def test_recover_without_stream_deliveries_is_fine(conn: FakeConnection, ch: Channel) -> None:
    conn.call(ch, M.BasicRecover(requeue=True))
    assert conn.methods() == [M.BasicRecoverOk()]


def test_filtered_consume(conn: FakeConnection, ch: Channel) -> None:
    for i, value in enumerate(["ca", "ny", "ca"]):
        props = BasicProperties(headers={"x-stream-filter-value": value})
        conn.call(ch, M.BasicPublish(routing_key="s"), props, b"m%d" % i)
    qos(conn, ch, 10)
    args = {"x-stream-offset": "first", "x-stream-filter": ["ca"]}
    conn.call(ch, M.BasicConsume(queue="s", consumer_tag="f", arguments=args))
    first, *rest = conn.take()
    assert first.method == M.BasicConsumeOk(consumer_tag="f")
    conn.unread(rest)
    assert [(d[2], d[3]) for d in deliveries(conn)] == [(b"m0", 0), (b"m2", 2)]


@pytest.mark.parametrize(
    ("queue_type", "args", "text"),
    [
        # Values of the type's own arguments first, then another type's argument (oracle).
        (
            "stream",
            {"x-priority": "high"},
            f"invalid arg 'x-priority' for {RES} of queue type rabbit_stream_queue",
        ),
        (
            "stream",
            {"x-priority": 5, "x-stream-offset": "3"},
            f"invalid arg 'x-stream-offset' for {RES}: "
            '{invalid_stream_offset_arg,{longstr,<<"3">>}}',
        ),
        (
            "classic",
            {"x-stream-offset": "first"},
            f"invalid arg 'x-stream-offset' for {RES} of queue type rabbit_classic_queue",
        ),
        (
            "classic",
            {"x-stream-offset": 1, "x-priority": "x"},
            f"invalid arg 'x-priority' for {RES}: \"expected integer, got longstr\"",
        ),
        (
            "quorum",
            {"x-cancel-on-ha-failover": True},
            f"invalid arg 'x-cancel-on-ha-failover' for {RES} of queue type rabbit_quorum_queue",
        ),
    ],
)
def test_consume_arguments_of_other_queue_types(
    conn: FakeConnection, queue_type: str, args: dict[str, Any], text: str
) -> None:
    ch = conn.open(3)
    conn.call(ch, M.QueueDeclare(queue="s", durable=True, arguments={"x-queue-type": queue_type}))
    conn.take()
    qos(conn, ch, 10)
    exc = conn.fails(ch, M.BasicConsume(queue="s", arguments=args))
    assert (exc.reply_code, exc.reply_text) == (406, f"PRECONDITION_FAILED - {text}")


def test_classic_consume_arguments_still_accepted(conn: FakeConnection) -> None:
    ch = conn.open(3)
    conn.call(ch, M.QueueDeclare(queue="c"))
    conn.take()
    args = {"x-priority": 3, "x-cancel-on-ha-failover": True, "x-stream-filter": "a"}
    conn.call(ch, M.BasicConsume(queue="c", consumer_tag="t", arguments=args))
    assert conn.methods() == [M.BasicConsumeOk(consumer_tag="t")]
