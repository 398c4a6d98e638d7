"""The catalog: per-queue per-segment counts at run time, compact arrays while replaying."""

from __future__ import annotations

import gc
import sys
import types

from hypothesis import given
from hypothesis import strategies as st

from amqpd.storage import catalog as catalog_module
from amqpd.storage.bodies import location
from amqpd.storage.catalog import (
    Catalog,
    PublishedAt,
    ReplayedMessages,
    ReplayLiveness,
)
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.entries import MessagesDelivered, MessagesRemoved, QueueDeclared, QueueDeleted
from amqpd.storage.fakefiles import FakeFiles


class Recorder:
    """A Liveness that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, object]] = []

    def pin(self, segment: int, count: int = 1) -> None:
        self.calls.append(("pin", segment, count))

    def release(self, segment: int, count: int = 1) -> None:
        self.calls.append(("release", segment, count))

    def depend(self, segment: int, targets: set[int]) -> None:
        if targets:
            self.calls.append(("depend", segment, frozenset(targets)))


def _run_time_catalog(*queues: str) -> tuple[Catalog, Recorder]:
    live = Recorder()
    catalog = Catalog(live)
    for name in queues:
        catalog.apply(QueueDeclared("/", name, False), 1)
    live.calls.clear()
    return catalog, live


def test_a_message_pins_its_segment_once_per_queue_and_each_removal_releases_one() -> None:
    catalog, live = _run_time_catalog("q1", "q2")
    catalog.hold("/", ["q1", "q2", "gone"], 3)  # "gone" is not a durable queue any more
    assert live.calls == [("pin", 3, 2)]
    assert catalog.queues[("/", "q1")].pins == {3: 1} == catalog.queues[("/", "q2")].pins
    live.calls.clear()
    catalog.settle("/", "q1", [3], 5, removed=False)  # delivered marker in segment 5
    assert live.calls == [("depend", 5, frozenset({3}))]
    live.calls.clear()
    catalog.settle("/", "q1", [3], 6, removed=True)
    assert live.calls == [("release", 3, 1), ("depend", 6, frozenset({3}))]
    assert catalog.queues[("/", "q1")].pins == {} and catalog.queues[("/", "q1")].count == 0
    assert catalog.queues[("/", "q2")].count == 1


def test_a_removal_the_queue_does_not_hold_changes_nothing() -> None:
    catalog, live = _run_time_catalog("q")
    catalog.hold("/", ["q"], 2)
    live.calls.clear()
    catalog.settle("/", "q", [7], 9, removed=True)  # no message of q is in segment 7
    catalog.settle("/", "other", [2], 9, removed=True)
    assert live.calls == []
    assert catalog.queues[("/", "q")].pins == {2: 1}


def test_deleting_a_queue_releases_all_its_pins_at_once() -> None:
    catalog, live = _run_time_catalog("q")
    for segment in (2, 2, 2, 4):
        catalog.hold("/", ["q"], segment)
    live.calls.clear()
    catalog.apply(QueueDeleted("/", "q"), 5)
    assert ("release", 2, 3) in live.calls and ("release", 4, 1) in live.calls
    # The delete record stays as long as the declaration and the messages' segments.
    assert live.calls[-1] == ("depend", 5, frozenset({1, 2, 4}))
    assert ("/", "q") not in catalog.queues


def _deep_size(catalog: Catalog) -> tuple[int, int]:
    """(objects, bytes) reachable from the catalog's state, the segment log aside."""
    seen: set[int] = set()
    todo = [v for k, v in vars(catalog).items() if k != "_live"]
    objects = size = 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        objects += 1
        size += sys.getsizeof(obj)
        todo.extend(gc.get_referents(obj))
    return objects, size


