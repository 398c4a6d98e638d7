"""Quorum queues as a single-node RabbitMQ sees them through pika.

The RabbitMQ tutorials (and many apps since 3.8) declare ``x-queue-type: quorum``. amqpd keeps
such a queue as a durable queue until the cluster work replicates it, but validates its
declaration exactly as RabbitMQ does: durable only, never exclusive or auto-delete, and only
the arguments the quorum queue type lists (``rabbit_quorum_queue``).
"""

from __future__ import annotations

import pika
from helpers import assert_connection_usable, channel_error

QQ = {"x-queue-type": "quorum"}


def test_quorum_queue_round_trip(conn, names):
    q = names.queue()
    ch = conn.channel()
    ok = ch.queue_declare(q, durable=True, arguments=QQ)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 0, 0)
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    for i in range(3):
        ch.basic_publish("", q, b"m%d" % i, properties=props)
    assert ch.queue_declare(q, passive=True).method.message_count == 3
    got = []
    for _ in range(3):
        method, _props, body = ch.basic_get(q)
        got.append(body)
        ch.basic_ack(method.delivery_tag)
    assert got == [b"m0", b"m1", b"m2"]
    # A redeclare with the same type and flags is fine; quorum-only args are accepted.
    ch.queue_declare(q, durable=True, arguments=QQ)
    q2 = names.queue("dl")
    ch.queue_declare(q2, durable=True, arguments={**QQ, "x-delivery-limit": 5})


def test_quorum_queue_invalid_properties(conn, names):
    q = names.queue()
    res = f"for queue '{q}' in vhost '/'"
    with channel_error(406, f"PRECONDITION_FAILED - invalid property 'non-durable' {res}"):
        conn.channel().queue_declare(q, durable=False, arguments=QQ)
    with channel_error(406, f"PRECONDITION_FAILED - invalid property 'exclusive-owner' {res}"):
        conn.channel().queue_declare(q, durable=True, exclusive=True, arguments=QQ)
    with channel_error(406, f"PRECONDITION_FAILED - invalid property 'auto-delete' {res}"):
        conn.channel().queue_declare(q, durable=True, auto_delete=True, arguments=QQ)
    assert_connection_usable(conn)


def test_quorum_queue_invalid_arguments(conn, names):
    q = names.queue()
    tail = f"for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"
    for arg, value in (("x-max-priority", 5), ("x-queue-mode", "lazy")):
        with channel_error(406, f"PRECONDITION_FAILED - invalid arg '{arg}' {tail}"):
            conn.channel().queue_declare(q, durable=True, arguments={**QQ, arg: value})
    with channel_error(
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{q}' in vhost '/': "
        "\"unsupported queue type 'weird'\"",
    ):
        conn.channel().queue_declare(q, durable=True, arguments={"x-queue-type": "weird"})
    assert_connection_usable(conn)
