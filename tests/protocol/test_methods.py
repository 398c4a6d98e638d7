"""Methods: every class against pika.spec's encoder (both ways), round trips, bad input."""

from __future__ import annotations

import inspect
from typing import Any

import attrs
import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.errors import CommandInvalid, FrameError
from amqpd.protocol._generate import MethodSpec, load_spec
from amqpd.protocol.methods import (
    METHODS,
    BasicAck,
    BasicConsume,
    BasicNack,
    BasicPublish,
    BasicQos,
    ConfirmSelect,
    ConnectionOpen,
    ExchangeDeclare,
    Method,
    QueueDeclare,
    decode_method,
)

SPECS = {(m.class_id, m.method_id): m for m in load_spec()}
# pika's keyword for our attribute, where they differ
PIKA_NAMES = {"no_wait": "nowait", "global_": "global_qos"}

keys = st.text(max_size=10)
pika_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=10)
)
pika_values: st.SearchStrategy[Any] = st.recursive(
    pika_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3),
    max_leaves=6,
)
FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "octet": st.integers(0, 255),
    "short": st.integers(0, 2**16 - 1),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**64 - 1),
    "timestamp": st.integers(0, 2**64 - 1),
    "bit": st.booleans(),
    "shortstr": st.text(max_size=60),  # <= 240 UTF-8 octets
    "longstr": st.binary(max_size=100),
    "table": st.dictionaries(keys, pika_values, max_size=4),
}


def method_values(spec: MethodSpec) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {f.attr: FIELD_STRATEGIES[f.type] for f in spec.fields if not f.reserved}
    )


ALL = sorted(METHODS)


@pytest.mark.parametrize("ids", ALL, ids=[METHODS[i].NAME for i in ALL])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_matches_pika_both_ways(ids: tuple[int, int], data: st.DataObject) -> None:
    cls = METHODS[ids]
    values = data.draw(method_values(SPECS[ids]))
    ours = cls(**values)
    pika_cls = pika.spec.methods[ids[0] << 16 | ids[1]]
    theirs = pika_cls(**{PIKA_NAMES.get(k, k): v for k, v in values.items()})
    expected = b"".join(theirs.encode())
    encoded = ours.encode()
    assert encoded[:4] == bytes([ids[0] >> 8, ids[0] & 255, ids[1] >> 8, ids[1] & 255])
    assert encoded[4:] == expected
    assert decode_method(encoded) == ours
    assert decode_method(encoded[:4] + expected) == ours


def test_pika_knows_every_method_we_do_and_vice_versa() -> None:
    ours = set(METHODS)
    # pika still carries 0-8's access class (30), which 0-9-1 and RabbitMQ dropped.
    theirs = {(i >> 16, i & 0xFFFF) for i in pika.spec.methods if i >> 16 != 30}
    assert ours == theirs


@pytest.mark.parametrize("ids", ALL, ids=[METHODS[i].NAME for i in ALL])
def test_flags_match_pika(ids: tuple[int, int]) -> None:
    cls = METHODS[ids]
    pika_cls = pika.spec.methods[ids[0] << 16 | ids[1]]
    params = inspect.signature(pika_cls.__init__).parameters
    required = [n for n in list(params)[1:] if params[n].default is inspect.Parameter.empty]
    instance = pika_cls(**dict.fromkeys(required))
    # pika's "synchronous" means "expects a reply"; ours is the spec XML's attribute, which
    # also marks the replies. basic.recover expects recover-ok but the XML does not say so.
    if instance.synchronous:
        assert cls.SYNCHRONOUS or cls.NAME == "basic.recover"
    assert (ids in {(60, 40), (60, 50), (60, 60), (60, 71)}) == cls.HAS_CONTENT
    assert pika_cls.NAME.replace(".", "").lower() == cls.__name__.lower()


