"""What one ready entry costs in RAM besides its body: calibrates paging.ENTRY_OVERHEAD.

A producer ``Connection`` (no sockets, as publish_path.py drives it) publishes N persistent
messages of SIZE bytes to one durable queue of a broker with no data directory, so every
entry stays in memory and nothing else (no durable log, no catalog) grows with the
backlog. It prints the RSS growth per message, and that minus the body size: the entry's
own overhead (the QueuedMessage, its Message, properties bytes, strings, the deque slot,
and the body's bytes-object header and allocator rounding).

    python benchmarks/entry_overhead.py [--messages N] [--size BYTES] [--routing-key KEY]
"""

from __future__ import annotations

import argparse

from publish_path import persistent_producer  # type: ignore[import-not-found]

from amqpd.broker.broker import Broker
from amqpd.protocol.frames import encode_content
from amqpd.server.resources import resident_memory

PER_CHUNK = 64


def run(messages: int, size: int, queue: str) -> None:
    broker = Broker()
    producer, publish, props, body = persistent_producer(broker, queue, size)
    before = resident_memory()
    sent = 0
    while sent < messages:
        n = min(PER_CHUNK, messages - sent)
        producer.receive_data(
            b"".join(
                publish + encode_content(1, props, b"%08d" % (sent + i) + body, 131072)
                for i in range(n)
            ),
            0.0,
        )
        sent += n
    producer.data_to_send()
    after = resident_memory()
    assert broker.vhosts["/"].queues[queue].message_count == messages
    per = (after - before) / messages
    print(
        f"entry_overhead: {messages:,} persistent msgs of {size} B in memory, routing key "
        f"{queue!r}\n  RSS +{(after - before) / 2**20:.0f} MiB: {per:.0f} B/msg, "
        f"{per - size:.0f} B/msg besides the body"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--routing-key", default="backlog")
    a = p.parse_args()
    run(a.messages, a.size, a.routing_key)


if __name__ == "__main__":
    main()
