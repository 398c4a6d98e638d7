"""Field tables and arrays: RabbitMQ's type dialect, round trips, malformed input."""

from __future__ import annotations

import contextlib
import struct
from decimal import Decimal
from typing import Any

import pika.data
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.errors import FrameError
from amqpd.protocol.fieldtable import (
    ByteArray,
    FieldValue,
    Float32,
    Int8,
    Int16,
    Int32,
    Int64,
    Timestamp,
    UInt8,
    UInt16,
    UInt32,
    decode_array,
    decode_table,
    encode_array,
    encode_table,
)


def entry(key: str, tag: bytes, value: bytes) -> bytes:
    raw = key.encode()
    return bytes([len(raw)]) + raw + tag + value


def table(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack(">I", len(body)) + body


# (value, tag + encoded value): the errata dialect, one row per type.
GOLDEN: list[tuple[FieldValue, bytes]] = [
    (True, b"t\x01"),
    (False, b"t\x00"),
    (Int8(-2), b"b\xfe"),
    (UInt8(254), b"B\xfe"),
    (Int16(-2), b"s\xff\xfe"),  # 's' is SIGNED 16-bit in RabbitMQ's dialect
    (UInt16(65534), b"u\xff\xfe"),
    (Int32(-2), b"I\xff\xff\xff\xfe"),
    (UInt32(2**32 - 2), b"i\xff\xff\xff\xfe"),  # 'i' is unsigned 32
    (Int64(-2), b"l" + b"\xff" * 7 + b"\xfe"),  # 'l' is SIGNED 64
    (Float32(1.5), b"f" + struct.pack(">f", 1.5)),
    (2.25, b"d" + struct.pack(">d", 2.25)),
    (Decimal("1.23"), b"D\x02\x00\x00\x00\x7b"),
    ("héllo", b"S\x00\x00\x00\x06h\xc3\xa9llo"),
    (ByteArray(b"\x00\xff"), b"x\x00\x00\x00\x02\x00\xff"),
    (Timestamp(1700000000), b"T" + struct.pack(">Q", 1700000000)),
    (None, b"V"),
    ([1, "a"], b"A\x00\x00\x00\x0bI\x00\x00\x00\x01S\x00\x00\x00\x01a"),
    ({"k": None}, b"F\x00\x00\x00\x03\x01kV"),
]


@pytest.mark.parametrize(("value", "wire"), GOLDEN, ids=lambda v: repr(v)[:20])
def test_golden_both_ways(value: FieldValue, wire: bytes) -> None:
    raw = table(entry("k", wire[:1], wire[1:]))
    assert encode_table({"k": value}) == raw
    decoded, end = decode_table(raw, 0)
    assert end == len(raw)
    assert decoded == {"k": value}
    assert type(decoded["k"]) is type(value)


def test_plain_int_picks_I_then_l() -> None:
    assert encode_table({"a": 2**31 - 1})[-5:] == b"I\x7f\xff\xff\xff"
    assert encode_table({"a": -(2**31)})[-5:] == b"I\x80\x00\x00\x00"
    assert encode_table({"a": 2**31})[-9:] == b"l" + struct.pack(">q", 2**31)
    with pytest.raises(ValueError):
        encode_table({"a": 2**63})


def test_plain_bytes_is_longstr_and_bytearray_is_x() -> None:
    assert encode_table({"a": b"\x01"}) == table(entry("a", b"S", b"\x00\x00\x00\x01\x01"))
    assert encode_table({"a": ByteArray(b"\x01")}) == table(
        entry("a", b"x", b"\x00\x00\x00\x01\x01")
    )


def test_non_utf8_longstr_decodes_to_bytes() -> None:
    raw = table(entry("a", b"S", b"\x00\x00\x00\x01\xff"))
    decoded, _ = decode_table(raw, 0)
    assert decoded == {"a": b"\xff"}
    assert encode_table(decoded) == raw


def test_non_utf8_key_survives_round_trip() -> None:
    raw = b"\x00\x00\x00\x03\x01\xffV"
    decoded, _ = decode_table(raw, 0)
    assert encode_table(decoded) == raw


def test_capital_L_reads_as_signed_64() -> None:
    raw = table(entry("a", b"L", b"\xff" * 8))
    assert decode_table(raw, 0)[0] == {"a": -1}


def test_widths_compare_equal_to_plain_ints() -> None:
    assert Int16(1000) == 1000 == Int64(1000)
    assert hash(UInt8(7)) == hash(7)
    assert {"x-max-length": Int16(10)} == {"x-max-length": 10}


def test_width_out_of_range_refused() -> None:
    with pytest.raises(ValueError):
        encode_table({"a": Int8(200)})
    with pytest.raises(ValueError):
        encode_table({"a": UInt16(-1)})


def test_decimal_forms() -> None:
    assert encode_table({"a": Decimal("5E+2")})[-6:] == b"D\x00\x00\x00\x01\xf4"
    # the value is signed, as the Java client and pika write it
    raw = encode_table({"a": Decimal("-0.1")})
    assert raw[-6:] == b"D\x01\xff\xff\xff\xff"
    assert decode_table(raw, 0)[0] == {"a": Decimal("-0.1")}
    with pytest.raises(ValueError):
        encode_table({"a": Decimal(2**31)})
    with pytest.raises(ValueError):
        encode_table({"a": Decimal("NaN")})
    with pytest.raises(ValueError):
        encode_table({"a": Decimal(2**33)})


def test_unencodable_type() -> None:
    with pytest.raises(TypeError):
        encode_table({"a": object()})  # type: ignore[dict-item]


def test_decode_at_offset_and_empty() -> None:
    raw = b"junk" + encode_table({"a": 1}) + b"tail"
    decoded, end = decode_table(raw, 4)
    assert decoded == {"a": 1}
    assert raw[end:] == b"tail"
    assert decode_table(b"\x00\x00\x00\x00", 0) == ({}, 4)
    assert encode_table({}) == b"\x00\x00\x00\x00"
    assert encode_table(None) == b"\x00\x00\x00\x00"


def test_arrays() -> None:
    raw = encode_array([Int8(1), "x", [None], {"k": True}])
    value, end = decode_array(raw, 0)
    assert end == len(raw)
    assert value == [1, "x", [None], {"k": True}]
    assert encode_array(value) == raw
    assert encode_array(()) == b"\x00\x00\x00\x00"
    assert decode_array(memoryview(raw), 0)[0] == value


MALFORMED = {
    "short length": b"\x00\x00\x00",
    "length beyond buffer": b"\x00\x00\x00\x05\x01a",
    "key overruns": b"\x00\x00\x00\x02\x05a",
    "key without value": b"\x00\x00\x00\x02\x01a",
    "unknown tag": table(entry("a", b"Z", b"")),
    "truncated int": table(entry("a", b"I", b"\x00\x00")),
    "truncated bool": table(entry("a", b"t", b"")),
    "truncated decimal": table(entry("a", b"D", b"\x01\x00")),
    "truncated longstr len": table(entry("a", b"S", b"\x00\x00")),
    "longstr overruns": table(entry("a", b"S", b"\x00\x00\x00\x09abc")),
    "byte array overruns": table(entry("a", b"x", b"\x00\x00\x00\x09abc")),
    # the inner table claims 6 octets; the buffer has them but the outer table does not
    "inner table escapes outer": struct.pack(">I", 8)
    + b"\x01aF"
    + struct.pack(">I", 6)
    + b"\x01b"
    + b"t\x01\x01cV",
    "inner array escapes outer": struct.pack(">I", 8) + b"\x01aA" + struct.pack(">I", 3) + b"VVV",
    "fixed value escapes outer": struct.pack(">I", 5) + b"\x01aI\x00\x00\x00\x00\x00",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_raises_frame_error(raw: bytes) -> None:
    with pytest.raises(FrameError) as info:
        decode_table(raw, 0)
    assert info.value.reply_code == 501
    assert info.value.detail


def test_deep_nesting_is_a_frame_error() -> None:
    raw = b"V"
    for _ in range(5000):
        raw = b"A" + struct.pack(">I", len(raw)) + raw
    raw = table(entry("a", raw[:1], raw[1:]))
    with pytest.raises(FrameError):
        decode_table(raw, 0)


@given(st.binary(max_size=64))
def test_garbage_only_ever_raises_frame_error(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_table(raw, 0)
    with contextlib.suppress(FrameError):
        decode_array(raw, 0)


# --------------------------------------------------------------------------- properties

keys = st.text(max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-128, 127).map(Int8),
    st.integers(0, 255).map(UInt8),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    st.integers(0, 2**16 - 1).map(UInt16),
    st.integers(-(2**31), 2**31 - 1).map(Int32),
    st.integers(0, 2**32 - 1).map(UInt32),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.integers(0, 2**64 - 1).map(Timestamp),
    st.floats(allow_nan=False),
    st.floats(width=32, allow_nan=False).map(Float32),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-100, max_value=100),
    st.text(max_size=20),
    st.binary(max_size=20).map(ByteArray),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
tables = st.dictionaries(keys, values, max_size=6)


@given(tables)
def test_table_round_trip(value: dict[str, Any]) -> None:
    raw = encode_table(value)
    decoded, end = decode_table(raw, 0)
    assert end == len(raw)
    assert decoded == value
    assert encode_table(decoded) == raw


@given(st.lists(values, max_size=6))
def test_array_round_trip(value: list[Any]) -> None:
    raw = encode_array(value)
    decoded, _end = decode_array(raw, 0)
    assert decoded == value
    assert encode_array(decoded) == raw


# pika writes what RabbitMQ clients write; it has no float and writes bytes as 'x'.
pika_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20)
)
pika_values: st.SearchStrategy[Any] = st.recursive(
    pika_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
pika_tables = st.dictionaries(keys, pika_values, max_size=6)


@given(pika_tables)
def test_same_octets_as_pika(value: dict[str, Any]) -> None:
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, value)
    theirs = b"".join(pieces)
    assert encode_table(value) == theirs
    assert decode_table(theirs, 0)[0] == value
    assert pika.data.decode_table(encode_table(value), 0)[0] == value
