"""RabbitMQ's error behaviour as pika sees it: reply code, reply text, channel vs connection.

Soft errors (channel.close) leave the connection usable: every soft-error test checks that
with a fresh channel. Hard errors (connection.close) surface as ConnectionClosedByBroker.
Texts are RabbitMQ's exact ones where they are stable across 3.10..3.13.
"""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from helpers import (
    amqp_reply_text,
    assert_connection_usable,
    channel_error,
    connection_error,
    expect_connection_close,
    is_rabbitmq,
    send_raw,
    server_version,
)


def nf_queue(q):
    return f"NOT_FOUND - no queue '{q}' in vhost '/'"


def nf_exchange(x):
    return f"NOT_FOUND - no exchange '{x}' in vhost '/'"


# -- 404 NOT_FOUND ----------------------------------------------------------------------------
def test_passive_declare_missing_queue(conn, names):
    q = names.base + ".missing"
    with channel_error(404, nf_queue(q)):
        conn.channel().queue_declare(q, passive=True)
    assert_connection_usable(conn)


def test_passive_declare_missing_exchange(conn, names):
    x = names.base + ".missing"
    with channel_error(404, nf_exchange(x)):
        conn.channel().exchange_declare(x, passive=True)
    assert_connection_usable(conn)


def test_publish_to_missing_exchange_closes_channel(conn, names):
    x = names.base + ".missing"
    ch = conn.channel()
    ch.basic_publish(x, "rk", b"x")  # asynchronous: the close arrives with the next round trip
    with channel_error(404, nf_exchange(x)):
        ch.queue_declare("", exclusive=True)
    assert ch.is_closed
    assert_connection_usable(conn)


def test_consume_get_purge_on_missing_queue(conn, names):
    q = names.base + ".missing"
    with channel_error(404, nf_queue(q)):
        conn.channel().basic_consume(q, lambda *a: None)
    with channel_error(404, nf_queue(q)):
        conn.channel().basic_get(q)
    with channel_error(404, nf_queue(q)):
        conn.channel().queue_purge(q)
    assert_connection_usable(conn)


def test_bind_missing_exchange_or_queue(conn, names):
    ch = conn.channel()
    q = names.queue()
    x = names.exchange()
    ch.queue_declare(q)
    ch.exchange_declare(x, "direct")
    missing = names.base + ".missing"
    with channel_error(404, nf_exchange(missing)):
        conn.channel().queue_bind(q, missing, "rk")
    with channel_error(404, nf_queue(missing)):
        conn.channel().queue_bind(missing, x, "rk")
    with channel_error(404, nf_exchange(missing)):
        conn.channel().exchange_bind(x, missing, "rk")
    # Unbinding a binding that does not exist (both ends exist) is fine.
    conn.channel().queue_unbind(q, x, "never-bound")
    assert_connection_usable(conn)


def test_no_previously_declared_queue(conn):
    with channel_error(404, "NOT_FOUND - no previously declared queue"):
        conn.channel().basic_get("")
    assert_connection_usable(conn)


def test_delete_missing_queue_and_exchange_is_ok(ch, names):
    assert ch.queue_delete(names.base + ".missing").method.message_count == 0
    ch.exchange_delete(names.base + ".missing")
    ch.queue_declare("", exclusive=True)  # channel still open


# -- 406 PRECONDITION_FAILED: inequivalent redeclare ------------------------------------------
def test_redeclare_queue_different_durable(conn, names):
    q = names.queue()
    conn.channel().queue_declare(q, durable=False)
    with channel_error(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': "
        "received 'true' but current is 'false'",
    ):
        conn.channel().queue_declare(q, durable=True)
    assert_connection_usable(conn)


def test_redeclare_queue_different_message_ttl(conn, names):
    q = names.queue()
    conn.channel().queue_declare(q, arguments={"x-message-ttl": 1000})
    with channel_error(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': "
        "received '2000' but current is '1000'",
    ):
        conn.channel().queue_declare(q, arguments={"x-message-ttl": 2000})
    # Missing on redeclare is also inequivalent.
    with channel_error(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': "
        "received none but current is the value '1000' of type 'signedint'",
    ):
        conn.channel().queue_declare(q)
    # Same value is fine; unknown x-args are ignored in the comparison.
    conn.channel().queue_declare(q, arguments={"x-message-ttl": 1000, "x-whatever": "ignored"})
    assert_connection_usable(conn)


