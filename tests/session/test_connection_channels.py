"""Channels on a running connection: open/close both ways, dispatch, and every error case.

Texts, codes and class/method ids are the oracle's (RabbitMQ 3.10.8, raw sockets,
2026-11-23); rabbit_reader/rabbit_channel 3.13 take the same paths.
"""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec
import pytest

from amqpd.errors import (
    AccessRefused,
    CommandInvalid,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    UnexpectedFrame,
)
from amqpd.protocol import methods as M
from amqpd.session.config import ConnectionConfig

from .conftest import HEADER_091, HEARTBEAT, Client, FakeChannel, close_of, content, encode

S = pika.spec


def types(frames: list[Any]) -> list[type]:
    return [type(f.method) if isinstance(f, pika.frame.Method) else type(f) for f in frames]


# ------------------------------------------------------------------ open / close


def test_open_creates_a_channel_and_replies_open_ok(running: Client) -> None:
    frames = running.send(5, S.Channel.Open())
    assert [(f.channel_number, type(f.method)) for f in frames] == [(5, S.Channel.OpenOk)]
    channel = running.conn.channels[5]
    assert isinstance(channel, FakeChannel)
    assert (channel.conn, channel.number) == (running.conn, 5)


def test_channel_numbers_above_channel_max_are_fine() -> None:
    # RabbitMQ limits the *count* of channels, not the numbers (create_channel/2).
    c = Client().handshake(channel_max=1)
    assert types(c.send(65535, S.Channel.Open())) == [S.Channel.OpenOk]


def test_channel_max_counts_channels() -> None:
    c = Client().handshake(channel_max=2)
    c.open_channel(7)
    c.open_channel(9)
    frames = c.send(3, S.Channel.Open())
    assert close_of(frames) == (
        530,
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)",
        0,
        0,
    )


def test_channel_max_frees_closed_numbers() -> None:
    c = Client().handshake(channel_max=1)
    c.open_channel(1)
    assert types(c.send(1, S.Channel.Close(200, "", 0, 0))) == [S.Channel.CloseOk]
    c.open_channel(2)


def test_client_close(running: Client) -> None:
    ch = running.open_channel(1)
    frames = running.send(1, S.Channel.Close(200, "bye", 0, 0))
    assert [(f.channel_number, type(f.method)) for f in frames] == [(1, S.Channel.CloseOk)]
    assert ch.closed == 1
    assert 1 not in running.conn.channels
    # The number is free again: a new Channel object.
    again = running.open_channel(1)
    assert again is not ch


def test_commands_go_to_the_channel(running: Client) -> None:
    ch = running.open_channel(1)
    frames = running.send(1, S.Basic.Qos(prefetch_count=5))
    assert types(frames) == [S.Basic.QosOk]
    running.send(1, S.Channel.Flow(active=True))
    running.send(1, S.Channel.FlowOk(active=True))
    running.send(1, S.Confirm.Select())
    assert [type(c.method) for c in ch.commands] == [
        M.BasicQos,
        M.ChannelFlow,
        M.ChannelFlowOk,
        M.ConfirmSelect,
    ]
    assert ch.commands[0].method.prefetch_count == 5


def test_content_is_assembled_before_dispatch(running: Client) -> None:
    ch = running.open_channel(1)
    props = S.BasicProperties(content_type="text/plain", delivery_mode=2)
    data = encode(1, S.Basic.Publish(exchange="x", routing_key="rk")) + content(1, b"hello", props)
    for byte in data[:-1]:
        running.feed(bytes([byte]))
        assert ch.commands == []
    running.feed(data[-1:])
    (cmd,) = ch.commands
    assert cmd.method == M.BasicPublish(exchange="x", routing_key="rk")
    assert cmd.body == b"hello"
    assert cmd.properties_raw is not None


def test_flush_is_called_once_per_chunk_for_channels_that_handled_commands(
    running: Client,
) -> None:
    a = running.open_channel(1)
    b = running.open_channel(2)
    running.feed(
        encode(1, S.Basic.Qos(prefetch_count=1)) + encode(1, S.Basic.Qos(prefetch_count=2))
    )
    assert (a.flushes, b.flushes) == (1, 0)


# ------------------------------------------------------------------ soft errors


def test_soft_error_closes_the_channel(running: Client) -> None:
    ch = running.open_channel(1)
    ch.raise_next = NotFound("no queue 'q' in vhost '/'")
    frames = running.send(1, S.Basic.Get(queue="q"))
    assert [f.channel_number for f in frames] == [1]
    assert close_of(frames) == (404, "NOT_FOUND - no queue 'q' in vhost '/'", 60, 70)
    assert ch.closed == 1
    assert 1 not in running.conn.channels