def test_the_run_time_catalog_does_not_grow_with_the_messages_it_holds() -> None:
    """No per-message object: holding 5,000 more messages (one segment) adds nothing to
    the catalog; only a new segment would add one count per queue."""
    log = DiskDurableLog.open(FakeFiles())
    log.queue_declared("/", "q1", auto_delete=False, arguments={})
    log.queue_declared("/", "q2", auto_delete=False, arguments={})
    log.replay_done()

    def publish(n: int) -> None:
        for _ in range(n):
            log.message_published("/", ["q1", "q2"], "", "k", b"\x00\x00", b"")

    publish(300)  # counts past the small-int cache, so every later count is a new int too
    before = _deep_size(log.catalog)
    publish(5000)
    assert _deep_size(log.catalog) == before
    assert log.catalog.queues[("/", "q1")].count == 5300
    assert len(log.catalog.queues[("/", "q1")].pins) == 1


# -- replay -----------------------------------------------------------------------------------
def _replaying(*queues: str) -> tuple[Catalog, ReplayLiveness]:
    live = ReplayLiveness()
    catalog = Catalog(live, replaying=True)
    for name in queues:
        catalog.apply(QueueDeclared("/", name, False), 1)
    return catalog, live


def _published(catalog: Catalog, msg_id: int, segment: int, *queues: str) -> None:
    where = location(segment, 24 + msg_id)
    catalog.apply(PublishedAt(msg_id, "/", queues, where, 50), segment)


def _live(catalog: Catalog, name: str) -> list[tuple[int, bool]]:
    replayed = catalog.queues[("/", name)].replayed
    return [(i, marked) for i, _where, _size, marked in replayed or ()]


def test_replay_finds_removals_by_id_in_and_out_of_order() -> None:
    catalog, live = _replaying("q")
    for msg_id in range(1, 11):
        _published(catalog, msg_id, 2 + msg_id // 5, "q")  # segments 2, 3, 4
    catalog.apply(MessagesDelivered("/", "q", (9, 3)), 5)
    catalog.apply(MessagesRemoved("/", "q", (1, 2, 7, 4, 99)), 5)  # 99: unknown, ignored
    assert _live(catalog, "q") == [
        (3, True),
        (5, False),
        (6, False),
        (8, False),
        (9, True),
        (10, False),
    ]
    queue = catalog.queues[("/", "q")]
    assert queue.count == 6 and queue.pins == {2: 1, 3: 4, 4: 1}
    assert live.live == {1: 1, 2: 1, 3: 4, 4: 1}
    assert live.depends == {(5, frozenset({2, 3}))}  # the ids' segments, 4 untouched
    assert catalog.max_message_id == 99  # ids named by a surviving record are never reused


def test_a_fanout_message_stays_until_its_last_queue_removes_it() -> None:
    catalog, live = _replaying("q1", "q2")
    _published(catalog, 1, 2, "q1", "q2", "q1")
    assert live.live[2] == 2
    catalog.apply(MessagesRemoved("/", "q1", (1,)), 3)
    assert live.live[2] == 1 and _live(catalog, "q2") == [(1, False)]
    assert catalog.message_count() == 1
    catalog.apply(MessagesRemoved("/", "q2", (1,)), 3)
    assert live.live[2] == 0 and catalog.message_count() == 0


def test_message_count_counts_a_fanout_once() -> None:
    catalog, _ = _replaying("q1", "q2", "q3")
    _published(catalog, 1, 2, "q1", "q2")
    _published(catalog, 2, 2, "q2", "q3")
    _published(catalog, 3, 2, "q3")
    assert catalog.message_count() == 3
    assert sum(q.count for q in catalog.queues.values()) == 5


def test_replay_dependencies_are_shared_by_the_records_of_one_segment() -> None:
    catalog, live = _replaying("q")
    for msg_id in range(1, 101):
        _published(catalog, msg_id, 2, "q")
    for msg_id in range(1, 100):
        catalog.apply(MessagesRemoved("/", "q", (msg_id,)), 3)
    assert live.depends == {(3, frozenset({2}))}


def test_removed_entries_are_compacted_away() -> None:
    replayed = ReplayedMessages()
    n = 3 * catalog_module._COMPACT_MIN
    for msg_id in range(1, n + 1):
        replayed.add(msg_id, msg_id, 10)
    for msg_id in range(1, n + 1):  # two in three, out of order for the head
        if msg_id % 3:
            replayed.remove(replayed.find(msg_id))
    assert len(replayed) == n // 3
    assert len(replayed.ids) < n  # the arrays shrank with the live entries
    for msg_id in range(3, n - 30, 3):  # in order, from the head
        replayed.remove(replayed.find(msg_id))
    assert len(replayed.ids) < catalog_module._COMPACT_MIN
    assert [i for i, *_ in replayed] == list(range(n - 30, n + 1, 3))


@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "mark"]), st.integers(0, 60))))
def test_replayed_messages_agree_with_a_list(ops: list[tuple[str, int]]) -> None:
    catalog_module_min = catalog_module._COMPACT_MIN
    catalog_module._COMPACT_MIN = 4  # compact often
    try:
        replayed = ReplayedMessages()
        model: list[list[int]] = []  # [id, delivered]
        next_id = 1
        for op, pick in ops:
            if op == "add":
                replayed.add(next_id, next_id * 7, next_id)
                model.append([next_id, 0])
                next_id += 1
                continue
            msg_id = pick % next_id
            i = replayed.find(msg_id)
            held = [m for m in model if m[0] == msg_id]
            assert (i >= 0) == bool(held)
            if i < 0:
                continue
            if op == "remove":
                replayed.remove(i)
                model.remove(held[0])
            else:
                replayed.flags[i] |= catalog_module.DELIVERED
                held[0][1] = 1
        assert [(i, w, s, d) for i, w, s, d in replayed] == [
            (m, m * 7, m, bool(d)) for m, d in model
        ]
        assert len(replayed) == len(model)
    finally:
        catalog_module._COMPACT_MIN = catalog_module_min


