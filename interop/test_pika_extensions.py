"""RabbitMQ extensions through pika: dead-lettering and x-death, TTL, queue expiry, length
limits and overflow modes, priority queues, consumer priorities, single active consumer.

Expiry tests use short TTLs and a bounded wait for the event that must follow (a dead-lettered
delivery, a queue deletion); they never sleep.
"""

from __future__ import annotations

import datetime

import pika
import pika.exceptions
import pytest
from helpers import Collector, consume_n, is_rabbitmq, server_version, wait_for


def _has_last_death_headers(conn):
    """x-last-death-* headers exist from RabbitMQ 3.13 on (and in amqpd, which follows 3.13)."""
    return not is_rabbitmq(conn) or server_version(conn) >= (3, 13)


def _dlx_setup(conn, names, dlx_type="fanout", **queue_args):
    ch = conn.channel()
    dlx = names.exchange("dlx")
    ch.exchange_declare(dlx, dlx_type)
    dlq = names.queue("dlq")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx, "#" if dlx_type == "topic" else "")
    src = names.queue("src")
    args = {"x-dead-letter-exchange": dlx, **queue_args}
    ch.queue_declare(src, arguments=args)
    return ch, dlx, dlq, src


def test_dead_letter_on_reject_x_death(conn, names):
    ch, dlx, dlq, src = _dlx_setup(conn, names)
    props = pika.BasicProperties(headers={"h": 1}, expiration="60000", message_id="m1")
    ch.basic_publish("", src, b"payload", properties=props)
    method, _p, _b = ch.basic_get(src)
    ch.basic_reject(method.delivery_tag, requeue=False)
    [(m, p, body)] = consume_n(conn, ch, dlq, 1)
    assert body == b"payload"
    assert (m.exchange, m.routing_key) == (dlx, src)
    assert p.message_id == "m1"
    assert p.expiration is None  # removed, kept as original-expiration
    h = p.headers
    assert h["h"] == 1
    [death] = h["x-death"]
    assert death["count"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == src
    assert death["exchange"] == ""
    assert death["routing-keys"] == [src]
    assert death["original-expiration"] == "60000"
    assert isinstance(death["time"], datetime.datetime)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - death["time"]).total_seconds()) < 120
    assert h["x-first-death-queue"] == src
    assert h["x-first-death-reason"] == "rejected"
    assert h["x-first-death-exchange"] == ""
    if _has_last_death_headers(conn):
        assert h["x-last-death-queue"] == src
        assert h["x-last-death-reason"] == "rejected"
        assert h["x-last-death-exchange"] == ""
    else:  # the 3.10 oracle predates x-last-death-*
        assert not any(k.startswith("x-last-death-") for k in h)


def test_dead_letter_nack_and_republished_x_death_counts(conn, names):
    ch, _dlx, dlq, src = _dlx_setup(conn, names)
    ch.basic_publish("", src, b"again")
    method, _p, _b = ch.basic_get(src)
    ch.basic_nack(method.delivery_tag, requeue=False)
    [(_m, p, body)] = consume_n(conn, ch, dlq, 1)
    first_time = p.headers["x-death"][0]["time"]
    # A client republishing the message with its x-death: the broker interprets it
    # (3.10, 3.13.3+; 4.x would not) and the next death for {queue, reason} increments count.
    ch.basic_publish("", src, body, properties=p)
    method, _p, _b = ch.basic_get(src)
    ch.basic_reject(method.delivery_tag, requeue=False)
    [(_m, p2, _body)] = consume_n(conn, ch, dlq, 1)
    [death] = p2.headers["x-death"]
    assert death["count"] == 2
    assert death["reason"] == "rejected" and death["queue"] == src
    assert death["time"] == first_time  # time of the *first* death for this {queue, reason}


