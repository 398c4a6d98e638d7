"""In-process scaling benchmark: does the cost per message stay flat as the broker grows?

Each dimension is grown 10x twice (queue length, unacked deliveries, queues, bindings,
consumers, channels and connections) and the CPU cost per message (``time.process_time``,
µs) is printed at each size, with the ratio largest/smallest. A flat cost is a ratio near
1; quadratic behaviour shows as a ratio near 10 or 100.

As publish_path.py, everything runs in process on session ``Connection`` objects fed the
bytes a client sends (pre-encoded, in 64 KiB chunks), with no sockets, so the figures
measure the broker and not the network. Each case runs ``--repeat`` times on a fresh broker
and the median is printed (the machine is shared: read the ratios, not the absolutes).

    python benchmarks/scaling.py [--scale 1.0] [--repeat 3] [--only queue_length,...]

``--scale`` multiplies every size (0.01 for a quick smoke). Dimensions: queue_length,
unacked, queues, bindings, consumers, channels.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from amqpd.broker.broker import Broker
from amqpd.log import configure_logging
from amqpd.protocol import methods as M
from amqpd.protocol.constants import PROTOCOL_HEADER
from amqpd.protocol.frames import encode_content, encode_method_frame
from amqpd.protocol.properties import BasicProperties
from amqpd.session.connection import Connection

CHUNK = 65536
BODY = b"x" * 16
NO_PROPS = b"\x00\x00"


# -- a client driving one in-process Connection ---------------------------------------------
class Client:
    def __init__(self, broker: Broker, channels: int = 1) -> None:
        conn = self.conn = Connection(broker, now=0.0, peer="127.0.0.1")
        conn.receive_data(PROTOCOL_HEADER, 0.0)
        self.call(
            0,
            M.ConnectionStartOk(
                client_properties={"product": "bench", "capabilities": {}},
                mechanism="PLAIN",
                response=b"\0guest\0guest",
                locale="en_US",
            ),
        )
        self.call(0, M.ConnectionTuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
        self.call(0, M.ConnectionOpen(virtual_host="/"))
        for n in range(1, channels + 1):
            self.call(n, M.ChannelOpen())
        conn.data_to_send()

    def call(self, channel: int, method: M.Method) -> bytes:
        self.conn.receive_data(encode_method_frame(channel, method), 0.0)
        return self.conn.data_to_send()

    def feed(self, data: bytes) -> bytes:
        self.conn.receive_data(data, 0.0)
        return self.conn.data_to_send()

    def declare(self, queue: str, channel: int = 1, **arguments: Any) -> None:
        self.call(
            channel,
            M.QueueDeclare(
                queue=queue,
                passive=False,
                durable=False,
                exclusive=False,
                auto_delete=False,
                no_wait=False,
                arguments=arguments,
            ),
        )

    def exchange(self, name: str, type_: str) -> None:
        self.call(
            1,
            M.ExchangeDeclare(
                exchange=name,
                type=type_,
                passive=False,
                durable=False,
                auto_delete=False,
                internal=False,
                no_wait=False,
                arguments={},
            ),
        )

    def bind(
        self, queue: str, exchange: str, key: str, arguments: dict[str, Any] | None = None
    ) -> None:
        self.call(
            1,
            M.QueueBind(
                queue=queue,
                exchange=exchange,
                routing_key=key,
                no_wait=False,
                arguments=arguments or {},
            ),
        )

    def consume(
        self,
        queue: str,
        *,
        no_ack: bool,
        channel: int = 1,
        tag: str = "",
        prefetch: int = 0,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        if prefetch:
            self.call(channel, M.BasicQos(prefetch_size=0, prefetch_count=prefetch, global_=False))
        self.call(
            channel,
            M.BasicConsume(
                queue=queue,
                consumer_tag=tag,
                no_local=False,
                no_ack=no_ack,
                exclusive=False,
                no_wait=False,
                arguments=arguments or {},
            ),
        )


def publish_frames(
    n: int, exchange: str = "", key: str = "q", props: bytes = NO_PROPS, channel: int = 1
) -> list[bytes]:
    one = encode_method_frame(
        channel,
        M.BasicPublish(exchange=exchange, routing_key=key, mandatory=False, immediate=False),
    ) + encode_content(channel, props, BODY, 131072)
    return chunked(one * n)


def chunked(stream: bytes) -> list[bytes]:
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def ack_frames(tags: Iterable[int], multiple: bool, channel: int = 1) -> list[bytes]:
    return chunked(
        b"".join(
            encode_method_frame(channel, M.BasicAck(delivery_tag=t, multiple=multiple))
            for t in tags
        )
    )


def cpu(fn: Callable[[], None]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def queue_of(broker: Broker, name: str) -> Any:
    return broker.vhosts["/"].queues[name]


def feeding(
    client: Client,
    chunks: list[bytes],
    drain: Client | None = None,
    after: Callable[[], None] | None = None,
) -> Callable[[], None]:
    """Feed ``chunks`` to ``client``; after each, drain ``drain``'s output and run ``after``."""

    def run() -> None:
        for chunk in chunks:
            client.feed(chunk)
            if drain is not None:
                drain.conn.data_to_send()
            if after is not None:
                after()

    return run


