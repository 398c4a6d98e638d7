"""Connection-level behaviour seen by pika: server properties, tune negotiation, heartbeats,
small frames, channel numbers, update-secret, server-generated consumer tags."""

from __future__ import annotations

import os

import pika
import pika.exceptions
from helpers import assert_connection_usable, consume_n, product, queue_depth, wait_for

RABBITMQ_CAPABILITIES = (
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
)


def test_server_properties(conn):
    props = conn._impl.server_properties
    for key in ("product", "version", "platform", "copyright", "information", "capabilities"):
        assert key in props, key
    assert product(conn) in ("RabbitMQ", "amqpd")
    caps = props["capabilities"]
    for cap in RABBITMQ_CAPABILITIES:
        assert caps.get(cap) is True, cap
    # pika reads these capabilities to decide what it may use.
    assert conn.publisher_confirms_supported
    assert conn.basic_nack_supported
    assert conn.consumer_cancel_notify_supported
    assert conn.exchange_exchange_bindings_supported


def test_tune_defaults(conn):
    # pika offers frame_max 131072 and channel_max 65535 and takes the server's heartbeat:
    # RabbitMQ's defaults are frame_max 131072, channel_max 2047, heartbeat 60 s.
    params = conn._impl.params
    assert (params.frame_max, params.channel_max, params.heartbeat) == (131072, 2047, 60)


def test_client_lowers_tune_values(connect, names):
    conn = connect(frame_max=4096, channel_max=3, heartbeat=0)
    params = conn._impl.params
    assert (params.frame_max, params.channel_max, params.heartbeat) == (4096, 3, 0)
    q = names.queue()
    ch = conn.channel()
    ch.queue_declare(q)
    body = os.urandom(100_000)  # 25 body frames of at most 4088 bytes
    headers = {"k": "v" * 1000}
    ch.confirm_delivery()
    ch.basic_publish("", q, body, properties=pika.BasicProperties(headers=headers))
    [(_m, props, got)] = consume_n(conn, ch, q, 1)
    assert got == body and props.headers == headers
    second, _third = conn.channel(), conn.channel()
    try:
        conn.channel()  # a 4th channel: pika itself refuses (channel_max=3)
    except pika.exceptions.NoFreeChannels:
        pass
    else:
        raise AssertionError("pika opened more channels than channel_max")
    second.close()  # frees number 2 for reuse
    assert_connection_usable(conn)


def test_heartbeats_flow_both_ways(connect):
    conn = connect(heartbeat=1)
    assert conn._impl.params.heartbeat == 1
    checker = conn._impl._heartbeat_checker
    # Idle: the broker must send heartbeats (every 0.5 s for a 1 s timeout) and must not
    # drop us for missing ours (pika sends them).
    wait_for(
        conn,
        lambda: checker._heartbeat_frames_received >= 3,
        timeout=6,
        what="3 heartbeat frames from the broker",
    )
    assert checker._heartbeat_frames_sent >= 1
    assert_connection_usable(conn)


def test_channel_numbers_reused(conn):
    first = conn.channel()
    number = first.channel_number
    first.close()
    again = conn.channel(channel_number=number)
    again.queue_declare("", exclusive=True)
    assert again.channel_number == number


def test_many_channels(conn, names):
    q = names.queue()
    chans = [conn.channel() for _ in range(100)]
    chans[0].queue_declare(q)
    for i, c in enumerate(chans):
        c.basic_publish("", q, str(i).encode())
    chans[-1].confirm_delivery()
    chans[-1].basic_publish("", q, b"last")
    # Each channel's publish is routed independently: wait until all 101 are in.
    wait_for(conn, lambda: queue_depth(conn, q)[0] == 101, what="101 messages")
    for c in chans:
        c.close()


def test_update_secret(conn):
    conn.update_secret(conn._impl.params.credentials.password, "rotation")
    assert_connection_usable(conn)


def test_server_generated_consumer_tag(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    replies = []
    # pika always picks a tag itself; ask the broker for one with an empty tag.
    ch._impl._rpc(
        pika.spec.Basic.Consume(queue=q, consumer_tag=""),
        replies.append,
        [pika.spec.Basic.ConsumeOk],
    )
    wait_for(conn, lambda: replies, what="basic.consume-ok")
    tag = replies[0].method.consumer_tag
    assert tag.startswith("amq.ctag-")
    assert len(tag) == len("amq.ctag-") + 22  # 16 random bytes, base64url without padding


def test_blocking_connection_close_with_open_channels(connect, names):
    c1 = connect()
    q = names.queue()
    ch = c1.channel()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None)
    c1.channel().tx_select()
    c1.close()
    assert c1.is_closed
    c2 = connect()
    assert c2.channel().queue_declare(q, passive=True).method.consumer_count == 0
