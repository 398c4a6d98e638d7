"""Restart benchmark: recover a backlog of persistent messages, time it, and the peak RSS.

Builds (once per directory) a data directory whose log holds N persistent messages of SIZE
bytes on one durable queue, cleanly shut down: the records the broker writes for a
persistent publish (``DiskDurableLog.message_published`` with delivery-mode 2 properties,
group-committed every 512 messages as in backlog_rss.py). Building runs in a child
process, so the measurement starts in a fresh one and ``ru_maxrss`` is the restart's own.
The restart is what ``server/storage.open_storage`` does, in its two steps, each timed:
replay (``DiskDurableLog.open``: recovery and the catalog) and restore (``restore.recover``:
the broker's queues and messages), with paging attached first as the server attaches it
(the default memory budget, delta files in a temporary spill directory; ``--no-paging``
restores into a broker without it, every entry in memory). It prints the RSS after
each step, the catalog's replay arrays and its run-time size, and the peak; wall and CPU
time (on a shared machine the CPU time is the steadier figure).

    python benchmarks/restart_rss.py [--messages N] [--size BYTES] [--dir DIR] [--no-paging]
        [--drain N]

``--drain N`` then takes N messages (basic.get and ack, each body read back and checked):
the cost per message of draining what the restart left in the log.
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amqpd.broker.broker import Broker
from amqpd.broker.paging import DEFAULT_BUDGET, Paging
from amqpd.broker.restore import recover
from amqpd.protocol.properties import BasicProperties
from amqpd.server.resources import resident_memory
from amqpd.storage.delta import DeltaFiles
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.files import OsFiles

QUEUE = "backlog"
COMMIT_EVERY = 512


def build(directory: Path, messages: int, size: int) -> None:
    (directory / "log").mkdir(parents=True, exist_ok=True)
    log = DiskDurableLog.open(OsFiles(directory / "log"))
    log.queue_declared("/", QUEUE, auto_delete=False, arguments={})
    props = BasicProperties(delivery_mode=2).encode()
    body = b"x" * (size - 8)
    for i in range(messages):
        log.message_published("/", (QUEUE,), "", QUEUE, props, b"%08d" % i + body)
        if i % COMMIT_EVERY == COMMIT_EVERY - 1:
            log.commit()
    log.close()
    (directory / "built").write_text(f"{messages} {size}\n")


def measure(directory: Path, messages: int, size: int, *, paging: bool, drain: int) -> None:
    gc.collect()
    rss_before = resident_memory()
    start, cpu_start = time.perf_counter(), time.process_time()
    log = DiskDurableLog.open(OsFiles(directory / "log"))
    replayed, cpu_replayed = time.perf_counter(), time.process_time()
    rss_replay = resident_memory()
    catalog = log.catalog
    arrays = sum(
        q.replayed.ids.itemsize * len(q.replayed.ids) * 2
        + q.replayed.sizes.itemsize * len(q.replayed.sizes)
        + 4 * len(getattr(q.replayed, "bodies", ()))  # (older code: no body sizes)
        + len(q.replayed.flags)
        for q in catalog.queues.values()
        if q.replayed is not None
    )
    broker = Broker()
    spill = tempfile.TemporaryDirectory(prefix="amqpd-restart-spill-")
    if paging:
        # As server/storage.open_storage: before the restore, so a backlog beyond the
        # budget goes where the running broker would keep it.
        deltas = DeltaFiles(OsFiles(Path(spill.name)))
        broker.attach_paging(Paging(DEFAULT_BUDGET, log=log, deltas=deltas))
    result = recover(broker, log)
    restored, cpu_restored = time.perf_counter(), time.process_time()
    rss_restored = resident_memory()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue = broker.vhosts["/"].queues[QUEUE]
    assert queue.message_count == messages == result.messages, (queue.message_count, messages)
    # A sample read back: head and tail bodies come from the log (paged out at restore).
    first = queue.get()
    assert first is not None and first.message.body[:8] == b"00000000"
    pins = sum(len(q.pins) for q in catalog.queues.values())
    replay_s, restore_s = replayed - start, restored - replayed
    cpu_replay, cpu_restore = cpu_replayed - cpu_start, cpu_restored - cpu_replayed
    mib = 2**20
    print(
        f"restart_rss: {messages:,} persistent msgs of {size} B on one durable queue, "
        f"{log.report.segments} segments, "
        f"{'clean shutdown' if log.report.clean_shutdown else 'after a crash'}, "
        f"{'paging (default budget)' if paging else 'no paging'}\n"
        f"  replay (DiskDurableLog.open) {replay_s:.2f} s "
        f"({replay_s / messages * 1e6:.1f} us/msg), "
        f"restore (restore.recover) {restore_s:.2f} s "
        f"({restore_s / messages * 1e6:.1f} us/msg), total {replay_s + restore_s:.2f} s\n"
        f"  CPU time: replay {cpu_replay:.2f} s, restore {cpu_restore:.2f} s, "
        f"total {cpu_replay + cpu_restore:.2f} s (the machine may be shared: wall >= CPU)\n"
        f"  RSS before {rss_before / mib:.0f} MiB, after replay {rss_replay / mib:.0f} MiB "
        f"(catalog arrays {arrays / mib:.1f} MiB, {arrays / messages:.0f} B/msg), "
        f"after restore {rss_restored / mib:.0f} MiB, peak {peak / mib:.0f} MiB\n"
        f"  restore added {(rss_restored - rss_replay) / messages:.0f} B/msg "
        f"(a plain queue keeps replay's arrays as its logged part); "
        f"catalog at run time: {pins} (queue, segment) counts"
    )
    if drain:
        # Read back what the restart left in the log (or the delta), in order, body and
        # all; the acks are not logged (journal detached), so the directory stays as built.
        queue.journal = None
        queue.ack(first)
        drain_start, drain_cpu = time.perf_counter(), time.process_time()
        for i in range(1, min(drain, messages)):
            entry = queue.get()
            assert entry is not None and entry.message.body[:8] == b"%08d" % i
            queue.ack(entry)
        drained = min(drain, messages) - 1
        wall = time.perf_counter() - drain_start
        cpu = time.process_time() - drain_cpu
        print(
            f"  drain of {drained:,} more (basic.get + ack, bodies read back): "
            f"{wall / drained * 1e6:.1f} us/msg wall, {cpu / drained * 1e6:.1f} us/msg CPU, "
            f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )
    # Nothing written: the directory stays as built, for the next run.
    log.log.close()
    log.bodies.close()
    if broker.paging is not None:
        broker.paging.close()
    spill.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--dir", type=Path, default=None)
    p.add_argument("--step", choices=["build", "measure"], default=None)
    p.add_argument("--no-paging", action="store_true", help="restore without paging")
    p.add_argument("--drain", type=int, default=0, help="then get and ack this many")
    a = p.parse_args()
    if a.step == "build":
        build(a.dir, a.messages, a.size)
        return
    if a.step == "measure":
        measure(a.dir, a.messages, a.size, paging=not a.no_paging, drain=a.drain)
        return

    def run(directory: Path) -> None:
        marker = directory / "built"
        if not marker.exists() or marker.read_text().split() != [str(a.messages), str(a.size)]:
            args = ["--messages", str(a.messages), "--size", str(a.size), "--dir", str(directory)]
            subprocess.run([sys.executable, __file__, "--step", "build", *args], check=True)
        args = ["--messages", str(a.messages), "--size", str(a.size), "--dir", str(directory)]
        if a.no_paging:
            args.append("--no-paging")
        args += ["--drain", str(a.drain)]
        subprocess.run([sys.executable, __file__, "--step", "measure", *args], check=True)

    if a.dir is not None:
        a.dir.mkdir(parents=True, exist_ok=True)
        run(a.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="amqpd-restart-") as tmp:
            run(Path(tmp))


if __name__ == "__main__":
    main()