def keeping_up(c: Client, q: Any) -> Callable[[], None]:
    """A consumer acking (multiple) the newest delivery until nothing more arrives."""
    acked = 0

    def run() -> None:
        nonlocal acked
        while True:
            delivered = q.statistics().delivered
            if delivered == acked:
                return
            acked = delivered
            c.feed(encode_method_frame(1, M.BasicAck(delivery_tag=delivered, multiple=True)))

    return run


def acking_each(c: Client, q: Any, total: int) -> Callable[[], None]:
    """Workers acking every delivery one by one until ``total`` are acked."""

    def run() -> None:
        acked = 0
        while acked < total:
            delivered = q.statistics().delivered
            c.feed(
                b"".join(
                    encode_method_frame(1, M.BasicAck(delivery_tag=t, multiple=False))
                    for t in range(acked + 1, delivered + 1)
                )
            )
            acked = delivered

    return run


# -- the cases: each returns {label: µs per message} for one run at one size -----------------
Result = dict[str, float]


def case_queue_length(n: int) -> Result:
    out: Result = {}
    # Live consumer, autoack: the reference rate.
    b = Broker()
    p, c = Client(b), Client(b)
    p.declare("q")
    c.consume("q", no_ack=True)
    chunks = publish_frames(n)

    def live() -> None:
        for chunk in chunks:
            p.feed(chunk)
            c.conn.data_to_send()

    out["live consumer, autoack"] = cpu(live)
    assert queue_of(b, "q").statistics().delivered == n
    # No consumer: publish n, then drain them with an autoack consumer.
    b = Broker()
    p, c = Client(b), Client(b)
    p.declare("q")

    def publish() -> None:
        for chunk in chunks:
            p.feed(chunk)

    t_pub = cpu(publish)
    t_drain = cpu(lambda: c.consume("q", no_ack=True))
    assert queue_of(b, "q").statistics().delivered == n
    out["backlog: publish"] = t_pub
    out["backlog: drain, autoack"] = t_drain
    out["backlog: publish + drain autoack"] = t_pub + t_drain
    # Manual acks, prefetch 1000, one multiple ack per batch received: live vs backlog.
    b = Broker()
    p, c = Client(b), Client(b)
    p.declare("q")
    q = queue_of(b, "q")
    c.consume("q", no_ack=False, prefetch=1000)
    out["live consumer, manual ack"] = cpu(feeding(p, chunks, c, keeping_up(c, q)))
    assert q.statistics().acked == n
    b = Broker()
    p, c = Client(b), Client(b)
    p.declare("q")
    q = queue_of(b, "q")
    feeding(p, chunks)()
    drain = keeping_up(c, q)

    def consume_and_drain() -> None:
        c.consume("q", no_ack=False, prefetch=1000)
        drain()

    out["backlog: drain, manual ack"] = cpu(consume_and_drain)
    assert q.statistics().acked == n
    return out


