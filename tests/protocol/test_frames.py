"""FrameReader and the frame encoders.

Error texts marked "RabbitMQ 3.10.8" were captured from the oracle broker by sending the
same octets over a raw socket (the reply-text of its connection.close, minus the
"FRAME_ERROR - " prefix).
"""

from __future__ import annotations

import contextlib

import pika.frame
import pika.spec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.errors import FrameError
from amqpd.protocol.constants import FRAME_MIN_SIZE, PROTOCOL_HEADER
from amqpd.protocol.frames import (
    HEARTBEAT_FRAME,
    Frame,
    FrameReader,
    encode_basic_deliver,
    encode_basic_get_ok,
    encode_basic_return,
    encode_content,
    encode_frame,
    encode_method_frame,
)
from amqpd.protocol.methods import BasicDeliver, BasicGetOk, BasicReturn, QueueDeclare
from amqpd.protocol.properties import BasicProperties

DECLARE = QueueDeclare("", exclusive=True).encode()


def read_all(reader: FrameReader) -> list[Frame]:
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append(frame)
    return out


def error_for(data: bytes, frame_max: int = FRAME_MIN_SIZE) -> str:
    reader = FrameReader(frame_max)
    reader.feed(data)
    with pytest.raises(FrameError) as info:
        read_all(reader)
    assert info.value.reply_code == 501
    return info.value.detail


STREAM = (
    encode_method_frame(1, QueueDeclare("q"))
    + HEARTBEAT_FRAME
    + encode_content(1, b"\x00\x00", b"x" * 10000, FRAME_MIN_SIZE)
    + encode_frame(3, 7, b"")
)
EXPECTED = [
    Frame(1, 1, QueueDeclare("q").encode()),
    Frame(8, 0, b""),
    Frame(2, 1, b"\x00\x3c\x00\x00" + (10000).to_bytes(8, "big") + b"\x00\x00"),
    Frame(3, 1, b"x" * 4088),
    Frame(3, 1, b"x" * 4088),
    Frame(3, 1, b"x" * 1824),
    Frame(3, 7, b""),
]


def test_whole_stream_in_one_feed() -> None:
    reader = FrameReader(FRAME_MIN_SIZE)
    reader.feed(STREAM)
    assert read_all(reader) == EXPECTED
    assert reader.buffered == 0
    assert reader.next_frame() is None


def test_byte_by_byte() -> None:
    reader = FrameReader(FRAME_MIN_SIZE)
    got = []
    for i in range(len(STREAM)):
        reader.feed(STREAM[i : i + 1])
        got.extend(read_all(reader))
    assert got == EXPECTED


@given(st.lists(st.integers(1, 5000), max_size=20))
def test_arbitrary_chunking(cuts: list[int]) -> None:
    reader = FrameReader(FRAME_MIN_SIZE)
    got = []
    pos = 0
    for size in [*cuts, len(STREAM)]:
        reader.feed(memoryview(STREAM)[pos : pos + size])
        pos += size
        got.extend(read_all(reader))
    assert got == EXPECTED


def test_trailing_partial_frame_waits() -> None:
    reader = FrameReader(FRAME_MIN_SIZE)
    frame = encode_method_frame(1, QueueDeclare("q"))
    reader.feed(HEARTBEAT_FRAME + frame[:-1])
    assert read_all(reader) == [Frame(8, 0, b"")]
    assert reader.buffered == len(frame) - 1
    reader.feed(bytearray(frame[-1:]))
    assert read_all(reader) == [Frame(1, 1, QueueDeclare("q").encode())]


def test_protocol_header() -> None:
    reader = FrameReader(FRAME_MIN_SIZE)
    reader.feed(PROTOCOL_HEADER[:5])
    assert reader.read_protocol_header() is None
    reader.feed(PROTOCOL_HEADER[5:] + HEARTBEAT_FRAME)
    assert reader.read_protocol_header() == b"AMQP\x00\x00\x09\x01"
    assert read_all(reader) == [Frame(8, 0, b"")]


# --------------------------------------------------------------------------- frame_max


