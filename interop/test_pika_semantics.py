"""RabbitMQ semantics a drop-in broker must reproduce, observed through pika.

Prefetch, acks/nacks/rejects and requeue order, get/get-empty, recover, counts in *-ok
replies, auto-delete/exclusive lifetimes, headers/e2e/alternate-exchange/CC-BCC/topic routing,
server-sent basic.cancel, and large messages with every header type pika can encode.
"""

from __future__ import annotations

import datetime
import decimal
import os

import pika
import pika.exceptions
import pytest
from helpers import (
    Collector,
    consume_n,
    exchange_exists,
    publish_confirmed,
    queue_depth,
    queue_exists,
    wait_for,
    wait_queue_gone,
)


def _fill(conn, q, n, prefix="m"):
    publish_confirmed(conn, "", q, [f"{prefix}{i}".encode() for i in range(n)])


# -- basic.qos --------------------------------------------------------------------------------
def test_qos_per_consumer(conn, names):
    qa, qb = names.queue("a"), names.queue("b")
    ch = conn.channel()
    for q in (qa, qb):
        ch.queue_declare(q)
        _fill(conn, q, 5)
    ch.basic_qos(prefetch_count=2)  # global=False: each consumer created after this gets 2
    ca, cb = Collector(), Collector()
    ch.basic_consume(qa, ca)
    ch.basic_consume(qb, cb)
    wait_for(conn, lambda: len(ca) == 2 and len(cb) == 2, what="2 deliveries per consumer")
    assert queue_depth(conn, qa) == (3, 1)
    assert queue_depth(conn, qb) == (3, 1)
    assert len(ca) == 2 and len(cb) == 2
    # Acking one lets exactly one more through to that consumer.
    ch.basic_ack(ca.messages[0][0].delivery_tag)
    wait_for(conn, lambda: len(ca) == 3, what="one more delivery after an ack")
    assert queue_depth(conn, qa) == (2, 1)
    assert len(cb) == 2


def test_qos_applies_only_to_later_consumers(conn, names):
    qa, qb = names.queue("a"), names.queue("b")
    ch = conn.channel()
    for q in (qa, qb):
        ch.queue_declare(q)
        _fill(conn, q, 4)
    ch.basic_qos(prefetch_count=1)
    ca = Collector()
    ch.basic_consume(qa, ca)
    ch.basic_qos(prefetch_count=3)  # does not change the existing consumer's limit
    cb = Collector()
    ch.basic_consume(qb, cb)
    wait_for(conn, lambda: len(ca) == 1 and len(cb) == 3, what="1 + 3 deliveries")
    assert queue_depth(conn, qa)[0] == 3
    assert queue_depth(conn, qb)[0] == 1


def test_qos_global_shared_by_channel(conn, names):
    qa, qb = names.queue("a"), names.queue("b")
    ch = conn.channel()
    for q in (qa, qb):
        ch.queue_declare(q)
        _fill(conn, q, 5)
    ch.basic_qos(prefetch_count=3, global_qos=True)  # RabbitMQ: shared by the channel
    ca, cb = Collector(), Collector()
    ch.basic_consume(qa, ca)
    ch.basic_consume(qb, cb)
    wait_for(conn, lambda: len(ca) + len(cb) == 3, what="3 deliveries in all")
    assert queue_depth(conn, qa)[0] + queue_depth(conn, qb)[0] == 7
    assert len(ca) + len(cb) == 3


def test_qos_global_and_per_consumer_both_apply(conn, names):
    qa, qb = names.queue("a"), names.queue("b")
    ch = conn.channel()
    for q in (qa, qb):
        ch.queue_declare(q)
        _fill(conn, q, 5)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    ch.basic_qos(prefetch_count=1, global_qos=False)
    ca, cb = Collector(), Collector()
    ch.basic_consume(qa, ca)
    ch.basic_consume(qb, cb)
    wait_for(conn, lambda: len(ca) == 1 and len(cb) == 1, what="1 delivery per consumer")
    assert queue_depth(conn, qa)[0] == 4 and queue_depth(conn, qb)[0] == 4
    # Per-consumer 1 binds before the global 3.
    assert (len(ca), len(cb)) == (1, 1)


