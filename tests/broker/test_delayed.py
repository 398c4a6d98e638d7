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
    assert s.add(10.0, "x", ["k0"], m[0]) is True
    assert s.add(5.0, "x", ["k1", "cc"], m[1]) is True  # new earliest
    assert s.add(10.0, "y", ["k2"], m[2]) is False
    assert s.add(7.0, "x", ["k3"], m[3]) is False
    assert s.add(5.0, "y", ["k4"], m[4]) is False  # same due time as m[1]: after it
    assert len(s) == 5 and s.next_due() == 5.0
    assert s.pop_due(4.999) == []
    assert s.pop_due(5.0) == [("x", ("k1", "cc"), m[1]), ("y", ("k4",), m[4])]
    assert s.count_for("x") == 2 and s.count_for("y") == 1
    assert s.pop_due(100.0) == [("x", ("k3",), m[3]), ("x", ("k0",), m[0]), ("y", ("k2",), m[2])]
    assert s.next_due() is None and len(s) == 0


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 3)), max_size=60), st.integers(0, 60))
def test_schedule_matches_a_sorted_list(items: list[tuple[int, int]], now: int) -> None:
    s = DelaySchedule()
    expected = []
    for order, (due, x) in enumerate(items):
        msg = Message("", str(order), b"", b"")
        s.add(float(due), x, [str(order)], msg)
        expected.append((due, order, x, msg))
    expected.sort(key=lambda e: (e[0], e[1]))
    due_now = [(x, (str(o),), msg) for due, o, x, msg in expected if due <= now]
    assert s.pop_due(float(now)) == due_now
    assert len(s) == len(items) - len(due_now)
    rest = s.pop_due(float("inf"))
    assert rest == [(x, (str(o),), msg) for due, o, x, msg in expected if due > now]


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
        vhost.declare_exchange("dx", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
        is x
    )
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'alternate-exchange'"):
        vhost.declare_exchange(
            "dx",
            "x-delayed-message",
            arguments={"x-delayed-type": "direct", "alternate-exchange": "ae"},
        )


# -- routing through the schedule (vhost) -----------------------------------------------


def _delayed_setup(vhost: VirtualHost, wrapped: str = "direct", **arguments: Any) -> Any:
    vhost.declare_exchange(
        "dx", "x-delayed-message", arguments={"x-delayed-type": wrapped, **arguments}
    )
    q = vhost.declare_queue("q")
    vhost.bind_queue("q", "dx", "rk")
    return q


def _publish(
    vhost: VirtualHost,
    delay: object,
    *,
    now: float,
    body: bytes = b"m",
    exchange: str = "dx",
    key: str = "rk",
    **headers: Any,
) -> list[Any]:
    hdrs = dict(headers)
    if delay is not None:
        hdrs["x-delay"] = delay
    m = Message(exchange, key, BasicProperties(headers=hdrs or None).encode(), body)
    queues, routed = vhost.route_message(exchange, m, now)
    for queue in queues:
        queue.enqueue(routed, now)
    return queues


def test_delayed_message_is_held_then_routed_with_negated_delay(vhost: VirtualHost) -> None:
    q = _delayed_setup(vhost)
    moved: list[float | None] = []
    vhost.on_deadline_moved = lambda: moved.append(vhost.next_deadline())
    assert _publish(vhost, 1500, now=10.0, body=b"a") == []  # routes nowhere now
    assert moved == [11.5] and vhost.next_deadline() == 11.5
    assert _publish(vhost, 500, now=10.2, body=b"b") == []  # earlier: the timer must move
    assert moved == [11.5, 10.7]
    assert _publish(vhost, 2000, now=10.3, body=b"c") == []  # later: no wake-up needed
    assert moved == [11.5, 10.7]
    assert q.message_count == 0 and len(vhost.delayed) == 3
    vhost.tick(10.69)
    assert q.message_count == 0
    vhost.tick(11.5)
    assert q.message_count == 2 and vhost.next_deadline() == 12.3
    first = q.get(11.5)
    assert first is not None and first.message.body == b"b"
    headers = first.message.headers()
    assert headers["x-delay"] == -500
    assert (first.message.exchange, first.message.routing_key) == ("dx", "rk")
    vhost.tick(100.0)
    assert q.message_count == 2 and vhost.next_deadline() is None


