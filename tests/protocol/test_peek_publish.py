"""FrameReader.peek_publish: the hot path's whole-publish shortcut.

The property that matters: whenever it finds a publish, reading the same octets frame by
frame through the assembler yields the very same command and ends at the same position;
whenever the frames are anything but a plain well-formed publish, it finds nothing and
leaves the buffer alone (so every error still comes from the frame-by-frame path).
"""

from __future__ import annotations

import struct

from hypothesis import event, given
from hypothesis import strategies as st

from amqpd.errors import AMQPError
from amqpd.protocol.assembler import Command, CommandAssembler
from amqpd.protocol.frames import FrameReader, encode_content, encode_frame, encode_method_frame
from amqpd.protocol.methods import BasicPublish, QueueDeclare, decode_method

PUBLISH = BasicPublish(exchange="x", routing_key="rk", mandatory=True)


def publish_octets(channel: int, body: bytes, frame_max: int = 131072) -> bytes:
    return encode_method_frame(channel, PUBLISH) + encode_content(
        channel, b"\x10\x00\x02", body, frame_max
    )


def slow_commands(data: bytes, frame_max: int) -> tuple[list[Command], int]:
    """What the frame-by-frame path makes of ``data`` (stops at the first error)."""
    reader = FrameReader(frame_max)
    reader.feed(data)
    assemblers: dict[int, CommandAssembler] = {}
    out: list[Command] = []
    try:
        while (frame := reader.next_frame()) is not None:
            assembler = assemblers.setdefault(frame.channel, CommandAssembler(1 << 20))
            cmd = assembler.feed(frame)
            if cmd is not None:
                out.append(cmd)
    except AMQPError:
        pass
    return out, len(data) - reader.buffered


def test_a_whole_publish_is_found_without_consuming_it() -> None:
    reader = FrameReader(131072)
    data = publish_octets(3, b"hello")
    reader.feed(data)
    found = reader.peek_publish()
    assert found is not None
    assert found.channel == 3
    assert decode_method(found.method) == PUBLISH
    assert (found.properties_raw, found.body) == (b"\x10\x00\x02", b"hello")
    assert found.end == len(data)
    assert reader.buffered == len(data)  # not consumed
    reader.consume(found.end)
    assert reader.buffered == 0


def test_an_empty_body_has_no_body_frame() -> None:
    reader = FrameReader(131072)
    reader.feed(publish_octets(1, b"") + publish_octets(1, b"next"))
    found = reader.peek_publish()
    assert found is not None and found.body == b""
    reader.consume(found.end)
    second = reader.peek_publish()
    assert second is not None and second.body == b"next"


def test_not_found_when_it_is_not_a_plain_whole_publish() -> None:
    whole = publish_octets(1, b"abcdef")
    header_at = len(encode_method_frame(1, PUBLISH))
    cases = {
        "incomplete": whole[:-1],
        "body in two frames": publish_octets(1, b"abcdef", frame_max=11),
        "not a publish": encode_method_frame(1, QueueDeclare("q")),
        "channel 0": publish_octets(0, b"abcdef"),
        "bad frame end": whole[:-1] + b"\x00",
        "header on another channel": whole[:header_at] + b"\x02\x00\x02" + whole[header_at + 3 :],
        "weight not zero": whole[: header_at + 9] + b"\x00\x01" + whole[header_at + 11 :],
        "another class": whole[: header_at + 7] + b"\x00\x32" + whole[header_at + 9 :],
    }
    for name, data in cases.items():
        reader = FrameReader(131072)
        reader.feed(data)
        assert reader.peek_publish() is None, name
    # A frame over frame_max is the slow path's 501, never taken here.
    reader = FrameReader(4096)
    reader.feed(publish_octets(1, b"x" * 5000, frame_max=0))
    assert reader.peek_publish() is None


_frame = st.one_of(
    st.builds(publish_octets, st.integers(0, 3), st.binary(max_size=40)),
    st.builds(
        lambda ch, body: publish_octets(ch, body, frame_max=16),
        st.integers(1, 3),
        st.binary(min_size=1, max_size=40),
    ),
    st.builds(encode_method_frame, st.integers(0, 3), st.just(QueueDeclare("q"))),
    st.builds(
        encode_frame, st.sampled_from([1, 2, 3, 8]), st.integers(0, 3), st.binary(max_size=20)
    ),
)


@given(
    st.lists(_frame, max_size=6),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
    st.integers(0, 400),
    st.sampled_from([0, 64, 131072]),
)
def test_agrees_with_the_frame_by_frame_path(
    frames: list[bytes], flips: list[tuple[int, int]], cut: int, frame_max: int
) -> None:
    data = bytearray(b"".join(frames))
    for at, value in flips:  # corrupt a few octets anywhere
        if at < len(data):
            data[at] = value
    data = data[: max(len(data) - cut, 0)] if cut % 3 == 0 else data
    reader = FrameReader(frame_max)
    reader.feed(bytes(data))
    found = reader.peek_publish()
    event("found" if found is not None else "not found")
    if found is None:
        return
    try:
        method = decode_method(found.method)
    except AMQPError:
        return  # the connection then leaves it to the frame-by-frame path (its error)
    commands, _ = slow_commands(bytes(data[: found.end]), frame_max)
    assert commands, "peek_publish found a publish the frame-by-frame path refuses"
    first = commands[0]
    assert first == Command(method, found.properties_raw, found.body)
    assert len(commands) == 1
    # and the frame-by-frame path ends that command exactly at found.end
    reader2 = FrameReader(frame_max)
    reader2.feed(bytes(data))
    assembler = CommandAssembler(1 << 20)
    while True:
        frame = reader2.next_frame()
        assert frame is not None
        if assembler.feed(frame) is not None:
            break
    assert len(data) - reader2.buffered == found.end
    assert struct.unpack_from(">H", data, 1)[0] == found.channel
