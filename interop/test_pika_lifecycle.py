"""Message lifecycle edges through pika, each checked on the RabbitMQ oracle: single active
consumer hand-over, consumer priority validation, TTL at the head, requeue keeping the
original expiry, and dead-letter cycles.

Nothing sleeps: where time must pass, a bounded wait for an event the broker must produce
(a dead-lettered "clock" message) stands in for it.
"""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from helpers import Collector, channel_error, consume_n, queue_depth, queue_exists, wait_for


def test_single_active_consumer_hand_over_prefers_higher_priority(connect, names):
    # Oracle: the first consumer is active whatever the priorities; when it goes, the
    # highest-priority waiting consumer takes over, registration order among equals.
    conn = connect()
    q = names.queue()
    pub = conn.channel()
    pub.queue_declare(q, arguments={"x-single-active-consumer": True})
    pub.confirm_delivery()
    got = Collector()
    chans = {}
    for tag, prio in (("a", None), ("b", None), ("c", 5)):
        chans[tag] = conn.channel()
        args = {"x-priority": prio} if prio is not None else None
        chans[tag].basic_consume(q, got, auto_ack=True, consumer_tag=tag, arguments=args)
    steps = ["pub", "cancel a", "pub", "cancel c", "pub"]
    for i, step in enumerate(steps):
        if step == "pub":
            pub.basic_publish("", q, str(i).encode())
            want = i // 2 + 1
            wait_for(conn, lambda want=want: len(got) == want, what=f"delivery of {i}")
        else:
            tag = step.split()[1]
            chans[tag].basic_cancel(tag)
    assert [(m.consumer_tag, b) for m, _p, b in got.messages] == [
        ("a", b"0"),
        ("c", b"2"),
        ("b", b"4"),
    ]


def test_single_active_consumer_channel_close_requeues_to_the_next(connect, names):
    conn = connect()
    q = names.queue()
    ch_a, ch_b = conn.channel(), conn.channel()
    ch_a.queue_declare(q, arguments={"x-single-active-consumer": True})
    ch_a.basic_qos(prefetch_count=1)
    a, b = Collector(), Collector()
    ch_a.basic_consume(q, a)  # manual ack: m0 stays unacked
    ch_b.basic_consume(q, b, auto_ack=True)
    pub = conn.channel()
    pub.confirm_delivery()
    for i in range(2):
        pub.basic_publish("", q, f"m{i}".encode())
    wait_for(conn, lambda: len(a) == 1, what="the active consumer's delivery")
    assert len(b) == 0
    ch_a.close()
    wait_for(conn, lambda: len(b) == 2, what="hand-over")
    assert [(m.redelivered, body) for m, _p, body in b.messages] == [(True, b"m0"), (False, b"m1")]


