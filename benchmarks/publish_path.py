"""In-process benchmark of the sans-I/O hot path: publish → route → deliver, no sockets.

A producer Connection and a consumer Connection on one Broker, driven with the bytes a
client would send. The producer's input is pre-encoded and fed in 64 KiB chunks (what the
server's reader hands over per ``receive_some``); the consumer's output is drained after
every chunk, as the writer task would. Prints messages per second of CPU time for the whole
path, so that a change to the protocol, session or broker layers can be measured without
the noise of a loaded machine (compare.sh measures the real thing, with the trio server).

    python benchmarks/publish_path.py [--messages N] [--size BYTES] [--no-ack|--ack]
                                      [--fanout K] [--profile]

``--fanout K`` publishes to a fanout exchange bound to K queues, each with its own
consumer (compare.sh scenario 4 has K = 4); the rate counts publishes.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from amqpd.broker.broker import Broker
from amqpd.protocol import methods as M
from amqpd.protocol.constants import PROTOCOL_HEADER
from amqpd.protocol.fieldtable import encode_table
from amqpd.protocol.frames import encode_content, encode_method_frame
from amqpd.protocol.properties import BasicProperties
from amqpd.session.connection import Connection

CHUNK = 65536


def _open(broker: Broker) -> Connection:
    conn = Connection(broker, now=0.0, peer="127.0.0.1")
    conn.receive_data(PROTOCOL_HEADER, 0.0)
    response = b"\0guest\0guest"
    conn.receive_data(
        encode_method_frame(
            0,
            M.ConnectionStartOk(
                client_properties={"product": "bench", "capabilities": {}},
                mechanism="PLAIN",
                response=response,
                locale="en_US",
            ),
        ),
        0.0,
    )
    conn.receive_data(
        encode_method_frame(0, M.ConnectionTuneOk(channel_max=2047, frame_max=131072, heartbeat=0)),
        0.0,
    )
    conn.receive_data(encode_method_frame(0, M.ConnectionOpen(virtual_host="/")), 0.0)
    conn.receive_data(encode_method_frame(1, M.ChannelOpen()), 0.0)
    conn.data_to_send()
    return conn


def _send(conn: Connection, method: M.Method) -> None:
    """One method frame on channel 1, as a client would send it."""
    conn.receive_data(encode_method_frame(1, method), 0.0)


def persistent_producer(
    broker: Broker, queue: str, size: int
) -> tuple[Connection, bytes, bytes, bytes]:
    """A producer with durable ``queue`` declared, and what it publishes there: the
    basic.publish frame, persistent properties and a body of ``size - 8`` bytes (the
    memory benchmarks prefix each body with its 8-digit number)."""
    producer = _open(broker)
    _send(producer, M.QueueDeclare(queue=queue, durable=True))
    producer.data_to_send()
    publish = encode_method_frame(
        1, M.BasicPublish(exchange="", routing_key=queue, mandatory=False, immediate=False)
    )
    return producer, publish, BasicProperties(delivery_mode=2).encode(), b"x" * (size - 8)


def run(messages: int, size: int, no_ack: bool, profile: bool, fanout: int = 0) -> None:
    broker = Broker()
    producer = _open(broker)
    names = [f"bench-{i}" for i in range(fanout)] if fanout else ["bench"]
    consumers = [_open(broker) for _ in names]
    exchange = "bench-fanout" if fanout else ""
    if fanout:
        _send(producer, M.ExchangeDeclare(exchange=exchange, type="fanout"))
    for name, consumer in zip(names, consumers, strict=True):
        _send(producer, M.QueueDeclare(queue=name))
        if fanout:
            _send(producer, M.QueueBind(queue=name, exchange=exchange, routing_key=""))
        _send(consumer, M.BasicConsume(queue=name, consumer_tag="c", no_ack=no_ack))
        consumer.data_to_send()
    producer.data_to_send()
    queue = names[0]
    assert encode_table({}) == b"\0\0\0\0"

    body = b"x" * size
    one = encode_method_frame(
        1,
        M.BasicPublish(
            exchange=exchange,
            routing_key="" if fanout else queue,
            mandatory=False,
            immediate=False,
        ),
    ) + encode_content(1, b"\x00\x00", body, 131072)
    stream = one * messages
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    queues = broker.vhosts["/"].queues
    all_stats = [queues[name].statistics for name in names]

    def drive() -> None:
        for chunk in chunks:
            producer.receive_data(chunk, 0.0)
            for consumer, queue_stats in zip(consumers, all_stats, strict=True):
                out = consumer.data_to_send()
                if out and not no_ack:
                    # One multiple-ack per drained batch, as a fast consumer does.
                    tag = queue_stats().delivered
                    consumer.receive_data(
                        encode_method_frame(1, M.BasicAck(delivery_tag=tag, multiple=True)),
                        0.0,
                    )
                    consumer.data_to_send()
        producer.data_to_send()

    start = time.process_time()
    if profile:
        prof = cProfile.Profile()
        prof.runcall(drive)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        drive()
    elapsed = time.process_time() - start
    for queue_stats in all_stats:
        delivered = queue_stats().delivered
        assert delivered == messages, (delivered, messages)
    shape = f"fanout to {fanout}, " if fanout else ""
    print(
        f"publish_path: {messages} msgs of {size} B, {shape}{'no-ack' if no_ack else 'ack'}: "
        f"{elapsed:.3f} s CPU, {messages / elapsed:,.0f} msg/s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--size", type=int, default=16)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-ack", dest="no_ack", action="store_true", default=True)
    g.add_argument("--ack", dest="no_ack", action="store_false")
    p.add_argument("--fanout", type=int, default=0, metavar="K")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    run(a.messages, a.size, a.no_ack, a.profile, a.fanout)


if __name__ == "__main__":
    main()
