"""Memory benchmark: a backlog of persistent messages with no consumer, and the peak RSS.

A producer ``Connection`` (no sockets, as publish_path.py drives it) publishes N persistent
messages of SIZE bytes to one durable queue on a broker with a real data directory: the
durable log on segment files in a temporary directory, committed (write + fdatasync) every
few chunks as the server's persister would, and the broker's memory budget for ready bodies
(``--budget``, paging.py: ready entries beyond it go to the queue's delta files). Nobody
consumes while it publishes. Then it drains the whole backlog with basic.get and ack
(committing as it goes), checking every body, and prints the publish and drain rates, the
RSS before publishing, with the backlog and at the end of the drain, the peak RSS of the
process, what the backlog cost per message, and how much of it went to the delta.
``--sample N`` drains only the first N instead. ``--progress N`` prints the RSS every N messages published (with ``--direct``).
``--direct`` skips the session layers
(each message is routed and enqueued through ``durability.enqueue_routed``, as
basic.publish does after parsing): for the long runs where only the RSS matters. ``--restart`` stops the broker (a clean
close of the log) before the drain and restores a new one from the data directory, as a
restart would, and prints how long that took and the RSS after it.

    python benchmarks/backlog_rss.py [--messages N] [--size BYTES] [--budget BYTES]
                                     [--dir DIR] [--sample N] [--restart] [--direct]
                                     [--progress N]
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path

from publish_path import persistent_producer  # type: ignore[import-not-found]

from amqpd.broker.broker import Broker
from amqpd.broker.durability import enqueue_routed
from amqpd.broker.message import Message
from amqpd.broker.paging import DEFAULT_BUDGET
from amqpd.protocol.frames import encode_content
from amqpd.server.resources import resident_memory
from amqpd.server.storage import open_storage
from amqpd.storage.durable import run_callbacks

PER_CHUNK = 64  # messages per receive_data call (about one 64 KiB read at 1 KiB)
COMMIT_EVERY = 8  # chunks per group commit


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _disk(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if f.is_file())


def run(
    messages: int,
    size: int,
    budget: int,
    directory: Path,
    sample: int | None,
    restart: bool,
    direct: bool = False,
    progress: int = 0,
) -> None:
    broker = Broker()
    log = open_storage(directory, broker, memory_budget=budget)
    queue = "backlog"
    producer, publish, props, body = persistent_producer(broker, queue, size)
    rss_before = resident_memory()
    start = time.monotonic()
    cpu_start = time.process_time()
    sent = 0
    chunks = 0
    vh = broker.vhosts["/"]
    while direct and sent < messages:
        n = min(PER_CHUNK, messages - sent)
        for i in range(n):
            message = Message("", queue, props, b"%08d" % (sent + i) + body)
            queues, message = vh.route_message("", message)
            enqueue_routed(vh.durable, vh.name, message, queues, 0.0)
        sent += n
        chunks += 1
        if chunks % COMMIT_EVERY == 0:
            run_callbacks(log.commit())
        if progress and sent // progress > (sent - n) // progress:
            print(
                f"  {sent:,} published in {time.monotonic() - start:.0f} s: RSS "
                f"{resident_memory() / 2**20:.0f} MiB, peak {_peak_rss() / 2**20:.0f} MiB",
                flush=True,
            )
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
        chunks += 1
        if chunks % COMMIT_EVERY == 0:
            run_callbacks(log.commit())
    run_callbacks(log.commit())
    producer.data_to_send()
    elapsed = time.monotonic() - start
    publish_cpu = time.process_time() - cpu_start
    rss_full = resident_memory()
    q = broker.vhosts["/"].queues[queue]
    assert q.message_count == messages, q.message_count
    paging = broker.paging
    assert paging is not None
    disk = _disk(directory / "log")
    delta_disk = _disk(directory / "spill")
    to_delta = paging.to_delta
    restarted = ""
    if restart:
        log.close()
        paging.close()
        del broker, q, paging, producer, log
        gc.collect()
        rss_stopped = resident_memory()
        start = time.monotonic()
        broker = Broker()
        log = open_storage(directory, broker, memory_budget=budget)
        took = time.monotonic() - start
        q = broker.vhosts["/"].queues[queue]
        assert q.message_count == messages, q.message_count
        paging = broker.paging
        assert paging is not None
        restarted = (
            f"  restart: restored in {took:.1f} s; RSS {rss_stopped / 2**20:.0f} MiB stopped, "
            f"{resident_memory() / 2**20:.0f} MiB restored; {paging.to_delta:,} restored "
            "entries in the delta\n"
        )
    # Drain from the head, bodies checked, acked and committed as a consumer's acks would be.
    checked = 0
    drain = messages if sample is None else min(messages, sample)
    start = time.monotonic()
    cpu_start = time.process_time()
    while checked < drain:
        entry = q.get()
        assert entry is not None
        assert entry.message.body == b"%08d" % checked + body, checked
        q.ack(entry)
        checked += 1
        if checked % (PER_CHUNK * COMMIT_EVERY) == 0:
            run_callbacks(log.commit())
    run_callbacks(log.commit())
    drained = time.monotonic() - start
    drain_cpu = time.process_time() - cpu_start
    rss_end = resident_memory()
    print(
        f"backlog_rss: {messages:,} persistent msgs of {size} B on one durable queue, "
        f"budget {budget / 2**20:.0f} MiB, no consumer\n"
        f"  published{' directly' if direct else ''} in {elapsed:.1f} s ({messages / elapsed:,.0f} msg/s; {publish_cpu:.1f} s "
        f"of CPU, {messages / publish_cpu:,.0f} msg per CPU s; fsync every "
        f"{PER_CHUNK * COMMIT_EVERY} msgs)\n"
        f"  RSS before {rss_before / 2**20:.0f} MiB, with the backlog {rss_full / 2**20:.0f} MiB,"
        f" after the drain {rss_end / 2**20:.0f} MiB, peak {_peak_rss() / 2**20:.0f} MiB\n"
        f"  backlog cost {(rss_full - rss_before) / messages:.0f} B/msg in RAM "
        f"(bodies alone would be {messages * size / 2**20:.0f} MiB); {to_delta:,} entries "
        f"in the delta ({delta_disk / 2**20:.0f} MiB), {paging.paged_out:,} bodies paged out;"
        f" log on disk {disk / 2**20:.0f} MiB\n"
        f"{restarted}"
        f"  drained and checked {checked:,} in {drained:.1f} s ({checked / drained:,.0f} msg/s; "
        f"{drain_cpu:.1f} s of CPU, {checked / drain_cpu:,.0f} msg per CPU s)"
    )
    log.close()
    paging.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    p.add_argument("--dir", type=Path, default=None)
    p.add_argument("--sample", type=int, default=None)
    p.add_argument("--restart", action="store_true")
    p.add_argument("--direct", action="store_true")
    p.add_argument("--progress", type=int, default=0)
    a = p.parse_args()
    if a.dir is not None:
        a.dir.mkdir(parents=True, exist_ok=True)
        run(a.messages, a.size, a.budget, a.dir, a.sample, a.restart, a.direct, a.progress)
    else:
        with tempfile.TemporaryDirectory(prefix="amqpd-backlog-") as tmp:
            run(a.messages, a.size, a.budget, Path(tmp), a.sample, a.restart, a.direct, a.progress)


if __name__ == "__main__":
    main()