def test_class_attributes_and_names() -> None:
    m = BasicPublish(exchange="x", routing_key="k", mandatory=True)
    assert (m.CLASS_ID, m.METHOD_ID, m.NAME) == (60, 40, "basic.publish")
    assert m.HAS_CONTENT and not m.SYNCHRONOUS
    assert QueueDeclare.SYNCHRONOUS
    assert isinstance(m, Method)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        m.exchange = "y"  # type: ignore[misc]
    assert not hasattr(m, "__dict__")
    assert "ticket" not in attrs.fields_dict(BasicPublish)
    assert "reserved_1" not in attrs.fields_dict(ConnectionOpen)
    assert attrs.fields_dict(BasicQos).keys() == {"prefetch_size", "prefetch_count", "global_"}
    assert attrs.fields_dict(ConfirmSelect).keys() == {"nowait"}


def test_bits_pack_low_bit_first() -> None:
    # spec 4.2.5.2: passive=bit0 durable=bit1 exclusive=bit2 auto-delete=bit3 no-wait=bit4
    raw = QueueDeclare("q", durable=True, auto_delete=True).encode()
    assert raw == b"\x00\x32\x00\x0a\x00\x00\x01q\x0a\x00\x00\x00\x00"
    raw = ExchangeDeclare("x", "fanout", internal=True, no_wait=True).encode()
    assert raw[-5] == 0b11000
    assert BasicNack(7, multiple=False, requeue=True).encode()[-1] == 0b10


def test_golden_basic_publish_and_ack() -> None:
    assert BasicPublish("amq.direct", "rk", mandatory=True).encode() == (
        b"\x00\x3c\x00\x28\x00\x00\x0aamq.direct\x02rk\x01"
    )
    assert BasicAck(2**64 - 1, True).encode() == b"\x00\x3c\x00\x50" + b"\xff" * 8 + b"\x01"
    assert decode_method(b"\x00\x3c\x00\x50" + b"\x00" * 7 + b"\x05\x00") == BasicAck(5, False)


def test_reserved_fields_are_ignored_on_decode() -> None:
    # a client sending a non-zero ticket / capabilities / insist still decodes
    raw = b"\x00\x3c\x00\x28\x12\x34\x01x\x01k\x00"
    assert decode_method(raw) == BasicPublish("x", "k")
    raw = b"\x00\x0a\x00\x28\x01/\x03abc\x01"
    assert decode_method(raw) == ConnectionOpen("/")


def test_decode_accepts_memoryview_and_bytearray() -> None:
    raw = BasicConsume("q", "t", no_ack=True, arguments={"x-priority": 5}).encode()
    assert decode_method(memoryview(raw)) == decode_method(bytearray(raw)) == decode_method(raw)


def test_unknown_method_is_503() -> None:
    with pytest.raises(CommandInvalid) as info:
        decode_method(b"\x00\x3c\x00\x63")
    assert info.value.reply_code == 503
    assert info.value.detail == "unknown method class-id 60 method-id 99"
    with pytest.raises(CommandInvalid):
        decode_method(b"\x00\x07\x00\x0a")


def test_short_payload_is_501() -> None:
    with pytest.raises(FrameError):
        decode_method(b"\x00\x3c")


def test_truncated_and_trailing_use_rabbitmq_text() -> None:
    # the texts RabbitMQ 3.10.8 sent for exactly these queue.declare payloads
    good = QueueDeclare("", exclusive=True).encode()
    with pytest.raises(FrameError) as info:
        decode_method(good + b"\x00")
    assert info.value.detail == "cannot decode <<0,0,0,4,0,0,0,0,0>>"
    assert (info.value.class_id, info.value.method_id) == (50, 10)
    with pytest.raises(FrameError) as info:
        decode_method(good[:-2])
    assert info.value.detail == "cannot decode <<0,0,0,4,0,0>>"
    assert (info.value.class_id, info.value.method_id) == (50, 10)
    assert isinstance(info.value.__cause__, FrameError)  # the table reader's reason
    # RabbitMQ 3.10.8 for a table whose longstr overruns it
    raw = b"\x00\x32\x00\x0a\x00\x00\x01q\x00\x00\x00\x00\x09\x01aS\x00\x00\x00\x09"
    with pytest.raises(FrameError) as info:
        decode_method(raw)
    assert info.value.reply_text == (
        "FRAME_ERROR - cannot decode <<0,0,1,113,0,0,0,0,9,1,97,83,0,0,0,9>>"
    )
    with pytest.raises(FrameError) as info:
        decode_method(b"\x00\x3c\x00\x50\x00\x01")
    assert info.value.detail == "cannot decode <<0,1>>"


