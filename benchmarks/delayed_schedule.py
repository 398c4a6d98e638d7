"""Benchmark: a delayed-message exchange holding N pending messages (in process, no sockets).

Publishes N messages with random x-delay values (1 s .. 1 day) through
``VirtualHost.route_message`` into an x-delayed-message exchange, then releases them all by
ticking past the last due time. Prints the CPU cost per scheduled and per released message
and the process's peak RSS growth, so the O(log n) claim and the memory per pending message
are measured, not assumed. ``--durable`` also logs every held message to a real data
directory (a temporary one) as a durable delayed exchange does, and keeps the entries not
due soon in on-disk time buckets there (``<data-dir>/delay-buckets``, as ``amqpd
--data-dir`` does); ``--no-buckets`` keeps the whole schedule in memory instead (the layout
before the buckets, for a before/after on the same code). ``--no-release`` stops after
the schedule line (the release of a million takes minutes).

    python benchmarks/delayed_schedule.py [--messages N] [--size BYTES] [--durable]
        [--no-buckets] [--no-release]
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

from amqpd.broker.broker import Broker
from amqpd.broker.message import Message
from amqpd.broker.restore import recover
from amqpd.protocol.fieldtable import Int32
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.delaybuckets import DelayBuckets
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.files import OsFiles


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / (1024 * 1024)


def run(n: int, size: int, durable: bool, buckets: bool = True, release: bool = True) -> None:
    broker = Broker()
    log = None
    tmp = None
    store = None
    if durable:
        tmp = tempfile.TemporaryDirectory()
        (Path(tmp.name) / "log").mkdir()
        if buckets:
            (Path(tmp.name) / "delay-buckets").mkdir()
            store = DelayBuckets(OsFiles(Path(tmp.name) / "delay-buckets"))
            broker.attach_delay_buckets(store)
        log = DiskDurableLog.open(OsFiles(Path(tmp.name) / "log"))
        recover(broker, log)
    vhost = broker.vhosts["/"]
    vhost.declare_exchange(
        "dx", "x-delayed-message", durable=durable, arguments={"x-delayed-type": "direct"}
    )
    queue = vhost.declare_queue("q", durable=durable)
    vhost.bind_queue("q", "dx", "rk")
    rng = random.Random(1)
    # A body of its own per message, as real publishes have (one shared bytes object would
    # hide what holding the bodies costs).
    pad = b"x" * size
    # Pre-encoded properties (one per distinct delay would cost more than the broker does).
    props = [
        BasicProperties(headers={"x-delay": Int32(rng.randint(1000, 86_400_000))}).encode()
        for _ in range(1024)
    ]
    rss0 = _rss_mb()
    start = time.process_time()
    for i in range(n):
        body = (b"%08d" % i + pad)[:size]
        vhost.route_message("dx", Message("dx", "rk", props[i & 1023], body), 0.0)
        if log is not None and i % 4096 == 4095:
            log.commit()  # group commit, as the persister would
    if log is not None:
        log.commit()
        vhost.tick(0.0)  # the persister's after_commit: page out what is committed
    scheduled = time.process_time() - start
    rss1 = _rss_mb()
    assert len(vhost.delayed) == n
    mode = "durable" if durable else "transient"
    if durable:
        mode += ", buckets" if buckets else ", no buckets"
    # Printed before the release, so the figure that matters survives a run cut short.
    print(
        f"delayed_schedule: {n} msgs of {size} B, {mode}: "
        f"schedule {scheduled / n * 1e6:.1f} us/msg, peak RSS +{rss1 - rss0:.0f} MB "
        f"({(rss1 - rss0) * 1024 * 1024 / n:.0f} B per pending message; RSS now "
        f"{_current_rss_mb():.0f} MB), in memory {vhost.delayed.in_memory} entries, "
        f"{vhost.delayed.buckets} buckets"
        + (f" ({store.bytes_written / n:.0f} B written per message)" if store else ""),
        flush=True,
    )
    if not release:
        if tmp is not None:
            tmp.cleanup()
        return
    start = time.process_time()
    vhost.tick(86_401.0)
    released = time.process_time() - start
    assert len(vhost.delayed) == 0 and queue.message_count == n
    reads = f", {log.bodies.reads} preads" if log is not None else ""
    print(f"release+route+enqueue {released / n * 1e6:.1f} us/msg{reads}")
    if tmp is not None:
        tmp.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--durable", action="store_true")
    p.add_argument("--no-buckets", action="store_true")
    p.add_argument("--no-release", action="store_true")
    a = p.parse_args()
    run(a.messages, a.size, a.durable, not a.no_buckets, not a.no_release)


if __name__ == "__main__":
    main()