def case_unacked(n: int) -> Result:
    out: Result = {}
    for label, tags, multiple in (
        ("ack one by one", "each", False),
        ("ack one by one, multiple=true", "each", True),
        ("one multiple ack for all", "last", True),
        ("ack newest first", "reverse", False),
    ):
        b = Broker()
        p, c = Client(b), Client(b)
        p.declare("q")
        c.consume("q", no_ack=False)  # prefetch 0: unlimited
        t_pub = cpu(feeding(p, publish_frames(n), c))
        if label == "ack one by one":
            out["publish with n unacked (prefetch 0)"] = t_pub
        q = queue_of(b, "q")
        assert q.unacked_count == n
        if tags == "each":
            order: Iterable[int] = range(1, n + 1)
        elif tags == "reverse":
            order = range(n, 0, -1)
        else:
            order = [n]
        out[label] = cpu(feeding(c, ack_frames(order, multiple)))
        assert q.unacked_count == 0 and q.statistics().acked == n
    return out


def case_queues(n: int, messages: int) -> Result:
    out: Result = {}
    b = Broker()
    p, c = Client(b), Client(b)
    declares = chunked(
        b"".join(
            encode_method_frame(
                1,
                M.QueueDeclare(
                    queue=f"queue.{i}",
                    passive=False,
                    durable=False,
                    exclusive=False,
                    auto_delete=False,
                    no_wait=False,
                    arguments={},
                ),
            )
            for i in range(n)
        )
    )

    def declare() -> None:
        for chunk in declares:
            p.feed(chunk)

    out["queue.declare (per queue)"] = cpu(declare) * messages / n
    assert len(b.vhosts["/"].queues) == n
    c.consume("queue.0", no_ack=True)
    chunks = publish_frames(messages, key="queue.0")

    def live() -> None:
        for chunk in chunks:
            p.feed(chunk)
            c.conn.data_to_send()

    out["publish to one of them, autoack"] = cpu(live)
    # A consumer on every queue, publishing round robin over all of them.
    for i in range(1, n):
        c.consume(f"queue.{i}", no_ack=True)
    rr = chunked(
        b"".join(
            encode_method_frame(
                1,
                M.BasicPublish(
                    exchange="", routing_key=f"queue.{i % n}", mandatory=False, immediate=False
                ),
            )
            + encode_content(1, NO_PROPS, BODY, 131072)
            for i in range(messages)
        )
    )

    def spread() -> None:
        for chunk in rr:
            p.feed(chunk)
            c.conn.data_to_send()

    out["publish round robin to all, each consumed"] = cpu(spread)
    deletes = chunked(
        b"".join(
            encode_method_frame(
                1, M.QueueDelete(queue=f"queue.{i}", if_unused=False, if_empty=False, no_wait=False)
            )
            for i in range(n)
        )
    )
    out["queue.delete (per queue)"] = cpu(feeding(p, deletes)) * messages / n
    assert not b.vhosts["/"].queues
    return out