def test_restore_reads_each_record_back_in_order_without_its_body() -> None:
    files = FakeFiles()
    log = DiskDurableLog.open(files, segment_size=600)
    log.queue_declared("/", "a", auto_delete=False, arguments={})
    log.queue_declared("/", "b", auto_delete=False, arguments={})
    sent = {}
    for i in range(30):
        queues = ["a", "b"] if i % 3 == 0 else ["a"] if i % 3 == 1 else ["b"]
        body = b"body-%d" % i * (i % 4)
        msg_id = log.message_published("/", queues, "ex", f"rk{i % 2}", b"\x00\x00", body)
        sent[msg_id] = (log.last_segment, f"rk{i % 2}", body)
    log.close()
    again = DiskDurableLog.open(files, segment_size=600)
    for name in ("a", "b"):
        got = list(again.recovered_messages("/", name))
        assert [m.id for m in got] == [i for i, *_ in again.catalog.queues[("/", name)].replayed]
        for m in got:
            segment, routing_key, body = sent[m.id]
            assert (m.segment, m.exchange, m.routing_key) == (segment, "ex", routing_key)
            assert m.properties_raw == b"\x00\x00" and m.body_size == len(body)
            assert again.bodies.read(m.body_at, m.body_size) == body
    assert again.report.messages == 30
    again.replay_done()
    assert all(q.replayed is None for q in again.catalog.queues.values())


def test_the_segment_log_keeps_one_dependency_per_segment_and_targets() -> None:
    """A thousand acks in one segment of messages in another are one dependency; the acks'
    segment still goes only after the messages' one."""
    from amqpd.storage.log import SegmentLog

    files = FakeFiles()
    log = SegmentLog(files, segment_size=200)
    first = log.append(1, b"m" * 150).segment
    log.pin(first, 3)
    second = log.append(1, b"a" * 150).segment
    assert second != first
    for _ in range(1000):
        log.depend(second, {first})
    assert len(log._depending) == 1 and len(log._dependents[first]) == 1
    log.append(1, b"h" * 150)  # a third segment: the second is no longer the head
    log.release(first, 2)
    log.commit()
    assert log.segments == [first, second, log.head]  # one message left in the first
    log.release(first)
    log.commit()
    assert log.segments == [log.head]  # both went, the dependency with them
    assert not log._depending and not log._dependents
