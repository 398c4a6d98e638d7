"""The six RabbitMQ tutorials (https://www.rabbitmq.com/tutorials), written the way the pika
versions write them: one BlockingConnection per program (producer, each worker/subscriber),
unmodified pika API calls. Names are made unique per test; waits are bounded."""

from __future__ import annotations

import uuid

import pika
from helpers import Collector, wait_for


# -- 1. "Hello World!" ------------------------------------------------------------------------
def test_hello_world(connect, names):
    queue = names.queue("hello")

    # send.py
    sender = connect()
    channel = sender.channel()
    channel.queue_declare(queue=queue)
    channel.basic_publish(exchange="", routing_key=queue, body="Hello World!")
    sender.close()

    # receive.py
    receiver = connect()
    channel = receiver.channel()
    channel.queue_declare(queue=queue)
    received = []

    def callback(ch, method, properties, body):
        received.append(body)
        ch.stop_consuming()

    channel.basic_consume(queue=queue, on_message_callback=callback, auto_ack=True)
    # start_consuming() as the tutorial does, bounded by a timer in case nothing arrives.
    receiver.call_later(5, channel.stop_consuming)
    channel.start_consuming()
    assert received == [b"Hello World!"]


# -- 2. Work queues ---------------------------------------------------------------------------
def _worker(connect, queue, prefetch=None):
    conn = connect()
    channel = conn.channel()
    channel.queue_declare(queue=queue, durable=True)
    if prefetch is not None:
        channel.basic_qos(prefetch_count=prefetch)
    col = Collector()
    channel.basic_consume(queue=queue, on_message_callback=col)
    return conn, channel, col


def _new_task(connect, queue, bodies):
    conn = connect()
    channel = conn.channel()
    channel.queue_declare(queue=queue, durable=True)
    for body in bodies:
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    conn.close()


def test_work_queues_round_robin(connect, names):
    queue = names.queue("task_queue")
    c1, ch1, w1 = _worker(connect, queue)
    c2, ch2, w2 = _worker(connect, queue)
    _new_task(connect, queue, [f"task {i}".encode() for i in range(6)])
    wait_for([c1, c2], lambda: len(w1) + len(w2) == 6, what="6 tasks")
    # Without prefetch, RabbitMQ dispatches round-robin: each worker gets every second one.
    assert len(w1) == 3 and len(w2) == 3
    assert sorted(w1.bodies + w2.bodies) == sorted(f"task {i}".encode() for i in range(6))
    for _m, props, _b in w1.messages + w2.messages:
        assert props.delivery_mode == 2
    for ch, w in ((ch1, w1), (ch2, w2)):
        for method, _p, _b in w.messages:
            ch.basic_ack(delivery_tag=method.delivery_tag)


def test_work_queues_fair_dispatch(connect, names):
    queue = names.queue("task_queue")
    # Worker 1 takes a long task and holds it unacked (prefetch_count=1).
    c1, ch1, w1 = _worker(connect, queue, prefetch=1)
    _new_task(connect, queue, [b"slow........."])
    wait_for(c1, lambda: len(w1) == 1, what="worker 1's task")
    # Worker 2 joins; the next tasks all go to it since worker 1 is busy.
    c2, ch2, w2 = _worker(connect, queue, prefetch=1)
    _new_task(connect, queue, [f"quick {i}.".encode() for i in range(5)])
    got = []

    def drain_w2():
        while len(w2) > len(got):
            method, _p, body = w2.messages[len(got)]
            got.append(body)
            ch2.basic_ack(delivery_tag=method.delivery_tag)
        return len(got) == 5

    wait_for([c1, c2], drain_w2, what="worker 2 to do the 5 quick tasks")
    assert got == [f"quick {i}.".encode() for i in range(5)]
    assert len(w1) == 1
    # Worker 2 never had more than one unacked task: it received exactly one per ack.
    assert len(w2) == 5
    ch1.basic_ack(delivery_tag=w1.messages[0][0].delivery_tag)
    # The queue survives as durable: a passive declare on a fresh connection sees it empty.
    c3 = connect()
    ok = c3.channel().queue_declare(queue=queue, durable=True, passive=True)
    assert ok.method.consumer_count == 2