def test_dead_letter_routing_keys_cc_bcc(conn, names):
    ch = conn.channel()
    dlx, inx = names.exchange("dlx"), names.exchange("in")
    ch.exchange_declare(dlx, "direct")
    ch.exchange_declare(inx, "direct")
    dq = {}
    for k in ("k", "cc1", "bcc1", "rk2"):
        dq[k] = names.queue("d_" + k)
        ch.queue_declare(dq[k])
        ch.queue_bind(dq[k], dlx, k)
    plain, with_rk = names.queue("plain"), names.queue("withrk")
    ch.queue_declare(plain, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_declare(
        with_rk, arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "rk2"}
    )
    for q in (plain, with_rk):
        ch.queue_bind(q, inx, "k")
    ch.confirm_delivery()
    ch.basic_publish(
        inx, "k", b"x", properties=pika.BasicProperties(headers={"CC": ["cc1"], "BCC": ["bcc1"]})
    )
    for q in (plain, with_rk):
        method, _p, _b = ch.basic_get(q)
        ch.basic_reject(method.delivery_tag, requeue=False)
    got = {k: consume_n(conn, ch, q, 1) for k, q in dq.items()}
    # Without a DLRK the message keeps all its routing keys: publish key, CC *and* BCC.
    for k in ("k", "cc1", "bcc1"):
        [(m, p, _b)] = got[k]
        assert m.routing_key == "k"
        assert p.headers["CC"] == ["cc1"] and "BCC" not in p.headers
        assert p.headers["x-death"][0]["routing-keys"] == ["k", "cc1"]  # BCC not recorded
        assert p.headers["x-death"][0]["exchange"] == inx
    # With a DLRK: one key, and the CC header is dropped.
    [(m, p, _b)] = got["rk2"]
    assert m.routing_key == "rk2"
    assert "CC" not in p.headers and "BCC" not in p.headers
    assert p.headers["x-death"][0]["routing-keys"] == ["k", "cc1"]
    assert p.headers["x-death"][0]["queue"] == with_rk


def test_dead_letter_on_queue_ttl_expiry(conn, names):
    ch, _dlx, dlq, src = _dlx_setup(
        conn, names, dlx_type="topic", **{"x-message-ttl": 20, "x-dead-letter-routing-key": "dl.rk"}
    )
    ch.basic_publish("", src, b"short-lived")
    [(m, p, body)] = consume_n(conn, ch, dlq, 1)
    assert (body, m.routing_key) == (b"short-lived", "dl.rk")
    death = p.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("expired", src, 1)
    assert "original-expiration" not in death  # per-queue TTL: nothing to keep


def test_dead_letter_on_per_message_expiry(conn, names):
    ch, _dlx, dlq, src = _dlx_setup(conn, names)
    ch.basic_publish("", src, b"m", properties=pika.BasicProperties(expiration="20"))
    [(_m, p, body)] = consume_n(conn, ch, dlq, 1)
    death = p.headers["x-death"][0]
    assert (body, death["reason"], death["original-expiration"]) == (b"m", "expired", "20")
    assert p.expiration is None


def test_ttl_zero_expires_unless_consumer_ready(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"gone", properties=pika.BasicProperties(expiration="0"))
    assert ch.basic_get(q) == (None, None, None)
    # With a consumer ready, it is delivered.
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    ch.basic_publish("", q, b"caught", properties=pika.BasicProperties(expiration="0"))
    wait_for(conn, lambda: len(col) == 1, what="immediate delivery")
    assert col.bodies == [b"caught"]
    assert col.messages[0][1].expiration == "0"


def test_queue_expires_when_unused(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-expires": 200})
    ch.confirm_delivery()
    # Poll with mandatory publishes, not passive declares: on RabbitMQ a passive declare counts
    # as use and renews the lease. A publish does not.
    gone = []

    def expired():
        try:
            ch.basic_publish("", q, b"ping", mandatory=True)
        except pika.exceptions.UnroutableError:
            gone.append(True)
        return bool(gone)

    wait_for(conn, expired, timeout=5, what="queue expiry")


def test_max_length_drop_head_dead_letters(conn, names):
    ch, _dlx, dlq, src = _dlx_setup(conn, names, **{"x-max-length": 2})
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", src, f"m{i}".encode())
    assert ch.queue_declare(src, passive=True).method.message_count == 2
    dropped = consume_n(conn, ch, dlq, 2)
    assert [b for _m, _p, b in dropped] == [b"m0", b"m1"]
    assert {p.headers["x-death"][0]["reason"] for _m, p, _b in dropped} == {"maxlen"}
    assert [ch.basic_get(src, auto_ack=True)[2] for _ in range(2)] == [b"m2", b"m3"]


def test_max_length_bytes(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10})
    ch.confirm_delivery()
    for body in (b"aaaa", b"bbbb", b"cccc"):  # 12 bytes > 10: the head goes
        ch.basic_publish("", q, body)
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"bbbb", b"cccc"]
    assert ch.basic_get(q) == (None, None, None)


