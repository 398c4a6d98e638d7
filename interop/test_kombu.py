"""kombu (py-amqp transport) interop: Producer/Consumer, SimpleQueue, exchange types,
ack/requeue/reject, a ConsumerMixin loop, queue arguments, message properties, confirms and
channel errors.  Unique names per test (``names`` fixture, which deletes them afterwards)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.mixins import ConsumerMixin
from rawamqp import is_rabbitmq

WAIT = 5.0


@pytest.fixture
def kconn(amqp_url: str) -> Iterator[Connection]:
    conn = Connection(amqp_url, transport="pyamqp", connect_timeout=WAIT)
    conn.connect()
    yield conn
    conn.release()


def drain_until(conn: Connection, pred: Any, timeout: float = WAIT) -> None:
    """drain_events until pred() holds; each drain is bounded, the whole wait too."""
    deadline = time.monotonic() + timeout
    while not pred():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail("timed out waiting for deliveries")
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=min(left, 0.5))


def test_kombu_producer_consumer_direct(kconn: Connection, names: Any) -> None:
    x = Exchange(names.exchange(), type="direct", durable=False)
    q = Queue(names.queue(), exchange=x, routing_key="rk", durable=False)
    got: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        got.append((body, message.delivery_info["routing_key"], message.delivery_info["exchange"]))
        message.ack()

    with kconn.channel() as ch:
        producer = Producer(ch, exchange=x, serializer="json")
        with Consumer(ch, queues=[q], callbacks=[on_message], accept=["json"]):
            # the consumer declared the queue/exchange/binding
            for i in range(3):
                producer.publish({"n": i}, routing_key="rk")
            drain_until(kconn, lambda: len(got) == 3)
    assert got == [({"n": i}, "rk", x.name) for i in range(3)]


def test_kombu_simple_queue(kconn: Connection, names: Any) -> None:
    name = names.queue("simple")
    names.exchanges.append(name)  # SimpleQueue declares a direct exchange of the same name
    sq = kconn.SimpleQueue(name)
    try:
        sq.put({"hello": "world"})
        sq.put("plain text")
        m1 = sq.get(block=True, timeout=WAIT)
        assert m1.payload == {"hello": "world"}
        m1.ack()
        m2 = sq.get(block=True, timeout=WAIT)
        assert m2.payload == "plain text"
        m2.ack()
        assert sq.qsize() == 0
        with pytest.raises(sq.Empty):
            sq.get(block=False)
    finally:
        sq.close()


@pytest.mark.parametrize(("xtype", "bind_key", "routed", "unrouted"), [
    ("direct", "a.b", ["a.b"], ["a.c", "a"]),
    ("topic", "a.*.#", ["a.b", "a.b.c.d"], ["b.a", "a"]),
    ("fanout", "ignored", ["anything", ""], []),
])
def test_kombu_exchange_types(kconn: Connection, names: Any, xtype: str, bind_key: str,
                              routed: list[str], unrouted: list[str]) -> None:
    x = Exchange(names.exchange(), type=xtype, durable=False)
    q = Queue(names.queue(), exchange=x, routing_key=bind_key, durable=False)
    with kconn.channel() as ch:
        q(ch).declare()
        producer = Producer(ch, exchange=x, serializer="json")
        for key in routed + unrouted:
            producer.publish({"key": key}, routing_key=key)
        got = []
        bq = q(ch)
        while (m := bq.get(no_ack=True, accept=["json"])) is not None:
            got.append(m.payload["key"])
    assert got == routed


def test_kombu_ack_requeue_reject(kconn: Connection, names: Any) -> None:
    q = Queue(names.queue(), durable=False)
    with kconn.channel() as ch:
        bq = q(ch)
        bq.declare()
        producer = Producer(ch, serializer="json")
        producer.publish({"n": 1}, routing_key=q.name)
        m = bq.get(accept=["json"])
        assert m is not None and m.delivery_info["redelivered"] is False
        m.requeue()
        m = bq.get(accept=["json"])
        assert m is not None and m.delivery_info["redelivered"] is True
        assert m.payload == {"n": 1}
        m.reject()  # requeue=False: dropped (no DLX)
        assert bq.get() is None
        producer.publish({"n": 2}, routing_key=q.name)
        m = bq.get(accept=["json"])
        m.reject(requeue=True)
        m = bq.get(accept=["json"])
        assert m.delivery_info["redelivered"] is True
        m.ack()
        assert m.acknowledged
        assert bq.get() is None


class _Worker(ConsumerMixin):
    def __init__(self, connection: Connection, queues: list[Queue], stop_after: int) -> None:
        self.connection = connection
        self.queues = queues
        self.stop_after = stop_after
        self.seen: list[Any] = []

    def get_consumers(self, consumer_cls: Any, channel: Any) -> list[Any]:
        return [consumer_cls(queues=self.queues, callbacks=[self.on_message], accept=["json"],
                             prefetch_count=2)]

    def on_message(self, body: Any, message: Any) -> None:
        self.seen.append(body)
        message.ack()
        if len(self.seen) >= self.stop_after:
            self.should_stop = True


def test_kombu_consumer_mixin_loop(amqp_url: str, kconn: Connection, names: Any) -> None:
    q = Queue(names.queue(), durable=False)
    with kconn.channel() as ch:
        q(ch).declare()
        producer = Producer(ch, serializer="json")
        for i in range(6):
            producer.publish({"i": i}, routing_key=q.name)
    worker_conn = Connection(amqp_url, transport="pyamqp", connect_timeout=WAIT)
    try:
        w = _Worker(worker_conn, [q], stop_after=6)
        # run() loops consume()/drain_events(timeout=safety_interval) until should_stop
        for _ in w.consume(limit=None, timeout=0.5, safety_interval=0.5):
            if w.should_stop:
                break
        assert [b["i"] for b in w.seen] == list(range(6))
    finally:
        worker_conn.release()


def test_kombu_drain_events_timeout_when_idle(kconn: Connection, names: Any) -> None:
    q = Queue(names.queue(), durable=False)
    got: list[Any] = []
    with kconn.channel() as ch, Consumer(ch, queues=[q], callbacks=[lambda b, m: (
            got.append(b), m.ack())], accept=["json"]):
        Producer(ch, serializer="json").publish({"x": 1}, routing_key=q.name)
        drain_until(kconn, lambda: len(got) == 1)
        with pytest.raises(socket.timeout):
            kconn.drain_events(timeout=0.1)  # nothing more: the bounded drain times out
    assert got == [{"x": 1}]


def test_kombu_queue_arguments_max_length(kconn: Connection, names: Any) -> None:
    q = Queue(names.queue(), durable=False,
              queue_arguments={"x-max-length": 2, "x-message-ttl": 60000})
    with kconn.channel() as ch:
        bq = q(ch)
        bq.declare()
        producer = Producer(ch, serializer="json")
        for i in range(3):
            producer.publish({"i": i}, routing_key=q.name)
        # default overflow drop-head: the oldest goes
        got = []
        while (m := bq.get(no_ack=True, accept=["json"])) is not None:
            got.append(m.payload["i"])
        assert got == [1, 2]
        # redeclare with other arguments → 406 PRECONDITION_FAILED (channel error)
        other = Queue(q.name, durable=False,
                      queue_arguments={"x-max-length": 3, "x-message-ttl": 60000})
        with pytest.raises(amqp.exceptions.PreconditionFailed) as ei:
            other(ch).declare()
    assert ei.value.reply_code == 406
    assert ei.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q.name}' in "
        "vhost '/': received '3' but current is '2'")
    with kconn.channel() as ch:
        missing_ttl = Queue(q.name, durable=False, queue_arguments={"x-max-length": 2})
        with pytest.raises(amqp.exceptions.PreconditionFailed) as ei:
            missing_ttl(ch).declare()
    # py-amqp sends Python ints as field type 'I' (signedint)
    assert ei.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q.name}' in "
        "vhost '/': received none but current is the value '60000' of type 'signedint'")


def test_kombu_priority_queue_and_properties(kconn: Connection, names: Any) -> None:
    q = Queue(names.queue(), durable=False, queue_arguments={"x-max-priority": 10})
    with kconn.channel() as ch:
        bq = q(ch)
        bq.declare()
        producer = Producer(ch, serializer="json")
        for prio in (1, 9, 5):
            producer.publish({"p": prio}, routing_key=q.name, priority=prio,
                             headers={"h-int": prio, "h-str": "v", "h-list": [1, "a"],
                                      "h-nested": {"k": True}},
                             correlation_id=f"c{prio}", reply_to="replies",
                             message_id=f"m{prio}", expiration=60, delivery_mode=2)
        got = []
        while (m := bq.get(no_ack=True, accept=["json"])) is not None:
            got.append(m)
    assert [m.payload["p"] for m in got] == [9, 5, 1]
    m = got[0]
    assert m.content_type == "application/json"
    assert m.content_encoding == "utf-8"
    assert m.properties["priority"] == 9
    assert m.properties["correlation_id"] == "c9"
    assert m.properties["reply_to"] == "replies"
    assert m.properties["message_id"] == "m9"
    assert m.properties["expiration"] == "60000"  # kombu sends seconds * 1000 as a string
    assert m.properties["delivery_mode"] == 2
    assert m.headers == {"h-int": 9, "h-str": "v", "h-list": [1, "a"],
                         "h-nested": {"k": True}}


def test_kombu_publish_with_confirms(amqp_url: str, names: Any) -> None:
    conn = Connection(amqp_url, transport="pyamqp", connect_timeout=WAIT,
                      transport_options={"confirm_publish": True})
    q = Queue(names.queue(), durable=False)
    try:
        with conn.channel() as ch:
            bq = q(ch)
            bq.declare()
            producer = Producer(ch, serializer="json")
            for i in range(5):
                producer.publish({"i": i}, routing_key=q.name)  # waits for basic.ack
            _, count, _ = bq.queue_declare(passive=True)
            assert count == 5
            # mandatory + unroutable with confirms: basic.return, then the ack
            x = Exchange(names.exchange(), type="direct", durable=False)
            x(ch).declare()
            returned: list[Any] = []
            ch.events["basic_return"].add(lambda *a: returned.append(a))
            Producer(ch, exchange=x, serializer="json").publish(
                {"lost": True}, routing_key="nowhere", mandatory=True)
            assert len(returned) == 1
            exc = returned[0][0]
            assert exc.reply_code == 312 and exc.reply_text == "NO_ROUTE"
    finally:
        conn.release()


def test_kombu_channel_error_then_recover(kconn: Connection, names: Any) -> None:
    missing = names.queue("missing")
    ch = kconn.channel()
    with pytest.raises(amqp.exceptions.NotFound) as ei:
        ch.queue_declare(missing, passive=True)
    assert ei.value.reply_code == 404
    assert ei.value.reply_text == f"NOT_FOUND - no queue '{missing}' in vhost '/'"
    assert ei.value.method_sig == (50, 10)
    # the connection survives; a new channel works
    ch2 = kconn.channel()
    name, _, _ = ch2.queue_declare("", exclusive=True)
    assert name.startswith("amq.gen-")
    ch2.close()


def test_kombu_connection_info(kconn: Connection, amqp_url: str) -> None:
    server = kconn.connection.server_properties
    assert (server["product"] == "RabbitMQ") == is_rabbitmq(amqp_url)
    assert kconn.connection.server_capabilities["publisher_confirms"] is True
    # py-amqp negotiates the server's values
    assert kconn.connection.frame_max == 131072
    assert kconn.connection.channel_max in (2047, 65535)
