"""A restarted plain durable queue keeps its recovered messages in the log (its logged
part, ready.py / restore.RestoredTail) and reads them back in chunks as its head drains:
order, redelivered flags, requeue, ack, reject, purge, delete, length limits and new
publishes behave exactly as when every message was enqueued at restore."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.broker import Broker
from amqpd.broker.durability import enqueue_routed
from amqpd.broker.message import Message
from amqpd.broker.paging import CHUNK_ENTRIES, ENTRY_OVERHEAD, Paging
from amqpd.broker.policies import Policy
from amqpd.broker.queue import Queue, QueuedMessage
from amqpd.broker.restore import recover
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage import logtail as logtail_module
from amqpd.storage.delta import DeltaFiles
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.durable import run_callbacks
from amqpd.storage.fakefiles import FakeFiles

PERSISTENT = BasicProperties(delivery_mode=2).encode()
EXPIRING = BasicProperties(delivery_mode=2, expiration="1000").encode()
BODY = 50


def _start(
    files: FakeFiles, *, budget: int | None = 20 * (ENTRY_OVERHEAD + BODY)
) -> tuple[Broker, DiskDurableLog]:
    """As server/storage.py open_storage: paging (with deltas) attached before restore."""
    log = DiskDurableLog.open(files, segment_size=8192)
    broker = Broker()
    if budget is not None:
        broker.attach_paging(Paging(budget, log=log, deltas=DeltaFiles(FakeFiles())))
    recover(broker, log)
    return broker, log


def _body(i: int) -> bytes:
    return f"m{i:05d}".encode().ljust(BODY, b".")


def _publish(vh: VirtualHost, rk: str, ids: range, props: bytes = PERSISTENT) -> None:
    for i in ids:
        queues, message = vh.route_message("", Message("", rk, props, _body(i)))
        enqueue_routed(vh.durable, vh.name, message, queues)


def _logged(queue: Queue) -> int:
    logged = getattr(queue._ready, "_logged", None)
    return 0 if logged is None else len(logged)


def _get_all(queue: Queue) -> list[tuple[bytes, bool]]:
    out = []
    while (entry := queue.get()) is not None:
        out.append((entry.message.body, entry.redelivered))
        queue.ack(entry)
    return out


def _stop(broker: Broker, log: DiskDurableLog, *, clean: bool = True) -> None:
    run_callbacks(log.close(clean=clean))
    if broker.paging is not None:
        broker.paging.close()


def test_a_restarted_backlog_stays_in_the_log_and_drains_in_order() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "q", range(1000))
    first = vh.queues["q"].get()  # delivered before the stop: comes back redelivered
    assert first is not None
    _stop(broker, log)
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    queue = vh.queues["q"]
    # Nothing read at restore: the count and the bytes come from replay's arrays.
    assert queue.message_count == 1000 and _logged(queue) == 1000
    assert queue.statistics().messages_ready_bytes == 1000 * BODY
    assert broker.paging is not None and broker.paging.ready_bytes == 0
    assert log.catalog.queues[("/", "q")].replayed is None  # replay_done: taken over
    entry = queue.get()
    assert entry is not None and entry.message.body == _body(0) and entry.redelivered
    # One chunk came into memory (of one segment, here of 8 KiB), not the backlog.
    assert 1000 - CHUNK_ENTRIES <= _logged(queue) < 1000
    queue.ack(entry)
    assert _get_all(queue) == [(_body(i), False) for i in range(1, 1000)]
    assert log.catalog.queues[("/", "q")].count == 0  # every ack was logged


def test_publishes_after_the_restart_go_behind_the_logged_part() -> None:
    files = FakeFiles()
    for budget in (None, 20 * (ENTRY_OVERHEAD + BODY), 10**9):
        files = FakeFiles()
        broker, log = _start(files, budget=budget)
        vh = broker.vhosts["/"]
        vh.declare_queue("q", durable=True)
        _publish(vh, "q", range(600))
        _stop(broker, log)
        broker, log = _start(files, budget=budget)
        vh = broker.vhosts["/"]
        _publish(vh, "q", range(600, 700))  # into memory, the delta or the tail: behind
        queue = vh.queues["q"]
        assert queue.message_count == 700
        assert [b for b, _ in _get_all(queue)] == [_body(i) for i in range(700)], budget
        _stop(broker, log)
        broker, log = _start(files, budget=budget)
        assert broker.vhosts["/"].queues["q"].message_count == 0


def test_a_long_logged_part_keeps_its_own_arrays_in_the_delta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logtail_module, "BLOCK", 64)
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    vh.declare_queue("purged", durable=True)
    _publish(vh, "q", range(1000))
    _publish(vh, "purged", range(300))
    _stop(broker, log)
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    queue = vh.queues["q"]
    tail = queue._ready._logged._tail  # type: ignore[attr-defined]
    assert len(tail._ids) <= 64 and queue.message_count == 1000
    assert vh.purge_queue("purged") == 300
    assert log.catalog.queues[("/", "purged")].count == 0
    _publish(vh, "q", range(1000, 1010))
    assert [b for b, _ in _get_all(queue)] == [_body(i) for i in range(1010)]


def test_requeue_reject_and_a_second_restart_keep_places_and_flags() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "q", range(600))
    _stop(broker, log)
    broker, log = _start(files)
    queue = broker.vhosts["/"].queues["q"]
    got = [queue.get() for _ in range(3)]
    assert all(e is not None for e in got)
    entries: list[QueuedMessage] = [e for e in got if e is not None]
    queue.requeue([entries[1]])  # back to its place, before the rest of the log
    queue.discard(entries[0])  # rejected: gone for good
    # entries[2] stays unacked until the stop: the channel closing requeues it.
    queue.requeue([entries[2]])
    _stop(broker, log)
    broker, log = _start(files)
    queue = broker.vhosts["/"].queues["q"]
    assert queue.message_count == 599 and _logged(queue) == 599
    expected = [(_body(1), True), (_body(2), True)] + [(_body(i), False) for i in range(3, 600)]
    assert _get_all(queue) == expected


def test_after_a_crash_every_message_comes_back_redelivered_and_stays_so() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "q", range(300))
    run_callbacks(log.commit())
    files.crash()  # no CleanShutdown record
    broker, log = _start(files)
    queue = broker.vhosts["/"].queues["q"]
    assert not log.report.clean_shutdown and _logged(queue) == 300
    head = queue.get()
    assert head is not None and head.redelivered
    queue.requeue([head])
    _stop(broker, log)  # now cleanly: the crash marks were logged at restore
    broker, log = _start(files)
    queue = broker.vhosts["/"].queues["q"]
    assert log.report.clean_shutdown
    assert _get_all(queue) == [(_body(i), True) for i in range(300)]


def test_purge_and_delete_of_a_logged_part_are_logged_without_reading_it() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    for name in ("purged", "deleted", "kept"):
        vh.declare_queue(name, durable=True)
        _publish(vh, name, range(400))
    _stop(broker, log)
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    head = vh.queues["purged"].get()  # one chunk in memory, the rest in the log
    assert head is not None
    reads = log.bodies.reads
    assert vh.purge_queue("purged") == 399
    assert log.bodies.reads == reads  # no body read back to purge
    vh.queues["purged"].ack(head)
    vh.delete_queue("deleted", if_unused=False, if_empty=False, owner=None)
    assert log.catalog.queues[("/", "purged")].count == 0
    _stop(broker, log)
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    assert vh.queues["purged"].message_count == 0 and "deleted" not in vh.queues
    assert [b for b, _ in _get_all(vh.queues["kept"])] == [_body(i) for i in range(400)]


def test_a_policy_limit_after_the_restart_drops_from_the_head_exactly() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "q", range(500))
    _stop(broker, log)
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    broker.add_policy(Policy("/", "bytes", "^q$", {"max-length-bytes": 100 * BODY}))
    queue = vh.queues["q"]
    assert queue.message_count == 100
    assert queue.statistics().messages_ready_bytes == 100 * BODY
    broker.add_policy(Policy("/", "len", "^q$", {"max-length": 30}, priority=1))
    assert queue.message_count == 30
    assert [b for b, _ in _get_all(queue)] == [_body(i) for i in range(470, 500)]


def test_queues_that_need_each_message_enqueued_take_the_full_restore() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("prio", durable=True, arguments={"x-max-priority": 3})
    vh.declare_queue("short", durable=True, arguments={"x-max-length": 10})
    vh.declare_queue("ttl", durable=True, arguments={"x-message-ttl": 60000})
    vh.declare_queue("expiring", durable=True)
    for name in ("prio", "short", "ttl"):
        _publish(vh, name, range(300))
    _publish(vh, "expiring", range(299))
    _publish(vh, "expiring", range(299, 300), EXPIRING)  # one message with its own TTL
    _stop(broker, log)
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    for name in ("prio", "short", "ttl", "expiring"):
        assert _logged(vh.queues[name]) == 0, name
    assert vh.queues["short"].message_count == 10
    # The message with a TTL got its expiry at restore, as before.
    last = [e for e in _entries(vh.queues["expiring"]) if e.expires_at is not None]
    assert len(last) == 1 and last[0].message.body == _body(299)


def _entries(queue: Queue) -> list[QueuedMessage]:
    out = []
    while (entry := queue.get()) is not None:
        out.append(entry)
    return out


# -- a model: the queue after restarts is the list of what it holds, in publish order -------


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("publish"), st.integers(1, 400)),
            st.tuples(st.just("get"), st.integers(1, 300)),
            st.tuples(st.sampled_from(["ack", "requeue", "reject"]), st.integers(0, 50)),
            st.tuples(st.sampled_from(["purge", "restart", "crash", "commit"]), st.just(0)),
        ),
        max_size=25,
    ),
    budget=st.sampled_from([None, 5 * (ENTRY_OVERHEAD + BODY), 10**9]),
)
def test_restarts_with_logged_parts_agree_with_a_list(
    ops: list[tuple[str, int]], budget: int | None
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logtail_module, "BLOCK", 50)  # the tail's own arrays paged too
        _model(ops, budget)


def _model(ops: list[tuple[str, int]], budget: int | None) -> None:
    files = FakeFiles()
    broker, log = _start(files, budget=budget)
    broker.vhosts["/"].declare_queue("q", durable=True)
    held: dict[int, bool] = {}  # message number -> seen (a delivery comes back redelivered)
    ready: set[int] = set()
    unacked: list[tuple[int, QueuedMessage]] = []
    counter = 0

    def queue() -> Any:
        return broker.vhosts["/"].queues["q"]

    for op, n in ops:
        if op == "publish":
            _publish(broker.vhosts["/"], "q", range(counter, counter + n))
            for i in range(counter, counter + n):
                held[i] = False
                ready.add(i)
            counter += n
        elif op == "get":
            for _ in range(n):
                entry = queue().get()
                if not ready:
                    assert entry is None
                    break
                want = min(ready)
                assert entry is not None
                assert (entry.message.body, entry.redelivered) == (_body(want), held[want])
                ready.discard(want)
                held[want] = True
                unacked.append((want, entry))
        elif op in ("ack", "requeue", "reject") and unacked:
            number, entry = unacked.pop(n % len(unacked))
            if op == "ack":
                queue().ack(entry)
                del held[number]
            elif op == "reject":
                queue().discard(entry)
                del held[number]
            else:
                queue().requeue([entry])
                ready.add(number)
        elif op == "purge":
            queue().purge()
            for number in ready:
                del held[number]
            ready.clear()
        elif op == "commit":
            run_callbacks(log.commit())
        elif op in ("restart", "crash"):
            for number, entry in unacked:  # what closing the channels does
                queue().requeue([entry])
                ready.add(number)
            unacked = []
            if op == "crash":
                run_callbacks(log.commit())
                # Nothing logged since the last clean start: the log still ends with its
                # CleanShutdown record, so it is no crash to recovery (nothing to doubt).
                crashed = not log.catalog.clean_shutdown
                files.crash()
                if crashed:
                    held = dict.fromkeys(held, True)  # every message comes back redelivered
            else:
                _stop(broker, log)
            broker, log = _start(files, budget=budget)
            assert queue().message_count == len(ready) == len(held)
            assert log.catalog.queues[("/", "q")].count == len(held)
    # Whatever happened, draining gives exactly what the list holds, in order.
    for number, entry in unacked:
        queue().requeue([entry])
        ready.add(number)
    assert _get_all(queue()) == [(_body(i), held[i]) for i in sorted(ready)]
    assert log.catalog.queues[("/", "q")].count == 0