# -- 3. Publish/Subscribe ---------------------------------------------------------------------
def test_publish_subscribe(connect, names):
    exchange = names.exchange("logs")
    subscribers = []
    for _ in range(2):
        conn = connect()
        channel = conn.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="fanout")
        result = channel.queue_declare(queue="", exclusive=True)
        queue_name = result.method.queue
        assert queue_name.startswith("amq.gen-")
        channel.queue_bind(exchange=exchange, queue=queue_name)
        col = Collector()
        channel.basic_consume(queue=queue_name, on_message_callback=col, auto_ack=True)
        subscribers.append((conn, col, queue_name))
    assert subscribers[0][2] != subscribers[1][2]

    emitter = connect()
    channel = emitter.channel()
    channel.exchange_declare(exchange=exchange, exchange_type="fanout")
    channel.basic_publish(exchange=exchange, routing_key="", body="info: Hello World!")

    conns = [s[0] for s in subscribers]
    wait_for(conns, lambda: all(len(s[1]) == 1 for s in subscribers), what="both subscribers")
    for _conn, col, _q in subscribers:
        assert col.bodies == [b"info: Hello World!"]


# -- 4. Routing -------------------------------------------------------------------------------
def test_routing_direct(connect, names):
    exchange = names.exchange("direct_logs")
    wanted = {"errors-only": ["error"], "all": ["info", "warning", "error"]}
    subs = {}
    for who, severities in wanted.items():
        conn = connect()
        channel = conn.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="direct")
        queue_name = channel.queue_declare(queue="", exclusive=True).method.queue
        for severity in severities:
            channel.queue_bind(exchange=exchange, queue=queue_name, routing_key=severity)
        col = Collector()
        channel.basic_consume(queue=queue_name, on_message_callback=col, auto_ack=True)
        subs[who] = (conn, col)

    emitter = connect()
    channel = emitter.channel()
    channel.exchange_declare(exchange=exchange, exchange_type="direct")
    for severity in ["info", "warning", "error", "debug"]:
        channel.basic_publish(exchange=exchange, routing_key=severity, body=f"{severity}: msg")

    wait_for(
        [c for c, _ in subs.values()],
        lambda: len(subs["errors-only"][1]) == 1 and len(subs["all"][1]) == 3,
        what="routed logs",
    )
    assert subs["errors-only"][1].bodies == [b"error: msg"]
    assert subs["all"][1].bodies == [b"info: msg", b"warning: msg", b"error: msg"]
    assert [m.routing_key for m, _p, _b in subs["all"][1].messages] == ["info", "warning", "error"]


# -- 5. Topics --------------------------------------------------------------------------------
def test_topics(connect, names):
    exchange = names.exchange("topic_logs")
    binding_sets = {
        "Q1": ["*.orange.*"],
        "Q2": ["*.*.rabbit", "lazy.#"],
        "all": ["#"],
        "kern": ["kern.*", "*.critical"],
    }
    conn = connect()
    subs = {}
    for who, keys in binding_sets.items():
        channel = conn.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="topic")
        queue_name = channel.queue_declare("", exclusive=True).method.queue
        for binding_key in keys:
            channel.queue_bind(exchange=exchange, queue=queue_name, routing_key=binding_key)
        col = Collector()
        channel.basic_consume(queue=queue_name, on_message_callback=col, auto_ack=True)
        subs[who] = col

    keys = [
        "quick.orange.rabbit",  # Q1 Q2
        "lazy.orange.elephant",  # Q1 Q2
        "quick.orange.fox",  # Q1
        "lazy.brown.fox",  # Q2
        "lazy.pink.rabbit",  # Q2 once, though it matches both bindings
        "quick.brown.fox",  # nobody (but #)
        "orange",  # nobody
        "quick.orange.new.rabbit",  # nobody
        "lazy.orange.new.rabbit",  # Q2
        "lazy",  # Q2: '#' matches zero words
        "kern.critical",  # kern once
        "kern.info",  # kern
        "cron.critical",  # kern
        "kern.disk.critical",  # nobody
    ]
    emitter = connect()
    channel = emitter.channel()
    channel.confirm_delivery()
    for key in keys:
        channel.basic_publish(exchange=exchange, routing_key=key, body=key)
    expected = {
        "Q1": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
        "Q2": [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.new.rabbit",
            "lazy",
        ],
        "all": keys,
        "kern": ["kern.critical", "kern.info", "cron.critical"],
    }
    wait_for(
        conn,
        lambda: all(len(subs[w]) >= len(e) for w, e in expected.items()),
        what="topic deliveries",
    )
    # A confirmed publish is routed: one more round of I/O cannot add stray deliveries.
    conn.process_data_events(time_limit=0)
    for who, exp in expected.items():
        assert [b.decode() for b in subs[who].bodies] == exp, who