def test_redeclare_queue_other_inequivalences(conn, names):
    q = names.queue()
    conn.channel().queue_declare(q)
    pre = f"PRECONDITION_FAILED - inequivalent arg '%s' for queue '{q}' in vhost '/': "
    with channel_error(406, pre % "auto_delete" + "received 'true' but current is 'false'"):
        conn.channel().queue_declare(q, auto_delete=True)
    with channel_error(
        406,
        pre % "x-dead-letter-exchange"
        + "received the value 'dlx' of type 'longstr' but current is none",
    ):
        conn.channel().queue_declare(q, arguments={"x-dead-letter-exchange": "dlx"})
    with channel_error(
        406,
        pre % "x-max-length" + "received the value '10' of type 'signedint' but current is none",
    ):
        conn.channel().queue_declare(q, arguments={"x-max-length": 10})
    with channel_error(
        406,
        pre % "x-queue-type" + "received the value 'quorum' of type 'longstr' but current is none",
    ):
        conn.channel().queue_declare(q, arguments={"x-queue-type": "quorum"})
    # An explicit x-queue-type=classic equals an absent one.
    conn.channel().queue_declare(q, arguments={"x-queue-type": "classic"})
    assert_connection_usable(conn)


def test_redeclare_exchange_other_inequivalences(conn, names):
    x = names.exchange()
    conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": "ae1"})
    pre = f"PRECONDITION_FAILED - inequivalent arg '%s' for exchange '{x}' in vhost '/': "
    with channel_error(406, pre % "alternate-exchange" + "received 'ae2' but current is 'ae1'"):
        conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": "ae2"})
    with channel_error(
        406,
        pre % "alternate-exchange"
        + "received none but current is the value 'ae1' of type 'longstr'",
    ):
        conn.channel().exchange_declare(x, "direct")
    with channel_error(406, pre % "auto_delete" + "received 'true' but current is 'false'"):
        conn.channel().exchange_declare(
            x, "direct", auto_delete=True, arguments={"alternate-exchange": "ae1"}
        )
    with channel_error(406, pre % "internal" + "received 'true' but current is 'false'"):
        conn.channel().exchange_declare(
            x, "direct", internal=True, arguments={"alternate-exchange": "ae1"}
        )
    # Other exchange args are not compared.
    conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": "ae1", "o": 1})
    assert_connection_usable(conn)


def test_redeclare_exchange_different_type(conn, names):
    x = names.exchange()
    conn.channel().exchange_declare(x, "direct")
    with channel_error(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': "
        "received 'fanout' but current is 'direct'",
    ):
        conn.channel().exchange_declare(x, "fanout")
    with channel_error(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '/': "
        "received 'true' but current is 'false'",
    ):
        conn.channel().exchange_declare(x, "direct", durable=True)
    assert_connection_usable(conn)


# -- 405 RESOURCE_LOCKED ----------------------------------------------------------------------
def _locked_text(q):
    return (
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'."
        " It could be originally declared on another connection or the exclusive property"
        " value does not match that of the original declaration."
    )


def test_exclusive_queue_from_another_connection(connect, names):
    owner = connect()
    # A short name: the whole reply text fits in the 255-byte shortstr.
    q = names.add_queue("ex." + names.base[-10:])
    owner.channel().queue_declare(q, exclusive=True)
    other = connect()
    text = _locked_text(q)
    assert len(text) <= 255
    with channel_error(405, text):
        other.channel().queue_declare(q, exclusive=True)
    with channel_error(405, text):
        other.channel().queue_declare(q)  # non-exclusive redeclare: same
    with channel_error(405, text):
        other.channel().queue_declare(q, passive=True)
    with channel_error(405, text):
        other.channel().basic_consume(q, lambda *a: None)
    with channel_error(405, text):
        other.channel().basic_get(q)
    with channel_error(405, text):
        other.channel().queue_purge(q)
    with channel_error(405, text):
        other.channel().queue_delete(q)
    with channel_error(405, text):
        other.channel().queue_bind(q, "amq.fanout")
    assert_connection_usable(other)
    assert_connection_usable(owner)


def test_long_reply_text_is_truncated_to_255(connect, names):
    """RabbitMQ cuts reply texts longer than a shortstr allows to 252 chars + '...'."""
    owner = connect()
    q = names.queue("a-rather-long-queue-name-so-that-the-text-overflows")
    owner.channel().queue_declare(q, exclusive=True)
    full = _locked_text(q)
    assert len(full) > 255
    with channel_error(405, amqp_reply_text(full)) as info:
        connect().channel().queue_declare(q, passive=True)
    assert len(info.value.reply_text) == 255
    assert info.value.reply_text.endswith("...")


