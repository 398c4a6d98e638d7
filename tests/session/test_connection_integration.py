"""Connection with the real Broker and Channel: the contract between them, end to end.

Frames are built and read with pika's codec, as in the other connection tests.
"""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec
import pytest

from amqpd.broker.broker import Broker
from amqpd.session.channel import Channel
from amqpd.session.connection import Connection

from .conftest import HEADER_091, close_of, content, decode_all, encode

S = pika.spec


class Peer:
    def __init__(self, broker: Broker, peer: str | None = "127.0.0.1") -> None:
        self.conn = Connection(broker, now=0.0, peer=peer)
        self.wakeups = 0
        self.conn.on_output = self._wake

    def _wake(self) -> None:
        self.wakeups += 1

    def feed(self, data: bytes) -> list[Any]:
        self.conn.receive_data(data, 1.0)
        return decode_all(self.conn.data_to_send())

    def call(self, channel: int, method: Any) -> list[Any]:
        return self.feed(encode(channel, method))

    def open(self) -> Peer:
        data = (
            HEADER_091
            + encode(0, S.Connection.StartOk({}, "PLAIN", b"\0guest\0guest"))
            + encode(0, S.Connection.TuneOk(2047, 131072, 0))
            + encode(0, S.Connection.Open("/"))
            + encode(1, S.Channel.Open())
        )
        frames = self.feed(data)
        assert [type(f.method) for f in frames][-2:] == [S.Connection.OpenOk, S.Channel.OpenOk]
        return self


@pytest.fixture
def broker() -> Broker:
    return Broker()


def test_real_channel_is_created(broker: Broker) -> None:
    p = Peer(broker).open()
    assert isinstance(p.conn.channels[1], Channel)
    assert p.conn.user.name == "guest"
    assert p.conn.vhost is broker.vhosts["/"]


def test_publish_from_one_connection_wakes_the_consumer_of_another(broker: Broker) -> None:
    consumer = Peer(broker).open()
    consumer.call(1, S.Queue.Declare(queue="q"))
    frames = consumer.call(1, S.Basic.Consume(queue="q", consumer_tag="c1", no_ack=True))
    assert [type(f.method) for f in frames] == [S.Basic.ConsumeOk]
    assert consumer.wakeups == 0  # replies inside its own receive_data need no wake-up

    publisher = Peer(broker).open()
    publisher.feed(encode(1, S.Basic.Publish(exchange="", routing_key="q")) + content(1, b"hi"))
    assert consumer.wakeups == 1  # the delivery was queued from the publisher's call
    frames = decode_all(consumer.conn.data_to_send())
    assert isinstance(frames[0].method, S.Basic.Deliver)
    assert isinstance(frames[1], pika.frame.Header)
    assert frames[2].fragment == b"hi"


def test_exclusive_queue_goes_with_its_connection(broker: Broker) -> None:
    owner = Peer(broker).open()
    owner.call(1, S.Queue.Declare(queue="mine", exclusive=True))
    other = Peer(broker).open()
    frames = other.call(1, S.Queue.Declare(queue="mine", passive=True))
    assert close_of(frames)[0] == 405
    owner.conn.connection_lost()
    other.call(2, S.Channel.Open())
    frames = other.call(2, S.Queue.Declare(queue="mine", passive=True))
    assert close_of(frames)[:2] == (404, "NOT_FOUND - no queue 'mine' in vhost '/'")


def test_unacked_messages_return_when_the_connection_closes(broker: Broker) -> None:
    p = Peer(broker).open()
    p.call(1, S.Queue.Declare(queue="q"))
    p.feed(encode(1, S.Basic.Publish(exchange="", routing_key="q")) + content(1, b"m"))
    frames = p.call(1, S.Basic.Get(queue="q"))
    assert isinstance(frames[0].method, S.Basic.GetOk)
    assert broker.vhosts["/"].get_queue("q", None).message_count == 0
    p.call(0, S.Connection.Close(200, "bye", 0, 0))
    assert p.conn.closed
    assert broker.vhosts["/"].get_queue("q", None).message_count == 1


def test_guest_from_a_remote_address_is_refused(broker: Broker) -> None:
    p = Peer(broker, peer="203.0.113.9")
    p.feed(HEADER_091)
    frames = p.call(
        0,
        S.Connection.StartOk(
            {"capabilities": {"authentication_failure_close": True}}, "PLAIN", b"\0guest\0guest"
        ),
    )
    assert close_of(frames)[0] == 403


def test_a_routing_key_that_is_not_utf8_is_delivered_as_published(broker: Broker) -> None:
    # RabbitMQ keeps basic.publish's shortstrs as binaries: octets that are not UTF-8 come
    # back in basic.deliver and basic.get-ok as they were sent.
    consumer = Peer(broker).open()
    consumer.call(1, S.Exchange.Declare(exchange="fx", type="fanout"))
    consumer.call(1, S.Queue.Declare(queue="q"))
    consumer.call(1, S.Queue.Declare(queue="g"))
    consumer.call(1, S.Queue.Bind(queue="q", exchange="fx", routing_key=""))
    consumer.call(1, S.Queue.Bind(queue="g", exchange="fx", routing_key=""))
    consumer.call(1, S.Basic.Consume(queue="q", consumer_tag="c1", no_ack=True))
    payload = b"\x00\x3c\x00\x28\x00\x00\x02fx\x02\xff\xfe\x00"  # routing key 0xff 0xfe
    publish = b"\x01\x00\x01" + len(payload).to_bytes(4, "big") + payload + b"\xce"
    publisher = Peer(broker).open()
    assert publisher.feed(publish + content(1, b"hi")) == []
    deliver = consumer.conn.data_to_send()
    assert b"\x02fx\x02\xff\xfe" in deliver and deliver.endswith(b"hi\xce")
    get_ok = consumer.conn
    get_ok.receive_data(encode(1, S.Basic.Get(queue="g", no_ack=True)), 1.0)
    assert b"\x02fx\x02\xff\xfe" in get_ok.data_to_send()
