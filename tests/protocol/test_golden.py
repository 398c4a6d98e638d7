"""Golden bytes captured from a real RabbitMQ (3.10.8), both directions.

The capture (data/rabbitmq-golden.txt) came from a raw-socket client talking to the oracle
with frame_max 4096: queue.declare 'golden-q' (exclusive, x-max-length 10, x-queue-mode
lazy), a 5000-octet publish with PROPS, a mandatory publish to 'no-such-q' (returned),
basic.get, an empty-body publish + basic.consume 'ctag-1' no-ack, then one more publish.
"""

from __future__ import annotations

from pathlib import Path

from amqpd.protocol.fieldtable import Int32
from amqpd.protocol.frames import (
    FrameReader,
    encode_basic_deliver,
    encode_basic_get_ok,
    encode_basic_return,
    encode_method_frame,
)
from amqpd.protocol.methods import (
    BasicConsumeOk,
    ConnectionStart,
    QueueDeclareOk,
    decode_method,
)
from amqpd.protocol.properties import BasicProperties

GOLDEN = {
    name: bytes.fromhex(value)
    for name, value in (
        line.split()
        for line in (Path(__file__).parent / "data" / "rabbitmq-golden.txt")
        .read_text()
        .splitlines()
        if line and not line.startswith("#")
    )
}
PROPS = BasicProperties(
    content_type="application/json",
    headers={"h": 1, "s": "v"},
    delivery_mode=2,
    priority=3,
    correlation_id="c1",
    reply_to="r",
    expiration="60000",
    message_id="m1",
    timestamp=1700000000,
    type="t",
    app_id="app",
)
BODY = b"B" * 5000


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    reader = FrameReader(4096)
    reader.feed(data)
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append((frame.type, frame.channel, frame.payload))
    assert reader.buffered == 0
    return out


def test_connection_start_decodes_and_reencodes() -> None:
    raw = GOLDEN["connection_start"]
    [(ftype, channel, payload)] = frames(raw)
    assert (ftype, channel) == (1, 0)
    start = decode_method(payload)
    assert isinstance(start, ConnectionStart)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.mechanisms == b"PLAIN AMQPLAIN"
    assert start.locales == b"en_US"
    caps = start.server_properties["capabilities"]
    assert isinstance(caps, dict)
    assert caps["publisher_confirms"] is True
    assert start.server_properties["product"] == "RabbitMQ"
    # Same octets back: table order and the S type for strings are kept.
    assert encode_method_frame(0, start) == raw


def test_queue_declare_ok() -> None:
    raw = GOLDEN["declare_ok"]
    m = QueueDeclareOk("golden-q", 0, 0)
    assert encode_method_frame(1, m) == raw
    assert decode_method(frames(raw)[0][2]) == m


def test_consume_ok() -> None:
    raw = GOLDEN["consume_ok"]
    assert encode_method_frame(1, BasicConsumeOk("ctag-1")) == raw


def test_properties_match_rabbitmq_echo() -> None:
    assert PROPS.encode() == GOLDEN["props"]
    decoded = BasicProperties.decode(GOLDEN["props"])
    assert decoded == PROPS
    assert decoded.headers is not None
    assert type(decoded.headers["h"]) is Int32


def test_basic_deliver_bytes_match_rabbitmq() -> None:
    raw = GOLDEN["deliver"]
    ours = encode_basic_deliver(
        1, "ctag-1", 3, False, "", "golden-q", PROPS.encode(), BODY, frame_max=4096
    )
    assert ours == raw
    assert [f[0] for f in frames(raw)] == [1, 2, 3, 3]


def test_basic_deliver_empty_body_has_no_body_frame() -> None:
    raw = GOLDEN["deliver_empty"]
    ours = encode_basic_deliver(1, "ctag-1", 2, False, "", "golden-q", b"\x00\x00", b"", 4096)
    assert ours == raw


def test_basic_get_ok_bytes_match_rabbitmq() -> None:
    raw = GOLDEN["get_ok"]
    ours = encode_basic_get_ok(1, 1, False, "", "golden-q", 0, PROPS.encode(), BODY, 4096)
    assert ours == raw


def test_basic_return_bytes_match_rabbitmq() -> None:
    raw = GOLDEN["return"]
    ours = encode_basic_return(1, 312, "NO_ROUTE", "", "no-such-q", PROPS.encode(), b"ret", 4096)
    assert ours == raw