def test_consumer_priority_must_be_an_integer(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    text = (
        f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' in vhost '/': "
        '"expected integer, got longstr"'
    )
    with channel_error(406, text):
        ch.basic_consume(q, Collector(), arguments={"x-priority": "high"})


def test_expired_message_behind_a_live_one_waits_for_the_head(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"live")
    ch.basic_publish("", q, b"gone", properties=pika.BasicProperties(expiration="0"))
    # Classic queues expire only at the head: the expired one still counts.
    assert queue_depth(conn, q) == (2, 0)
    assert ch.basic_get(q, auto_ack=True)[2] == b"live"
    assert ch.basic_get(q) == (None, None, None)


def test_requeued_message_keeps_its_original_expiry(conn, names):
    ch = conn.channel()
    dlx = names.exchange("dlx")
    ch.exchange_declare(dlx, "fanout")
    dlq = names.queue("dlq")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    src, clock = names.queue("src"), names.queue("clock")
    ch.queue_declare(src, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": dlx})
    ch.queue_declare(clock, arguments={"x-message-ttl": 300, "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    ch.basic_publish("", src, b"held")
    method, _p, _b = ch.basic_get(src)
    ch.basic_publish("", clock, b"tick")
    # Once "tick" is dead-lettered, 300 ms have passed: "held" (100 ms) is long expired.
    [(_m, _p, body)] = consume_n(conn, ch, dlq, 1)
    assert body == b"tick"
    ch.basic_nack(method.delivery_tag, requeue=True)
    [(_m, p, body)] = consume_n(conn, ch, dlq, 1)
    assert body == b"held"
    death = p.headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("expired", src)
    assert queue_depth(conn, src) == (0, 0)


def test_ttl_dead_letter_cycle_is_dropped(conn, names):
    q = names.queue()
    ch = conn.channel()
    args = {"x-message-ttl": 20, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": q}
    ch.queue_declare(q, arguments=args)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"loop")
    # Without cycle detection it would come straight back every 20 ms and never be seen gone.
    wait_for(conn, lambda: queue_depth(conn, q) == (0, 0), what="the cycle to be broken")
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    ch.basic_publish("", q, b"after")
    wait_for(conn, lambda: len(col) == 1, what="a later delivery")
    assert col.bodies == [b"after"]


def test_reject_retry_loop_counts_up(conn, names):
    # A rejection in the history is not a cycle: client-driven retry loops go on.
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"retry")
    got: list[tuple[object, object, bytes]] = []

    def get_one() -> bool:
        # Dead-lettering is asynchronous on RabbitMQ: poll until the message is back.
        result = ch.basic_get(q)
        if result[0] is not None:
            got.append(result)
        return bool(got)

    wait_for(conn, get_one, what="the published message")
    for count in (1, 2, 3):
        method, _p, _b = got.pop()
        ch.basic_reject(method.delivery_tag, requeue=False)
        wait_for(conn, get_one, what=f"dead-lettered copy {count}")
        [death] = got[0][1].headers["x-death"]
        assert (death["count"], death["reason"]) == (count, "rejected")


def test_requeue_that_overflows_drops_the_head_before_delivering(conn, names):
    # rabbit_amqqueue_process:requeue_and_run: maybe_drop_head before run_message_queue.
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-max-length": 1})
    ch.confirm_delivery()
    ch.basic_qos(prefetch_count=1)
    got = Collector()
    ch.basic_consume(q, got)
    ch.basic_publish("", q, b"m0")
    wait_for(conn, lambda: len(got) == 1, what="m0")
    ch.basic_publish("", q, b"m1")  # ready: the consumer's prefetch is full
    ch.basic_nack(got.messages[0][0].delivery_tag, requeue=True)
    wait_for(conn, lambda: len(got) == 2, what="the next delivery")
    assert [(m.redelivered, b) for m, _p, b in got.messages] == [(False, b"m0"), (False, b"m1")]
    assert queue_depth(conn, q) == (0, 1)


@pytest.mark.parametrize("use", ["passive_declare", "basic_get"])
def test_queue_expiry_lease_is_renewed_by_use(conn, names, use):
    # A dead-lettered "clock" message stands in for a sleep: when it arrives, its TTL has
    # passed. The lease is 1000 ms; renewed at ~600 ms, the queue must outlive ~1200 ms.
    ch = conn.channel()
    dlq = names.queue("dlq")
    ch.queue_declare(dlq)
    clock = names.queue("clock")
    ch.queue_declare(
        clock,
        arguments={
            "x-message-ttl": 600,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )
    q = names.queue()
    ch.queue_declare(q, arguments={"x-expires": 1000})
    ch.confirm_delivery()

    def wait_600ms() -> None:
        ch.basic_publish("", clock, b"tick")
        [(_m, _p, body)] = consume_n(conn, ch, dlq, 1)
        assert body == b"tick"

    wait_600ms()
    if use == "passive_declare":
        ch.queue_declare(q, passive=True)
    else:
        assert ch.basic_get(q) == (None, None, None)
    wait_600ms()
    assert queue_exists(conn, q)  # this passive declare renews the lease once more
    gone = []

    def expired() -> bool:
        try:
            ch.basic_publish("", q, b"ping", mandatory=True)
        except pika.exceptions.UnroutableError:
            gone.append(True)
        return bool(gone)

    wait_for(conn, expired, what="queue expiry")
