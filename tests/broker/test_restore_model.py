"""Stateful test: whatever a client does to the broker, a clean restart gives back exactly
its durable part.

Hypothesis drives a Broker with a DiskDurableLog on FakeFiles through declares, deletes
(with their cascades: bindings, auto-delete exchanges), binds and unbinds (queue and
exchange destinations), persistent and transient publishes, gets, acks, requeues, rejects
and purges. A restart requeues the unacked (as closing the channels does), stops cleanly,
recovers into a fresh Broker and compares durable projections: every hook the vhost and
queue call, and every replay rule of the catalog, has to agree.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from amqpd.broker.broker import Broker
from amqpd.broker.durability import enqueue_routed
from amqpd.broker.exchange import Exchange
from amqpd.broker.message import Message
from amqpd.broker.queue import QueuedMessage
from amqpd.broker.restore import recover
from amqpd.errors import AMQPError
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles

# Few names, so that hypothesis keeps running into the same entities (redeclares, unbinds
# of existing bindings, queues filling up to their limit).
EXCHANGES = ("x1", "x2")
QUEUES = ("q1", "q2")
KEYS = ("a",)
PERSISTENT = BasicProperties(delivery_mode=2).encode()
TRANSIENT = BasicProperties(delivery_mode=1).encode()


def _ready(queue: Any) -> list[QueuedMessage]:
    ready = queue._ready
    entries = list(ready._fresh) + [e for _, e in ready._requeued] + [e for _, e in ready._tail]
    if ready._logged is not None:  # a restored tail still in the log: read a copy of it
        logged = ready._logged.copy()
        while len(logged):
            entries += logged.take(256, 1 << 30)
    return sorted(entries, key=lambda e: e.seq)


def durable_projection(broker: Broker) -> dict[str, Any]:
    vh = broker.vhosts["/"]
    exchanges = {
        x.name: (x.type, x.auto_delete, x.internal, dict(x.arguments))
        for x in vh.exchanges.values()
        if x.durable and x.name and not x.name.startswith("amq.")
    }
    queues = {
        q.name: (
            q.auto_delete,
            dict(q.arguments),
            [(e.message.body, e.redelivered) for e in _ready(q) if e.message.persistent],
        )
        for q in vh.queues.values()
        if q.durable
    }
    bindings = sorted(
        (x.name, isinstance(d, Exchange), d.name, key, sorted(args.items()))
        for x in vh.exchanges.values()
        for d, key, args in x.impl.bindings()
        if x.durable and d.durable
    )
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}


class BrokerRestartMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.files = FakeFiles()
        self._start()
        self.counter = 0
        # Start with durable things in place, so that the rules act on them from step one
        # (uniformly chosen rules otherwise spend most runs building them).
        self.vh.declare_exchange("x1", "direct", durable=True)
        self.vh.declare_exchange("x2", "fanout", durable=True, auto_delete=True)
        self.vh.declare_queue("q1", durable=True)
        self.vh.declare_queue("q2", durable=True, arguments={"x-max-length": 2})
        self.vh.bind_queue("q1", "x1", "a")
        self.vh.bind_queue("q2", "x2", "a")

    def _start(self) -> None:
        self.log = DiskDurableLog.open(self.files, segment_size=2048)
        self.broker = Broker()
        recover(self.broker, self.log)
        self.vh = self.broker.vhosts["/"]
        self.unacked: list[tuple[Any, QueuedMessage]] = []

    def _try(self, fn: Any, *args: Any, **kw: Any) -> None:
        # Refused as RabbitMQ would refuse it (406, 404, ...): nothing changed.
        with contextlib.suppress(AMQPError):
            fn(*args, **kw)

    @rule(
        name=st.sampled_from(EXCHANGES),
        xtype=st.sampled_from(["direct", "fanout", "topic"]),
        durable=st.booleans(),
        auto_delete=st.booleans(),
    )
    def declare_exchange(self, name: str, xtype: str, durable: bool, auto_delete: bool) -> None:
        self._try(self.vh.declare_exchange, name, xtype, durable=durable, auto_delete=auto_delete)

    @rule(name=st.sampled_from(EXCHANGES))
    def delete_exchange(self, name: str) -> None:
        self._try(self.vh.delete_exchange, name)

    @rule(name=st.sampled_from(QUEUES), durable=st.booleans(), limit=st.sampled_from([0, 2]))
    def declare_queue(self, name: str, durable: bool, limit: int) -> None:
        args = {"x-max-length": limit} if limit else {}
        self._try(self.vh.declare_queue, name, durable=durable, arguments=args)

    @rule(name=st.sampled_from(QUEUES))
    def delete_queue(self, name: str) -> None:
        self._try(self.vh.delete_queue, name)
        self.unacked = [(q, e) for q, e in self.unacked if not q.deleted]

    @rule(
        queue=st.sampled_from(QUEUES),
        exchange=st.sampled_from((*EXCHANGES, "amq.direct")),
        key=st.sampled_from(KEYS),
        bind=st.booleans(),
    )
    def queue_binding(self, queue: str, exchange: str, key: str, bind: bool) -> None:
        op = self.vh.bind_queue if bind else self.vh.unbind_queue
        self._try(op, queue, exchange, key)

    @rule(
        dest=st.sampled_from(EXCHANGES),
        source=st.sampled_from((*EXCHANGES, "amq.topic")),
        key=st.sampled_from(KEYS),
        bind=st.booleans(),
    )
    def exchange_binding(self, dest: str, source: str, key: str, bind: bool) -> None:
        op = self.vh.bind_exchange if bind else self.vh.unbind_exchange
        self._try(op, dest, source, key)

    @rule(
        exchange=st.sampled_from(("", "", *EXCHANGES, "amq.direct", "amq.topic")),
        key=st.sampled_from(KEYS + QUEUES),
        persistent=st.sampled_from([True, True, False]),
        count=st.integers(1, 3),
    )
    def publish(self, exchange: str, key: str, persistent: bool, count: int) -> None:
        for _ in range(count):
            self.counter += 1
            body = b"m%d" % self.counter
            props = PERSISTENT if persistent else TRANSIENT
            try:
                queues, message = self.vh.route_message(
                    exchange, Message(exchange, key, props, body)
                )
            except AMQPError:
                return
            enqueue_routed(self.vh.durable, "/", message, queues)

    @rule(name=st.sampled_from(QUEUES), how=st.sampled_from(["keep", "ack", "requeue", "discard"]))
    def get(self, name: str, how: str) -> None:
        queue = self.vh.queues.get(name)
        if queue is None or (entry := queue.get()) is None:
            return
        self.unacked.append((queue, entry))
        if how != "keep":
            self._settle(len(self.unacked) - 1, how)

    @rule(data=st.data(), how=st.sampled_from(["ack", "requeue", "discard"]))
    def settle(self, data: st.DataObject, how: str) -> None:
        if self.unacked:
            self._settle(data.draw(st.integers(0, len(self.unacked) - 1)), how)

    def _settle(self, index: int, how: str) -> None:
        queue, entry = self.unacked.pop(index)
        if how == "ack":
            queue.ack(entry)
        elif how == "discard":
            queue.discard(entry)
        else:
            queue.requeue([entry])

    @rule(name=st.sampled_from(QUEUES))
    def purge(self, name: str) -> None:
        self._try(self.vh.purge_queue, name)

    @rule()
    def commit(self) -> None:
        self.log.commit()

    @rule()
    def restart(self) -> None:
        for queue, entry in self.unacked:
            queue.requeue([entry])  # what closing the channels does at shutdown
        self.unacked = []
        before = durable_projection(self.broker)
        self.log.close()
        self._start()
        assert self.log.report.clean_shutdown
        assert durable_projection(self.broker) == before

    @invariant()
    def the_log_counts_exactly_the_stored_messages(self) -> None:
        # Every persistent message on a durable queue (ready or unacked) is counted by the
        # catalog in its record's segment, and nothing else: a removal path that forgets
        # to log (or names the wrong segment) shows up here at once.
        held: dict[str, Counter[int]] = {}
        for q in self.vh.queues.values():
            if q.durable:
                stored = [e.message for e in [*_ready(q), *q._unacked.values()]]
                held[q.name] = Counter(m.store_segment for m in stored if m.store_id)
        catalog = self.log.catalog
        assert {name: dict(counts) for name, counts in held.items() if counts} == {
            name: queue.pins for (_, name), queue in catalog.queues.items() if queue.pins
        }
        assert all(queue.count == sum(queue.pins.values()) for queue in catalog.queues.values())

    def teardown(self) -> None:
        self.restart()  # every run ends with the check


BrokerRestartMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
TestBrokerRestart = BrokerRestartMachine.TestCase