def test_frame_max_fudge() -> None:
    # RabbitMQ accepts payloads up to frame_max (frame_max - 8 plus 8 octets of fudge)
    reader = FrameReader(4096)
    reader.feed(encode_frame(3, 1, b"x" * 4096))
    assert read_all(reader)[0].payload == b"x" * 4096


def test_frame_too_large_is_refused_from_the_header_alone() -> None:
    reader = FrameReader(4096)
    reader.feed(b"\x01\x00\x01" + (4097).to_bytes(4, "big"))  # just the header
    with pytest.raises(FrameError) as info:
        reader.next_frame()
    # RabbitMQ 3.10.8
    assert info.value.detail == "type 1, all octets = <<>>: {frame_too_large,4097,4088}"


def test_huge_size_needs_no_buffering() -> None:
    assert error_for(b"\x03\x00\x01\xff\xff\xff\xff", 131072) == (
        "type 3, all octets = <<>>: {frame_too_large,4294967295,131064}"
    )


def test_frame_max_zero_is_unlimited_and_settable() -> None:
    reader = FrameReader(0)
    reader.feed(encode_frame(3, 1, b"x" * 100000))
    assert len(read_all(reader)[0].payload) == 100000
    reader.frame_max = 4096
    reader.feed(encode_frame(3, 1, b"x" * 5000))
    with pytest.raises(FrameError):
        reader.next_frame()


# --------------------------------------------------------------------------- bad frames


def test_bad_frame_end_rabbitmq_text() -> None:
    # RabbitMQ 3.10.8, including Erlang's line wrap of the tuple past column 80
    assert error_for(encode_frame(1, 1, DECLARE)[:-1] + b"\xcf") == (
        "type 1, all octets = <<0,50,0,10,0,0,0,4,0,0,0,0>>: {invalid_frame_end_marker,\n"
        + " " * 53
        + "207}"
    )
    assert error_for(b"\x01\x00\x01" + (4096).to_bytes(4, "big") + b"\x00" * 4097) == (
        "type 1, first 16 octets = <<0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0>>: "
        "{invalid_frame_end_marker,\n" + " " * 64 + "0}"
    )
    assert error_for(encode_frame(1, 1, b"\x00\x3c\x00\x28")[:-1] + b"\x00") == (
        "type 1, all octets = <<0,60,0,40>>: {invalid_frame_end_marker,0}"
    )


@pytest.mark.parametrize(
    ("data", "text"),
    [  # all RabbitMQ 3.10.8
        (encode_frame(9, 1, b"abc"), 'type 9, all octets = <<"abc">>: unknown_frame'),
        (
            encode_frame(9, 1, bytes(range(40))),
            "type 9, first 16 octets = <<0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15>>: unknown_frame",
        ),
        (
            encode_frame(9, 1, b'ab\ncd\t"q\\'),
            'type 9, all octets = <<"ab\\ncd\\t\\"q\\\\">>: unknown_frame',
        ),
        (encode_frame(9, 1, b"a\x1bb\x07"), "type 9, all octets = <<97,27,98,7>>: unknown_frame"),
        (encode_frame(8, 0, b"x"), 'type 8, all octets = <<"x">>: unknown_frame'),
        (encode_frame(1, 1, b"\x00\x3c"), "type 1, all octets = <<0,60>>: unknown_frame"),
        (
            encode_frame(2, 1, b"\x00\x3c\x00\x00"),
            "type 2, all octets = <<0,60,0,0>>: unknown_frame",
        ),
    ],
)
def test_unknown_or_short_frames(data: bytes, text: str) -> None:
    assert error_for(data) == text


def test_latin1_octets_print_as_characters() -> None:
    # RabbitMQ writes these octets raw (invalid UTF-8); we write the Latin-1 characters
    assert error_for(encode_frame(9, 1, bytes([200, 201, 65]))) == (
        'type 9, all octets = <<"ÈÉA">>: unknown_frame'
    )


@given(st.binary(max_size=200))
def test_garbage_only_raises_frame_error(data: bytes) -> None:
    reader = FrameReader(FRAME_MIN_SIZE)
    reader.feed(data)
    with contextlib.suppress(FrameError):
        read_all(reader)


