"""The delayed-message exchange's pure parts: x-delay parsing, the header swap, the schedule,
and x-delayed-type validation on declare (the plugin's rules, reference 2.4)."""

from __future__ import annotations

import decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.broker.delayed import (
    MAX_DELAY_MS,
    DelaySchedule,
    delay_of,
    swap_delay_header,
)
from amqpd.broker.exchanges import DirectExchange, HeadersExchange, TopicExchange
from amqpd.broker.message import Message
from amqpd.broker.vhost import VirtualHost
from amqpd.errors import PreconditionFailed
from amqpd.protocol.fieldtable import (
    ByteArray,
    Float32,
    Int8,
    Int16,
    Int32,
    Int64,
    Timestamp,
    UInt8,
    UInt16,
    UInt32,
    decode_table,
    encode_table,
)
from amqpd.protocol.properties import BasicProperties


@pytest.mark.parametrize(
    ("value", "delay"),
    [
        (Int8(5), 5),
        (UInt8(5), 5),
        (Int16(300), 300),
        (UInt16(300), 300),
        (Int32(1000), 1000),
        (UInt32(1000), 1000),
        (Int64(1000), 1000),
        (1000, 1000),
        ("1500", 1500),
        ("+15", 15),
        (1500.9, 1500),
        (Float32(2.5), 2),
        (decimal.Decimal("12.7"), 12),
        (MAX_DELAY_MS, MAX_DELAY_MS),
    ],
)
def test_delay_of_accepted_values(value: object, delay: int) -> None:
    assert delay_of({"x-delay": value}) == delay


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        Int32(-5000),  # what swap_delay_header leaves behind: never delayed twice
        MAX_DELAY_MS + 1,
        "abc",
        "1 000",
        "",
        b"\xff\xfe",  # a longstr that is not UTF-8
        ByteArray(b"100"),
        Timestamp(100),
        True,
        None,
        [100],
        {"a": 1},
        float("nan"),
        float("inf"),
        decimal.Decimal("NaN"),
        0.5,  # truncated to 0
    ],
)
def test_delay_of_routes_at_once(value: object) -> None:
    assert delay_of({"x-delay": value}) is None


def test_delay_of_without_header() -> None:
    assert delay_of(None) is None
    assert delay_of({}) is None
    assert delay_of({"x-other": 10}) is None


def _message(headers: dict[str, Any] | None, **props: Any) -> Message:
    raw = BasicProperties(headers=headers, **props).encode()
    return Message("dx", "rk", raw, b"body")


def test_swap_delay_header_negates_and_keeps_the_rest() -> None:
    m = _message({"a": "1", "x-delay": Int16(250), "z": 2}, message_id="m1", priority=3)
    out = swap_delay_header(m)
    assert out.body == b"body" and (out.exchange, out.routing_key) == ("dx", "rk")
    props = out.properties
    assert props.message_id == "m1" and props.priority == 3
    assert props.headers is not None
    assert list(props.headers) == ["a", "x-delay", "z"]  # replaced in place
    # On the wire: a signedint (I), as set_table_value(H, <<"x-delay">>, signedint, -D).
    table, _ = decode_table(encode_table(props.headers), 0)
    assert type(table["x-delay"]) is Int32 and table["x-delay"] == -250
    assert delay_of(props.headers) is None


def test_swap_delay_header_beyond_int32_is_a_long() -> None:
    out = swap_delay_header(_message({"x-delay": Int64(MAX_DELAY_MS)}))
    assert out.properties.headers is not None
    value = out.properties.headers["x-delay"]
    assert type(value) is Int64 and value == -MAX_DELAY_MS


def test_swap_delay_header_leaves_undelayed_messages_alone() -> None:
    m = _message({"x-delay": 0})
    assert swap_delay_header(m) is m
    plain = Message("dx", "rk", b"", b"")
    assert swap_delay_header(plain) is plain


def test_schedule_orders_by_due_time_then_arrival() -> None:
    s = DelaySchedule()
    m = [Message("", str(i), b"", b"") for i in range(5)]
    assert s.add(10.0, "x", m[0]) is True
    assert s.add(5.0, "x", m[1]) is True  # new earliest
    assert s.add(10.0, "y", m[2]) is False
    assert s.add(7.0, "x", m[3]) is False
    assert s.add(5.0, "y", m[4]) is False  # same due time as m[1]: after it
    assert len(s) == 5 and s.next_due() == 5.0
    assert s.pop_due(4.999) == []
    assert s.pop_due(5.0) == [("x", m[1]), ("y", m[4])]
    assert s.count_for("x") == 2 and s.count_for("y") == 1
    assert s.pop_due(100.0) == [("x", m[3]), ("x", m[0]), ("y", m[2])]
    assert s.next_due() is None and len(s) == 0


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 3)), max_size=60), st.integers(0, 60))
def test_schedule_matches_a_sorted_list(items: list[tuple[int, int]], now: int) -> None:
    s = DelaySchedule()
    expected = []
    for order, (due, x) in enumerate(items):
        msg = Message("", str(order), b"", b"")
        s.add(float(due), x, msg)
        expected.append((due, order, x, msg))
    expected.sort(key=lambda e: (e[0], e[1]))
    due_now = [(x, msg) for due, _, x, msg in expected if due <= now]
    assert s.pop_due(float(now)) == due_now
    assert len(s) == len(items) - len(due_now)
    rest = s.pop_due(float("inf"))
    assert rest == [(x, msg) for due, _, x, msg in expected if due > now]


# -- declare -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wrapped", "impl"),
    [("direct", DirectExchange), ("topic", TopicExchange), ("headers", HeadersExchange)],
)
def test_declare_delayed_exchange_wraps_its_type(
    vhost: VirtualHost, wrapped: str, impl: type
) -> None:
    x = vhost.declare_exchange("dx", "x-delayed-message", arguments={"x-delayed-type": wrapped})
    assert x.type == "x-delayed-message" and x.delayed
    assert type(x.impl) is impl
    assert not vhost.exchanges["amq.direct"].delayed


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({}, "Invalid argument, 'x-delayed-type' must be an existing exchange type"),
        (
            {"x-delayed-type": Int32(1)},
            "Invalid argument, 'x-delayed-type' must be an existing exchange type",
        ),
        (
            {"x-delayed-type": "x-delayed-message"},
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'",
        ),
        ({"x-delayed-type": "x-nonsense"}, "unknown exchange type 'x-nonsense'"),
    ],
)
def test_declare_delayed_exchange_invalid_type(
    vhost: VirtualHost, arguments: dict[str, Any], text: str
) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_exchange("dx", "x-delayed-message", arguments=arguments)
    assert info.value.reply_code == 406
    assert info.value.detail == text
    assert "dx" not in vhost.exchanges


def test_redeclare_compares_only_the_alternate_exchange(vhost: VirtualHost) -> None:
    # The plugin delegates assert_args_equivalence to the wrapped type: x-delayed-type is
    # not compared on a redeclare, as in RabbitMQ.
    x = vhost.declare_exchange("dx", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    assert (
        vhost.declare_exchange(
            "dx", "x-delayed-message", arguments={"x-delayed-type": "fanout"}
        )
        is x
    )
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'alternate-exchange'"):
        vhost.declare_exchange(
            "dx",
            "x-delayed-message",
            arguments={"x-delayed-type": "direct", "alternate-exchange": "ae"},
        )
