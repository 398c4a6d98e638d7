"""The delayed-message exchange (``x-delayed-message``) through pika, as the
rabbitmq_delayed_message_exchange plugin behaves (reference 2.4).

The RabbitMQ oracle has no such plugin: every test here is skipped on a broker that does not
know the exchange type (the skip says so), and runs on amqpd and on a RabbitMQ that has the
plugin enabled.

Delays are short (a few hundred ms) and every wait is a bounded pump until the delayed
delivery has arrived, never a sleep.
"""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest
from helpers import Collector, channel_error, wait_for

DELAYED = "x-delayed-message"


@pytest.fixture
def delayed_exchange(conn, names):
    """``make(wrapped_type)``: a new delayed exchange; skips where the plugin is missing."""

    def make(wrapped: str = "direct", **arguments):
        name = names.exchange("delayed")
        ch = conn.channel()
        try:
            ch.exchange_declare(name, DELAYED, arguments={"x-delayed-type": wrapped, **arguments})
        except (
            pika.exceptions.ChannelClosedByBroker,
            pika.exceptions.ConnectionClosedByBroker,
        ) as e:
            if "unknown exchange type" in str(e) or "invalid exchange type" in str(e):
                pytest.skip(
                    "this broker lacks the x-delayed-message exchange type (the RabbitMQ "
                    "oracle has no rabbitmq_delayed_message_exchange plugin)"
                )
            raise
        return name

    return make


def _bound_queue(ch, names, exchange, key="rk", arguments=None, suffix="q"):
    q = names.queue(suffix)
    ch.queue_declare(q)
    ch.queue_bind(q, exchange, key, arguments=arguments)
    return q


def _props(delay, **kw):
    headers = dict(kw.pop("headers", {}))
    if delay is not None:
        headers["x-delay"] = delay
    return pika.BasicProperties(headers=headers, **kw)


def test_delayed_messages_arrive_in_due_order(conn, names, delayed_exchange):
    x = delayed_exchange("direct")
    ch = conn.channel()
    q = _bound_queue(ch, names, x)
    ch.confirm_delivery()
    start = time.monotonic()
    for delay, body in ((600, b"third"), (200, b"first"), (400, b"second")):
        ch.basic_publish(x, "rk", body, properties=_props(delay))
    # Held, not queued: the queue is empty right after the confirms.
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    wait_for(conn, lambda: len(col) == 3, 10.0, "three delayed deliveries")
    assert col.bodies == [b"first", b"second", b"third"]
    assert time.monotonic() - start >= 0.6
    method, props, _ = col.messages[0]
    assert (method.exchange, method.routing_key) == (x, "rk")
    # The plugin negates x-delay on the way out (swap_delay_header).
    assert props.headers["x-delay"] == -200


def test_no_delay_routes_at_once(conn, names, delayed_exchange):
    x = delayed_exchange("fanout")
    ch = conn.channel()
    q = _bound_queue(ch, names, x, key="")
    ch.confirm_delivery()
    for delay in (None, 0, -100, 2**32):
        ch.basic_publish(x, "any", b"now", properties=_props(delay))
    ch.basic_publish(x, "any", b"str", properties=_props("0"))
    assert ch.queue_declare(q, passive=True).method.message_count == 5


def test_delayed_topic_routing_at_fire_time(conn, names, delayed_exchange):
    x = delayed_exchange("topic")
    ch = conn.channel()
    q1 = _bound_queue(ch, names, x, key="a.*", suffix="q1")
    q2 = _bound_queue(ch, names, x, key="#.c", suffix="q2")
    ch.confirm_delivery()
    ch.basic_publish(x, "a.c", b"both", properties=_props(150))
    ch.basic_publish(x, "a.b", b"one", properties=_props("150"))
    got: dict[str, list[bytes]] = {q1: [], q2: []}

    def on(q):
        return lambda _c, _m, _p, body: got[q].append(body)

    ch.basic_consume(q1, on(q1), auto_ack=True)
    ch.basic_consume(q2, on(q2), auto_ack=True)
    wait_for(conn, lambda: len(got[q1]) == 2 and len(got[q2]) == 1, 10.0, "topic routing")
    assert sorted(got[q1]) == [b"both", b"one"] and got[q2] == [b"both"]


def test_mandatory_delayed_publish_is_returned_at_once_and_still_delivered(
    conn, names, delayed_exchange
):
    # The plugin's route/2 returns [] for a delayed message: mandatory gets basic.return
    # 312 NO_ROUTE at once, the confirm is an ack, and the message arrives later anyway.
    x = delayed_exchange("direct")
    ch = conn.channel()
    q = _bound_queue(ch, names, x)
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish(x, "rk", b"late", properties=_props(200), mandatory=True)
    [returned] = info.value.messages
    assert returned.method.reply_code == 312 and returned.body == b"late"
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    wait_for(conn, lambda: len(col) == 1, 10.0, "the delayed delivery")
    assert col.bodies == [b"late"]


def test_delayed_headers_exchange(conn, names, delayed_exchange):
    x = delayed_exchange("headers")
    ch = conn.channel()
    q = _bound_queue(ch, names, x, key="", arguments={"x-match": "all", "kind": "job"})
    ch.basic_publish(x, "", b"match", properties=_props(100, headers={"kind": "job"}))
    ch.basic_publish(x, "", b"other", properties=_props(100, headers={"kind": "x"}))
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    wait_for(conn, lambda: len(col) == 1, 10.0, "the matching delayed delivery")
    assert col.bodies == [b"match"]


def test_invalid_delayed_type(conn, names, delayed_exchange):
    delayed_exchange("direct")  # skips where the type is unknown
    x = names.exchange("bad")
    with channel_error(
        406,
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing "
        "exchange type",
    ):
        conn.channel().exchange_declare(x, DELAYED)
    with channel_error(
        406,
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for "
        "'x-delayed-type'",
    ):
        conn.channel().exchange_declare(x, DELAYED, arguments={"x-delayed-type": DELAYED})
