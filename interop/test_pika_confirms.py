"""Publisher confirms, mandatory returns and transactions, through pika's BlockingChannel."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from helpers import assert_connection_usable, channel_error, queue_depth, wait_for


def test_confirm_publish_acked(ch, names):
    q = names.queue()
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(10):
        # BlockingChannel.basic_publish returns only after basic.ack; a nack raises NackError.
        assert ch.basic_publish("", q, f"m{i}".encode()) is None
    assert ch.queue_declare(q, passive=True).method.message_count == 10


def test_confirm_persistent_to_durable_queue(ch, names):
    q = names.queue()
    ch.queue_declare(q, durable=True)
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    for i in range(5):
        ch.basic_publish("", q, f"p{i}".encode(), properties=props)
    assert ch.queue_declare(q, passive=True).method.message_count == 5


def test_confirm_sequence_numbers_start_at_one_and_count_unroutable(conn, names):
    """Delivery tags of confirms are 1..N per channel, unroutable publishes included."""
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    impl = ch._impl  # the async channel under BlockingChannel: lets us see every ack frame
    acks = []
    selected = []
    impl.confirm_delivery(
        ack_nack_callback=lambda f: acks.append(f.method), callback=lambda f: selected.append(f)
    )
    wait_for(conn, lambda: selected, what="confirm.select-ok")
    for i in range(20):
        # every third one goes nowhere (unroutable, not mandatory): still acked
        rk = q if i % 3 else "no-such-queue-" + names.base
        impl.basic_publish("", rk, f"m{i}".encode())

    def confirmed():
        tags = set()
        for m in acks:
            assert isinstance(m, pika.spec.Basic.Ack), m
            if m.multiple:
                tags.update(range(1, m.delivery_tag + 1))
            else:
                tags.add(m.delivery_tag)
        return tags

    wait_for(conn, lambda: confirmed() == set(range(1, 21)), what="acks for tags 1..20")
    assert max(m.delivery_tag for m in acks) == 20


def test_mandatory_unroutable_raises_unroutable_error(ch, names):
    x = names.exchange()
    ch.exchange_declare(x, "direct")
    ch.confirm_delivery()
    props = pika.BasicProperties(message_id="mid-1", headers={"h": 1})
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish(x, "nowhere", b"lost", properties=props, mandatory=True)
    # pika raises UnroutableError only if basic.return arrived *before* the basic.ack.
    [returned] = info.value.messages
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == x
    assert returned.method.routing_key == "nowhere"
    assert returned.body == b"lost"
    assert returned.properties.message_id == "mid-1"
    assert returned.properties.headers == {"h": 1}
    # The channel stays usable; a routable mandatory publish is simply acked.
    q = names.queue()
    ch.queue_declare(q)
    ch.queue_bind(q, x, "somewhere")
    ch.basic_publish(x, "somewhere", b"ok", mandatory=True)
    # Non-mandatory unroutable: acked, nothing returned.
    ch.basic_publish(x, "nowhere", b"dropped")
    assert ch.queue_declare(q, passive=True).method.message_count == 1


def test_mandatory_default_exchange_missing_queue(ch, names):
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish("", names.base + ".absent", b"x", mandatory=True)
    assert info.value.messages[0].method.reply_code == 312


def test_mandatory_return_without_confirms(conn, names):
    """Without confirm mode the basic.return arrives as an event for the return callback."""
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append((method, body)))
    ch.basic_publish("", names.base + ".absent", b"bounce", mandatory=True)
    wait_for(conn, lambda: returned, what="basic.return")
    method, body = returned[0]
    assert (method.reply_code, method.reply_text, method.exchange, body) == (
        312,
        "NO_ROUTE",
        "",
        b"bounce",
    )
    assert method.routing_key == names.base + ".absent"


def test_confirm_publish_to_missing_exchange_closes_channel(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()
    x = names.base + ".nox"
    with channel_error(404, f"NOT_FOUND - no exchange '{x}' in vhost '/'"):
        ch.basic_publish(x, "rk", b"x")
    assert_connection_usable(conn)


def test_tx_commit_makes_messages_visible(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.tx_select()
    for i in range(3):
        ch.basic_publish("", q, f"t{i}".encode())
    # Not visible before commit, from this channel or another.
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    assert queue_depth(conn, q)[0] == 0
    ch.tx_commit()
    assert queue_depth(conn, q)[0] == 3
    got = [ch.basic_get(q, auto_ack=True)[2] for _ in range(3)]
    assert got == [b"t0", b"t1", b"t2"]


def test_tx_rollback_discards_messages(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.tx_select()
    ch.basic_publish("", q, b"keep")
    ch.tx_commit()
    ch.basic_publish("", q, b"drop1")
    ch.basic_publish("", q, b"drop2")
    ch.tx_rollback()
    ch.tx_commit()  # an empty commit: still fine
    assert queue_depth(conn, q)[0] == 1
    _method, _p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"keep"


def test_tx_acks_apply_on_commit_only(conn, names):
    q = names.queue()
    setup = conn.channel()
    setup.queue_declare(q)
    for b in (b"a", b"b"):
        setup.basic_publish("", q, b)
    ch = conn.channel()
    ch.tx_select()
    m1, _p, _b = ch.basic_get(q)
    m2, _p, _b = ch.basic_get(q)
    ch.basic_ack(m1.delivery_tag)
    ch.tx_rollback()  # the ack of m1 is forgotten; m1 is still unacked (not requeued)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.basic_ack(m2.delivery_tag)
    ch.tx_commit()  # m2 acked for good
    ch.close()  # m1 (still unacked) goes back to the queue, redelivered
    wait_for(conn, lambda: queue_depth(conn, q)[0] == 1, what="m1 requeued")
    method, _p, body = setup.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"a", True)


def test_tx_commit_without_select_is_406(conn):
    ch = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - channel is not transactional"):
        ch.tx_commit()
    ch = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - channel is not transactional"):
        ch.tx_rollback()
    assert_connection_usable(conn)


def test_confirm_after_tx_is_406(conn):
    ch = conn.channel()
    ch.tx_select()
    with channel_error(406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode"):
        ch.confirm_delivery()
    assert_connection_usable(conn)


def test_tx_after_confirm_is_406(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with channel_error(406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode"):
        ch.tx_select()
    assert_connection_usable(conn)


def test_select_twice_is_idempotent(ch):
    ch.tx_select()
    ch.tx_select()
    ch2 = ch.connection.channel()
    ch2.confirm_delivery()
    # A second confirm.select on the same channel is also fine (pika guards the blocking API,
    # so send it through the async channel).
    done = []
    ch2._impl.confirm_delivery(ack_nack_callback=lambda f: None, callback=lambda f: done.append(f))
    wait_for(ch.connection, lambda: done, what="second confirm.select-ok")
