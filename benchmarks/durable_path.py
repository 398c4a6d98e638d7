"""In-process benchmark of compare.sh scenario 3: persistent messages, confirms, manual acks.

One producer Connection (confirm.select, at most ``--window`` unconfirmed) publishing
persistent messages through a direct exchange to a durable queue, one consumer Connection
(basic.qos ``--prefetch``, manual acks, one basic.ack per message as ``amqp-perf
--multi-ack-every 1`` sends them), on a Broker recovered from a real data directory
(``server.storage.open_storage``: the disk log, paging, deltas). Each round: the producer
sends what its window allows (at most ``--burst``), the consumer acks everything it was
delivered, then the persister's commit (``prepare_commit`` / ``Batch.write`` /
``complete_commit`` / callbacks) runs and the producer reads its confirms.

Prints the broker's CPU per message on the trio thread: every broker call is timed with
``time.process_time`` except ``Batch.write`` (the file writes and fdatasync, which the
server runs in a worker thread), which is reported on its own. The data directory is
under /dev/shm when there is one, so fsync costs little and does not blur the figure.

    python benchmarks/durable_path.py [--messages N] [--size BYTES] [--burst N]
                                      [--window N] [--prefetch N] [--profile FILE]
                                      [--transient]

``--transient`` publishes delivery-mode 1 messages through the same set-up: what the
path costs without the durable log (confirms at once, nothing logged).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from publish_path import _open  # type: ignore[import-not-found]

from amqpd.broker.broker import Broker
from amqpd.protocol import methods as M
from amqpd.protocol.frames import FRAME_METHOD, FrameReader, encode_content, encode_method_frame
from amqpd.protocol.methods import decode_method
from amqpd.protocol.properties import BasicProperties
from amqpd.server.storage import open_storage
from amqpd.storage.durable import run_callbacks


def _call(conn: object, method: M.Method) -> None:
    conn.receive_data(encode_method_frame(1, method), 0.0)  # type: ignore[attr-defined]
    conn.data_to_send()  # type: ignore[attr-defined]


def run(
    messages: int, size: int, burst: int, window: int, prefetch: int, profile: str, mode: int
) -> None:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    data_dir = Path(tempfile.mkdtemp(prefix="amqpd-durable-path-", dir=base))
    try:
        broker = Broker()
        durable = open_storage(data_dir, broker)
        producer = _open(broker)
        consumer = _open(broker)
        queue, exchange = "bench", "bench.direct"
        _call(
            producer,
            M.ExchangeDeclare(exchange=exchange, type="direct", durable=True, arguments={}),
        )
        _call(producer, M.QueueDeclare(queue=queue, durable=True, arguments={}))
        _call(producer, M.QueueBind(queue=queue, exchange=exchange, routing_key=queue))
        _call(producer, M.ConfirmSelect())
        _call(consumer, M.BasicQos(prefetch_count=prefetch))
        _call(consumer, M.BasicConsume(queue=queue, consumer_tag="c", arguments={}))
        one = encode_method_frame(
            1, M.BasicPublish(exchange=exchange, routing_key=queue)
        ) + encode_content(1, BasicProperties(delivery_mode=mode).encode(), b"x" * size, 131072)
        stats = broker.vhosts["/"].queues[queue].statistics
        confirms = FrameReader(131072)
        state = {"published": 0, "confirmed": 0, "acked": 0}
        clock = {"broker": 0.0, "write": 0.0, "commits": 0}

        def timed(fn, *args):  # type: ignore[no-untyped-def]
            start = time.process_time()
            result = fn(*args)
            clock["broker"] += time.process_time() - start
            return result

        def drive() -> None:
            while state["confirmed"] < messages:
                n = min(burst, window - (state["published"] - state["confirmed"]))
                n = min(n, messages - state["published"])
                if n > 0:
                    timed(producer.receive_data, one * n, 0.0)
                    state["published"] += n
                timed(consumer.data_to_send)
                delivered = stats().delivered
                if delivered > state["acked"]:
                    acks = b"".join(
                        encode_method_frame(1, M.BasicAck(delivery_tag=tag))
                        for tag in range(state["acked"] + 1, delivered + 1)
                    )
                    timed(consumer.receive_data, acks, 0.0)
                    timed(consumer.data_to_send)
                    state["acked"] = delivered
                batch = timed(durable.prepare_commit)
                if batch is not None:
                    start = time.process_time()
                    batch.write()
                    clock["write"] += time.process_time() - start
                    due = timed(durable.complete_commit, batch)
                    timed(run_callbacks, due)
                    clock["commits"] += 1
                confirms.feed(timed(producer.data_to_send))
                while (frame := confirms.next_frame()) is not None:
                    if frame.type == FRAME_METHOD:
                        method = decode_method(frame.payload)
                        if isinstance(method, M.BasicAck):
                            state["confirmed"] = method.delivery_tag

        if profile:
            prof = cProfile.Profile()
            prof.runcall(drive)
            prof.dump_stats(profile)
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        else:
            drive()
        assert state["acked"] == messages, state
        us = 1e6 * clock["broker"] / messages
        print(
            f"durable_path: {messages} msgs of {size} B, burst {burst}, window {window}: "
            f"broker {clock['broker']:.3f} s CPU = {us:.1f} us/msg "
            f"({messages / clock['broker']:,.0f} msg/s of CPU); "
            f"writes {clock['write']:.3f} s in {clock['commits']} commits"
        )
        durable.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--burst", type=int, default=64, help="publishes per round (one chunk)")
    p.add_argument("--window", type=int, default=256, help="unconfirmed publishes at most")
    p.add_argument("--prefetch", type=int, default=256)
    p.add_argument("--profile", default="", help="write a cProfile to this file")
    p.add_argument(
        "--transient", action="store_true", help="delivery-mode 1: the same path, no log"
    )
    a = p.parse_args()
    run(a.messages, a.size, a.burst, a.window, a.prefetch, a.profile, 1 if a.transient else 2)


if __name__ == "__main__":
    main()
