"""Heartbeats, shutdown, connection_lost, output wake-ups and connection.blocked.

Heartbeat timing follows rabbit_heartbeat.erl, confirmed on the oracle (heartbeat=2: an idle
server sends a heartbeat every 1.0 s; a silent client was dropped 4-5 s after its last frame,
without a close frame).
"""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.protocol import methods as M
from amqpd.session.config import ConnectionConfig
from amqpd.session.heartbeat import HeartbeatMonitor

from .conftest import HEADER_091, HEARTBEAT, Client, close_of, content, encode

S = pika.spec


def is_heartbeat(frames: list[Any]) -> bool:
    return len(frames) == 1 and isinstance(frames[0], pika.frame.Heartbeat)


# ------------------------------------------------------------------ heartbeats


def test_no_heartbeats_when_the_client_says_0(running: Client) -> None:
    assert running.conn.heartbeat == 0
    assert running.conn.next_deadline() is None


def test_idle_server_sends_a_heartbeat_every_half_timeout() -> None:
    c = Client().handshake(heartbeat=2)
    assert c.conn.heartbeat == 2
    for second in (1.0, 2.0, 3.0, 4.0):
        assert c.conn.next_deadline() == pytest.approx(second)
        assert is_heartbeat(c.tick(second))
        c.feed(HEARTBEAT, at=second + 0.5)  # the client keeps the connection alive


def test_no_heartbeat_when_something_else_was_sent() -> None:
    c = Client().handshake(heartbeat=2)
    c.open_channel(1)
    assert is_heartbeat(c.tick(1.0))  # the first check always sends one (rabbit_heartbeat)
    c.send(1, S.Basic.Qos(prefetch_count=1), at=1.5)  # qos-ok goes out
    assert c.tick(2.0) == []
    assert is_heartbeat(c.tick(3.0))


def test_heartbeats_do_not_count_as_output() -> None:
    c = Client().handshake(heartbeat=4)
    assert is_heartbeat(c.tick(2.0))
    c.feed(HEARTBEAT, at=3.0)
    assert is_heartbeat(c.tick(4.0))


def test_silent_client_is_dropped_between_two_and_three_timeouts() -> None:
    c = Client().handshake(heartbeat=2)  # tune-ok at t=0: checks at 2, 4, 6, ...
    for t in (1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0):
        if t == 2.5:
            c.feed(HEARTBEAT, at=t)
        else:
            c.tick(t)
        assert not c.conn.closed, t
    frames = c.tick(8.0)  # 4.0 changed, 6.0 unchanged, 8.0 unchanged again: dead
    assert c.conn.closed
    assert frames == []  # no connection.close: the peer is gone
    assert c.conn.next_deadline() is None


def test_any_received_data_counts_as_alive() -> None:
    c = Client().handshake(heartbeat=2)
    c.open_channel(1)
    for t in range(1, 20):
        c.send(1, S.Basic.Qos(prefetch_count=1), at=t - 0.5)
        c.tick(float(t))
        assert not c.conn.closed


def test_late_tick_never_schedules_into_the_past() -> None:
    c = Client().handshake(heartbeat=2)
    c.tick(100.0)  # the timer task was late: every check is done once
    deadline = c.conn.next_deadline()
    assert deadline is not None and deadline > 100.0


def test_heartbeats_start_at_tune_ok() -> None:
    c = Client()
    c.feed(HEADER_091)
    c.start_ok()
    c.send(0, S.Connection.TuneOk(2047, 131072, 10), at=3.0)
    # The handshake timeout (10 s from accept) and the first heartbeat (3 + 5 s) both run.
    assert c.conn.next_deadline() == pytest.approx(8.0)
    assert is_heartbeat(c.tick(8.0))
    assert c.conn.next_deadline() == pytest.approx(10.0)
    c.tick(10.0)
    assert c.conn.closed  # never sent connection.open: handshake timeout


def test_heartbeat_monitor_rejects_zero() -> None:
    with pytest.raises(ValueError):
        HeartbeatMonitor(0, 0.0)


def test_heartbeat_monitor_sub_second_periods() -> None:
    m = HeartbeatMonitor(1, 10.0)
    assert m.next_deadline() == pytest.approx(10.5)
    assert m.check(10.5, 0, 0).send_heartbeat
    assert m.next_deadline() == pytest.approx(11.0)


# ------------------------------------------------------------------ shutdown


def test_shutdown_of_a_running_connection(running: Client) -> None:
    ch = running.open_channel(1)
    running.conn.shutdown(5.0)
    frames = running.read()
    assert close_of(frames) == (
        320,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
        0,
        0,
    )
    assert ch.closed == 1
    assert not running.conn.closed
    assert running.send(0, S.Connection.CloseOk()) == []
    assert running.conn.closed


def test_shutdown_waits_only_briefly_for_close_ok(running: Client) -> None:
    running.conn.shutdown(5.0)
    assert running.conn.next_deadline() == pytest.approx(6.0)
    running.tick(6.0)
    assert running.conn.closed


def test_shutdown_timeout_is_configurable() -> None:
    c = Client(config=ConnectionConfig(shutdown_timeout=0.25)).handshake()
    c.conn.shutdown(1.0)
    assert c.conn.next_deadline() == pytest.approx(1.25)


def test_shutdown_during_handshake_just_closes(client: Client) -> None:
    client.feed(HEADER_091)
    client.conn.shutdown(1.0)
    assert client.read() == []
    assert client.conn.closed


def test_shutdown_while_closing_shortens_the_wait(running: Client) -> None:
    running.feed(b"\x08\x00\x01\x00\x00\x00\x00\xce", at=0.0)  # 505: waits up to 30 s
    running.conn.shutdown(2.0)
    assert running.read() == []
    assert running.conn.next_deadline() == pytest.approx(3.0)


