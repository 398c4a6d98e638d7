"""Consumer priorities (x-priority) and single active consumer (x-single-active-consumer)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.message import Message
from amqpd.broker.queue import Queue

from .conftest import FakeConsumer


def fill(q: Queue, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        q.enqueue(Message("", "q", b"", f"m{i}".encode()), now=0.0)


def test_higher_priority_first_while_it_has_credit() -> None:
    q = Queue("q")
    low, high = (
        FakeConsumer("low", credit=2, priority=1),
        FakeConsumer("high", credit=2, priority=10),
    )
    q.add_consumer(low)
    q.add_consumer(high)
    fill(q, 3)
    assert high.bodies() == [b"m0", b"m1"] and low.bodies() == [b"m2"]


def test_round_robin_within_one_priority_and_lower_only_when_blocked() -> None:
    q = Queue("q")
    a, b = FakeConsumer("a", priority=5), FakeConsumer("b", priority=5)
    c = FakeConsumer("c")
    for consumer in (a, b, c):
        q.add_consumer(consumer)
    fill(q, 4)
    assert a.bodies() == [b"m0", b"m2"] and b.bodies() == [b"m1", b"m3"] and c.bodies() == []
    a.credit, b.credit = 0, 0
    fill(q, 1, 4)
    assert c.bodies() == [b"m4"]


def test_negative_priorities_rank_below_the_default() -> None:
    q = Queue("q")
    neg, default = FakeConsumer("neg", priority=-5), FakeConsumer("default")
    q.add_consumer(neg)
    q.add_consumer(default)
    fill(q, 2)
    assert default.bodies() == [b"m0", b"m1"] and neg.bodies() == []


def test_removing_a_priority_level() -> None:
    q = Queue("q")
    high, low = FakeConsumer("high", priority=3), FakeConsumer("low")
    q.add_consumer(high)
    q.add_consumer(low)
    q.remove_consumer(high)
    fill(q, 1)
    assert low.bodies() == [b"m0"]


def sac() -> Queue:
    return Queue("q", arguments={"x-single-active-consumer": True})


def test_single_active_consumer_gets_everything() -> None:
    q = sac()
    a, b = FakeConsumer("a"), FakeConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    fill(q, 3)
    assert a.bodies() == [b"m0", b"m1", b"m2"] and b.bodies() == []
    assert q.single_active_consumer is a and q.consumer_count == 2


def test_waiting_consumer_gets_nothing_even_when_the_active_one_is_blocked() -> None:
    q = sac()
    a, b = FakeConsumer("a", credit=1), FakeConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    fill(q, 3)
    assert a.bodies() == [b"m0"] and b.bodies() == [] and q.message_count == 2


def test_hand_over_in_registration_order_with_the_ready_messages() -> None:
    q = sac()
    a, b, c = FakeConsumer("a", credit=1), FakeConsumer("b"), FakeConsumer("c")
    for consumer in (a, b, c):
        q.add_consumer(consumer)
    fill(q, 3)
    [first] = a.delivered
    q.remove_consumer(a)  # basic.cancel: its unacked delivery stays unacked
    assert q.single_active_consumer is b
    assert b.bodies() == []  # RabbitMQ 3.13: nothing until the queue runs again
    q.dispatch()
    assert b.bodies() == [b"m1", b"m2"]
    q.requeue([first])  # its channel closes later: the message goes to the active one
    assert b.bodies() == [b"m1", b"m2", b"m0"] and c.bodies() == []


def test_hand_over_prefers_the_highest_priority_waiting_consumer() -> None:
    q = sac()
    a, b, c = FakeConsumer("a"), FakeConsumer("b", priority=1), FakeConsumer("c", priority=7)
    for consumer in (a, b, c):
        q.add_consumer(consumer)
    assert q.single_active_consumer is a  # the first one, whatever the priorities
    q.remove_consumer(a)
    assert q.single_active_consumer is c


def test_last_consumer_gone_then_a_new_one_is_active() -> None:
    q = sac()
    a = FakeConsumer("a")
    q.add_consumer(a)
    q.remove_consumer(a)
    assert q.single_active_consumer is None
    fill(q, 1)
    b = FakeConsumer("b")
    q.add_consumer(b)
    assert b.bodies() == [b"m0"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 2)),
            st.tuples(st.just("remove"), st.integers(0, 9)),
            st.tuples(st.just("pub"), st.integers(1, 3)),
            st.tuples(st.just("credit"), st.integers(0, 9)),
        ),
        max_size=40,
    )
)
def test_model_single_active_consumer(ops: list[tuple[str, int]]) -> None:
    """Only the active consumer ever receives; it is the first of the current consumers when
    priorities are equal; nothing stays ready while the active one has credit."""
    q = sac()
    live: list[FakeConsumer] = []
    all_consumers: list[FakeConsumer] = []
    published = 0
    for op, arg in ops:
        if op == "add":
            c = FakeConsumer(f"c{len(all_consumers)}", credit=arg)
            all_consumers.append(c)
            live.append(c)
            before = {id(x): len(x.delivered) for x in all_consumers}
            q.add_consumer(c)
        elif op == "remove" and live:
            c = live.pop(arg % len(live))
            before = {id(x): len(x.delivered) for x in all_consumers}
            q.remove_consumer(c)
            q.dispatch()  # the next queue event (here: right away) runs the hand-over
        elif op == "pub":
            before = {id(x): len(x.delivered) for x in all_consumers}
            fill(q, arg, published)
            published += arg
        elif op == "credit" and live:
            c = live[arg % len(live)]
            before = {id(x): len(x.delivered) for x in all_consumers}
            c.credit = (c.credit or 0) + 1
            q.dispatch()
        else:
            continue
        active = q.single_active_consumer
        assert active is (live[0] if live else None)
        for x in all_consumers:
            if x is not active:
                assert len(x.delivered) == before[id(x)], "a waiting consumer got a delivery"
        if active is not None and active.ready():
            assert q.message_count == 0
    delivered = sum(len(x.delivered) for x in all_consumers)
    assert delivered + q.message_count == published