# -- 403 ACCESS_REFUSED -----------------------------------------------------------------------
def test_amq_prefix_names_refused(conn, names):
    qn = "amq." + names.base
    with channel_error(403, f"ACCESS_REFUSED - queue name '{qn}' contains reserved prefix 'amq.*'"):
        conn.channel().queue_declare(qn)
    with channel_error(
        403, f"ACCESS_REFUSED - exchange name '{qn}' contains reserved prefix 'amq.*'"
    ):
        conn.channel().exchange_declare(qn, "direct")
    # Redeclaring an existing amq.* exchange (equivalently) is allowed.
    conn.channel().exchange_declare("amq.direct", "direct", durable=True)
    conn.channel().exchange_declare("amq.topic", passive=True)
    with channel_error(403, prefix="ACCESS_REFUSED - "):
        conn.channel().exchange_delete("amq.direct")
    assert_connection_usable(conn)


def test_default_exchange_operations_refused(conn, names):
    q = names.queue()
    conn.channel().queue_declare(q)
    text = "ACCESS_REFUSED - operation not permitted on the default exchange"
    with channel_error(403, text):
        conn.channel().exchange_declare("", "direct")
    with channel_error(403, text):
        conn.channel().exchange_delete("")
    with channel_error(403, text):
        conn.channel().queue_bind(q, "", "rk")
    with channel_error(403, text):
        conn.channel().queue_unbind(q, "", q)
    assert_connection_usable(conn)


def test_publish_to_internal_exchange_refused(conn, names):
    x = names.exchange()
    conn.channel().exchange_declare(x, "fanout", internal=True)
    ch = conn.channel()
    ch.basic_publish(x, "", b"x")
    with channel_error(
        403, f"ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '/'"
    ):
        ch.queue_declare("", exclusive=True)
    assert_connection_usable(conn)


def test_exclusive_consumer_conflicts(connect, names):
    c1 = connect()
    q = names.queue()
    a = c1.channel()
    a.queue_declare(q)
    a.basic_consume(q, lambda *args: None, exclusive=True)
    c2 = connect()
    text = f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"
    with channel_error(403, text):
        c2.channel().basic_consume(q, lambda *args: None)
    with channel_error(403, text):
        c1.channel().basic_consume(q, lambda *args: None, exclusive=True)
    # And the reverse: a plain consumer exists, an exclusive one is refused.
    q2 = names.queue("q2")
    a.queue_declare(q2)
    a.basic_consume(q2, lambda *args: None)
    with channel_error(403, f"ACCESS_REFUSED - queue '{q2}' in vhost '/' in exclusive use"):
        c2.channel().basic_consume(q2, lambda *args: None, exclusive=True)
    assert_connection_usable(c1)
    assert_connection_usable(c2)


