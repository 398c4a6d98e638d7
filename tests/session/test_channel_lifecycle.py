"""Message lifecycle through the Channel: TTL, dead-lettering, x-expires, consumer
priorities and single active consumer, with time passed as ``conn.now`` (no sleeps)."""

from __future__ import annotations

import pytest

from amqpd.broker.broker import Broker
from amqpd.protocol import methods as M
from amqpd.protocol.properties import BasicProperties
from amqpd.session.channel import Channel

from .fakes_channel import FakeConnection
from .test_channel import consume, declare, deliveries, publish


@pytest.fixture
def broker() -> Broker:
    return Broker(wall_clock=lambda: 1_700_000_000.0)


@pytest.fixture
def conn(broker: Broker) -> FakeConnection:
    return FakeConnection(broker)


@pytest.fixture
def ch(conn: FakeConnection) -> Channel:
    return conn.open(1)


def test_invalid_consumer_priority_is_406(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch, "q")
    err = conn.fails(ch, M.BasicConsume(queue="q", arguments={"x-priority": "high"}))
    assert err.reply_text == (
        "PRECONDITION_FAILED - invalid arg 'x-priority' for queue 'q' in vhost '/': "
        '"expected integer, got longstr"'
    )


def test_per_message_ttl_uses_the_command_time(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch, "q")
    conn.now = 100.0
    publish(conn, ch, "q", b"soon", props=BasicProperties(expiration="500"))
    conn.now = 100.4
    conn.call(ch, M.BasicGet(queue="q", no_ack=True))
    [got] = conn.take()
    assert isinstance(got.method, M.BasicGetOk) and got.body == b"soon"
    publish(conn, ch, "q", b"late", props=BasicProperties(expiration="500"))
    conn.now = 101.0
    assert conn.methods() == []
    conn.call(ch, M.BasicGet(queue="q", no_ack=True))
    assert [type(m) for m in conn.methods()] == [M.BasicGetEmpty]


def test_nack_dead_letters_to_a_consumer_on_another_connection(
    broker: Broker, conn: FakeConnection, ch: Channel
) -> None:
    other = FakeConnection(broker)
    och = other.open(1)
    declare(other, och, "dlq")
    consume(other, och, "dlq", "dl", no_ack=True)
    conn.call(ch, M.QueueBind(queue="dlq", exchange="amq.fanout"))
    conn.take()
    declare(conn, ch, "src2", arguments={"x-dead-letter-exchange": "amq.fanout"})
    publish(conn, ch, "src2", b"bad")
    consume(conn, ch, "src2", "c")
    [(tag, _redelivered, _body)] = deliveries(conn)
    conn.call(ch, M.BasicNack(delivery_tag=tag, requeue=False))
    [cmd] = other.take()
    assert isinstance(cmd.method, M.BasicDeliver)
    assert (cmd.method.exchange, cmd.method.routing_key, cmd.body) == ("amq.fanout", "src2", b"bad")
    props = BasicProperties.decode(cmd.properties_raw or b"")
    assert props.headers is not None
    [death] = props.headers["x-death"]  # type: ignore[misc]
    assert (death["reason"], death["queue"], death["time"]) == ("rejected", "src2", 1_700_000_000)


def test_single_active_consumer_hand_over_on_channel_close(
    broker: Broker, conn: FakeConnection, ch: Channel
) -> None:
    declare(conn, ch, "q", arguments={"x-single-active-consumer": True})
    conn.call(ch, M.BasicQos(prefetch_count=1))
    conn.take()
    consume(conn, ch, "q", "first")
    other = FakeConnection(broker)
    och = other.open(1)
    consume(other, och, "q", "second")  # consume-ok, then nothing while "first" is active
    for i in range(2):
        publish(conn, ch, "q", b"m%d" % i)
    assert [d[2] for d in deliveries(conn)] == [b"m0"]
    assert other.take() == []
    ch.on_closed()  # "first"'s channel goes: its unacked m0 is requeued to "second"
    got = deliveries(other)
    assert [(redelivered, body) for _tag, redelivered, body in got] == [
        (True, b"m0"),
        (False, b"m1"),
    ]


def test_consumer_priority_through_the_channel(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch, "q")
    conn.call(ch, M.BasicQos(prefetch_count=2))
    conn.take()
    consume(conn, ch, "q", "low", arguments={"x-priority": 1})
    consume(conn, ch, "q", "high", arguments={"x-priority": 10})
    for i in range(3):
        publish(conn, ch, "q", b"m%d" % i)
    tags = [c.method.consumer_tag for c in conn.take()]
    assert tags == ["high", "high", "low"]


def test_x_expires_lease_renewed_by_passive_declare(
    broker: Broker, conn: FakeConnection, ch: Channel
) -> None:
    conn.now = 10.0
    declare(conn, ch, "q", arguments={"x-expires": 1000})
    conn.now = 10.8
    declare(conn, ch, "q", passive=True)
    broker.tick(11.0)
    assert "q" in broker.vhosts["/"].queues
    assert broker.next_deadline() == pytest.approx(11.8)
    broker.tick(11.8)
    assert "q" not in broker.vhosts["/"].queues


def test_x_expires_after_the_last_consumer_cancels(
    broker: Broker, conn: FakeConnection, ch: Channel
) -> None:
    declare(conn, ch, "q", arguments={"x-expires": 1000})
    consume(conn, ch, "q", "c")
    broker.tick(50.0)
    assert "q" in broker.vhosts["/"].queues
    conn.now = 60.0
    conn.call(ch, M.BasicCancel(consumer_tag="c"))
    conn.take()
    broker.tick(61.0)
    assert "q" not in broker.vhosts["/"].queues
    # The channel that consumed copes: the queue is simply gone.
    err = conn.fails(ch, M.BasicGet(queue="q"))
    assert err.reply_code == 404


def got_one_with_a_ttl(conn: FakeConnection, ch: Channel) -> None:
    """Queue "q" (x-message-ttl 1 s) with one message, got at 0.0 and not acked."""
    declare(conn, ch, "q", arguments={"x-message-ttl": 1000})
    publish(conn, ch, "q", b"m")
    conn.call(ch, M.BasicGet(queue="q"))
    conn.take()


def test_requeue_on_close_keeps_the_expiry(
    broker: Broker, conn: FakeConnection, ch: Channel
) -> None:
    got_one_with_a_ttl(conn, ch)
    conn.now = 5.0
    conn.call(ch, M.BasicQos(prefetch_count=0))  # any command: the channel's time is 5.0
    conn.take()
    ch.on_closed()  # requeued at 5.0, long expired: dropped at the head
    assert broker.vhosts["/"].queues["q"].message_count == 0


def test_close_of_an_idle_channel_judges_expiry_by_the_connection_time(
    broker: Broker, conn: FakeConnection, ch: Channel
) -> None:
    got_one_with_a_ttl(conn, ch)
    other = FakeConnection(broker)
    och = other.open(1)
    consume(other, och, "q", "waiting", no_ack=True)
    ch.on_closed(now=60.0)  # the channel's last command was at 0.0; the connection's now 60
    assert other.take() == []  # expired long ago: never delivered
    assert broker.vhosts["/"].queues["q"].message_count == 0


def test_connection_passes_its_latest_time_to_closing_channels() -> None:
    from .conftest import HEARTBEAT, Client

    client = Client().handshake()
    channel = client.open_channel(1)
    client.feed(HEARTBEAT, at=42.0)  # any input moves the connection's clock
    client.conn.connection_lost()
    assert channel.closed == 1 and channel.closed_at == 42.0
