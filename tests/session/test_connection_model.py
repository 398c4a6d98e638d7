"""A hypothesis state machine over channel lifecycles on one running connection.

The model is RabbitMQ's channel table as the oracle showed it: a frame on a new number takes
a slot (530 past channel_max), the first command must be channel.open (504), a second open
is 504, close-ok on an open channel is 503, a soft error leaves the number reserved until
close-ok, and after any hard error the connection is closing.
"""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from amqpd.errors import PreconditionFailed

from .conftest import Client, FakeChannel

S = pika.spec
CHANNEL_MAX = 3
numbers = st.integers(min_value=1, max_value=5)


class ChannelTable(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        FakeChannel.instances.clear()
        self.client = Client().handshake(channel_max=CHANNEL_MAX)
        self.model: dict[int, str] = {}  # number -> "open" | "closing"
        self.alive = True

    def _send(self, number: int, method: Any) -> list[Any]:
        return self.client.send(number, method)

    def _expect_hard(self, frames: list[Any], code: int) -> None:
        assert len(frames) == 1, frames
        method = frames[0].method
        assert isinstance(method, S.Connection.Close), frames
        assert method.reply_code == code, method
        self.alive = False
        self.model.clear()

    def _new_slot_error(self, number: int) -> int | None:
        """The hard error a command on an unknown number causes, before its own check."""
        if number not in self.model and len(self.model) >= CHANNEL_MAX:
            return 530
        return None

    @precondition(lambda self: self.alive)
    @rule(number=numbers)
    def open(self, number: int) -> None:
        frames = self._send(number, S.Channel.Open())
        limit = self._new_slot_error(number)
        state = self.model.get(number)
        if limit is not None:
            self._expect_hard(frames, limit)
        elif state is None:
            assert [type(f.method) for f in frames] == [S.Channel.OpenOk]
            self.model[number] = "open"
        elif state == "open":
            self._expect_hard(frames, 504)
        else:
            assert frames == []

    @precondition(lambda self: self.alive)
    @rule(number=numbers)
    def close(self, number: int) -> None:
        frames = self._send(number, S.Channel.Close(200, "", 0, 0))
        limit = self._new_slot_error(number)
        state = self.model.get(number)
        if limit is not None:
            self._expect_hard(frames, limit)
        elif state is None:
            self._expect_hard(frames, 504)
        else:
            assert [(f.channel_number, type(f.method)) for f in frames] == [
                (number, S.Channel.CloseOk)
            ]
            if state == "open":
                del self.model[number]

    @precondition(lambda self: self.alive)
    @rule(number=numbers)
    def close_ok(self, number: int) -> None:
        frames = self._send(number, S.Channel.CloseOk())
        limit = self._new_slot_error(number)
        state = self.model.get(number)
        if limit is not None:
            self._expect_hard(frames, limit)
        elif state is None:
            self._expect_hard(frames, 504)
        elif state == "open":
            self._expect_hard(frames, 503)
        else:
            assert frames == []
            del self.model[number]

    @precondition(lambda self: self.alive)
    @rule(number=numbers, fail=st.booleans())
    def qos(self, number: int, fail: bool) -> None:
        channel = self.client.conn.channels.get(number)
        if fail and isinstance(channel, FakeChannel):
            channel.raise_next = PreconditionFailed("nope")
        frames = self._send(number, S.Basic.Qos(prefetch_count=1))
        limit = self._new_slot_error(number)
        state = self.model.get(number)
        if limit is not None:
            self._expect_hard(frames, limit)
        elif state is None:
            self._expect_hard(frames, 504)
        elif state == "closing":
            assert frames == []
        elif fail:
            assert [(f.channel_number, type(f.method)) for f in frames] == [
                (number, S.Channel.Close)
            ]
            assert frames[0].method.reply_code == 406
            self.model[number] = "closing"
        else:
            assert [type(f.method) for f in frames] == [S.Basic.QosOk]

    @precondition(lambda self: self.alive)
    @rule()
    def heartbeat(self) -> None:
        assert self.client.feed(b"\x08\x00\x00\x00\x00\x00\x00\xce") == []

    @precondition(lambda self: not self.alive)
    @rule()
    def reconnect(self) -> None:
        # The closing connection answers nothing but close-ok, which ends it.
        assert self._send(1, S.Channel.Open()) == []
        assert self._send(0, S.Connection.CloseOk()) == []
        assert self.client.conn.closed
        self.client = Client().handshake(channel_max=CHANNEL_MAX)
        self.alive = True

    @invariant()
    def channels_match_the_model(self) -> None:
        conn = self.client.conn
        assert set(conn.channels) == {n for n, s in self.model.items() if s == "open"}
        live = {id(ch) for ch in conn.channels.values()}
        for ch in FakeChannel.instances:
            assert ch.closed == (0 if id(ch) in live else 1), (ch.number, ch.closed)

    def teardown(self) -> None:
        self.client.conn.connection_lost()
        assert all(ch.closed == 1 for ch in FakeChannel.instances)


ChannelTable.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestChannelTable = ChannelTable.TestCase


def test_model_helpers_see_pika_frames() -> None:
    frames = Client().handshake().send(1, S.Channel.Open())
    assert isinstance(frames[0], pika.frame.Method)