# --------------------------------------------------------------------------- encoders


def test_heartbeat() -> None:
    assert pika.frame.Heartbeat().marshal() == HEARTBEAT_FRAME


def test_method_frame_matches_pika() -> None:
    ours = encode_method_frame(3, QueueDeclare("q", durable=True, arguments={"a": 1}))
    theirs = pika.frame.Method(
        3, pika.spec.Queue.Declare(queue="q", durable=True, arguments={"a": 1})
    ).marshal()
    assert ours == theirs


def test_content_matches_pika() -> None:
    props = BasicProperties(content_type="a/b", delivery_mode=2)
    body = b"y" * 9000
    ours = encode_content(5, props.encode(), body, 4096)
    pika_props = pika.spec.BasicProperties(content_type="a/b", delivery_mode=2)
    theirs = pika.frame.Header(5, len(body), pika_props).marshal() + b"".join(
        pika.frame.Body(5, body[i : i + 4088]).marshal() for i in range(0, len(body), 4088)
    )
    assert ours == theirs


@pytest.mark.parametrize(
    ("size", "frames"), [(0, 0), (1, 1), (4088, 1), (4089, 2), (8176, 2), (8177, 3)]
)
def test_body_chunking(size: int, frames: int) -> None:
    reader = FrameReader(4096)
    reader.feed(encode_content(1, b"\x00\x00", b"z" * size, 4096))
    got = read_all(reader)
    assert [f.type for f in got] == [2] + [3] * frames
    assert b"".join(f.payload for f in got[1:]) == b"z" * size


def test_unlimited_frame_max_sends_one_body_frame() -> None:
    reader = FrameReader(0)
    reader.feed(encode_content(1, b"\x00\x00", b"z" * 300000, 0))
    assert [f.type for f in read_all(reader)] == [2, 3]


text = st.text(max_size=30)


@given(
    channel=st.integers(1, 65535),
    tag=text,
    delivery_tag=st.integers(0, 2**64 - 1),
    redelivered=st.booleans(),
    exchange=text,
    routing_key=text,
    body=st.binary(max_size=10000),
    frame_max=st.sampled_from([0, 4096, 4097, 131072]),
)
def test_fast_encoders_equal_the_generic_path(
    channel: int,
    tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    body: bytes,
    frame_max: int,
) -> None:
    props = BasicProperties(message_id="m", headers={"k": 1}).encode()
    content = encode_content(channel, props, body, frame_max)
    assert (
        encode_basic_deliver(
            channel, tag, delivery_tag, redelivered, exchange, routing_key, props, body, frame_max
        )
        == encode_method_frame(
            channel, BasicDeliver(tag, delivery_tag, redelivered, exchange, routing_key)
        )
        + content
    )
    assert (
        encode_basic_get_ok(
            channel, delivery_tag, redelivered, exchange, routing_key, 7, props, body, frame_max
        )
        == encode_method_frame(
            channel, BasicGetOk(delivery_tag, redelivered, exchange, routing_key, 7)
        )
        + content
    )
    assert (
        encode_basic_return(channel, 312, "NO_ROUTE", exchange, routing_key, props, body, frame_max)
        == encode_method_frame(channel, BasicReturn(312, "NO_ROUTE", exchange, routing_key))
        + content
    )


def test_encoders_refuse_overlong_shortstr() -> None:
    with pytest.raises(ValueError):
        encode_basic_deliver(1, "t" * 256, 1, False, "", "", b"\x00\x00", b"", 4096)


@given(size=st.integers(0, 5000), frame_max=st.sampled_from([0, 4096, 4097, 4104]))
def test_size_rule_property(size: int, frame_max: int) -> None:
    reader = FrameReader(frame_max)
    reader.feed(encode_frame(3, 1, b"\x00" * size))
    if frame_max and size > frame_max:
        with pytest.raises(FrameError):
            reader.next_frame()
    else:
        frame = reader.next_frame()
        assert frame is not None and len(frame.payload) == size