def test_max_length_counts_only_ready_messages(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-max-length": 1})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"a")
    m, _p, _b = ch.basic_get(q)  # unacked: no longer counts
    ch.basic_publish("", q, b"b")
    assert ch.basic_get(q, auto_ack=True)[2] == b"b"
    ch.basic_ack(m.delivery_tag)


def test_overflow_reject_publish_nacks(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"first")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"second")
    assert ch.basic_get(q, auto_ack=True)[2] == b"first"
    ch.basic_publish("", q, b"third")  # room again
    assert ch.basic_get(q, auto_ack=True)[2] == b"third"


def test_overflow_reject_publish_dlx(conn, names):
    ch, _dlx, dlq, src = _dlx_setup(
        conn, names, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}
    )
    ch.confirm_delivery()
    ch.basic_publish("", src, b"first")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", src, b"second")
    [(_m, p, body)] = consume_n(conn, ch, dlq, 1)
    assert body == b"second"
    assert p.headers["x-death"][0]["reason"] == "maxlen"


def test_priority_queue(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-max-priority": 5})
    ch.confirm_delivery()
    pri = [None, 1, 5, 3, 9, 0, 5, 3]  # 9 is capped to the max (5)
    for i, p in enumerate(pri):
        ch.basic_publish("", q, f"{i}".encode(), properties=pika.BasicProperties(priority=p))
    got = [ch.basic_get(q, auto_ack=True) for _ in pri]
    order = [b.decode() for _m, _p, b in got]
    # Highest first; FIFO within one priority; no priority = 0.
    assert order == ["2", "4", "6", "3", "7", "1", "0", "5"]
    assert got[1][1].priority == 9  # the property itself is untouched


def test_consumer_priorities(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=2)
    low, high = Collector(), Collector()
    ch.basic_consume(q, low, arguments={"x-priority": 1})
    ch.basic_consume(q, high, arguments={"x-priority": 10})
    pub = conn.channel()
    pub.confirm_delivery()
    for i in range(3):
        pub.basic_publish("", q, f"m{i}".encode())
    wait_for(conn, lambda: len(low) + len(high) == 3, what="3 deliveries")
    # The high-priority consumer gets messages until its prefetch is full.
    assert high.bodies == [b"m0", b"m1"] and low.bodies == [b"m2"]


def test_single_active_consumer(connect, names):
    q = names.queue()
    c1, c2 = connect(), connect()
    ch1, ch2 = c1.channel(), c2.channel()
    ch1.queue_declare(q, arguments={"x-single-active-consumer": True})
    a, b = Collector(), Collector()
    tag_a = ch1.basic_consume(q, a, auto_ack=True)
    ch2.basic_consume(q, b, auto_ack=True)
    pub = connect().channel()
    pub.confirm_delivery()
    for i in range(3):
        pub.basic_publish("", q, f"m{i}".encode())
    wait_for([c1, c2], lambda: len(a) == 3, what="active consumer's deliveries")
    assert len(b) == 0
    ch1.basic_cancel(tag_a)
    pub.basic_publish("", q, b"m3")
    wait_for([c1, c2], lambda: len(b) == 1, what="delivery to the next consumer")
    assert b.bodies == [b"m3"]
    ok = pub.queue_declare(q, passive=True, arguments={"x-single-active-consumer": True})
    assert ok.method.consumer_count == 1
