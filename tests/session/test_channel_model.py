"""Stateful model test of a channel's delivery bookkeeping against a real Broker.

Random publishes, consumes with a prefetch, gets, acks (single, multiple, tag 0), nacks,
rejects, recovers and channel closes; the model checks RabbitMQ's promises:
- every message is exactly once either ready in the queue or unacked on the channel
  (or settled for good);
- "if the redelivered flag is not set then it is guaranteed that the message has not been
  seen before" (reference 2.6), and a redelivered message has been seen;
- a consumer never holds more unacked deliveries than its prefetch;
- delivery tags on a channel strictly increase from 1.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from amqpd.errors import AMQPError
from amqpd.protocol import methods as M
from amqpd.protocol.properties import BasicProperties

from .fakes_channel import FakeConnection


class ChannelModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conn = FakeConnection()
        self.number = 1
        self._open()
        self.conn.call(self.ch, M.QueueDeclare(queue="q"))
        self.conn.take()
        self.next_id = 0
        self.live: set[int] = set()  # published and not settled for good
        self.seen: set[int] = set()  # delivered at least once
        self.unacked: dict[int, int] = {}  # delivery tag -> message id
        self.consumer_prefetch: int | None = None  # None: no consumer on this channel

    def _open(self) -> None:
        self.ch = self.conn.open(self.number)
        self.last_tag = 0

    def _queue_ready(self) -> int:
        count: int = self.conn.vhost.get_queue("q", self.conn).message_count
        return count

    def _absorb(self) -> None:
        for cmd in self.conn.take():
            m = cmd.method
            if isinstance(m, M.BasicDeliver | M.BasicGetOk):
                mid = int(cmd.body or b"")
                assert m.delivery_tag > self.last_tag
                self.last_tag = m.delivery_tag
                assert m.redelivered == (mid in self.seen), (mid, m)
                self.seen.add(mid)
                assert mid in self.live
                if isinstance(m, M.BasicDeliver) or not self._get_no_ack:
                    self.unacked[m.delivery_tag] = mid
                else:
                    self.live.discard(mid)

    _get_no_ack = False

    @rule(n=st.integers(1, 3))
    def publish(self, n: int) -> None:
        for _ in range(n):
            mid = self.next_id
            self.next_id += 1
            self.live.add(mid)
            self.conn.call(
                self.ch, M.BasicPublish(routing_key="q"), BasicProperties(), str(mid).encode()
            )
        self._absorb()

    @precondition(lambda self: self.consumer_prefetch is None)
    @rule(prefetch=st.integers(0, 3))
    def consume(self, prefetch: int) -> None:
        self.conn.call(self.ch, M.BasicQos(prefetch_count=prefetch))
        self.conn.call(self.ch, M.BasicConsume(queue="q", consumer_tag="c"))
        self.consumer_prefetch = prefetch
        self._absorb()

    @rule(no_ack=st.booleans())
    def get(self, no_ack: bool) -> None:
        self._get_no_ack = no_ack
        self.conn.call(self.ch, M.BasicGet(queue="q", no_ack=no_ack))
        self._absorb()

    def _settle(self, tags: list[int], requeue: bool | None) -> None:
        for tag in tags:
            mid = self.unacked.pop(tag)
            if requeue is not True:
                self.live.discard(mid)

    def _expected(self, tag: int, multiple: bool) -> list[int] | None:
        if multiple and tag == 0:
            return sorted(self.unacked)
        if tag not in self.unacked:
            return None
        return sorted(t for t in self.unacked if t <= tag) if multiple else [tag]

    @rule(data=st.data(), kind=st.sampled_from(["ack", "nack", "reject"]))
    def settle(self, data: st.DataObject, kind: str) -> None:
        candidates = sorted(self.unacked) or [0]
        tag = data.draw(st.sampled_from([*candidates, 0, self.last_tag + 1]))
        multiple = kind != "reject" and data.draw(st.booleans())
        requeue = kind != "ack" and data.draw(st.booleans())
        if kind == "ack":
            method: M.Method = M.BasicAck(delivery_tag=tag, multiple=multiple)
        elif kind == "nack":
            method = M.BasicNack(delivery_tag=tag, multiple=multiple, requeue=requeue)
        else:
            method = M.BasicReject(delivery_tag=tag, requeue=requeue)
        expected = self._expected(tag, multiple)
        if expected is None:
            with pytest.raises(AMQPError, match="unknown delivery tag"):
                self.conn.call(self.ch, method)
            self._close()
            return
        self.conn.call(self.ch, method)
        self._settle(expected, requeue if kind != "ack" else None)
        self._absorb()

    @rule()
    def recover(self) -> None:
        self.conn.call(self.ch, M.BasicRecover(requeue=True))
        self._settle(sorted(self.unacked), True)
        self._absorb()

    def _close(self) -> None:
        self.ch.on_closed()
        self.unacked.clear()
        self.consumer_prefetch = None
        self.number += 1
        self._open()
        self._absorb()

    @rule()
    def close_channel(self) -> None:
        self._close()

    @invariant()
    def every_message_is_in_one_place(self) -> None:
        assert self._queue_ready() + len(self.unacked) == len(self.live)
        assert sorted(self.unacked) == [r.tag for r in self.ch.unacked]

    @invariant()
    def prefetch_respected(self) -> None:
        c = self.ch.consumers.get("c")
        if c is not None and self.consumer_prefetch:
            assert c.outstanding <= self.consumer_prefetch

    @invariant()
    def consumer_not_starved(self) -> None:
        # A consumer with credit never leaves ready messages in the queue.
        c = self.ch.consumers.get("c")
        if c is not None and c.ready():
            assert self._queue_ready() == 0


ChannelModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestChannelModel = ChannelModel.TestCase
