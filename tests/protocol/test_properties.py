"""BasicProperties: flag order, continuation words, pika cross-check, malformed lists."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pika.spec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.errors import FrameError
from amqpd.protocol.properties import EMPTY_PROPERTIES, BasicProperties, peek_delivery_mode

FIELDS = [
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
]
shortstr = st.text(max_size=40)
table = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), shortstr),
    max_size=3,
)
STRATEGY: dict[str, st.SearchStrategy[Any]] = {name: shortstr for name in FIELDS} | {
    "headers": table,
    "delivery_mode": st.integers(0, 255),
    "priority": st.integers(0, 255),
    "timestamp": st.integers(0, 2**64 - 1),
}
props_strategy = st.fixed_dictionaries({}, optional={name: STRATEGY[name] for name in FIELDS})


def test_empty() -> None:
    assert BasicProperties().encode() == EMPTY_PROPERTIES == b"\x00\x00"
    assert BasicProperties.decode(b"\x00\x00") == BasicProperties()


@pytest.mark.parametrize(("index", "name"), list(enumerate(FIELDS)))
def test_flag_bits_in_spec_order(index: int, name: str) -> None:
    # bit 15 = content-type ... bit 2 = cluster-id (spec 4.2.6.1, XML order)
    value: Any = {"headers": {}, "delivery_mode": 1, "priority": 1, "timestamp": 1}.get(name, "")
    raw = BasicProperties(**{name: value}).encode()
    assert struct.unpack(">H", raw[:2])[0] == 1 << (15 - index)


def test_golden() -> None:
    p = BasicProperties(content_type="text/plain", delivery_mode=2, timestamp=1)
    assert p.encode() == b"\x90\x40\x0atext/plain\x02" + struct.pack(">Q", 1)


@given(props_strategy)
def test_same_octets_as_pika_and_round_trip(values: dict[str, Any]) -> None:
    ours = BasicProperties(**values)
    raw = ours.encode()
    theirs = b"".join(pika.spec.BasicProperties(**values).encode())
    assert raw == theirs
    assert BasicProperties.decode(raw) == ours
    assert BasicProperties.decode(memoryview(raw)) == ours
    assert peek_delivery_mode(raw) == values.get("delivery_mode")
    decoded_by_pika = pika.spec.BasicProperties()
    decoded_by_pika.decode(raw)
    for name, value in values.items():
        assert getattr(decoded_by_pika, name) == value


def test_continuation_word_is_skipped() -> None:
    # flags with bit 0 set, then a continuation word with no flags
    raw = b"\x10\x01\x00\x00\x02"
    assert BasicProperties.decode(raw) == BasicProperties(delivery_mode=2)
    assert peek_delivery_mode(raw) == 2


def test_continuation_word_naming_a_property_is_refused() -> None:
    with pytest.raises(FrameError):
        BasicProperties.decode(b"\x00\x01\x80\x00")


def test_bit_1_is_ignored_like_rabbitmq() -> None:
    assert BasicProperties.decode(b"\x10\x02\x01") == BasicProperties(delivery_mode=1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\x80\x00",  # content-type flagged, missing
        b"\x80\x00\x05ab",  # shortstr overruns
        b"\x20\x00\x00\x00\x00\x09",  # headers table overruns
        b"\x00\x40\x00\x00\x00",  # truncated timestamp
        b"\x00\x00\x00",  # trailing octet
        b"\x00\x01",  # continuation word missing
    ],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises(FrameError):
        BasicProperties.decode(raw)


def test_non_utf8_shortstr_survives() -> None:
    raw = b"\x04\x00\x02\xff\xfe"
    p = BasicProperties.decode(raw)
    assert p.correlation_id is not None
    assert p.encode() == raw


def test_encode_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        BasicProperties(delivery_mode=256).encode()
    with pytest.raises(ValueError):
        BasicProperties(priority=-1).encode()
    with pytest.raises(ValueError):
        BasicProperties(message_id="x" * 256).encode()


@given(st.binary(max_size=40))
def test_garbage_only_raises_frame_error(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        BasicProperties.decode(raw)