def case_bindings(n: int, messages: int) -> Result:
    out: Result = {}

    def run(
        label: str,
        setup: Callable[[Client], None],
        exchange: str,
        key: str,
        props: bytes = NO_PROPS,
        consumers: Iterable[str] = ("target",),
        bind_cost: bool = True,
    ) -> None:
        b = Broker()
        p, c = Client(b), Client(b)
        p.declare("target")
        p.declare("sink")
        seconds = cpu(lambda: setup(p))
        if bind_cost:
            out[f"{label.split(',')[0]}: queue.bind (per binding)"] = seconds * messages / n
        names = list(consumers)
        for name in names:
            c.consume(name, no_ack=True)
        chunks = publish_frames(messages, exchange=exchange, key=key, props=props)
        out[label] = cpu(feeding(p, chunks, c))
        for name in names:
            assert queue_of(b, name).statistics().delivered == messages, label

    def direct(p: Client) -> None:
        p.exchange("dx", "direct")
        p.bind("target", "dx", "order.target")
        for i in range(n):
            p.bind("sink", "dx", f"order.{i}")

    run("direct, n other keys", direct, "dx", "order.target")

    def topic(p: Client) -> None:
        p.exchange("tx", "topic")
        p.bind("target", "tx", "eu.*.target")
        for i in range(n):
            # Realistic patterns: a region, a wildcard, a service; some catch-alls.
            if i % 10 == 0:
                p.bind("sink", "tx", f"audit{i}.#")
            else:
                p.bind("sink", "tx", f"{('eu', 'us', 'ap')[i % 3]}.*.svc{i}")

    run("topic, n patterns (a.*.c, x.#)", topic, "tx", "eu.shop.target")

    def headers(p: Client) -> None:
        p.exchange("hx", "headers")
        p.bind("target", "hx", "", {"x-match": "all", "type": "target"})
        for i in range(n):
            p.bind("sink", "hx", "", {"x-match": "all", "type": f"t{i}", "v": i})

    props = BasicProperties(headers={"type": "target"}).encode()
    run("headers, n bindings (x-match all)", headers, "hx", "", props)

    fan = ("f0", "f1", "f2", "f3")

    def fanout(p: Client) -> None:
        p.exchange("fx", "fanout")
        for name in fan:
            p.declare(name)
            p.bind(name, "fx", "")
        p.exchange("other", "direct")
        p.exchange("other2", "fanout")
        for i in range(n):
            p.bind("sink", "other", f"k{i}")
        for i in range(n // 10):
            p.call(
                1,
                M.ExchangeBind(
                    destination="other2",
                    source="other",
                    routing_key=f"e{i}",
                    no_wait=False,
                    arguments={},
                ),
            )

    run(
        "fanout to 4 queues, n bindings elsewhere",
        fanout,
        "fx",
        "",
        consumers=fan,
        bind_cost=False,
    )
    return out


def consumers_on_one_queue(
    n: int, *, priorities: bool, no_ack: bool, prefetch: int
) -> tuple[Client, Client, Any]:
    """A producer, and a client with n consumers on queue "q" (x-priority i % 10)."""
    b = Broker()
    p, c = Client(b), Client(b)
    p.declare("q")
    if prefetch:
        # basic.qos(global=false) applies to every consumer created after it.
        c.call(1, M.BasicQos(prefetch_size=0, prefetch_count=prefetch, global_=False))
    for i in range(n):
        args = {"x-priority": i % 10} if priorities else {}
        c.consume("q", no_ack=no_ack, tag=f"c{i}", arguments=args)
    return p, c, queue_of(b, "q")


def case_consumers(n: int, messages: int) -> Result:
    out: Result = {}
    chunks = publish_frames(messages)
    for prio in (False, True):
        name = "priorities 0-9" if prio else "round robin"
        p, c, q = consumers_on_one_queue(n, priorities=prio, no_ack=True, prefetch=0)
        out[f"{name}, autoack"] = cpu(feeding(p, chunks, c))
        assert q.statistics().delivered == messages
        if not prio:
            # basic.consume then basic.cancel of n more consumers (per consumer, oldest
            # first), beside the n already there.
            more = [f"more{i}" for i in range(n)]
            consumes = b"".join(
                encode_method_frame(
                    1,
                    M.BasicConsume(
                        queue="q",
                        consumer_tag=t,
                        no_local=False,
                        no_ack=True,
                        exclusive=False,
                        no_wait=False,
                        arguments={},
                    ),
                )
                for t in more
            )
            cancels = b"".join(
                encode_method_frame(1, M.BasicCancel(consumer_tag=t, no_wait=False)) for t in more
            )
            seconds = cpu(feeding(c, chunked(consumes) + chunked(cancels)))
            out["basic.consume + basic.cancel (per consumer)"] = seconds * messages / n
            assert q.consumer_count == n
        # Workers with prefetch 1: every one busy, then a backlog published, then drained
        # by acking one delivery at a time (each ack frees one worker for the next).
        p, c, q = consumers_on_one_queue(n, priorities=prio, no_ack=False, prefetch=1)
        feeding(p, publish_frames(n), c)()
        assert q.unacked_count == n
        out[f"{name}, prefetch 1, all busy: publish"] = cpu(feeding(p, chunks))
        total = n + messages
        out[f"{name}, prefetch 1: ack one by one, each frees a worker"] = cpu(
            acking_each(c, q, total)
        )
        assert q.statistics().acked == total and q.message_count == 0
    return out


def case_channels(n: int, messages: int) -> Result:
    out: Result = {}
    b = Broker()
    # n idle connections, each with one channel, and one connection with n channels.
    idle: list[Client] = []

    def connect() -> None:
        for _ in range(n):
            idle.append(Client(b))

    out["connection + channel open (per connection)"] = cpu(connect) * messages / n
    k = min(n, 2047)
    wide = Client(b, channels=0)
    opens = chunked(b"".join(encode_method_frame(i, M.ChannelOpen()) for i in range(1, k + 1)))
    out["channel.open (per channel, one connection)"] = cpu(feeding(wide, opens)) * messages / k
    assert len(wide.conn.channels) == k
    for i in range(min(n, 100)):
        # Some of the idle channels consume from queues of their own.
        idle[i].declare(f"idle.{i}")
        idle[i].consume(f"idle.{i}", no_ack=False)
    p, c = Client(b), Client(b)
    p.declare("q")
    c.consume("q", no_ack=True)
    out["one pair, n idle connections + n channels"] = cpu(feeding(p, publish_frames(messages), c))
    assert queue_of(b, "q").statistics().delivered == messages
    # The publisher and consumer on channel n of connections with n channels open.
    b = Broker()
    p, c = Client(b, channels=k), Client(b, channels=k)
    p.declare("q", channel=k)
    c.consume("q", no_ack=True, channel=k)
    chunks = publish_frames(messages, channel=k)
    out["pair on the last of n channels"] = cpu(feeding(p, chunks, c))
    assert queue_of(b, "q").statistics().delivered == messages
    return out


# -- driver ---------------------------------------------------------------------------------
DIMENSIONS: dict[str, tuple[str, list[int], Callable[[int, int], Result], int]] = {
    # name: (what n is, sizes, case(n, messages), messages per run; 0 = n itself)
    "queue_length": (
        "messages queued",
        [1_000, 10_000, 100_000],
        lambda n, m: case_queue_length(n),
        0,
    ),
    "unacked": ("deliveries unacked", [1_000, 10_000, 100_000], lambda n, m: case_unacked(n), 0),
    "queues": ("queues in the vhost", [100, 1_000, 10_000], case_queues, 20_000),
    "bindings": ("bindings", [100, 1_000, 10_000], case_bindings, 10_000),
    "consumers": ("consumers on the queue", [10, 100, 1_000], case_consumers, 20_000),
    "channels": ("connections/channels", [10, 100, 1_000], case_channels, 20_000),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size (and messages)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is printed")
    ap.add_argument("--only", default="", help="comma-separated dimensions")
    a = ap.parse_args()
    configure_logging(level="warning")  # no line per connection opened
    only = [d for d in a.only.split(",") if d] or list(DIMENSIONS)
    print(f"scaling.py: CPU µs per message (median of {a.repeat}), python {sys.version.split()[0]}")
    for name in only:
        what, sizes, case, messages = DIMENSIONS[name]
        sizes = [max(1, int(s * a.scale)) for s in sizes]
        runs: dict[str, dict[int, list[float]]] = {}
        for n in sizes:
            m = max(1, int(messages * a.scale)) if messages else n
            for _ in range(a.repeat):
                gc.collect()
                for label, seconds in case(n, m).items():
                    runs.setdefault(label, {}).setdefault(n, []).append(seconds * 1e6 / m)
        print(f"\n## {name}: n = {what}")
        header = "| case | " + " | ".join(f"n={s:,}" for s in sizes) + " | largest/smallest |"
        print(header)
        print("|---|" + "---:|" * (len(sizes) + 1))
        for label, by_size in runs.items():
            med = [statistics.median(by_size[s]) for s in sizes]
            ratio = med[-1] / med[0] if med[0] else float("nan")
            cells = " | ".join(f"{v:.2f}" for v in med)
            print(f"| {label} | {cells} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