def test_undelayed_messages_route_at_once(vhost: VirtualHost) -> None:
    q = _delayed_setup(vhost)
    for delay in (None, 0, -1, MAX_DELAY_MS + 1):
        assert _publish(vhost, delay, now=1.0) == [q]
    assert q.message_count == 4 and len(vhost.delayed) == 0


def test_alternate_exchange_gets_a_copy_at_once(vhost: VirtualHost) -> None:
    # The plugin's issue #36: route/2 returned [] for the delayed message, so the AE fires.
    vhost.declare_exchange("ae", "fanout")
    aq = vhost.declare_queue("aq")
    vhost.bind_queue("aq", "ae", "")
    q = _delayed_setup(vhost, **{"alternate-exchange": "ae"})
    assert _publish(vhost, 100, now=0.0) == [aq]
    vhost.tick(0.1)
    assert q.message_count == 1 and aq.message_count == 1


def test_delayed_exchange_behind_an_exchange_to_exchange_binding(vhost: VirtualHost) -> None:
    q = _delayed_setup(vhost)
    vhost.declare_exchange("front", "fanout")
    vhost.bind_exchange("dx", "front", "")
    direct = vhost.declare_queue("direct")
    vhost.bind_queue("direct", "front", "")
    # The front exchange delivers at once; the delayed exchange behind it holds its copy.
    assert _publish(vhost, 300, now=0.0, exchange="front") == [direct]
    assert q.message_count == 0
    vhost.tick(0.3)
    assert q.message_count == 1


def test_a_fired_message_is_not_delayed_again_downstream(vhost: VirtualHost) -> None:
    _delayed_setup(vhost)
    vhost.declare_exchange("dx2", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    q2 = vhost.declare_queue("q2")
    vhost.bind_queue("q2", "dx2", "")
    vhost.bind_exchange("dx2", "dx", "rk")
    _publish(vhost, 200, now=0.0)
    vhost.tick(0.2)
    # dx routed it at 0.2 to dx2, which sees x-delay -200 and routes at once.
    assert q2.message_count == 1 and len(vhost.delayed) == 0


def test_cc_and_bcc_keys_are_kept_for_the_fired_route(vhost: VirtualHost) -> None:
    _delayed_setup(vhost)
    for name in ("cc", "bcc"):
        vhost.declare_queue(name)
        vhost.bind_queue(name, "dx", name)
    _publish(vhost, 50, now=0.0, CC=["cc"], BCC=["bcc"])
    vhost.tick(0.05)
    counts = {n: vhost.queues[n].message_count for n in ("q", "cc", "bcc")}
    assert counts == {"q": 1, "cc": 1, "bcc": 1}
    entry = vhost.queues["bcc"].get(0.05)
    assert entry is not None and "BCC" not in entry.message.headers()


def test_nothing_bound_at_fire_time_drops_it(vhost: VirtualHost) -> None:
    q = _delayed_setup(vhost)
    _publish(vhost, 50, now=0.0)
    vhost.unbind_queue("q", "dx", "rk")
    vhost.tick(1.0)
    assert q.message_count == 0 and len(vhost.delayed) == 0


def test_deleted_exchange_drops_its_pending_messages(vhost: VirtualHost) -> None:
    q = _delayed_setup(vhost)
    _publish(vhost, 50, now=0.0)
    vhost.delete_exchange("dx")
    vhost.declare_exchange("dx", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    vhost.bind_queue("q", "dx", "rk")
    vhost.tick(1.0)
    assert q.message_count == 0


def test_delayed_headers_exchange_reads_headers_at_fire_time(vhost: VirtualHost) -> None:
    vhost.declare_exchange("hx", "x-delayed-message", arguments={"x-delayed-type": "headers"})
    q = vhost.declare_queue("hq")
    vhost.bind_queue("hq", "hx", "", {"x-match": "all", "kind": "job"})
    _publish(vhost, 10, now=0.0, exchange="hx", key="", kind="job")
    _publish(vhost, 10, now=0.0, exchange="hx", key="", kind="other")
    vhost.tick(0.01)
    assert q.message_count == 1