# -- 406 PRECONDITION_FAILED: deletes, delivery tags, args ------------------------------------
def test_queue_delete_if_unused_and_if_empty(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None)
    with channel_error(406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"):
        conn.channel().queue_delete(q, if_unused=True)
    ch2 = conn.channel()
    ch2.confirm_delivery()
    q2 = names.queue("q2")
    ch2.queue_declare(q2)
    ch2.basic_publish("", q2, b"x")
    with channel_error(406, f"PRECONDITION_FAILED - queue '{q2}' in vhost '/' not empty"):
        conn.channel().queue_delete(q2, if_empty=True)
    assert_connection_usable(conn)


def test_exchange_delete_if_unused(conn, names):
    x = names.exchange()
    q = names.queue()
    ch = conn.channel()
    ch.exchange_declare(x, "fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    with channel_error(406, f"PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use"):
        conn.channel().exchange_delete(x, if_unused=True)
    ch = conn.channel()
    ch.queue_unbind(q, x)
    ch.exchange_delete(x, if_unused=True)
    assert_connection_usable(conn)


def test_unknown_delivery_tag(conn, names):
    ch = conn.channel()
    ch.basic_ack(99)
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag 99"):
        ch.queue_declare("", exclusive=True)
    assert_connection_usable(conn)


def test_double_ack(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x")
    method, _p, _b = ch.basic_get(q)
    assert method.delivery_tag == 1
    ch.basic_ack(1)
    ch.basic_ack(1)
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag 1"):
        ch.queue_declare("", exclusive=True)
    # The message was acked once: it is gone, not requeued by the channel's death.
    assert conn.channel().queue_declare(q, passive=True).method.message_count == 0
    assert_connection_usable(conn)


def test_ack_on_other_channel(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x")
    method, _p, _b = ch.basic_get(q)
    other = conn.channel()
    other.basic_reject(method.delivery_tag)
    with channel_error(406, f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"):
        other.queue_declare("", exclusive=True)
    ch.basic_ack(method.delivery_tag)  # still valid on its own channel
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    assert_connection_usable(conn)


def test_invalid_x_expires_zero(conn, names):
    q = names.base + ".bad"
    with channel_error(
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-expires' for queue '{q}' in vhost '/': "
        "{value_zero,0}",
    ):
        conn.channel().queue_declare(q, arguments={"x-expires": 0})
    assert_connection_usable(conn)


def test_invalid_negative_message_ttl(conn, names):
    q = names.base + ".bad"
    with channel_error(
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': "
        "{value_negative,-1}",
    ):
        conn.channel().queue_declare(q, arguments={"x-message-ttl": -1})
    assert_connection_usable(conn)


def test_invalid_max_priority(conn, names):
    q = names.base + ".bad"
    with channel_error(
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{q}' in vhost '/': "
        "{max_value_exceeded,256}",
    ):
        conn.channel().queue_declare(q, arguments={"x-max-priority": 256})
    assert_connection_usable(conn)


def test_invalid_x_match(conn, names):
    x = names.exchange()
    q = names.queue()
    ch = conn.channel()
    ch.exchange_declare(x, "headers")
    ch.queue_declare(q)
    with channel_error(
        406,
        'PRECONDITION_FAILED - Invalid x-match field value <<"some">>; expected all, any,'
        " all-with-x, or any-with-x",
    ):
        ch.queue_bind(q, x, arguments={"x-match": "some", "a": 1})
    with channel_error(
        406,
        "PRECONDITION_FAILED - Invalid x-match field type signedint (value 5); expected longstr",
    ):
        conn.channel().queue_bind(q, x, arguments={"x-match": 5, "a": 1})
    assert_connection_usable(conn)


def test_unknown_exchange_type(conn, names):
    x = names.base + ".bad"
    ch = conn.channel()
    if is_rabbitmq(conn) and server_version(conn) < (3, 13, 3):
        # RabbitMQ <= 3.13.2 (incl. the 3.10.8 oracle): a hard 503 closing the connection.
        with connection_error(503, "COMMAND_INVALID - unknown exchange type 'x-no-such-type'"):
            ch.exchange_declare(x, "x-no-such-type")
        assert not conn.is_open
    else:
        # RabbitMQ >= 3.13.3 and amqpd: a soft 406 (channel only).
        # Text from rabbit_exchange:check_type/1 (3.13.3+): same words, new code.
        with channel_error(406, "PRECONDITION_FAILED - unknown exchange type 'x-no-such-type'"):
            ch.exchange_declare(x, "x-no-such-type")
        assert_connection_usable(conn)


# -- hard errors: 530 / 540 ---------------------------------------------------------------------
def test_qos_prefetch_size_not_implemented(conn):
    ch = conn.channel()
    with connection_error(540, "NOT_IMPLEMENTED - prefetch_size!=0 (1)"):
        ch.basic_qos(prefetch_size=1, prefetch_count=10)
    assert not conn.is_open


def test_publish_immediate_not_implemented(conn, names):
    ch = conn.channel()
    send_raw(
        ch,
        pika.spec.Basic.Publish(exchange="", routing_key=names.base, immediate=True),
        (pika.BasicProperties(), b"now!"),
    )
    with connection_error(540, "NOT_IMPLEMENTED - immediate=true"):
        expect_connection_close(conn)


def test_recover_requeue_false_not_implemented(conn):
    ch = conn.channel()
    with connection_error(540, "NOT_IMPLEMENTED - requeue=false"):
        ch.basic_recover(requeue=False)


def test_channel_flow_inactive_not_implemented(conn):
    ch = conn.channel()
    assert ch.flow(True) is True  # active=true is accepted
    with connection_error(540, "NOT_IMPLEMENTED - active=false"):
        ch.flow(False)


def test_reused_consumer_tag_is_connection_error(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, consumer_tag="dup-tag")
    # pika refuses a duplicate tag client-side; send the basic.consume ourselves.
    send_raw(ch, pika.spec.Basic.Consume(queue=q, consumer_tag="dup-tag"))
    with connection_error(530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup-tag'"):
        expect_connection_close(conn)


def test_same_consumer_tag_on_other_channel_is_fine(conn, names):
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, consumer_tag="same-tag")
    conn.channel().basic_consume(q, lambda *a: None, consumer_tag="same-tag")
    assert ch.queue_declare(q, passive=True).method.consumer_count == 2


# -- connection refused at open ---------------------------------------------------------------
def _url_with(amqp_url, user=None, password=None, vhost=None):
    params = pika.URLParameters(amqp_url)
    creds = params.credentials
    user = user if user is not None else creds.username
    password = password if password is not None else creds.password
    return params, pika.PlainCredentials(user, password), vhost


def test_wrong_vhost_refused(amqp_url):
    params = pika.URLParameters(amqp_url)
    params.virtual_host = "no-such-vhost"
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(params)
    # pika keeps the broker's connection.close in the exception args.
    reason = info.value.args
    assert "530" in repr(reason)
    assert "NOT_ALLOWED - vhost no-such-vhost not found" in repr(reason)


def test_wrong_password_refused(amqp_url):
    params = pika.URLParameters(amqp_url)
    params.credentials = pika.PlainCredentials(params.credentials.username, "wrong-password")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(params)
    reason = repr(info.value.args)
    # pika advertises authentication_failure_close, so the broker sends 403 and a reason.
    assert "403" in reason
    assert (
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN."
        " For details see the broker logfile." in reason
    )


def test_unknown_user_refused(amqp_url):
    params = pika.URLParameters(amqp_url)
    params.credentials = pika.PlainCredentials("no-such-user", "x")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(params)
    assert "403" in repr(info.value.args)


# -- more 406s, texts as observed on RabbitMQ 3.10.8 ------------------------------------------
def test_more_invalid_args(conn, names):
    q = names.base + ".bad"
    prefix = f"PRECONDITION_FAILED - invalid arg '%s' for queue '{q}' in vhost '/': "
    cases = [
        ({"x-queue-type": "foo"}, "x-queue-type", "\"unsupported queue type 'foo'\""),
        ({"x-max-length": "abc"}, "x-max-length", '"expected integer, got longstr"'),
        ({"x-overflow": "bogus"}, "x-overflow", "invalid_overflow"),
    ]
    for args, arg, detail in cases:
        with channel_error(406, prefix % arg + detail):
            conn.channel().queue_declare(q, arguments=args)
    x = names.base + ".badx"
    with channel_error(
        406,
        f"PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in "
        f"exchange '{x}' in vhost '/'",
    ):
        conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": 5})
    assert_connection_usable(conn)


def test_invalid_publish_properties(conn, names):
    user = conn._impl.params.credentials.username
    cases = [
        (
            pika.BasicProperties(user_id="not-me"),
            "PRECONDITION_FAILED - user_id property set to 'not-me' but authenticated user was "
            f"'{user}'",
        ),
        (
            pika.BasicProperties(expiration="abc"),
            "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
        ),
        (
            pika.BasicProperties(expiration="-5"),
            "PRECONDITION_FAILED - invalid expiration '-5': {value_negative,-5}",
        ),
    ]
    for props, text in cases:
        ch = conn.channel()
        ch.basic_publish("", names.base, b"x", properties=props)
        with channel_error(406, text):
            ch.queue_declare("", exclusive=True)
    # user_id equal to the authenticated user is accepted.
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", names.base, b"x", properties=pika.BasicProperties(user_id=user))
    assert_connection_usable(conn)


def test_direct_reply_to_misuse(conn, names):
    # Publishing with reply_to=amq.rabbitmq.reply-to without consuming it first.
    ch = conn.channel()
    ch.basic_publish(
        "", names.base, b"x", properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to")
    )
    with channel_error(406, "PRECONDITION_FAILED - fast reply consumer does not exist"):
        ch.queue_declare("", exclusive=True)
    # Consuming the pseudo-queue in ack mode.
    with channel_error(406, "PRECONDITION_FAILED - reply consumer cannot acknowledge"):
        conn.channel().basic_consume("amq.rabbitmq.reply-to", lambda *a: None)
    assert_connection_usable(conn)


def test_system_exchange_rules(conn, names):
    # Any exchange.delete of an amq.* name is refused, even one that does not exist.
    for x in ("amq.direct", "amq." + names.base):
        with channel_error(
            403, f"ACCESS_REFUSED - deletion of system exchange '{x}' in vhost '/' not allowed"
        ):
            conn.channel().exchange_delete(x)
    # Redeclaring amq.direct with another type is an equivalence error, not a 403.
    with channel_error(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': "
        "received 'fanout' but current is 'direct'",
    ):
        conn.channel().exchange_declare("amq.direct", "fanout", durable=True)
    # A passive declare of a missing amq.* queue is a plain 404; an active one a 403.
    with channel_error(404, nf_queue("amq.gen-" + names.base[-8:])):
        conn.channel().queue_declare("amq.gen-" + names.base[-8:], passive=True)
    with channel_error(
        403, "ACCESS_REFUSED - queue name 'amq.gen-x' contains reserved prefix 'amq.*'"
    ):
        conn.channel().queue_declare("amq.gen-x")
    assert_connection_usable(conn)