def test_shutdown_after_closed_is_a_no_op(running: Client) -> None:
    running.send(0, S.Connection.Close(200, "", 0, 0))
    running.conn.shutdown(1.0)
    assert running.read() == []


# ------------------------------------------------------------------ connection_lost


def test_connection_lost_releases_everything_once(running: Client) -> None:
    a = running.open_channel(1)
    b = running.open_channel(2)
    running.conn.connection_lost()
    running.conn.connection_lost()
    assert (a.closed, b.closed) == (1, 1)
    assert running.broker.vhosts["/"].closed_owners == [running.conn]
    assert running.conn.closed
    assert running.conn.channels == {}
    # Nothing more is queued or processed.
    running.conn.send(b"x")
    assert running.conn.data_to_send() == b""
    assert running.feed(encode(1, S.Channel.Open())) == []


def test_connection_lost_during_handshake(client: Client) -> None:
    client.feed(HEADER_091)
    client.conn.connection_lost()
    assert client.conn.closed
    assert client.broker.vhosts["/"].closed_owners == []


def test_eof_closes(running: Client) -> None:
    running.open_channel(1)
    assert running.feed(b"") == []
    assert running.conn.closed
    assert running.conn.channels == {}


# ------------------------------------------------------------------ output wake-ups


def test_on_output_is_called_for_output_from_outside(running: Client) -> None:
    calls: list[int] = []
    running.conn.on_output = lambda: calls.append(1)
    running.conn.send_method(0, M.ConnectionBlocked(reason="x"))
    running.conn.send(b"more")
    assert calls == [1]  # coalesced until the writer drains
    assert running.conn.data_to_send().endswith(b"more")
    running.conn.send(b"again")
    assert calls == [1, 1]


def test_on_output_is_not_called_for_our_own_replies(running: Client) -> None:
    calls: list[int] = []
    running.conn.on_output = lambda: calls.append(1)
    running.open_channel(1)
    running.send(1, S.Basic.Qos(prefetch_count=1))
    running.tick(5.0)
    running.conn.shutdown(6.0)
    assert calls == []


def test_data_to_send_joins_once_and_drains(running: Client) -> None:
    running.conn.send(b"a")
    running.conn.send(b"b")
    assert running.conn.data_to_send() == b"ab"
    assert running.conn.data_to_send() == b""


# ------------------------------------------------------------------ connection.blocked


def publish(c: Client) -> list[Any]:
    return c.feed(encode(1, S.Basic.Publish(exchange="", routing_key="q")) + content(1, b"m"))


def test_blocked_is_sent_on_the_first_publish_during_an_alarm() -> None:
    c = Client().handshake(capabilities={"connection.blocked": True})
    c.open_channel(1)
    c.conn.set_blocked("low on memory")
    assert c.read() == []  # RabbitMQ waits for a publish (rabbit_reader:publish_received/1)
    frames = publish(c)
    assert [(f.channel_number, type(f.method)) for f in frames] == [(0, S.Connection.Blocked)]
    assert frames[0].method.reason == "low on memory"
    assert c.conn.state == "blocked"
    assert publish(c) == []  # once
    c.conn.set_blocked(None)
    assert [type(f.method) for f in c.read()] == [S.Connection.Unblocked]
    assert c.conn.state == "running"


def test_no_blocked_frames_without_the_capability(running: Client) -> None:
    running.open_channel(1)
    running.conn.set_blocked("low on disk")
    assert publish(running) == []
    running.conn.set_blocked(None)
    assert running.read() == []


def test_alarm_cleared_before_any_publish_sends_nothing() -> None:
    c = Client().handshake(capabilities={"connection.blocked": True})
    c.conn.set_blocked("low on memory")
    c.conn.set_blocked(None)
    assert c.read() == []


# ------------------------------------------------------------------ the server's timer contract


@given(
    heartbeat=st.integers(min_value=0, max_value=5),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=7.0), st.sampled_from(["tick", "hb", "err"])),
        max_size=40,
    ),
)
def test_next_deadline_is_always_after_tick(heartbeat: int, steps: list[tuple[float, str]]) -> None:
    # server/connection_task.py refuses a connection whose deadline is still due after tick.
    c = Client()
    c.handshake(heartbeat=heartbeat)
    now = 0.0
    for delta, action in steps:
        now += delta
        if action == "tick":
            c.tick(now)
            deadline = c.conn.next_deadline()
            assert deadline is None or deadline > now
        elif action == "hb":
            c.feed(HEARTBEAT, at=now)
        else:
            c.feed(b"\x08\x00\x01\x00\x00\x00\x00\xce", at=now)
        if c.conn.closed:
            assert c.conn.next_deadline() is None
            break


# ------------------------------------------------------------------ close_forced (reload)


def test_close_forced_tells_the_client_why(running: Client) -> None:
    ch = running.open_channel(1)
    assert running.broker.closed_connections == []
    running.conn.close_forced("user 'alice' is deleted", 5.0)
    assert close_of(running.read()) == (320, "CONNECTION_FORCED - user 'alice' is deleted", 0, 0)
    assert ch.closed == 1
    assert running.broker.closed_connections == [running.conn]  # its vhost slot is free
    assert running.send(0, S.Connection.CloseOk()) == []
    assert running.conn.closed


def test_close_forced_during_the_handshake_just_closes(client: Client) -> None:
    client.feed(HEADER_091)
    client.conn.close_forced("user 'alice' is deleted", 1.0)
    assert client.read() == []
    assert client.conn.closed
