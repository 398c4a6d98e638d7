"""Stream queues (``x-queue-type: stream``) through pika, checked on the RabbitMQ oracle.

What RabbitMQ's AMQP 0-9-1 stream interface does: declaration rules and texts, the
``x-stream-offset`` start positions (first, last, next, an offset, a timestamp, an
interval), the ``x-stream-offset`` header on every delivery, qos credit that acks give back,
nothing requeued, and the operations streams refuse. Retention drops whole old segments and
never the active one; every segment after the first starts with a tracking chunk that takes
an offset (the oracle skips offsets 2, 5, 8 with two messages per segment).

Nothing sleeps: deliveries are awaited with bounded waits; where RabbitMQ applies retention
asynchronously after a segment roll-over, the test waits (bounded) for it to show.
"""

from __future__ import annotations

import datetime
from typing import Any

import pika
import pika.exceptions
import pytest
from helpers import (
    Collector,
    assert_connection_usable,
    channel_error,
    connection_error,
    is_rabbitmq,
    publish_confirmed,
    server_version,
    wait_for,
)

STREAM = {"x-queue-type": "stream"}


def declare_stream(conn: pika.BlockingConnection, q: str, **args: Any) -> None:
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments={**STREAM, **args})
    ch.close()


def res(q: str) -> str:
    return f"queue '{q}' in vhost '/'"


class StreamCollector(Collector):
    """Records deliveries; acks each one when ``ack``."""

    def __init__(self, ack: bool = True) -> None:
        super().__init__()
        self.ack = ack

    def __call__(self, ch: Any, method: Any, properties: Any, body: bytes) -> None:
        super().__call__(ch, method, properties, body)
        if self.ack:
            ch.basic_ack(method.delivery_tag)

    @property
    def offsets(self) -> list[int]:
        return [p.headers["x-stream-offset"] for _m, p, _b in self.messages]


