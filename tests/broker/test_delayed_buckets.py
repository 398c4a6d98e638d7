"""The bounded delayed schedule: entries not due soon wait in time buckets on a file layer,
only those before the horizon are in the heap, and the order is exactly the plain heap's
(due time, then arrival), across buckets, splits, reloads and exchange deletions."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.broker import Broker
from amqpd.broker.delayed import IN_MEMORY, NOT_YET, PAGEABLE, DelaySchedule
from amqpd.broker.durability import DelayedCodec, LoggedDelayed
from amqpd.broker.message import Message
from amqpd.broker.restore import recover
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.delaybuckets import DelayBuckets, bucket_name
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles


@dataclasses.dataclass
class Tag:
    """What a test entry holds: a name, written to a bucket once ``committed``."""

    name: str
    committed: bool = dataclasses.field(default=True, compare=False)


class TagCodec:
    def pageable(self, held: Any) -> int:
        if not isinstance(held, Tag):
            return IN_MEMORY
        return PAGEABLE if held.committed else NOT_YET

    def encode(self, routing_keys: tuple[str, ...], held: Any) -> bytes:
        assert held.committed
        return ("\0".join([held.name, *routing_keys])).encode()

    def decode(self, data: bytes, at: int) -> tuple[tuple[str, ...], Any]:
        name, *keys = data[at:].decode().split("\0")
        return tuple(keys), Tag(name)


def _schedule(
    files: FakeFiles | None = None, *, width: float = 10.0, max_load: int = 4, buffer: int = 1
) -> tuple[DelaySchedule, DelayBuckets, FakeFiles]:
    files = files if files is not None else FakeFiles()
    # buffer=1: every record written at once, so the tests see the files.
    store = DelayBuckets(files, buffer_size=buffer, total_buffer=4 * buffer)
    return DelaySchedule(store, TagCodec(), width=width, max_load=max_load), store, files


def _prime(s: DelaySchedule) -> None:
    """Move the horizon to 0: an entry due at -1 is loaded (and released) at -1."""
    s.add(-1.0, "x", ["k"], Tag("prime"))
    assert _names(s.pop_due(-1.0)) == ["prime"]


def _names(popped: list[tuple[Any, tuple[str, ...], Any]]) -> list[str]:
    return [held.name for _x, _k, held in popped]


def _bucket_files(files: FakeFiles) -> list[str]:
    return [n for n in files.list() if n.endswith(".bucket")]


# -- DelayBuckets ----------------------------------------------------------------------------


def test_buckets_read_back_in_order_across_flushes_and_are_removed() -> None:
    files = FakeFiles()
    files.write_raw(bucket_name(7), b"old")
    store = DelayBuckets(files)
    assert files.list() == []  # a previous run's buckets are gone
    a, b = store.new(), store.new()
    records = [bytes([i % 251]) * (i * 37 % 5000) for i in range(200)]
    for r in records:
        store.append(a, r)
    store.append(b, b"other")
    assert files.list() == [bucket_name(a)]  # b is still only buffered
    assert list(store.records(a)) == records
    assert list(store.records(b)) == [b"other"]
    store.remove(a)
    assert files.list() == []
    store.close()
    assert files.list() == []


def test_a_failed_bucket_write_breaks_the_store_but_loses_nothing_buffered() -> None:
    files = FakeFiles(fail_at=2)  # 1: the file's creation, 2: its first write
    store = DelayBuckets(files)
    n = store.new()
    records = [b"r%d" % i * 1000 for i in range(40)]
    added = 0
    try:
        for r in records:
            store.append(n, r)
            added += 1
    except OSError:
        pass
    assert store.broken and 20 <= added < 40  # the write of the first 64 KiB failed
    # Every record appended is there, the one whose write failed included.
    assert list(store.records(n)) == records[:added]


# -- the schedule on its own -----------------------------------------------------------------


def test_entries_beyond_the_horizon_wait_in_bucket_files_in_exact_order() -> None:
    s, _store, files = _schedule()
    # Due times in several buckets (width 10), with equal due times inside and across the
    # arrival order, added in scrambled order.
    dues = [35.0, 5.0, 35.0, 12.0, 5.0, 99.0, 12.0, 35.0, 61.0, 5.0, 12.0, 99.0]
    for i, due in enumerate(dues):
        s.add(due, "x", [f"k{i}"], Tag(f"m{i}"))
    assert len(s) == len(dues)
    assert s.buckets == 5 and len(_bucket_files(files)) >= 1
    assert s.in_memory == 0 and s.next_due() == 5.0
    expected = [f"m{i}" for i, _ in sorted(enumerate(dues), key=lambda e: (e[1], e[0]))]
    out = s.pop_due(1000.0)
    assert _names(out) == expected
    assert next(k for _x, k, _h in out) == ("k1",)
    assert len(s) == 0 and s.buckets == 0 and _bucket_files(files) == []


def test_next_due_is_the_earliest_whether_in_memory_or_on_disk() -> None:
    s, _store, _files = _schedule()
    assert s.next_due() is None
    s.add(50.0, "x", ["k"], Tag("late"))
    s.add(20.0, "x", ["k"], Tag("sooner"))
    s.add(45.0, "x", ["k"], Message("", "mem", b"", b""))  # a transient exchange's: in RAM
    assert s.next_due() == 20.0
    assert s.pop_due(19.9) == []
    assert _names(s.pop_due(20.0)) == ["sooner"]
    assert s.next_due() == 45.0
    (entry,) = s.pop_due(45.0)
    assert isinstance(entry[2], Message)
    assert _names(s.pop_due(50.0)) == ["late"]


def test_an_entry_due_before_the_horizon_goes_straight_into_the_heap() -> None:
    s, store, _files = _schedule()
    s.add(100.0, "x", ["k"], Tag("a"))
    s.add(105.0, "x", ["k"], Tag("b"))
    s.add(120.0, "x", ["k"], Tag("d"))
    assert s.in_memory == 0 and s.next_due() == 100.0  # read from no file
    assert _names(s.pop_due(100.0)) == ["a"]  # loads [100, 110): the horizon is 110
    assert s.in_memory == 1
    written = store.bytes_written
    s.add(107.0, "x", ["k"], Tag("c"))  # before the horizon
    s.add(1.0, "x", ["k"], Tag("past"))  # due in the past: first, at once
    assert s.in_memory == 3 and store.bytes_written == written
    assert s.next_due() == 1.0
    assert _names(s.pop_due(101.0)) == ["past"]
    assert _names(s.pop_due(200.0)) == ["b", "c", "d"]


def test_a_bucket_too_large_to_load_is_split_and_the_heap_stays_small() -> None:
    s, _store, files = _schedule(width=1000.0, max_load=8)
    _prime(s)
    dues = [float((i * 7919) % 997) for i in range(300)] + [500.0] * 20
    for i, due in enumerate(dues):
        s.add(due, "x", ["k"], Tag(f"m{i}"))
    expected = [f"m{i}" for i, _ in sorted(enumerate(dues), key=lambda e: (e[1], e[0]))]
    out: list[str] = []
    peak = 0
    now = 0.0
    while len(s):
        now += 5.0
        out += _names(s.pop_due(now))
        peak = max(peak, s.in_memory)
    assert out == expected
    # Split 16 ways until small; the 20 equal due times cannot be split and load whole.
    assert peak <= 8 + 20 + 8
    assert _bucket_files(files) == []


def test_exchange_deletion_drops_its_entries_and_bucket_files() -> None:
    s, _store, files = _schedule()
    s.add(1.0, "gone", ["k"], Tag("soon"))
    assert _names(s.pop_due(0.5)) == [] and s.in_memory == 0
    for i in range(6):
        s.add(100.0 + i, "gone", ["k"], Tag(f"g{i}"))
    for i in range(3):
        s.add(300.0 + i, "kept", ["k"], Tag(f"k{i}"))
    s.add(105.5, "kept", ["k"], Tag("shared"))  # in one bucket with "gone"'s
    s.add(500.0, "gone", ["k"], Tag("alone"))
    before = _bucket_files(files)
    assert len(before) == 4
    s.drop_exchange("gone")
    assert len(s) == 4 and s.count_for("gone") == 0 and s.count_for("kept") == 4
    assert s.buckets == 2  # the buckets of "soon" and "alone" went with it
    assert len(_bucket_files(files)) == 2
    assert _names(s.pop_due(1000.0)) == ["shared", "k0", "k1", "k2"]


def test_an_exchange_deleted_and_declared_again_does_not_get_the_old_messages() -> None:
    s, _store, _files = _schedule()
    old, new = object(), object()
    s.add(50.0, old, ["k"], Tag("old"))
    s.drop_exchange(old)
    s.add(55.0, new, ["k"], Tag("new"))
    assert [(x is new, h.name) for x, _k, h in s.pop_due(60.0)] == [(True, "new")]


def test_uncommitted_entries_stay_resident_until_spilled() -> None:
    s, _store, _files = _schedule()
    _prime(s)
    tags = [Tag(f"m{i}", committed=False) for i in range(5)]
    for i, tag in enumerate(tags):
        s.add(200.0 + i * 20, "x", ["k"], tag)
    s.add(-0.5, "x", ["k"], Tag("first"))  # before the horizon (0)
    assert s.in_memory == 5 + 1
    s.spill_paged()
    assert s.in_memory == 5 + 1  # nothing committed yet: all resident
    for tag in tags[:3]:
        tag.committed = True
    s.spill_paged()
    assert s.in_memory == 2 + 1
    assert _names(s.pop_due(1000.0)) == ["first"] + [f"m{i}" for i in range(5)]


def test_a_broken_bucket_store_keeps_entries_in_memory() -> None:
    s, store, _files = _schedule(FakeFiles(fail_at=1), width=10.0)
    big = "x" * 70_000  # one record over the per-bucket buffer: written at once
    s.add(100.0, "x", [big], Tag("a"))
    s.add(200.0, "x", [big], Tag("b"))
    assert store.broken
    s.add(300.0, "x", ["k"], Tag("c"))
    assert [h.name for h in s.held()] and len(s) == 3
    assert _names(s.pop_due(1000.0)) == ["a", "b", "c"]


# -- the model: the bounded schedule is the plain heap ----------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 400), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("pop"), st.integers(0, 60)),
        st.tuples(st.just("commit")),
        st.tuples(st.just("drop"), st.integers(0, 2)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(_ops, st.sampled_from([(7.0, 2), (50.0, 3), (1000.0, 5)]), st.sampled_from([1, 100]))
def test_the_bounded_schedule_behaves_as_the_plain_heap(
    ops: list[tuple[Any, ...]], shape: tuple[float, int], buffer: int
) -> None:
    width, max_load = shape
    bounded, _store, files = _schedule(width=width, max_load=max_load, buffer=buffer)
    plain = DelaySchedule()
    exchanges = [object(), object(), object()]
    tags: list[Tag] = []
    now = 0.0
    n = 0
    dropped = False
    for op in ops:
        if op[0] == "add":
            _, delay, x, committed = op
            tag = Tag(f"m{n}", committed=committed)
            n += 1
            tags.append(tag)
            # Fractions of a second, equal due times, and some due in the past.
            due = now + (delay - 40) / 4
            for s in (bounded, plain):
                s.add(due, exchanges[x], [tag.name], tag)
        elif op[0] == "pop":
            now += op[1] / 2
            assert bounded.pop_due(now) == plain.pop_due(now)
        elif op[0] == "commit":
            for tag in tags:
                tag.committed = True
            bounded.spill_paged()
        else:
            dropped = True
            bounded.drop_exchange(exchanges[op[1]])
            plain.drop_exchange(exchanges[op[1]])
            exchanges[op[1]] = object()
        assert len(bounded) == len(plain)
        b, p = bounded.next_due(), plain.next_due()
        # Early, never late: a drop may leave a bucket's earliest due time behind.
        assert (b is None) == (p is None) and (b == p or (dropped and b < p))
        assert all(bounded.count_for(x) == plain.count_for(x) for x in exchanges)
    assert bounded.pop_due(float("inf")) == plain.pop_due(float("inf"))
    assert bounded.buckets == 0 and _bucket_files(files) == []


# -- through the vhost: a durable delayed exchange on a fake data directory ------------------


def _start(log_files: FakeFiles, bucket_files: FakeFiles) -> tuple[Broker, DiskDurableLog]:
    log = DiskDurableLog.open(log_files, segment_size=1 << 20)
    broker = Broker(wall_clock=lambda: 1000.0)
    broker.attach_delay_buckets(DelayBuckets(bucket_files))
    recover(broker, log)
    return broker, log


def _setup(vh: VirtualHost) -> None:
    vh.declare_exchange(
        "dx", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"}
    )
    vh.declare_queue("q", durable=True)
    vh.bind_queue("q", "dx", "rk")


def _publish(vh: VirtualHost, delay_ms: int, body: bytes, now: float) -> None:
    raw = BasicProperties(headers={"x-delay": delay_ms}, delivery_mode=2).encode()
    vh.route_message("dx", Message("dx", "rk", raw, body), now)


def _drain(vh: VirtualHost, now: float) -> list[bytes]:
    out = []
    while (entry := vh.queues["q"].get(now)) is not None:
        out.append(entry.message.body)
    return out


def test_a_durable_delayed_exchange_keeps_few_entries_in_memory() -> None:
    log_files, bucket_files = FakeFiles(), FakeFiles()
    broker, log = _start(log_files, bucket_files)
    vh = broker.vhosts["/"]
    _setup(vh)
    delays = [(i * 7919) % 3_600_000 + 1 for i in range(3000)]  # up to an hour, in ms
    for i, delay in enumerate(delays):
        _publish(vh, delay, b"m%d" % i, 0.0)
        if i % 500 == 499:
            log.commit()
            vh.tick(0.0)  # the persister's after_commit: pages out, then to the buckets
    log.commit()
    vh.tick(0.0)
    schedule = vh.delayed
    assert len(schedule) == 3000 and schedule.in_memory < 3000 // 4
    assert all(isinstance(h, LoggedDelayed) and not h.resident for h in schedule.held())
    expected = [b"m%d" % i for i, _ in sorted(enumerate(delays), key=lambda e: (e[1], e[0]))]
    got: list[bytes] = []
    for step in range(1, 62):
        vh.tick(step * 60.0)
        got += _drain(vh, step * 60.0)
    assert got == expected
    assert _bucket_files(bucket_files) == [] and len(schedule) == 0


def test_a_restart_rebuilds_the_buckets_from_the_log() -> None:
    log_files, bucket_files = FakeFiles(), FakeFiles()
    broker, log = _start(log_files, bucket_files)
    vh = broker.vhosts["/"]
    _setup(vh)
    for i in range(400):
        _publish(vh, 1000 * (400 - i), b"m%d" % i, 0.0)
    log.commit()
    vh.tick(0.0)
    log_files.crash()

    broker, log = _start(log_files, bucket_files)  # the old bucket files are removed
    vh = broker.vhosts["/"]
    vh.tick(0.0)  # schedules what was restored
    assert len(vh.delayed) == 400 and vh.delayed.in_memory < 400
    vh.tick(1000.0)
    assert _drain(vh, 1000.0) == [b"m%d" % i for i in reversed(range(400))]


def test_deleting_the_exchange_removes_its_bucket_files() -> None:
    broker, log = _start(FakeFiles(), bucket_files := FakeFiles())
    vh = broker.vhosts["/"]
    _setup(vh)
    for i in range(2000):
        _publish(vh, 3_600_000 - i, b"x" * 100, 0.0)  # one bucket, over its buffer
    log.commit()
    vh.tick(0.0)
    assert _bucket_files(bucket_files) != []
    vh.delete_exchange("dx")
    assert _bucket_files(bucket_files) == [] and len(vh.delayed) == 0


def test_the_codec_writes_the_descriptor_and_reads_it_back() -> None:
    codec = DelayedCodec()
    source: Any = object()  # only passed along: nothing is read here
    held = LoggedDelayed.paged(7, source, (3 << 40) | 123, 45, 6789, "dx", "rk-é", ("b1", "b2"))
    assert codec.pageable(held) == PAGEABLE
    assert codec.pageable(Message("", "", b"", b"")) == IN_MEMORY
    data = codec.encode(("rk-é", "cc"), held)
    for _ in range(2):  # the second time from the caches
        keys, back = codec.decode(b"head" + data, 4)
        assert keys == ("rk-é", "cc") and isinstance(back, LoggedDelayed)
        fields = ("store_id", "where", "properties_size", "body_size", "exchange")
        assert all(getattr(back, f) == getattr(held, f) for f in fields)
        assert (back.routing_key, back.bcc, back.source) == ("rk-é", ("b1", "b2"), source)
        assert back.message is None and not back.resident
