"""Ready entries beyond the memory budget live in per-queue delta files (docs/storage.md
"Paging"): order, requeue, priorities, TTL, limits, purge, delete and restart still hold,
and the in-memory part stays within the budget however long the backlog grows."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.broker import Broker
from amqpd.broker.durability import enqueue_routed
from amqpd.broker.message import Message
from amqpd.broker.paging import ENTRY_OVERHEAD, Paging
from amqpd.broker.policies import Policy
from amqpd.broker.queue import Queue
from amqpd.broker.restore import recover
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.delta import DeltaFiles
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.durable import run_callbacks
from amqpd.storage.fakefiles import FakeFiles

PERSISTENT = BasicProperties(delivery_mode=2).encode()
TRANSIENT = BasicProperties(delivery_mode=1).encode()
BODY = 100
ENTRY = ENTRY_OVERHEAD + BODY  # what one resident entry counts


def _start(
    files: FakeFiles, spill: FakeFiles, budget: int
) -> tuple[Broker, DiskDurableLog, Paging]:
    """As server/storage.py open_storage does: paging attached before the restore."""
    log = DiskDurableLog.open(files, segment_size=8192)
    broker = Broker()
    paging = Paging(budget, log=log, deltas=DeltaFiles(spill, file_size=2000, buffer_size=300))
    broker.attach_paging(paging)
    recover(broker, log)
    return broker, log, paging


def _body(rk: str, i: int) -> bytes:
    return f"{rk}-{i:04d}".encode().ljust(BODY, b".")


def _publish(
    vh: VirtualHost,
    rk: str,
    n: int,
    props: bytes = PERSISTENT,
    exchange: str = "",
    start: int = 0,
    now: float | None = None,
) -> None:
    for i in range(start, start + n):
        queues, message = vh.route_message(exchange, Message(exchange, rk, props, _body(rk, i)))
        enqueue_routed(vh.durable, vh.name, message, queues, now)


def _drain(queue: Queue) -> list[bytes]:
    out = []
    while (entry := queue.get()) is not None:
        out.append(entry.message.body)
        queue.ack(entry)
    return out


def _in_delta(queue: Queue) -> int:
    delta = queue._ready._delta  # type: ignore[attr-defined]
    return 0 if delta is None else len(delta)


def _in_delta_levels(queue: Queue) -> int:
    levels = queue._ready._levels  # type: ignore[attr-defined]
    return sum(0 if level._delta is None else len(level._delta) for level in levels)


def _delta_files(spill: FakeFiles) -> list[str]:
    return [n for n in spill.list() if n.endswith(".delta")]


def test_a_backlog_beyond_the_budget_goes_to_the_delta_and_comes_back_in_order() -> None:
    spill = FakeFiles()
    broker, log, paging = _start(FakeFiles(), spill, budget=10 * ENTRY)
    vh = broker.vhosts["/"]
    queue = vh.declare_queue("q", durable=True)
    for k in range(10):
        _publish(vh, "q", 100, start=100 * k)
        run_callbacks(log.commit())
    assert queue.message_count == 1000
    assert queue.statistics().messages_ready_bytes == 1000 * BODY  # limits count them all
    assert _in_delta(queue) == 990  # the head (10) in memory, the rest on disk
    assert paging.ready_bytes == 10 * ENTRY
    files = _delta_files(spill)
    assert len(files) > 3
    # Bodies already in the log are not copied: a descriptor holds their place only.
    assert sum(len(spill.read(n)) for n in files) < 1000 * BODY
    assert _drain(queue) == [_body("q", i) for i in range(1000)]
    assert _delta_files(spill) == []
    assert paging.ready_bytes == 0
    assert paging.from_delta == paging.to_delta > 900


def test_transient_bodies_go_inline_and_nothing_spills() -> None:
    spill = FakeFiles()
    broker, _, paging = _start(FakeFiles(), spill, budget=5 * ENTRY)
    vh = broker.vhosts["/"]
    queue = vh.declare_queue("t", durable=False)
    _publish(vh, "t", 200, TRANSIENT)
    assert _in_delta(queue) == 195
    assert paging.ready_bytes == 5 * ENTRY
    assert sum(len(spill.read(n)) for n in _delta_files(spill)) > 195 * BODY
    assert not [n for n in spill.list() if n.endswith(".spill")]
    # A persistent message also routed to a transient queue: not the log's to keep.
    vh.declare_queue("d", durable=True)
    vh.bind_queue("t", "amq.fanout", "")
    vh.bind_queue("d", "amq.fanout", "")
    _publish(vh, "f", 20, PERSISTENT, exchange="amq.fanout")
    assert _drain(queue) == [_body("t", i) for i in range(200)] + [_body("f", i) for i in range(20)]
    assert _drain(vh.queues["d"]) == [_body("f", i) for i in range(20)]


def test_requeued_entries_come_out_before_later_ones_from_the_delta() -> None:
    broker, _, _ = _start(FakeFiles(), FakeFiles(), budget=3 * ENTRY)
    vh = broker.vhosts["/"]
    queue = vh.declare_queue("t")
    _publish(vh, "t", 50, TRANSIENT)
    got = [queue.get() for _ in range(5)]  # 3 from memory, then the delta's first chunk
    assert all(g is not None for g in got)
    queue.requeue([g for g in got[1:4] if g is not None])
    entry = queue.get()
    assert entry is not None and (entry.message.body, entry.redelivered) == (_body("t", 1), True)
    rest = [entry.message.body, *_drain(queue)]
    assert rest == [_body("t", i) for i in range(1, 4)] + [_body("t", i) for i in range(5, 50)]


def test_each_priority_level_has_its_own_delta() -> None:
    broker, _, _ = _start(FakeFiles(), FakeFiles(), budget=4 * ENTRY)
    vh = broker.vhosts["/"]
    queue = vh.declare_queue("p", arguments={"x-max-priority": 3})
    expected: dict[int, list[bytes]] = {0: [], 1: [], 2: [], 3: []}
    for i in range(60):
        priority = i % 4
        props = BasicProperties(delivery_mode=1, priority=priority).encode()
        body = _body("p", i)
        vh.route_message("", Message("", "p", props, body))
        queue.enqueue(Message("", "p", props, body))
        expected[priority].append(body)
    levels = queue._ready._levels  # type: ignore[attr-defined]
    assert all(level._delta is not None and len(level._delta) for level in levels[1:])
    assert queue.message_count == 60
    assert _drain(queue) == expected[3] + expected[2] + expected[1] + expected[0]


def test_ttl_at_the_head_expires_delta_entries_and_dead_letters_them() -> None:
    broker, _, _ = _start(FakeFiles(), FakeFiles(), budget=2 * ENTRY)
    vh = broker.vhosts["/"]
    vh.declare_queue("dlq")
    vh.bind_queue("dlq", "amq.fanout", "")
    queue = vh.declare_queue(
        "t",
        arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "amq.fanout"},
        now=0.0,
    )
    _publish(vh, "t", 20, TRANSIENT, now=0.0)
    _publish(vh, "t", 20, TRANSIENT, start=20, now=0.5)
    assert _in_delta(queue) == 38
    queue.tick(1.2)  # the first 20 are due, the last 20 not yet (their expiry round-trips)
    assert queue.message_count == 20
    assert vh.queues["dlq"].message_count == 20
    assert queue.next_deadline() == 1.5
    assert [e.message.body for e in [queue.get(1.3)] if e] == [_body("t", 20)]
    assert [m for m in _drain(vh.queues["dlq"])] == [_body("t", i) for i in range(20)]


def test_length_limits_count_and_drop_delta_entries() -> None:
    broker, _, _ = _start(FakeFiles(), FakeFiles(), budget=3 * ENTRY)
    vh = broker.vhosts["/"]
    head = vh.declare_queue("h", arguments={"x-max-length": 10})
    _publish(vh, "h", 40, TRANSIENT)
    assert _drain(head) == [_body("h", i) for i in range(30, 40)]
    rej = vh.declare_queue(
        "r", arguments={"x-max-length-bytes": 25 * BODY, "x-overflow": "reject-publish"}
    )
    _publish(vh, "r", 40, TRANSIENT)
    assert rej.message_count == 25
    assert rej.statistics().rejected == 15
    assert _drain(rej) == [_body("r", i) for i in range(25)]


def test_purge_logs_every_stored_id_and_deletes_the_files() -> None:
    files, spill = FakeFiles(), FakeFiles()
    broker, log, _ = _start(files, spill, budget=5 * ENTRY)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    vh.declare_queue("keep", durable=True)
    _publish(vh, "q", 300)
    _publish(vh, "keep", 30)
    run_callbacks(log.commit())
    assert vh.purge_queue("q", None) == 300
    assert _in_delta(vh.queues["q"]) == 0
    assert all(n.startswith("00000002-") for n in _delta_files(spill))  # keep's only
    run_callbacks(log.commit())
    log.close()
    broker, log, _ = _start(files, FakeFiles(), budget=5 * ENTRY)
    vh = broker.vhosts["/"]
    assert vh.queues["q"].message_count == 0  # the purge was logged, delta entries too
    assert _drain(vh.queues["keep"]) == [_body("keep", i) for i in range(30)]


def test_deleting_a_queue_deletes_its_delta_files() -> None:
    spill = FakeFiles()
    broker, log, paging = _start(FakeFiles(), spill, budget=5 * ENTRY)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "q", 300)
    run_callbacks(log.commit())
    assert _delta_files(spill)
    vh.delete_queue("q", if_unused=False, if_empty=False, owner=None)
    assert _delta_files(spill) == []
    assert paging.ready_bytes == 0


def test_a_restart_with_a_backlog_over_the_budget_restores_into_the_delta() -> None:
    # A priority queue's restored entries go through enqueue, so to the delta; a plain
    # queue's stay in the log as its logged part (ready.py), nothing of them in memory.
    files = FakeFiles()
    broker, log, _ = _start(files, FakeFiles(), budget=10**9)  # all in memory before
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True, arguments={"x-max-priority": 2})
    vh.declare_queue("plain", durable=True)
    _publish(vh, "q", 200)
    _publish(vh, "plain", 300)
    first = vh.queues["plain"].get()
    assert first is not None  # delivered once: comes back redelivered
    run_callbacks(log.commit())
    log.close()
    spill = FakeFiles()
    broker, log, paging = _start(files, spill, budget=20 * ENTRY)
    vh = broker.vhosts["/"]
    plain = vh.queues["plain"]
    assert plain.message_count == 300
    assert plain.statistics().messages_ready_bytes == 300 * BODY
    assert _in_delta(plain) == 0 and _in_delta_levels(vh.queues["q"]) > 150
    # Restored bodies stay in the log: in memory only the entries, within the budget.
    assert paging.ready_bytes <= 20 * ENTRY
    entry = plain.get()
    assert entry is not None and entry.redelivered and entry.message.body == _body("plain", 0)
    plain.ack(entry)
    assert _drain(plain) == [_body("plain", i) for i in range(1, 300)]
    assert _drain(vh.queues["q"]) == [_body("q", i) for i in range(200)]
    assert _delta_files(spill) == []


# -- a queue with a tiny budget behaves as one without paging ------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.booleans(), st.sampled_from([None, "0", "5", "50"])),
        st.tuples(st.just("get")),
        st.tuples(st.just("ack"), st.integers(0, 5)),
        st.tuples(st.just("requeue"), st.integers(0, 5)),
        st.tuples(st.just("reject"), st.integers(0, 5)),
        st.tuples(st.just("purge")),
        st.tuples(st.just("commit")),
        st.tuples(st.just("time"), st.integers(1, 20)),
    ),
    max_size=120,
)


class _Side:
    def __init__(self, broker: Broker, log: DiskDurableLog | None) -> None:
        self.broker = broker
        self.log = log
        self.vh = broker.vhosts["/"]
        self.vh.declare_queue("dl", durable=True)
        self.vh.bind_queue("dl", "amq.fanout", "")
        args = {"x-dead-letter-exchange": "amq.fanout", "x-max-length": 40}
        self.queue = self.vh.declare_queue("q", durable=True, arguments=args, now=0.0)
        self.unacked: list[Any] = []


@settings(max_examples=60, deadline=None)
@given(_OPS)
def test_a_tiny_budget_changes_nothing_observable(ops: list[tuple[Any, ...]]) -> None:
    paged_broker, log, paging = _start(FakeFiles(), FakeFiles(), budget=3 * ENTRY)
    sides = [_Side(paged_broker, log), _Side(Broker(), None)]
    now = 0.0
    n = 0
    for op in ops:
        seen = []
        for side in sides:
            vh, queue = side.vh, side.queue
            if op[0] == "publish":
                persistent, expiration = op[1], op[2]
                props = BasicProperties(delivery_mode=2 if persistent else 1, expiration=expiration)
                message = Message("", "q", props.encode(), _body("m", n))
                queues, message = vh.route_message("", message)
                seen.append(enqueue_routed(vh.durable, vh.name, message, queues, now))
            elif op[0] == "get":
                entry = queue.get(now)
                if entry is not None:
                    side.unacked.append(entry)
                    seen.append((entry.message.body, entry.redelivered))
                else:
                    seen.append(None)
            elif op[0] in ("ack", "requeue", "reject"):
                if side.unacked:
                    entry = side.unacked.pop(op[1] % len(side.unacked))
                    if op[0] == "ack":
                        queue.ack(entry)
                    elif op[0] == "requeue":
                        queue.requeue([entry], now)
                    else:
                        queue.discard(entry, now)
            elif op[0] == "purge":
                seen.append(vh.purge_queue("q", None))
            elif op[0] == "commit":
                if side.log is not None:
                    run_callbacks(side.log.commit())
            else:
                vh.tick(now + op[1])
            seen.append(
                (
                    queue.message_count,
                    queue.statistics().messages_ready_bytes,
                    vh.queues["dl"].message_count,
                    queue.next_deadline(),
                )
            )
        if op[0] == "publish":
            n += 1
        if op[0] == "time":
            now += op[1]
        assert seen[: len(seen) // 2] == seen[len(seen) // 2 :], op
    for side in sides:
        side.queue.requeue(side.unacked, now)
    drained = [
        [(e.message.body, e.redelivered) for e in iter(lambda s=s: s.queue.get(now), None)]
        for s in sides
    ]
    assert drained[0] == drained[1]
    assert paging.ready_bytes >= 0


def test_declare_ok_counts_and_a_policy_re_applied_drops_from_the_delta() -> None:
    broker, _, _ = _start(FakeFiles(), FakeFiles(), budget=3 * ENTRY)
    vh = broker.vhosts["/"]
    vh.declare_queue("q")
    _publish(vh, "q", 50, TRANSIENT)
    assert vh.declare_queue("q", passive=True).message_count == 50
    broker.add_policy(Policy("/", "short", "^q$", {"max-length": 7}))
    queue = vh.queues["q"]
    assert queue.message_count == 7
    assert _drain(queue) == [_body("q", i) for i in range(43, 50)]
