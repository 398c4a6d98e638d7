"""Stateful model test: Queue against a plain list model (hypothesis RuleBasedStateMachine).

The model keeps ready messages as a list sorted by seq (original position) and unacked
messages in a dict; every rule does the same to both and the invariants compare them. A
consumer with credit may be attached: whenever it has credit and messages are ready, the
model hands it the head of the ready list, which is what the queue must have delivered.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from amqpd.broker.message import Message
from amqpd.broker.queue import Queue, QueuedMessage
from amqpd.protocol.properties import BasicProperties

MAX_PRIORITY = 3


class CreditConsumer:
    no_ack = False  # a manual-ack consumer (queue.Consumer)
    tag = "c"
    exclusive = False

    def __init__(self) -> None:
        self.priority = 0
        self.credit = 0
        self.delivered: list[QueuedMessage] = []

    def ready(self) -> bool:
        return self.credit > 0

    def deliver(self, queue: Queue, entry: QueuedMessage) -> None:
        self.credit -= 1
        self.delivered.append(entry)

    def cancelled_by_server(self, queue: Queue) -> None:
        raise AssertionError("queue not deleted in this test")


class QueueMachine(RuleBasedStateMachine):
    """A plain queue; PriorityQueueMachine below runs the same rules with x-max-priority."""

    priorities = False

    def __init__(self) -> None:
        super().__init__()
        args = {"x-max-priority": MAX_PRIORITY} if self.priorities else {}
        self.queue = Queue("q", arguments=args)
        self.counter = 0
        # model: ready as (sort key, seq, body, redelivered) kept sorted: the delivery order
        self.ready: list[tuple[int, int, bytes, bool]] = []
        self.level: dict[int, int] = {}
        self.unacked: dict[int, QueuedMessage] = {}
        self.consumer = CreditConsumer()
        self.attached = False
        self.model_credit = 0

    def model_dispatch(self) -> None:
        """What the queue must have delivered since the last rule, in order."""
        expected = []
        while self.attached and self.model_credit and self.ready:
            self.model_credit -= 1
            expected.append(self.ready.pop(0)[1:])
        got = self.consumer.delivered
        assert [(e.seq, e.message.body, e.redelivered) for e in got] == expected
        for e in got:
            self.unacked[e.seq] = e
        got.clear()

    @rule(priority=st.one_of(st.none(), st.integers(0, MAX_PRIORITY + 2)))
    def enqueue(self, priority: int | None) -> None:
        self.counter += 1
        seq = self.counter
        body = str(seq).encode()
        raw = BasicProperties(priority=priority).encode()
        self.queue.enqueue(Message("", "q", raw, body))
        # higher level first: sort key is minus the level (no priority = 0, capped at max)
        level = min(priority or 0, MAX_PRIORITY) if self.priorities else 0
        self.level[seq] = level
        self.ready.append((-level, seq, body, False))
        self.ready.sort()
        self.model_dispatch()

    @rule()
    def get(self) -> None:
        entry = self.queue.get()
        if not self.ready:
            assert entry is None
            return
        _, seq, body, redelivered = self.ready.pop(0)
        assert entry is not None
        assert (entry.seq, entry.message.body, entry.redelivered) == (seq, body, redelivered)
        self.unacked[seq] = entry

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.unacked)))
        self.queue.ack(self.unacked.pop(seq))

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.unacked)))
        self.queue.discard(self.unacked.pop(seq))

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.unacked)), unique=True, min_size=1))
        entries = [self.unacked.pop(s) for s in seqs]
        self.queue.requeue(entries)
        for e in entries:
            self.ready.append((-self.level[e.seq], e.seq, e.message.body, True))
        self.ready.sort()
        self.model_dispatch()

    @precondition(lambda self: not self.attached)
    @rule()
    def attach(self) -> None:
        self.attached = True
        self.queue.add_consumer(self.consumer)
        self.model_dispatch()

    @precondition(lambda self: self.attached)
    @rule()
    def detach(self) -> None:
        self.attached = False
        self.queue.remove_consumer(self.consumer)

    @rule(n=st.integers(1, 3))
    def grant_credit(self, n: int) -> None:
        self.consumer.credit += n
        self.model_credit += n
        self.queue.dispatch()
        self.model_dispatch()

    @rule()
    def purge(self) -> None:
        assert self.queue.purge() == len(self.ready)
        self.ready.clear()

    @invariant()
    def counts_agree(self) -> None:
        assert self.queue.message_count == len(self.ready)
        assert self.queue.unacked_count == len(self.unacked)


class PriorityQueueMachine(QueueMachine):
    priorities = True


QueueMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
PriorityQueueMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestQueueMachine = QueueMachine.TestCase
TestPriorityQueueMachine = PriorityQueueMachine.TestCase
