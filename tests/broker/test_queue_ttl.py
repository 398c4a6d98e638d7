"""Queue TTL (reference 2.2): per-queue and per-message, expiry at the head, deadlines.

Time is a number passed in; nothing sleeps.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.message import Message
from amqpd.broker.queue import Queue
from amqpd.protocol.properties import BasicProperties

from .conftest import FakeConsumer


def m(body: bytes, expiration: str | None = None, priority: int | None = None) -> Message:
    props = BasicProperties(expiration=expiration, priority=priority)
    return Message("", "q", props.encode(), body)


class Recorder:
    """A dead-letter hook that records (body, reason, now)."""

    def __init__(self, queue: Queue) -> None:
        self.seen: list[tuple[bytes, str, float]] = []
        queue.on_dead_letter = self

    def __call__(self, queue: Queue, message: Message, reason: str, now: float) -> None:
        self.seen.append((message.body, reason, now))


def test_queue_ttl_expires_at_the_head_and_never_gets_delivered() -> None:
    q = Queue("q", arguments={"x-message-ttl": 1000})
    dead = Recorder(q)
    q.enqueue(m(b"a"), now=10.0)
    q.enqueue(m(b"b"), now=10.5)
    assert q.next_deadline() == 11.0
    entry = q.get(now=10.9)
    assert entry is not None and entry.message.body == b"a"
    assert q.get(now=11.5) is None  # b expired at 11.5: dropped, not got
    assert dead.seen == [(b"b", "expired", 11.5)]
    assert q.statistics().expired == 1


def test_per_message_ttl_and_the_lower_of_the_two_wins() -> None:
    q = Queue("q", arguments={"x-message-ttl": 5000})
    q.enqueue(m(b"short", expiration="1000"), now=0.0)
    q.enqueue(m(b"long", expiration="60000"), now=0.0)
    entries = [q.get(now=0.0), q.get(now=0.0)]
    assert [e.expires_at for e in entries if e] == [1.0, 5.0]


def test_expired_message_behind_a_live_one_stays_until_it_reaches_the_head() -> None:
    # Classic queues expire only at the head: the expired one still counts as ready.
    q = Queue("q")
    dead = Recorder(q)
    q.enqueue(m(b"live"), now=0.0)
    q.enqueue(m(b"short", expiration="10"), now=0.0)
    q.tick(5.0)
    assert q.message_count == 2 and dead.seen == []
    live = q.get(now=5.0)
    assert live is not None and live.message.body == b"live"
    # Now at the head and long expired: basic.get drops it and finds nothing.
    assert q.get(now=5.0) is None
    assert dead.seen == [(b"short", "expired", 5.0)]


def test_ttl_zero_is_delivered_to_a_ready_consumer_and_expires_otherwise() -> None:
    q = Queue("q")
    dead = Recorder(q)
    q.enqueue(m(b"gone", expiration="0"), now=1.0)
    assert q.message_count == 0 and dead.seen == [(b"gone", "expired", 1.0)]
    c = FakeConsumer(credit=1)
    q.add_consumer(c, now=1.0)
    q.enqueue(m(b"caught", expiration="0"), now=2.0)
    assert c.bodies() == [b"caught"]
    # The consumer has no credit left: the next TTL-0 message expires at once.
    q.enqueue(m(b"missed", expiration="0"), now=3.0)
    assert c.bodies() == [b"caught"] and dead.seen[-1] == (b"missed", "expired", 3.0)


def test_dispatch_never_delivers_an_expired_message() -> None:
    q = Queue("q", arguments={"x-message-ttl": 100})
    dead = Recorder(q)
    q.enqueue(m(b"old"), now=0.0)
    q.enqueue(m(b"new"), now=0.5)
    c = FakeConsumer()
    q.add_consumer(c, now=0.55)  # "old" expired at 0.1
    assert c.bodies() == [b"new"]
    assert [d[:2] for d in dead.seen] == [(b"old", "expired")]


def test_requeued_message_keeps_its_original_expiry() -> None:
    q = Queue("q", arguments={"x-message-ttl": 1000})
    dead = Recorder(q)
    q.enqueue(m(b"a"), now=0.0)
    entry = q.get(now=0.5)
    assert entry is not None and entry.expires_at == 1.0
    q.requeue([entry], now=0.8)
    again = q.get(now=0.9)
    assert again is not None and again.redelivered and again.expires_at == 1.0
    q.requeue([again], now=1.2)  # already past its expiry: dropped at once, at the head
    assert q.message_count == 0 and dead.seen == [(b"a", "expired", 1.2)]


def test_tick_expires_the_head_promptly_and_reports_the_next_deadline() -> None:
    q = Queue("q")
    dead = Recorder(q)
    reported: list[float] = []
    q.on_deadline = lambda queue, deadline: reported.append(deadline)
    q.enqueue(m(b"a", expiration="2000"), now=0.0)
    q.enqueue(m(b"b", expiration="3000"), now=0.0)
    assert reported == [2.0] and q.scheduled_deadline == 2.0
    q.tick(2.0)
    assert dead.seen == [(b"a", "expired", 2.0)]
    assert reported == [2.0, 3.0]
    q.tick(3.0)
    assert q.message_count == 0 and q.next_deadline() is None
    assert reported == [2.0, 3.0]


def test_only_earlier_deadlines_are_reported() -> None:
    q = Queue("q")
    reported: list[float] = []
    q.on_deadline = lambda queue, deadline: reported.append(deadline)
    q.enqueue(m(b"a", expiration="20000"), now=0.0)
    a = q.get(now=1.0)
    assert a is not None and reported == [20.0]
    q.enqueue(m(b"b", expiration="5000"), now=2.0)  # 7.0 is earlier than 20.0
    assert reported == [20.0, 7.0]
    q.tick(7.0)  # b expires; nothing left at the head
    assert reported == [20.0, 7.0] and q.message_count == 0
    q.enqueue(m(b"c", expiration="100000"), now=8.0)
    assert reported[-1] == 108.0
    q.requeue([a], now=9.0)  # a is back at the head: its 20.0 is earlier than 108.0
    assert reported[-1] == 20.0 and q.scheduled_deadline == 20.0


def test_no_ttl_queue_has_no_deadline() -> None:
    q = Queue("q")
    q.enqueue(m(b"a"), now=0.0)
    assert q.next_deadline() is None


def test_priority_queue_expires_in_delivery_order() -> None:
    q = Queue("q", arguments={"x-max-priority": 5})
    dead = Recorder(q)
    q.enqueue(m(b"low", expiration="10", priority=1), now=0.0)
    q.enqueue(m(b"high", priority=5), now=0.0)
    assert q.next_deadline() is None  # the head ("high") does not expire
    got = q.get(now=1.0)
    assert got is not None and got.message.body == b"high"
    assert q.get(now=1.0) is None and dead.seen == [(b"low", "expired", 1.0)]


def test_now_none_uses_the_latest_time_the_queue_was_given() -> None:
    q = Queue("q", arguments={"x-message-ttl": 1000})
    q.enqueue(m(b"a"), now=5.0)
    q.enqueue(m(b"b"))  # no clock at hand: 5.0, never earlier
    entries = [q.get(), q.get()]
    assert [e.expires_at for e in entries if e] == [6.0, 6.0]


def test_an_invalid_expiration_text_counts_as_no_ttl() -> None:
    # The session rejects these at publish (406); a message built otherwise has no TTL.
    q = Queue("q")
    q.enqueue(m(b"a", expiration="abc"), now=0.0)
    entry = q.get(now=1e9)
    assert entry is not None and entry.expires_at is None


# -- model: TTL + requeue ordering -------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.sampled_from([None, "0", "500", "1500", "3000"])),
        st.tuples(st.just("get"), st.none()),
        st.tuples(st.just("requeue"), st.none()),
        st.tuples(st.just("advance"), st.sampled_from([0.1, 0.5, 1.0, 2.0])),
        st.tuples(st.just("tick"), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops, queue_ttl=st.sampled_from([None, 1000, 2500]))
def test_model_ttl_requeue_invariants(ops: list[tuple[str, Any]], queue_ttl: int | None) -> None:
    """Whatever the interleaving: nothing expired is handed out; every message is accounted
    for exactly once (got, held, ready, or expired); got messages come in seq order apart
    from redeliveries; an expired message was really due when it was dropped."""
    args = {"x-message-ttl": queue_ttl} if queue_ttl is not None else {}
    q = Queue("q", arguments=args)
    expired: list[tuple[int, float]] = []
    expected: dict[int, float | None] = {}
    q.on_dead_letter = lambda queue, msg, reason, now: expired.append((int(msg.body), now))
    now = 0.0
    held: list[Any] = []
    published = 0
    last_fresh_seq = 0
    for op, arg in ops:
        if op == "pub":
            ttls = [t for t in (queue_ttl, int(arg) if arg is not None else None) if t is not None]
            expected[published] = now + min(ttls) / 1000 if ttls else None
            q.enqueue(m(str(published).encode(), expiration=arg), now=now)
            published += 1
        elif op == "get":
            entry = q.get(now=now)
            if entry is not None:
                assert entry.expires_at == expected[int(entry.message.body)]
                assert entry.expires_at is None or entry.expires_at > now
                if not entry.redelivered:
                    assert entry.seq > last_fresh_seq
                    last_fresh_seq = entry.seq
                held.append(entry)
        elif op == "requeue" and held:
            q.requeue([held.pop(0)], now=now)
        elif op == "advance":
            now += arg
        elif op == "tick":
            q.tick(now)
    for body, at in expired:
        # Dropped only once due, by the expiry fixed at publish (kept across requeues).
        expiry = expected[body]
        assert expiry is not None and expiry <= at
    # Nothing is acked in this model: every message is ready, held or expired, once.
    assert len(held) + q.message_count + len(expired) == published
    assert q.unacked_count == len(held)
    assert len({b for b, _ in expired}) == len(expired)