def start(
    conn: pika.BlockingConnection,
    q: str,
    offset: Any = None,
    *,
    prefetch: int = 100,
    ack: bool = True,
    filter_args: dict[str, Any] | None = None,
) -> tuple[Any, StreamCollector]:
    """A consumer on its own channel with per-consumer qos; returns (channel, collector)."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    col = StreamCollector(ack)
    args = {} if offset is None else {"x-stream-offset": offset}
    ch.basic_consume(q, col, arguments={**args, **(filter_args or {})})
    return ch, col


def sync(conn: pika.BlockingConnection, ch: Any, q: str) -> Any:
    """A round trip on ``ch``: deliveries RabbitMQ sent before it have been processed."""
    ok = ch.queue_declare(q, passive=True)
    conn.process_data_events(time_limit=0)
    return ok


def bodies(n: int, start: int = 0) -> list[bytes]:
    return [b"m%d" % i for i in range(start, start + n)]


def stream_of(connect: Any, names: Any, n: int) -> tuple[pika.BlockingConnection, str]:
    """A fresh connection and a new stream holding messages m0 .. m<n-1> (confirmed)."""
    conn = connect()
    q = names.queue()
    declare_stream(conn, q)
    publish_confirmed(conn, "", q, bodies(n))
    return conn, q


# -- declaration ---------------------------------------------------------------------------------
def test_stream_declaration_rules(conn, names):
    q = names.queue()
    for kw, prop in (
        ({"durable": False}, "non-durable"),
        ({"durable": True, "exclusive": True}, "exclusive-owner"),
        ({"durable": True, "auto_delete": True}, "auto-delete"),
    ):
        text = f"PRECONDITION_FAILED - invalid property '{prop}' for {res(q)}"
        with channel_error(406, text):
            conn.channel().queue_declare(q, arguments=STREAM, **kw)
    for arg, value in (("x-max-priority", 5), ("x-message-ttl", 5), ("x-max-length", 10)):
        text = (
            f"PRECONDITION_FAILED - invalid arg '{arg}' for {res(q)} "
            "of queue type rabbit_stream_queue"
        )
        with channel_error(406, text):
            conn.channel().queue_declare(q, durable=True, arguments={**STREAM, arg: value})
    with channel_error(
        406, f"PRECONDITION_FAILED - invalid arg 'x-max-age' for {res(q)}: invalid_max_age"
    ):
        conn.channel().queue_declare(q, durable=True, arguments={**STREAM, "x-max-age": "7X"})
    with channel_error(
        406,
        "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_stream_queue",
    ):
        conn.channel().queue_declare("", durable=True, arguments=STREAM)
    if not is_rabbitmq(conn) or server_version(conn) >= (3, 13):
        # x-stream-filter-size-bytes arrived with stream filtering in 3.13 (3.10 ignores it).
        with channel_error(
            406, "PRECONDITION_FAILED - Invalid value for  x-stream-filter-size-bytes"
        ):
            conn.channel().queue_declare(
                q, durable=True, arguments={**STREAM, "x-stream-filter-size-bytes": 300}
            )
    ch = conn.channel()
    ok = ch.queue_declare(
        q,
        durable=True,
        arguments={**STREAM, "x-max-age": "7D", "x-stream-max-segment-size-bytes": 1000},
    )
    assert (ok.method.message_count, ok.method.consumer_count) == (0, 0)
    assert_connection_usable(conn)


def test_declare_ok_counts(conn, names):
    q = names.queue()
    declare_stream(conn, q)
    publish_confirmed(conn, "", q, bodies(3))
    ch, col = start(conn, q, "first")
    wait_for(conn, lambda: len(col) == 3, what="3 deliveries")
    ok = sync(conn, ch, q).method
    # rabbit_stream_queue:stat/1: consumers are never counted; the message count is a metric
    # RabbitMQ emits every few seconds (0 right after publishing), amqpd's is current.
    assert ok.consumer_count == 0
    if is_rabbitmq(conn):
        assert ok.message_count in (0, 3)
    else:
        assert ok.message_count == 3


# -- offsets -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ("first", [0, 1, 2, 3, 4]),
        ("last", [4]),
        (3, [3, 4]),
        (-1, [0, 1, 2, 3, 4]),
        (datetime.datetime(2020, 1, 1), [0, 1, 2, 3, 4]),
        ("1h", [0, 1, 2, 3, 4]),
    ],
)
def test_start_positions(connect, names, offset, expected):
    conn, q = stream_of(connect, names, 5)
    ch, col = start(conn, q, offset)
    wait_for(conn, lambda: len(col) == len(expected), what=f"{len(expected)} deliveries")
    sync(conn, ch, q)
    assert col.offsets == expected
    assert col.bodies == [b"m%d" % o for o in expected]
    assert [m.delivery_tag for m, _p, _b in col.messages] == list(range(1, len(expected) + 1))
    assert not any(m.redelivered for m, _p, _b in col.messages)


def test_next_and_beyond_the_end_wait_for_new_messages(connect, names):
    conn, q = stream_of(connect, names, 5)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    default, nxt, far, future = (StreamCollector() for _ in range(4))
    ch.basic_consume(q, default)
    ch.basic_consume(q, nxt, arguments={"x-stream-offset": "next"})
    ch.basic_consume(q, far, arguments={"x-stream-offset": 100})
    ch.basic_consume(q, future, arguments={"x-stream-offset": datetime.datetime(2099, 1, 1)})
    sync(conn, ch, q)
    assert (len(default), len(nxt), len(far), len(future)) == (0, 0, 0, 0)
    publish_confirmed(conn, "", q, [b"new"])
    wait_for(conn, lambda: len(default) == len(nxt) == len(future) == 1, what="the new message")
    sync(conn, ch, q)
    assert default.offsets == nxt.offsets == future.offsets == [5]
    assert far.offsets == []  # waits for offset 100 itself (oracle)


def test_offset_header_is_added_to_sorted_headers(conn, names):
    q = names.queue()
    declare_stream(conn, q)
    props = pika.BasicProperties(headers={"zz": 1, "aa": 2, "x-stream-offset": "fake"})
    publish_confirmed(conn, "", q, [b"a"], properties=props)
    _ch, col = start(conn, q, "first")
    wait_for(conn, lambda: len(col) == 1, what="the delivery")
    ((method, properties, _body),) = col.messages
    assert list(properties.headers.items()) == [("aa", 2), ("x-stream-offset", 0), ("zz", 1)]
    assert (method.exchange, method.routing_key) == ("", q)


def test_filtered_consumer(connect, names):
    conn = connect()
    q = names.queue()
    declare_stream(conn, q)
    values = ["ca", "ny", None, "ca"]
    ch = conn.channel()
    ch.confirm_delivery()
    for i, value in enumerate(values):
        headers = None if value is None else {"x-stream-filter-value": value}
        ch.basic_publish("", q, b"m%d" % i, properties=pika.BasicProperties(headers=headers))
    _ch, ca = start(conn, q, "first", filter_args={"x-stream-filter": "ca"})
    _ch2, every = start(conn, q, "first")
    wait_for(conn, lambda: len(every) == 4, what="every message")
    if is_rabbitmq(conn) and server_version(conn) < (3, 13):
        # Stream filtering arrived in 3.13: older servers ignore x-stream-filter.
        wait_for(conn, lambda: len(ca) == 4, what="every message, unfiltered")
        return
    wait_for(conn, lambda: len(ca) >= 2, what="the matching messages")
    sync(conn, _ch, q)
    # RabbitMQ filters per chunk (a Bloom filter): each message published on its own here.
    assert ca.bodies == [b"m0", b"m3"]


# -- credit and settlement -----------------------------------------------------------------------
def test_acks_give_credit_and_delete_nothing(connect, names):
    conn, q = stream_of(connect, names, 4)
    ch, col = start(conn, q, "first", prefetch=2, ack=False)
    wait_for(conn, lambda: len(col) == 2, what="2 deliveries")
    sync(conn, ch, q)
    assert col.offsets == [0, 1]  # no more without credit
    ch.basic_ack(col.messages[0][0].delivery_tag)
    wait_for(conn, lambda: len(col) == 3, what="one more after an ack")
    ch.basic_ack(0, multiple=True)
    wait_for(conn, lambda: len(col) == 4, what="the last one")
    assert col.offsets == [0, 1, 2, 3]
    # Another consumer still reads everything: acks delete nothing.
    _ch2, col2 = start(conn, q, "first")
    wait_for(conn, lambda: len(col2) == 4, what="a second reader")


def test_channel_close_requeues_nothing(connect, names):
    conn, q = stream_of(connect, names, 3)
    ch, col = start(conn, q, "first", prefetch=2, ack=False)
    wait_for(conn, lambda: len(col) == 2, what="2 unacked deliveries")
    ch.close()
    _ch2, last = start(conn, q, "last")
    wait_for(conn, lambda: len(last) == 1, what="the last message")
    assert last.offsets == [2] and not last.messages[0][0].redelivered


def test_queue_delete_cancels_stream_consumers(connect, names):
    conn, other = connect(), connect()
    q = names.queue()
    declare_stream(conn, q)
    publish_confirmed(conn, "", q, bodies(2))
    ch, col = start(conn, q, "first")
    wait_for(conn, lambda: len(col) == 2, what="2 deliveries")
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    # if-unused and if-empty do not hold a stream back; delete-ok counts 0 (oracle).
    ok = other.channel().queue_delete(q, if_unused=True, if_empty=True)
    assert ok.method.message_count == 0
    wait_for(conn, lambda: len(cancelled) == 1, what="the server-side cancel")


# -- errors --------------------------------------------------------------------------------------
def test_consume_needs_per_consumer_qos(conn, names):
    q = names.queue()
    declare_stream(conn, q)
    text = f"PRECONDITION_FAILED - consumer prefetch count is not set for '{res(q)}'"
    with channel_error(406, text):
        conn.channel().basic_consume(q, lambda *a: None)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10, global_qos=True)  # global alone does not count
    with channel_error(406, text):
        ch.basic_consume(q, lambda *a: None)
    with channel_error(
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-stream-offset' for {res(q)}: "
        '{invalid_stream_offset_arg,{longstr,<<"3">>}}',
    ):
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "3"})
    assert_connection_usable(conn)


@pytest.mark.parametrize(
    ("queue_type", "args", "tail"),
    [
        ("stream", {"x-priority": "high"}, " of queue type rabbit_stream_queue"),
        ("stream", {"x-cancel-on-ha-failover": True}, " of queue type rabbit_stream_queue"),
        ("classic", {"x-stream-offset": "first"}, " of queue type rabbit_classic_queue"),
        ("quorum", {"x-stream-offset": 1}, " of queue type rabbit_quorum_queue"),
        ("quorum", {"x-cancel-on-ha-failover": True}, " of queue type rabbit_quorum_queue"),
    ],
)
def test_consume_arguments_of_another_queue_type(connect, names, queue_type, args, tail):
    conn = connect()
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": queue_type})
    ch.basic_qos(prefetch_count=10)
    (arg,) = args
    with channel_error(406, f"PRECONDITION_FAILED - invalid arg '{arg}' for {res(q)}{tail}"):
        ch.basic_consume(q, lambda *a: None, arguments=args)


@pytest.mark.parametrize(
    ("how", "code", "text"),
    [
        (
            "no-ack",
            540,
            "NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues {q}",
        ),
        ("global", 540, "NOT_IMPLEMENTED - {q} does not support global qos"),
        ("bogus", 541, "INTERNAL_ERROR"),
        ("bool", 541, "INTERNAL_ERROR"),
    ],
)
def test_consume_connection_errors(connect, names, how, code, text):
    conn = connect()
    q = names.queue()
    declare_stream(conn, q)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    kw: dict[str, Any] = {}
    if how == "no-ack":
        kw["auto_ack"] = True
    elif how == "global":
        ch.basic_qos(prefetch_count=5, global_qos=True)
    else:
        kw["arguments"] = {"x-stream-offset": "bogus" if how == "bogus" else True}
    with connection_error(code, text.format(q=res(q))):
        ch.basic_consume(q, lambda *a: None, **kw)


@pytest.mark.parametrize("op", ["get", "purge"])
def test_get_and_purge_are_refused(connect, names, op):
    conn, q = stream_of(connect, names, 1)
    ch = conn.channel()
    name = "basic.get" if op == "get" else "queue.purge"
    with connection_error(540, f"NOT_IMPLEMENTED - {name} not supported by stream queues {res(q)}"):
        if op == "get":
            ch.basic_get(q)
        else:
            ch.queue_purge(q)


@pytest.mark.parametrize("op", ["nack", "reject", "recover"])
def test_nack_reject_recover_are_refused(connect, names, op):
    conn, q = stream_of(connect, names, 1)
    ch, col = start(conn, q, "first", ack=False)
    wait_for(conn, lambda: len(col) == 1, what="the delivery")
    tag = col.messages[0][0].delivery_tag
    if op == "recover":
        # The oracle's channel crashes (541) on a recover of stream deliveries.
        with connection_error(541, "INTERNAL_ERROR"):
            ch.basic_recover(requeue=True)
        return
    with connection_error(
        540,
        f"NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues {res(q)}",
    ):
        if op == "nack":
            ch.basic_nack(tag, requeue=True)
        else:
            ch.basic_reject(tag, requeue=False)
        conn.process_data_events(time_limit=5)


# -- retention -----------------------------------------------------------------------------------
def first_offsets(conn: pika.BlockingConnection, q: str, n: int) -> list[int]:
    ch, col = start(conn, q, "first")
    wait_for(conn, lambda: len(col) >= n, what=f"{n} deliveries from the start")
    sync(conn, ch, q)
    ch.close()
    return col.offsets


def test_retention_drops_whole_old_segments_never_the_active_one(connect, names):
    # 600-byte bodies in 1000-byte segments: the second message fills a segment, on RabbitMQ
    # and on amqpd alike (their record encodings differ by a few hundred bytes at most). A
    # full segment alone exceeds 1100 bytes, so each fill drops everything before the new
    # segment, which starts with a tracking chunk: messages sit at offsets 0, 1, 3, 4, 6, ...
    conn = connect()
    q = names.queue()
    declare_stream(conn, q, **{"x-stream-max-segment-size-bytes": 1000, "x-max-length-bytes": 1100})

    def body(i: int) -> bytes:
        return b"%d" % i + b"x" * 599

    publish_confirmed(conn, "", q, [body(0)])
    assert first_offsets(conn, q, 1) == [0]
    publish_confirmed(conn, "", q, [body(1), body(2)])
    # RabbitMQ evaluates retention asynchronously: wait (bounded) for it to show.
    wait_for(conn, lambda: first_offsets(conn, q, 1) == [3], what="segment 0 to go")
    publish_confirmed(conn, "", q, [body(i) for i in range(3, 7)])
    wait_for(conn, lambda: first_offsets(conn, q, 1) == [9], what="segments 1 and 2 to go")
    _ch, col = start(conn, q, "first")
    wait_for(conn, lambda: len(col) == 1, what="the newest message")
    assert col.bodies == [body(6)]