def test_soft_error_keeps_the_raisers_ids(running: Client) -> None:
    ch = running.open_channel(1)
    ch.raise_next = AccessRefused("nope", class_id=40, method_id=10)
    frames = running.send(1, S.Basic.Get(queue="q"))
    assert close_of(frames)[2:] == (40, 10)


def test_after_server_close_only_close_and_close_ok_count(running: Client) -> None:
    ch = running.open_channel(1)
    ch.raise_next = PreconditionFailed("unknown delivery tag 99")
    running.send(1, S.Basic.Ack(delivery_tag=99))
    assert running.send(1, S.Basic.Qos(prefetch_count=1)) == []
    assert running.send(1, S.Channel.Open()) == []
    assert running.send(1, S.Channel.Flow(active=True)) == []
    assert len(ch.commands) == 1
    # A channel.close crossing ours is answered; we keep waiting for close-ok.
    assert types(running.send(1, S.Channel.Close(200, "", 0, 0))) == [S.Channel.CloseOk]
    assert running.send(1, S.Channel.CloseOk()) == []
    again = running.open_channel(1)
    assert again is not ch
    assert ch.closed == 1


def test_after_server_close_content_framing_is_still_checked(running: Client) -> None:
    ch = running.open_channel(1)
    ch.raise_next = PreconditionFailed("unknown delivery tag 99")
    running.send(1, S.Basic.Ack(delivery_tag=99))
    frames = running.feed(content(1, b"hello"))
    assert close_of(frames) == (
        505,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
        0,
        0,
    )


def test_content_after_server_close_is_swallowed(running: Client) -> None:
    ch = running.open_channel(1)
    ch.raise_next = PreconditionFailed("x")
    running.send(1, S.Basic.Ack(delivery_tag=1))
    data = encode(1, S.Basic.Publish(exchange="", routing_key="q")) + content(1, b"body")
    assert running.feed(data) == []
    assert len(ch.commands) == 1


def test_too_large_message_is_a_406_channel_error() -> None:
    c = Client(config=ConnectionConfig(max_message_size=10)).handshake()
    ch = c.open_channel(1)
    data = encode(1, S.Basic.Publish(exchange="", routing_key="q")) + content(1, b"x" * 11)
    frames = c.feed(data)
    assert close_of(frames) == (
        406,
        "PRECONDITION_FAILED - message size 11 is larger than configured max size 10",
        60,
        40,
    )
    assert ch.closed == 1
    assert ch.commands == []


# ------------------------------------------------------------------ hard errors on channels


def test_second_channel_open(running: Client) -> None:
    ch = running.open_channel(1)
    frames = running.send(1, S.Channel.Open())
    assert close_of(frames) == (504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)
    assert ch.closed == 1


@pytest.mark.parametrize(
    ("method", "ids"),
    [
        (S.Queue.Declare(queue="x"), (50, 10)),
        (S.Channel.Close(200, "", 0, 0), (20, 40)),
        (S.Channel.CloseOk(), (20, 41)),
        (S.Channel.Flow(active=True), (20, 20)),
        (S.Connection.Close(200, "", 0, 0), (10, 50)),
    ],
)
def test_method_before_channel_open(running: Client, method: Any, ids: tuple[int, int]) -> None:
    frames = running.send(1, method)
    assert close_of(frames) == (504, "CHANNEL_ERROR - expected 'channel.open'", *ids)


def test_content_before_channel_open(running: Client) -> None:
    frames = running.feed(content(1, b"hello"))
    assert close_of(frames) == (
        505,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
        0,
        0,
    )


@pytest.mark.parametrize(
    ("method", "ids"),
    [
        (S.Channel.CloseOk(), (20, 41)),
        (S.Channel.OpenOk(), (20, 11)),
        (S.Connection.Close(200, "", 0, 0), (10, 50)),
        (S.Connection.Open("/"), (10, 40)),
    ],
)
def test_unimplemented_methods_on_an_open_channel(
    running: Client, method: Any, ids: tuple[int, int]
) -> None:
    running.open_channel(1)
    frames = running.send(1, method)
    assert close_of(frames) == (503, "COMMAND_INVALID - unimplemented method", *ids)


def test_hard_error_from_the_channel(running: Client) -> None:
    ch = running.open_channel(1)
    ch.raise_next = NotAllowed("attempt to reuse consumer tag 'x'")
    frames = running.send(1, S.Basic.Consume(queue="q", consumer_tag="x"))
    assert close_of(frames) == (530, "NOT_ALLOWED - attempt to reuse consumer tag 'x'", 60, 20)
    assert ch.closed == 1