def test_invalid_utf8_shortstr() -> None:
    raw = b"\x00\x32\x00\x0a\x00\x00\x02\xff\xfe\x02\x00\x00\x00\x00"
    with pytest.raises(FrameError) as info:
        decode_method(raw)
    # RabbitMQ's text, and like RabbitMQ no class/method ids
    assert info.value.reply_text == "FRAME_ERROR - Malformed UTF-8 in shortstr"
    assert (info.value.class_id, info.value.method_id) == (0, 0)


def test_basic_publish_shortstrs_are_not_utf8_checked() -> None:
    # RabbitMQ accepts these (the exchange gets a 404 quoting the octets): lossless round trip
    raw = b"\x00\x3c\x00\x28\x00\x00\x02\xff\xfe\x01\x80\x00"
    m = decode_method(raw)
    assert isinstance(m, BasicPublish)
    assert m.encode() == raw


def test_overlong_shortstr_refused_on_encode() -> None:
    with pytest.raises(ValueError):
        QueueDeclare("q" * 256).encode()
    assert len(QueueDeclare("q" * 255).encode()) == 6 + 256 + 1 + 4


def test_shortstr_overrunning_payload() -> None:
    with pytest.raises(FrameError):
        decode_method(b"\x00\x32\x00\x0a\x00\x00\x09abc")


@given(st.binary(max_size=40), st.sampled_from(ALL))
def test_garbage_arguments_only_raise_frame_error(args: bytes, ids: tuple[int, int]) -> None:
    payload = bytes([ids[0] >> 8, ids[0] & 255, ids[1] >> 8, ids[1] & 255]) + args
    try:
        m = decode_method(payload)
    except FrameError:
        return
    assert type(m) is METHODS[ids]
    # whatever decoded re-encodes to something that decodes to the same method
    assert decode_method(m.encode()) == m


def full_tables() -> st.SearchStrategy[dict[str, Any]]:
    from amqpd.protocol.fieldtable import ByteArray, Float32, Int8, Timestamp, UInt32

    scalars = st.one_of(
        pika_scalars,
        st.floats(allow_nan=False),
        st.floats(width=32, allow_nan=False).map(Float32),
        st.integers(-128, 127).map(Int8),
        st.integers(0, 2**32 - 1).map(UInt32),
        st.integers(0, 2**64 - 1).map(Timestamp),
        st.binary(max_size=8).map(ByteArray),
    )
    values = st.recursive(
        scalars,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3),
        max_leaves=6,
    )
    return st.dictionaries(keys, values, max_size=4)


@pytest.mark.parametrize(
    "ids",
    [i for i in ALL if any(f.type == "table" for f in SPECS[i].fields)],
    ids=lambda i: METHODS[i].NAME,
)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_round_trip_with_every_field_type(ids: tuple[int, int], data: st.DataObject) -> None:
    spec = SPECS[ids]
    values = {
        f.attr: data.draw(full_tables() if f.type == "table" else FIELD_STRATEGIES[f.type])
        for f in spec.fields
        if not f.reserved
    }
    m = METHODS[ids](**values)
    raw = m.encode()
    decoded = decode_method(raw)
    assert decoded == m
    assert decoded.encode() == raw


def test_golden_queue_declare_with_arguments() -> None:
    # what pika sends for channel.queue_declare("orders", durable=True, arguments=...)
    raw = (
        b"\x00\x32\x00\x0a\x00\x00\x06orders\x02"
        b"\x00\x00\x00\x45"
        b"\x0cx-max-lengthI\x00\x00\x00\x0a"
        b"\x0cx-queue-typeS\x00\x00\x00\x06quorum"
        b"\x18x-single-active-consumert\x01"
    )
    m = QueueDeclare(
        "orders",
        durable=True,
        arguments={"x-max-length": 10, "x-queue-type": "quorum", "x-single-active-consumer": True},
    )
    assert m.encode() == raw
    decoded = decode_method(raw)
    assert decoded == m
    assert isinstance(decoded, QueueDeclare)
    assert type(decoded.arguments["x-max-length"]).__name__ == "Int32"