# -- 6. RPC -----------------------------------------------------------------------------------
def _fib(n):
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def _rpc_server(connect, queue):
    conn = connect()
    channel = conn.channel()
    channel.queue_declare(queue=queue)
    seen_reply_to = []

    def on_request(ch, method, props, body):
        n = int(body)
        seen_reply_to.append(props.reply_to)
        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(_fib(n)),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue=queue, on_message_callback=on_request)
    return conn, seen_reply_to


def test_rpc(connect, names):
    rpc_queue = names.queue("rpc_queue")
    server, _seen = _rpc_server(connect, rpc_queue)

    class FibonacciRpcClient:
        def __init__(self):
            self.connection = connect()
            self.channel = self.connection.channel()
            result = self.channel.queue_declare(queue="", exclusive=True)
            self.callback_queue = result.method.queue
            self.channel.basic_consume(
                queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True
            )
            self.response = None
            self.corr_id = None

        def on_response(self, ch, method, props, body):
            if self.corr_id == props.correlation_id:
                self.response = body

        def call(self, n):
            self.response = None
            self.corr_id = str(uuid.uuid4())
            self.channel.basic_publish(
                exchange="",
                routing_key=rpc_queue,
                properties=pika.BasicProperties(
                    reply_to=self.callback_queue, correlation_id=self.corr_id
                ),
                body=str(n),
            )
            wait_for([self.connection, server], lambda: self.response is not None, what="reply")
            return int(self.response)

    client = FibonacciRpcClient()
    assert client.call(10) == 55
    assert client.call(20) == 6765
    assert client.call(1) == 1


def test_rpc_direct_reply_to(connect, names):
    rpc_queue = names.queue("rpc_queue")
    server, seen_reply_to = _rpc_server(connect, rpc_queue)

    client = connect()
    channel = client.channel()
    responses = {}

    def on_response(ch, method, props, body):
        responses[props.correlation_id] = body

    # The pseudo-queue must be consumed in no-ack mode before publishing on the same channel.
    channel.basic_consume(
        queue="amq.rabbitmq.reply-to", on_message_callback=on_response, auto_ack=True
    )
    corr = [str(uuid.uuid4()) for _ in range(3)]
    for n, c in zip((7, 12, 0), corr, strict=True):
        channel.basic_publish(
            exchange="",
            routing_key=rpc_queue,
            properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=c),
            body=str(n),
        )
    wait_for([client, server], lambda: len(responses) == 3, what="3 direct replies")
    assert [responses[c] for c in corr] == [b"13", b"144", b"0"]
    # The broker rewrote reply_to into a per-channel name under the pseudo-queue's prefix.
    assert len(seen_reply_to) == 3
    for r in seen_reply_to:
        assert r.startswith("amq.rabbitmq.reply-to.") and len(r) > len("amq.rabbitmq.reply-to.")
    assert len(set(seen_reply_to)) == 1
