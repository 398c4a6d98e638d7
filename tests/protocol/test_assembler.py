"""CommandAssembler: the rabbit_command_assembler state machine and its texts.

Texts marked "RabbitMQ 3.10.8" are what the oracle broker closed the connection with for
the same frame sequence.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.errors import FrameError, PreconditionFailed, UnexpectedFrame
from amqpd.protocol.assembler import Command, CommandAssembler
from amqpd.protocol.frames import Frame
from amqpd.protocol.methods import BasicAck, BasicGetOk, BasicPublish, QueueDeclare

PUBLISH = Frame(1, 1, BasicPublish("", "q").encode())
DECLARE = Frame(1, 1, QueueDeclare("q").encode())


def header(
    body_size: int, class_id: int = 60, weight: int = 0, props: bytes = b"\x00\x00"
) -> Frame:
    payload = class_id.to_bytes(2, "big") + weight.to_bytes(2, "big")
    return Frame(2, 1, payload + body_size.to_bytes(8, "big") + props)


def body(data: bytes) -> Frame:
    return Frame(3, 1, data)


def test_method_without_content() -> None:
    a = CommandAssembler(1000)
    assert a.feed(DECLARE) == Command(QueueDeclare("q"), None, None)
    assert a.idle


def test_publish_with_body_in_chunks() -> None:
    a = CommandAssembler(1000)
    assert a.feed(PUBLISH) is None
    assert not a.idle
    assert a.feed(header(6, props=b"\x10\x00\x02")) is None
    assert a.feed(body(b"abc")) is None
    assert a.feed(body(b"")) is None  # an empty body frame is harmless
    command = a.feed(body(b"def"))
    assert command == Command(BasicPublish("", "q"), b"\x10\x00\x02", b"abcdef")
    assert a.idle
    assert a.feed(DECLARE) == Command(QueueDeclare("q"))


def test_zero_body_size_completes_at_the_header() -> None:
    a = CommandAssembler(1000)
    a.feed(PUBLISH)
    assert a.feed(header(0)) == Command(BasicPublish("", "q"), b"\x00\x00", b"")
    assert a.idle


def test_single_body_frame_is_not_copied() -> None:
    a = CommandAssembler(10**6)
    a.feed(PUBLISH)
    a.feed(header(5000))
    payload = b"p" * 5000
    command = a.feed(body(payload))
    assert command is not None
    assert command.body is payload


def test_get_ok_is_a_content_method_too() -> None:
    a = CommandAssembler(1000)
    assert a.feed(Frame(1, 1, BasicGetOk(1, False, "", "q", 0).encode())) is None
    command = a.feed(header(1))
    assert command is None
    command = a.feed(body(b"x"))
    assert command is not None
    assert command.body == b"x"


def unexpected(a: CommandAssembler, frame: Frame) -> UnexpectedFrame:
    with pytest.raises(UnexpectedFrame) as info:
        a.feed(frame)
    assert info.value.reply_code == 505
    return info.value


def test_header_when_method_expected() -> None:
    err = unexpected(CommandAssembler(1000), header(1))
    # RabbitMQ 3.10.8
    assert err.detail == "expected method frame, got non method frame instead"
    assert (err.class_id, err.method_id) == (0, 0)


def test_body_when_method_expected() -> None:
    err = unexpected(CommandAssembler(1000), body(b"x"))
    assert err.detail == "expected method frame, got non method frame instead"


def test_method_when_header_expected() -> None:
    a = CommandAssembler(1000)
    a.feed(PUBLISH)
    err = unexpected(a, DECLARE)
    # RabbitMQ 3.10.8, with the publish's ids
    assert err.detail == (
        "expected content header for class 60, got non content header frame instead"
    )
    assert (err.class_id, err.method_id) == (60, 40)


def test_body_when_header_expected() -> None:
    a = CommandAssembler(1000)
    a.feed(PUBLISH)
    err = unexpected(a, body(b"x"))
    assert err.detail.startswith("expected content header for class 60")


def test_header_for_wrong_class() -> None:
    a = CommandAssembler(1000)
    a.feed(PUBLISH)
    err = unexpected(a, header(1, class_id=50))
    # RabbitMQ 3.10.8
    assert err.detail == "expected content header for class 60, got one for class 50 instead"
    assert (err.class_id, err.method_id) == (60, 40)


def test_header_with_weight() -> None:
    a = CommandAssembler(1000)
    a.feed(PUBLISH)
    err = unexpected(a, header(1, weight=1))
    # RabbitMQ 3.10.8
    assert err.detail == (
        "expected content header for class 60, got non content header frame instead"
    )


@pytest.mark.parametrize("frame", [DECLARE, header(1)])
def test_method_or_header_when_body_expected(frame: Frame) -> None:
    a = CommandAssembler(1000)
    a.feed(PUBLISH)
    a.feed(header(3))
    a.feed(body(b"a"))
    err = unexpected(a, frame)
    assert err.detail == "expected content body, got non content body frame instead"
    assert (err.class_id, err.method_id) == (60, 40)


def test_heartbeat_is_unexpected_here() -> None:
    err = unexpected(CommandAssembler(1000), Frame(8, 1, b""))
    # RabbitMQ 3.10.8 for a heartbeat on channel 1
    assert err.detail == "type 8, all octets = <<>>"


def test_body_beyond_declared_size() -> None:
    a = CommandAssembler(1000)
    a.feed(PUBLISH)
    a.feed(header(3))
    with pytest.raises(FrameError) as info:
        a.feed(body(b"abcd"))
    assert info.value.detail == "content body frame exceeds remaining content size"
    assert (info.value.class_id, info.value.method_id) == (60, 40)


def test_body_size_over_rabbitmq_hard_limit() -> None:
    a = CommandAssembler(2**40)
    a.feed(PUBLISH)
    with pytest.raises(FrameError) as info:
        a.feed(header(2**40))
    assert info.value.detail == (
        f"content body size {2**40} exceeds maximum allowed size 536870912"
    )


def test_oversized_message_is_dropped_then_406() -> None:
    a = CommandAssembler(10)
    a.feed(PUBLISH)
    assert a.feed(header(25)) is None
    assert a.feed(body(b"x" * 10)) is None
    assert a._chunks == []  # never buffered
    assert a.feed(body(b"x" * 10)) is None
    with pytest.raises(PreconditionFailed) as info:
        a.feed(body(b"x" * 5))
    assert info.value.reply_code == 406 and not info.value.hard
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - message size 25 is larger than configured max size 10"
    )
    assert (info.value.class_id, info.value.method_id) == (60, 40)
    # the channel's assembler is ready for the next command
    assert a.idle
    assert a.feed(DECLARE) == Command(QueueDeclare("q"))


def test_oversized_message_still_checks_order_and_size() -> None:
    a = CommandAssembler(1)
    a.feed(PUBLISH)
    a.feed(header(3))
    with pytest.raises(FrameError):
        a.feed(body(b"abcd"))
    a = CommandAssembler(1)
    a.feed(PUBLISH)
    a.feed(header(3))
    assert unexpected(a, DECLARE).detail.startswith("expected content body")


def test_exactly_max_body_size_is_fine() -> None:
    a = CommandAssembler(4)
    a.feed(PUBLISH)
    a.feed(header(4))
    command = a.feed(body(b"abcd"))
    assert command is not None and command.body == b"abcd"


def test_reset() -> None:
    a = CommandAssembler(100)
    a.feed(PUBLISH)
    a.reset()
    assert a.idle
    assert a.feed(DECLARE) == Command(QueueDeclare("q"))


def test_undecodable_method_propagates_frame_error() -> None:
    with pytest.raises(FrameError):
        CommandAssembler(100).feed(Frame(1, 1, BasicAck(1).encode()[:-1]))


@given(st.lists(st.integers(0, 50), max_size=12), st.integers(0, 300))
def test_any_split_reassembles(splits: list[int], size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    a = CommandAssembler(300)
    a.feed(PUBLISH)
    result = a.feed(header(size))
    pos = 0
    for n in splits:
        if result is not None or pos >= size:
            break
        chunk = data[pos : pos + max(1, n)]
        pos += len(chunk)
        result = a.feed(body(chunk))
    if size and result is None:
        result = a.feed(body(data[pos:]))
    assert result is not None
    assert result.body == data


@given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 8, 9]), st.binary(max_size=30)), max_size=8))
def test_random_frames_only_raise_amqp_errors(frames: list[tuple[int, bytes]]) -> None:
    from amqpd.errors import AMQPError
    from amqpd.protocol.frames import FrameReader, encode_frame

    reader = FrameReader(4096)
    a = CommandAssembler(100)
    stream = b"".join(encode_frame(t, 1, p) for t, p in frames)
    # prefix some real publishes so content states get exercised too
    reader.feed(encode_frame(1, 1, BasicPublish("", "q").encode()) + stream)
    try:
        while (frame := reader.next_frame()) is not None:
            a.feed(frame)
    except AMQPError:
        pass