@pytest.mark.parametrize("channel", [0, 1, 2])
@pytest.mark.parametrize("ids", [b"\x00\x3c\x03\xe7", b"\x03\xe7\x00\x0a"])
def test_unknown_method_id_drops_the_connection(running: Client, channel: int, ids: bytes) -> None:
    # rabbit_command_assembler:analyze_frame/3 exits on an unknown id: the reader dies, no
    # connection.close (oracle: TCP closed at once).
    ch = running.open_channel(1)
    frames = running.feed(bytes([1, 0, channel, 0, 0, 0, 4]) + ids + b"\xce")
    assert frames == []
    assert running.conn.closed
    assert ch.closed == 1


def test_unknown_method_id_while_closing_on_a_channel_is_ignored(running: Client) -> None:
    running.feed(b"\x08\x00\x01\x00\x00\x00\x00\xce")  # 505: now closing
    running.read()
    assert running.feed(b"\x01\x00\x01\x00\x00\x00\x04\x00\x3c\x03\xe7\xce") == []
    assert not running.conn.closed


def test_unknown_method_id_during_handshake_drops_too(client: Client) -> None:
    client.feed(HEADER_091)
    assert client.feed(b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x63\xce") == []
    assert client.conn.closed


def test_a_crashing_channel_is_541(running: Client) -> None:
    ch = running.open_channel(1)
    ch.raise_next = ZeroDivisionError()
    frames = running.send(1, S.Basic.Qos(prefetch_count=1))
    assert close_of(frames) == (541, "INTERNAL_ERROR - channel 1 crashed", 60, 10)
    assert ch.closed == 1


def test_any_hard_error_from_the_channel_is_blamed_on_its_method(running: Client) -> None:
    ch = running.open_channel(1)
    ch.raise_next = UnexpectedFrame("x")
    frames = running.send(1, S.Basic.Qos(prefetch_count=1))
    assert close_of(frames) == (505, "UNEXPECTED_FRAME - x", 60, 10)


# ------------------------------------------------------------------ frame errors


def test_heartbeat_on_a_channel(running: Client) -> None:
    frames = running.feed(b"\x08\x00\x01\x00\x00\x00\x00\xce")
    assert close_of(frames) == (505, "UNEXPECTED_FRAME - type 8, all octets = <<>>", 0, 0)


def test_heartbeat_on_channel_zero_is_fine(running: Client) -> None:
    assert running.feed(HEARTBEAT) == []


def test_content_header_on_channel_zero(running: Client) -> None:
    frames = running.feed(bytes(pika.frame.Header(0, 5, S.BasicProperties()).marshal()))
    assert close_of(frames) == (
        505,
        "UNEXPECTED_FRAME - type 2, all octets = <<0,60,0,0,0,0,0,0,0,0,0,5,0,0>>",
        0,
        0,
    )


def test_body_on_channel_zero(running: Client) -> None:
    frames = running.feed(bytes(pika.frame.Body(0, b"hello").marshal()))
    assert close_of(frames) == (505, 'UNEXPECTED_FRAME - type 3, all octets = <<"hello">>', 0, 0)


@pytest.mark.parametrize("channel", [0, 1])
def test_unknown_frame_type(running: Client, channel: int) -> None:
    frames = running.feed(bytes([9, 0, channel]) + b"\x00\x00\x00\x03abc\xce")
    assert close_of(frames) == (
        501,
        'FRAME_ERROR - type 9, all octets = <<"abc">>: unknown_frame',
        0,
        0,
    )
    # Not fatal: the frame was read whole, so close-ok is still understood.
    assert running.feed(b"\x05\x00\x00\x00\x00\x00\x00\xce") == []  # ignored now
    assert running.send(0, S.Connection.CloseOk()) == []
    assert running.conn.closed


def test_bad_frame_end_is_fatal(running: Client) -> None:
    frames = running.feed(b"\x08\x00\x00\x00\x00\x00\x00\xcd", at=50.0)
    assert close_of(frames) == (
        501,
        "FRAME_ERROR - type 8, all octets = <<>>: {invalid_frame_end_marker,205}",
        0,
        0,
    )
    assert running.send(0, S.Connection.CloseOk()) == []
    assert running.conn.next_deadline() == pytest.approx(53.0)
    running.tick(53.0)
    assert running.conn.closed


def test_frame_too_large(running: Client) -> None:
    frames = running.feed(b"\x01\x00\x01\x00\x03\x00\x00")
    assert close_of(frames) == (
        501,
        "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,196608,131064}",
        0,
        0,
    )


# ------------------------------------------------------------------ channel 0 while running


@pytest.mark.parametrize(
    ("method", "ids"),
    [
        (S.Channel.Open(), (20, 10)),
        (S.Connection.Open("/"), (10, 40)),
        (S.Connection.TuneOk(0, 0, 0), (10, 31)),
        (S.Connection.StartOk({}, "PLAIN", b"\0guest\0guest"), (10, 11)),
        (S.Connection.CloseOk(), (10, 51)),
        (S.Connection.Blocked("x"), (10, 60)),
    ],
)
def test_unexpected_method_on_channel_zero(
    running: Client, method: Any, ids: tuple[int, int]
) -> None:
    frames = running.send(0, method)
    assert close_of(frames) == (
        504,
        "CHANNEL_ERROR - unexpected method in connection state running",
        *ids,
    )


def test_update_secret(running: Client) -> None:
    assert types(running.send(0, S.Connection.UpdateSecret(b"new", "token refresh"))) == [
        S.Connection.UpdateSecretOk
    ]


# ------------------------------------------------------------------ the connection closing


def test_client_connection_close(running: Client) -> None:
    a = running.open_channel(1)
    b = running.open_channel(2)
    frames = running.send(0, S.Connection.Close(200, "bye", 0, 0))
    assert [(f.channel_number, type(f.method)) for f in frames] == [(0, S.Connection.CloseOk)]
    assert running.conn.closed
    assert (a.closed, b.closed) == (1, 1)
    assert running.conn.channels == {}
    assert running.broker.vhosts["/"].closed_owners == [running.conn]
    # connection_lost after that releases nothing twice.
    running.conn.connection_lost()
    assert (a.closed, b.closed) == (1, 1)
    assert running.broker.vhosts["/"].closed_owners == [running.conn]


def test_after_a_hard_error_only_close_and_close_ok_count(running: Client) -> None:
    ch = running.open_channel(1)
    frames = running.feed(b"\x08\x00\x01\x00\x00\x00\x00\xce", at=20.0)
    assert close_of(frames)[0] == 505
    # Channels and exclusive queues go at once (rabbit_reader:close_connection/1).
    assert ch.closed == 1
    assert running.broker.vhosts["/"].closed_owners == [running.conn]
    assert running.send(1, S.Channel.Open()) == []
    assert running.send(0, S.Connection.Open("/")) == []
    # The client's own close is answered; its close-ok ends the connection.
    assert types(running.send(0, S.Connection.Close(200, "", 0, 0))) == [S.Connection.CloseOk]
    assert not running.conn.closed
    assert running.send(0, S.Connection.CloseOk()) == []
    assert running.conn.closed


def test_close_ok_timeout_is_the_heartbeat_when_shorter() -> None:
    c = Client().handshake(heartbeat=5)
    frames = c.feed(b"\x08\x00\x01\x00\x00\x00\x00\xce", at=1.0)
    assert close_of(frames)[0] == 505
    assert c.conn.next_deadline() is not None
    c.tick(5.9)
    assert not c.conn.closed
    c.tick(6.0)
    assert c.conn.closed


def test_close_channel_with_error_api(running: Client) -> None:
    ch = running.open_channel(1)
    running.conn.close_channel_with_error(
        1, PreconditionFailed("delivery acknowledgement timed out")
    )
    frames = running.read()
    assert close_of(frames) == (
        406,
        "PRECONDITION_FAILED - delivery acknowledgement timed out",
        0,
        0,
    )
    assert ch.closed == 1
    running.conn.close_channel_with_error(2, CommandInvalid("boom"))
    assert close_of(running.read())[0] == 503


def test_long_reply_text_is_cut_like_rabbitmq(running: Client) -> None:
    # rabbit_binary_generator: more than 255 octets → the first 252 and "...".
    ch = running.open_channel(1)
    ch.raise_next = NotFound("x" * 300)
    code, text, _, _ = close_of(running.send(1, S.Basic.Get(queue="q")))
    assert code == 404
    assert text == "NOT_FOUND - " + "x" * (252 - len("NOT_FOUND - ")) + "..."
    assert len(text) == 255


def test_reply_text_of_exactly_255_octets_is_kept(running: Client) -> None:
    ch = running.open_channel(1)
    detail = "y" * (255 - len("NOT_FOUND - "))
    ch.raise_next = NotFound(detail)
    assert close_of(running.send(1, S.Basic.Get(queue="q")))[1] == "NOT_FOUND - " + detail