def test_basic_get_ignores_qos(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    _fill(conn, q, 3)
    ch.basic_qos(prefetch_count=1, global_qos=True)
    ch.basic_qos(prefetch_count=1)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    assert tags == [1, 2, 3]


# -- acks, nacks, rejects, recover ------------------------------------------------------------
def test_ack_multiple(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    _fill(conn, q, 5)
    col = Collector()
    ch.basic_consume(q, col)
    wait_for(conn, lambda: len(col) == 5, what="5 deliveries")
    assert [m.delivery_tag for m, _p, _b in col.messages] == [1, 2, 3, 4, 5]
    ch.basic_ack(3, multiple=True)  # acks 1, 2, 3
    ch.basic_recover(requeue=True)  # 4 and 5 come back, redelivered
    wait_for(conn, lambda: len(col) == 7, what="2 redeliveries")
    redelivered = col.messages[5:]
    assert [b for _m, _p, b in redelivered] == [b"m3", b"m4"]
    assert all(m.redelivered for m, _p, _b in redelivered)
    assert not any(m.redelivered for m, _p, _b in col.messages[:5])
    assert [m.delivery_tag for m, _p, _b in redelivered] == [6, 7]  # tags never reused
    ch.basic_ack(0, multiple=True)  # tag 0 + multiple: everything outstanding
    ch.basic_cancel(ch.consumer_tags[0])
    assert queue_depth(conn, q) == (0, 0)


def test_nack_requeue_restores_original_position(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    _fill(conn, q, 4)
    m = [ch.basic_get(q)[0] for _ in range(3)]  # m0, m1, m2 out; m3 still ready
    ch.basic_nack(m[1].delivery_tag, requeue=True)
    ch.basic_nack(m[0].delivery_tag, requeue=True)
    got = []
    for _ in range(3):
        method, _p, body = ch.basic_get(q, auto_ack=True)
        got.append((body, method.redelivered))
    # Back at their original positions (ahead of m3), flagged redelivered.
    assert got == [(b"m0", True), (b"m1", True), (b"m3", False)]
    assert ch.basic_get(q) == (None, None, None)
    ch.basic_nack(m[2].delivery_tag, requeue=False)  # dropped (no DLX)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_nack_multiple(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    _fill(conn, q, 4)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    ch.basic_nack(tags[2], multiple=True, requeue=True)  # m0..m2 back in order
    # (Not checked with a passive declare: RabbitMQ answers queue.declare with a prioritised
    # "stat" call that can overtake the requeue, so its count may still say 0 here.)
    got = [ch.basic_get(q, auto_ack=True) for _ in range(3)]
    assert [(b, m.redelivered) for m, _p, b in got] == [(b"m0", True), (b"m1", True), (b"m2", True)]
    assert got[-1][0].message_count == 0
    ch.basic_ack(tags[3])


def test_reject(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    _fill(conn, q, 2)
    m0, _p, _b = ch.basic_get(q)
    ch.basic_reject(m0.delivery_tag, requeue=False)  # dropped
    m1, _p, _b = ch.basic_get(q)
    ch.basic_reject(m1.delivery_tag, requeue=True)  # back
    method, _p, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.redelivered, method.message_count) == (b"m1", True, 0)
    assert ch.basic_get(q) == (None, None, None)


def test_basic_get_and_get_empty(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    props = pika.BasicProperties(content_type="text/plain", message_id="x1", priority=3)
    for i in range(3):
        ch.basic_publish("", q, f"g{i}".encode(), properties=props)
    method, p, body = ch.basic_get(q)
    assert isinstance(method, pika.spec.Basic.GetOk)
    assert (method.delivery_tag, method.redelivered, method.exchange, method.routing_key) == (
        1,
        False,
        "",
        q,
    )
    assert method.message_count == 2  # messages left after this one
    assert (p.content_type, p.message_id, p.priority, body) == ("text/plain", "x1", 3, b"g0")
    assert ch.basic_get(q, auto_ack=True)[0].message_count == 1
    assert ch.basic_get(q, auto_ack=True)[0].message_count == 0
    assert ch.basic_get(q) == (None, None, None)  # basic.get-empty
    ch.basic_ack(1)


def test_recover_requeue(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    _fill(conn, q, 2)
    col = Collector()
    ch.basic_consume(q, col)
    wait_for(conn, lambda: len(col) == 2, what="2 deliveries")
    ch.basic_recover(requeue=True)
    wait_for(conn, lambda: len(col) == 4, what="2 redeliveries")
    assert [(b, m.redelivered) for m, _p, b in col.messages] == [
        (b"m0", False),
        (b"m1", False),
        (b"m0", True),
        (b"m1", True),
    ]
    # Old tags are void after recover: only the new ones are acked.
    ch.basic_ack(4, multiple=True)
    ch.basic_cancel(ch.consumer_tags[0])
    assert queue_depth(conn, q) == (0, 0)


def test_channel_close_requeues_unacked_as_redelivered(conn, names):
    q = names.queue()
    a = conn.channel()
    a.queue_declare(q)
    _fill(conn, q, 3)
    col = Collector()
    a.basic_consume(q, col)
    wait_for(conn, lambda: len(col) == 3, what="3 deliveries")
    a.basic_ack(col.messages[1][0].delivery_tag)  # m1 done
    a.close()
    b = conn.channel()
    got = consume_n(conn, b, q, 2)
    assert [(body, m.redelivered) for m, _p, body in got] == [(b"m0", True), (b"m2", True)]


def test_connection_close_requeues_unacked(connect, names):
    c1 = connect()
    q = names.queue()
    ch = c1.channel()
    ch.queue_declare(q)
    _fill(c1, q, 2)
    col = Collector()
    ch.basic_consume(q, col)
    wait_for(c1, lambda: len(col) == 2, what="2 deliveries")
    c1.close()
    c2 = connect()
    got = consume_n(c2, c2.channel(), q, 2)
    assert [(body, m.redelivered) for m, _p, body in got] == [(b"m0", True), (b"m1", True)]


# -- *-ok counts, names ------------------------------------------------------------------------
def test_queue_declare_ok_counts(connect, conn, names):
    q = names.queue()
    ch = conn.channel()
    ok = ch.queue_declare(q)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 0, 0)
    _fill(conn, q, 4)
    assert ch.queue_declare(q).method.message_count == 4
    # Two consumers (one per connection), prefetch 1 each: 2 unacked, 2 ready.
    cols = []
    for c in (connect(), connect()):
        cch = c.channel()
        cch.basic_qos(prefetch_count=1)
        col = Collector()
        cch.basic_consume(q, col)
        cols.append((c, col))
    wait_for(
        [c for c, _ in cols],
        lambda: all(len(col) == 1 for _, col in cols),
        what="one delivery each",
    )
    ok = ch.queue_declare(q)
    assert (ok.method.message_count, ok.method.consumer_count) == (2, 2)
    ok = ch.queue_declare(q, passive=True)
    assert (ok.method.message_count, ok.method.consumer_count) == (2, 2)


def test_server_named_queues(conn, names):
    ch = conn.channel()
    ok = ch.queue_declare("", exclusive=True)
    name = ok.method.queue
    assert name.startswith("amq.gen-")
    assert len(name) > len("amq.gen-")
    other = ch.queue_declare("").method.queue  # non-exclusive server-named
    names.add_queue(other)
    assert other.startswith("amq.gen-") and other != name
    # "" means the last queue declared on this channel (here: bind and get).
    fan = names.exchange("fan")
    ch.exchange_declare(fan, "fanout")
    ch.queue_bind("", fan)
    ch.confirm_delivery()
    ch.basic_publish(fan, "", b"fan")
    method, _p, body = ch.basic_get("", auto_ack=True)
    assert (method.exchange, method.routing_key, body) == (fan, "", b"fan")
    # Another channel has no "last declared queue".
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        conn.channel().queue_purge("")
    assert info.value.reply_code == 404


def test_purge_and_delete_counts(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    _fill(conn, q, 4)
    m, _p, _b = ch.basic_get(q)  # one unacked: not counted, not purged
    assert ch.queue_purge(q).method.message_count == 3
    assert ch.queue_purge(q).method.message_count == 0
    ch.basic_nack(m.delivery_tag, requeue=True)
    _fill(conn, q, 2)
    assert ch.queue_delete(q).method.message_count == 3
    assert not queue_exists(conn, q)
    assert ch.queue_delete(q).method.message_count == 0  # idempotent


# -- queue lifetimes ---------------------------------------------------------------------------
def test_auto_delete_queue_after_last_consumer(conn, names):
    q = names.queue()
    ch1 = conn.channel()
    ch1.queue_declare(q, auto_delete=True)
    t1 = ch1.basic_consume(q, lambda *a: None)
    ch2 = conn.channel()
    ch2.basic_consume(q, lambda *a: None)
    ch1.basic_cancel(t1)
    assert queue_depth(conn, q)[1] == 1  # still there: one consumer left
    # The last consumer goes with its channel's close: so does the queue.
    ch2.close()
    wait_queue_gone(conn, q)


def test_auto_delete_queue_after_basic_cancel(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)
    wait_queue_gone(conn, q)


def test_auto_delete_queue_never_consumed_stays(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    _fill(conn, q, 1)
    assert ch.basic_get(q, auto_ack=True)[2] == b"m0"
    assert queue_exists(conn, q)  # auto-delete only after a consumer has come and gone


def test_exclusive_queue_deleted_with_connection(connect, names):
    owner = connect()
    q = names.queue()
    owner.channel().queue_declare(q, exclusive=True)
    watcher = connect()
    owner.close()
    wait_queue_gone(watcher, q)


def test_auto_delete_exchange(conn, names):
    ch = conn.channel()
    x, y = names.exchange("x"), names.exchange("y")
    ch.exchange_declare(x, "fanout", auto_delete=True)
    ch.exchange_declare(y, "fanout", auto_delete=True)
    assert exchange_exists(conn, x)  # never bound: stays
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x)
    ch.queue_unbind(q, x)  # its last binding as a source goes: so does the exchange
    assert not exchange_exists(conn, x)
    ch.queue_bind(q, y)
    ch.queue_delete(q)  # bindings removed with the queue
    assert not exchange_exists(conn, y)


def test_durable_exclusive_is_fine(conn, names):
    q = names.queue()
    ok = conn.channel().queue_declare(q, durable=True, exclusive=True)
    assert ok.method.queue == q


# -- routing -----------------------------------------------------------------------------------
def _bound_queue(conn, names, x, suffix, routing_key="", arguments=None):
    q = names.queue(suffix)
    ch = conn.channel()
    ch.queue_declare(q)
    ch.queue_bind(q, x, routing_key, arguments=arguments)
    ch.close()
    return q


def _drain(conn, q):
    ch = conn.channel()
    out = []
    while True:
        method, props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            break
        out.append((props, body))
    ch.close()
    return out


def test_headers_exchange(conn, names):
    x = names.exchange("hdr")
    ch = conn.channel()
    ch.exchange_declare(x, "headers")
    qs = {
        "all": {"x-match": "all", "a": 1, "b": "two"},
        "any": {"x-match": "any", "a": 1, "b": "two"},
        "default_all": {"a": 1, "b": "two"},
        "empty_all": {"x-match": "all"},
        "void": {"x-match": "all", "c": None},  # void value: key presence only
        "all_with_x": {"x-match": "all-with-x", "x-k": "v", "a": 1},
        "any_with_x": {"x-match": "any-with-x", "x-k": "v"},
        "x_ignored": {"x-match": "any", "x-k": "v"},  # x-* binding keys skipped with "any"
    }
    bound = {k: _bound_queue(conn, names, x, k, arguments=v) for k, v in qs.items()}
    messages = {
        "m_ab": {"a": 1, "b": "two"},
        "m_a": {"a": 1},
        "m_a_wrong_b": {"a": 1, "b": "three"},
        "m_c": {"c": "anything"},
        "m_xk": {"x-k": "v"},
        "m_xk_a": {"x-k": "v", "a": 1},
        "m_none": None,
        "m_a_long": {"a": 1, "b": "two", "extra": True},
    }
    pub = conn.channel()
    pub.confirm_delivery()
    for body, headers in messages.items():
        pub.basic_publish(
            x, "ignored", body.encode(), properties=pika.BasicProperties(headers=headers)
        )
    got = {k: sorted(b.decode() for _p, b in _drain(conn, q)) for k, q in bound.items()}
    assert got == {
        "all": ["m_a_long", "m_ab"],
        "any": ["m_a", "m_a_long", "m_a_wrong_b", "m_ab", "m_xk_a"],
        "default_all": ["m_a_long", "m_ab"],
        "empty_all": sorted(messages),
        "void": ["m_c"],
        "all_with_x": ["m_xk_a"],
        "any_with_x": ["m_xk", "m_xk_a"],
        "x_ignored": [],
    }


def test_exchange_to_exchange_bindings(conn, names):
    ch = conn.channel()
    src, mid, leaf = names.exchange("src"), names.exchange("mid"), names.exchange("leaf")
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(mid, "fanout")
    ch.exchange_declare(leaf, "direct")
    ch.exchange_bind(destination=mid, source=src, routing_key="a.*")
    ch.exchange_bind(destination=leaf, source=mid)
    ch.exchange_bind(destination=src, source=leaf, routing_key="a.b")  # a cycle
    q_mid = _bound_queue(conn, names, mid, "qmid")
    q_leaf = _bound_queue(conn, names, leaf, "qleaf", "a.b")
    q_src = _bound_queue(conn, names, src, "qsrc", "#")
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish(src, "a.b", b"ab")
    pub.basic_publish(src, "a.c", b"ac")
    pub.basic_publish(src, "z", b"z")
    # One copy per queue per publish, even through the cycle.
    assert [b for _p, b in _drain(conn, q_mid)] == [b"ab", b"ac"]
    assert [b for _p, b in _drain(conn, q_leaf)] == [b"ab"]
    assert [b for _p, b in _drain(conn, q_src)] == [b"ab", b"ac", b"z"]
    ch.exchange_unbind(destination=mid, source=src, routing_key="a.*")
    pub.basic_publish(src, "a.b", b"ab2")
    assert _drain(conn, q_mid) == []
    assert [b for _p, b in _drain(conn, q_src)] == [b"ab2"]


def test_alternate_exchange(conn, names):
    ch = conn.channel()
    ae, x = names.exchange("ae"), names.exchange("main")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    q_main = _bound_queue(conn, names, x, "qmain", "known")
    q_ae = _bound_queue(conn, names, ae, "qae")
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish(x, "known", b"routed")
    pub.basic_publish(x, "unknown", b"to-ae")
    # mandatory: routed via the AE, so no basic.return
    pub.basic_publish(x, "unknown2", b"to-ae-mandatory", mandatory=True)
    assert [b for _p, b in _drain(conn, q_main)] == [b"routed"]
    assert [b for _p, b in _drain(conn, q_ae)] == [b"to-ae", b"to-ae-mandatory"]
    # An AE that does not exist: the message is simply unroutable.
    y = names.exchange("noae")
    ch.exchange_declare(y, "direct", arguments={"alternate-exchange": names.base + ".none"})
    with pytest.raises(pika.exceptions.UnroutableError):
        pub.basic_publish(y, "k", b"lost", mandatory=True)


def test_cc_bcc_routing(conn, names):
    ch = conn.channel()
    x = names.exchange()
    ch.exchange_declare(x, "direct")
    qs = {k: _bound_queue(conn, names, x, k, k) for k in ("k1", "k2", "k3", "k4")}
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish(
        x,
        "k1",
        b"hello",
        properties=pika.BasicProperties(headers={"CC": ["k2"], "BCC": ["k3"], "other": 1}),
    )
    got = {k: _drain(conn, q) for k, q in qs.items()}
    assert [b for _p, b in got["k1"]] == [b"hello"]
    assert [b for _p, b in got["k2"]] == [b"hello"]
    assert [b for _p, b in got["k3"]] == [b"hello"]
    assert got["k4"] == []
    for k in ("k1", "k2", "k3"):
        headers = got[k][0][0].headers
        assert headers == {"CC": ["k2"], "other": 1}, (k, headers)  # BCC stripped everywhere


def test_topic_edge_cases(conn, names):
    ch = conn.channel()
    x = names.exchange()
    ch.exchange_declare(x, "topic")
    bindings = ["a.*.b", "a.#", "#.b", "#", "*", "a.#.b", "#.#", "a.*", "*.*"]
    qs = {k: _bound_queue(conn, names, x, f"b{i}", k) for i, k in enumerate(bindings)}
    keys = ["a..b", "a.b", "a", "b", "", "a.x.y.b", "a.", ".b", "x"]
    pub = conn.channel()
    pub.confirm_delivery()
    for k in keys:
        pub.basic_publish(x, k, k.encode() or b"<empty>")
    got = {bk: [b.decode() for _p, b in _drain(conn, q)] for bk, q in qs.items()}
    assert got == {
        "a.*.b": ["a..b"],  # an empty word is a word
        "a.#": ["a..b", "a.b", "a", "a.x.y.b", "a."],  # '#' matches zero words
        "#.b": ["a..b", "a.b", "b", "a.x.y.b", ".b"],
        "#": ["a..b", "a.b", "a", "b", "<empty>", "a.x.y.b", "a.", ".b", "x"],
        "*": ["a", "b", "x"],  # "" is zero words for RabbitMQ: '*' needs one, '#' does not
        "a.#.b": ["a..b", "a.b", "a.x.y.b"],
        "#.#": ["a..b", "a.b", "a", "b", "<empty>", "a.x.y.b", "a.", ".b", "x"],
        "a.*": ["a.b", "a."],
        "*.*": ["a.b", "a.", ".b"],
    }


def test_direct_and_fanout_basics(conn, names):
    ch = conn.channel()
    d, f = names.exchange("d"), names.exchange("f")
    ch.exchange_declare(d, "direct")
    ch.exchange_declare(f, "fanout")
    q = _bound_queue(conn, names, d, "q", "k")
    ch.queue_bind(q, d, "k")  # binding twice is one binding
    ch.queue_bind(q, d, "k2")
    ch.queue_bind(q, f, "ignored")
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish(d, "k", b"1")
    pub.basic_publish(d, "K", b"case-sensitive")
    pub.basic_publish(d, "k2", b"2")
    pub.basic_publish(f, "whatever", b"3")
    assert [b for _p, b in _drain(conn, q)] == [b"1", b"2", b"3"]


# -- server-sent basic.cancel ------------------------------------------------------------------
def test_server_cancel_on_queue_delete_callback(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    cancels = []
    ch.add_on_cancel_callback(lambda frame: cancels.append(frame.method))
    tag = ch.basic_consume(q, lambda *a: None)
    conn.channel().queue_delete(q)
    wait_for(conn, lambda: cancels, what="server-sent basic.cancel")
    assert isinstance(cancels[0], pika.spec.Basic.Cancel)
    assert cancels[0].consumer_tag == tag
    assert tag not in ch.consumer_tags
    assert ch.is_open  # the channel survives
    ch.queue_declare("", exclusive=True)


def test_server_cancel_ends_consume_generator(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    _fill(conn, q, 1)
    other = conn.channel()
    seen = []
    for method, _props, body in ch.consume(q, auto_ack=True, inactivity_timeout=5):
        if method is None:
            pytest.fail("no event within 5s")
        seen.append(body)
        other.queue_delete(q)
    # The generator ended because the broker cancelled the consumer.
    assert seen == [b"m0"]


# -- large messages and property/header fidelity ------------------------------------------------
HEADERS = {
    "str": "héllo wörld",
    "empty": "",
    "bytes": b"\x00\x01\xfe\xff",
    "int": 42,
    "neg": -7,
    "big": 2**40,
    "zero": 0,
    "true": True,
    "false": False,
    "none": None,
    "decimal": decimal.Decimal("3.14"),
    "decimal_int": decimal.Decimal("12"),
    # pika decodes 'T' as an aware UTC datetime; whole seconds only.
    "timestamp": datetime.datetime(2024, 5, 17, 12, 34, 56, tzinfo=datetime.UTC),
    "list": [1, "two", True, None, [3, 4], {"k": "v"}],
    "empty_list": [],
    "nested": {"a": {"b": {"c": [1, 2, {"d": b"deep"}]}}, "e": 1},
    "empty_table": {},
}

PROPS = dict(
    content_type="application/octet-stream",
    content_encoding="identity",
    delivery_mode=2,
    priority=7,
    correlation_id="corr-1",
    reply_to="reply-here",
    expiration="600000",
    message_id="msg-1",
    timestamp=1700000000,
    type="big.blob",
    app_id="interop",
)


def _expected_headers():
    exp = dict(HEADERS)
    exp["decimal_int"] = decimal.Decimal(12)
    return exp


@pytest.mark.parametrize("size", [1024 * 1024, 3 * 1024 * 1024 + 17])
def test_large_message_round_trip(conn, names, size):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    body = os.urandom(size)
    ch.confirm_delivery()
    ch.basic_publish("", q, body, properties=pika.BasicProperties(headers=HEADERS, **PROPS))
    _method, props, got = ch.basic_get(q, auto_ack=True)
    assert len(got) == size and got == body
    for k, v in PROPS.items():
        assert getattr(props, k) == v, k
    assert props.user_id is None and props.cluster_id is None
    assert props.headers == _expected_headers()
    # And via a consumer (basic.deliver path), many body frames again.
    ch.basic_publish("", q, body[::-1], properties=pika.BasicProperties(headers=HEADERS))
    [(_m, p, b)] = consume_n(conn, ch, q, 1)
    assert b == body[::-1] and p.headers == _expected_headers()


def test_empty_body_and_no_properties(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"")
    _method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b""
    assert props.headers is None and props.delivery_mode is None and props.content_type is None


def test_body_exactly_frame_sized(conn, names):
    """Bodies at and around the negotiated frame_max boundary."""
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    fm = conn._impl.params.frame_max
    sizes = [fm - 9, fm - 8, fm - 7, fm, 2 * (fm - 8), 2 * (fm - 8) + 1]
    ch.confirm_delivery()
    bodies = [os.urandom(s) for s in sizes]
    for b in bodies:
        ch.basic_publish("", q, b)
    for b in bodies:
        assert ch.basic_get(q, auto_ack=True)[2] == b


# -- shortstrs that are not UTF-8 -----------------------------------------------------------
def test_a_routing_key_that_is_not_utf8_comes_back_as_published(conn, names):
    # RabbitMQ keeps basic.publish's routing key as a binary: delivered and got as sent
    # (pika hands back bytes when they are not UTF-8).
    x, q = names.exchange(), names.queue()
    ch = conn.channel()
    ch.exchange_declare(x, "fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    publish_confirmed(conn, x, b"\xff\xfe", [b"one", b"two"])
    got = ch.basic_get(q, auto_ack=True)
    assert got[0].routing_key == b"\xff\xfe" and got[2] == b"one"
    collector = Collector()
    ch.basic_consume(q, collector, auto_ack=True)
    wait_for(conn, lambda: len(collector.messages) == 1, what="the delivery")
    method, _, body = collector.messages[0]
    assert method.routing_key == b"\xff\xfe" and body == b"two"
