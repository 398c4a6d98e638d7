"""Paging: ready bodies beyond the memory budget leave memory and are read back on delivery."""

from __future__ import annotations

import gc

from amqpd.broker.broker import Broker
from amqpd.broker.durability import enqueue_routed
from amqpd.broker.message import Message, SpilledMessage
from amqpd.broker.paging import Paging
from amqpd.broker.restore import recover
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.bodies import SpillFiles
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles

PERSISTENT = BasicProperties(delivery_mode=2).encode()
TRANSIENT = BasicProperties(delivery_mode=1).encode()
BODY = 100


def _start(
    files: FakeFiles, spill_files: FakeFiles, budget: int
) -> tuple[Broker, DiskDurableLog, Paging]:
    log = DiskDurableLog.open(files, segment_size=4096)
    broker = Broker()
    recover(broker, log)
    paging = Paging(budget, log=log, spill=SpillFiles(spill_files, buffer_size=256))
    broker.attach_paging(paging)
    return broker, log, paging


def _publish(
    vh: VirtualHost, rk: str, n: int, props: bytes = PERSISTENT, exchange: str = ""
) -> None:
    for i in range(n):
        body = f"{rk}-{i:04d}".encode().ljust(BODY, b".")
        queues, message = vh.route_message(exchange, Message(exchange, rk, props, body))
        enqueue_routed(vh.durable, vh.name, message, queues)


def _drain(vh: VirtualHost, name: str) -> list[bytes]:
    out = []
    queue = vh.queues[name]
    while (entry := queue.get()) is not None:
        out.append(entry.message.body)
        queue.ack(entry)
    return out


def _expected(rk: str, n: int) -> list[bytes]:
    return [f"{rk}-{i:04d}".encode().ljust(BODY, b".") for i in range(n)]


def _resident(vh: VirtualHost, name: str) -> int:
    queue = vh.queues[name]
    return sum(1 for e in list(queue._ready._fresh) if e.message.resident)  # type: ignore[attr-defined]


def test_persistent_bodies_beyond_the_budget_stay_in_the_log_and_come_back_in_order() -> None:
    broker, log, paging = _start(FakeFiles(), FakeFiles(), budget=10 * BODY)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "q", 100)
    # Not committed yet: every body is still in memory (the log only has it in its buffer).
    assert _resident(vh, "q") == 100
    log.commit()
    _publish(vh, "q", 1)  # the next admission drops the committed ones
    assert _resident(vh, "q") == 11  # the head within the budget, and the new one
    assert paging.ready_bytes == 101 * BODY
    assert paging.spill is not None and paging.spill.bytes_spilled == 0  # log-backed
    reads_before = log.bodies.reads
    assert _drain(vh, "q") == [*_expected("q", 100), b"q-0000".ljust(BODY, b".")]
    # Sequential read-back: one pread per segment (read-ahead window), not one per message.
    assert log.bodies.reads - reads_before <= len(log.log.segments) < 10
    assert paging.ready_bytes == 0


def test_segments_holding_paged_bodies_are_not_reclaimed_until_the_messages_go() -> None:
    files = FakeFiles()
    broker, log, _ = _start(files, FakeFiles(), budget=0)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "q", 200)  # 20 KB: several 4 KiB segments
    log.commit()
    _publish(vh, "q", 0)
    vh.queues["q"].enqueue(Message("", "q", TRANSIENT, b"x"))  # admits: drops the bodies
    assert _resident(vh, "q") <= 2
    segments = len(log.log.segments)
    assert segments > 3
    queue = vh.queues["q"]
    got = []
    for _ in range(100):
        entry = queue.get()
        assert entry is not None
        got.append(entry.message.body)
        queue.ack(entry)
    log.commit()
    assert len(log.log.segments) < segments  # the acked half is reclaimed ...
    rest = _drain(vh, "q")  # ... and the rest is still readable
    assert got + rest[:100] == _expected("q", 200)
    log.commit()


def test_transient_bodies_spill_and_spill_files_go_when_their_messages_do() -> None:
    spill_files = FakeFiles()
    spill_files.write_raw("00000007.spill", b"left by the last run")
    broker, log, paging = _start(FakeFiles(), spill_files, budget=5 * BODY)
    assert "00000007.spill" not in spill_files.list()
    assert paging.spill is not None
    paging.spill._file_size = 10 * BODY  # type: ignore[attr-defined]  # several files
    vh = broker.vhosts["/"]
    vh.declare_queue("t", durable=False)
    vh.declare_queue("d", durable=True)
    _publish(vh, "t", 50, TRANSIENT)
    assert _resident(vh, "t") == 5
    assert paging.spill.files > 2
    assert all(
        isinstance(e.message, SpilledMessage)
        for e in list(vh.queues["t"]._ready._fresh)[5:]  # type: ignore[attr-defined]
    )
    assert _drain(vh, "t") == _expected("t", 50)
    gc.collect()
    assert paging.spill.files <= 1  # only the file being written is left
    # A persistent message that also went to a transient queue is not the log's to keep.
    vh.bind_queue("t", "amq.fanout", "")
    vh.bind_queue("d", "amq.fanout", "")
    _publish(vh, "f", 10, PERSISTENT, exchange="amq.fanout")
    log.commit()
    assert paging.spill.bytes_spilled > 50 * BODY
    assert _drain(vh, "d") == _expected("f", 10)
    assert _drain(vh, "t") == _expected("f", 10)


def test_a_failing_spill_keeps_the_body_in_memory() -> None:
    spill_files = FakeFiles()
    broker, _, paging = _start(FakeFiles(), spill_files, budget=0)
    spill_files.fail_at = spill_files.ops + 2  # the spill file's first write
    vh = broker.vhosts["/"]
    vh.declare_queue("t", durable=False)
    _publish(vh, "t", 5, TRANSIENT)
    assert paging.spill_failures >= 1
    assert _drain(vh, "t") == _expected("t", 5)


def test_ready_bytes_follow_purge_delete_and_requeue() -> None:
    broker, _, paging = _start(FakeFiles(), FakeFiles(), budget=BODY)
    vh = broker.vhosts["/"]
    vh.declare_queue("a", durable=False)
    vh.declare_queue("b", durable=False)
    _publish(vh, "a", 5, TRANSIENT)
    _publish(vh, "b", 5, TRANSIENT)
    assert paging.ready_bytes == 10 * BODY
    entry = vh.queues["a"].get()
    assert entry is not None and paging.ready_bytes == 9 * BODY
    vh.queues["a"].requeue([entry])
    assert paging.ready_bytes == 10 * BODY
    vh.purge_queue("a", None)
    assert paging.ready_bytes == 5 * BODY
    vh.delete_queue("b", if_unused=False, if_empty=False, owner=None)
    assert paging.ready_bytes == 0


def test_paged_messages_survive_a_restart() -> None:
    files = FakeFiles()
    broker, log, _ = _start(files, FakeFiles(), budget=0)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "q", 50)
    log.commit()
    _publish(vh, "q", 50)
    log.close()
    broker, log, paging = _start(files, FakeFiles(), budget=10**9)
    # Recovery kept where the bodies are, not the bodies: none is in memory after a restart.
    assert _resident(broker.vhosts["/"], "q") == 0
    assert paging.ready_bytes == 100 * BODY
    assert _drain(broker.vhosts["/"], "q") == _expected("q", 50) * 2
