"""Dead-lettering through a real VirtualHost (reference 2.1): x-death, routing, cycles."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.deadletter import is_death_cycle, record_death
from amqpd.broker.message import Message
from amqpd.broker.queue import Queue
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.fieldtable import Int64, Timestamp, decode_table, encode_table
from amqpd.protocol.properties import BasicProperties

WALL = 1_700_000_000.75


@pytest.fixture
def vh() -> VirtualHost:
    return VirtualHost("/", wall_clock=lambda: WALL)


def publish(vh: VirtualHost, exchange: str, rk: str, body: bytes = b"x", **props: Any) -> None:
    message = Message(exchange, rk, BasicProperties(**props).encode(), body)
    queues, message = vh.route_message(exchange, message)
    for q in queues:
        q.enqueue(message, now=0.0)


def take(q: Queue) -> Message:
    entry = q.get(now=0.0)
    assert entry is not None, f"nothing in {q.name}"
    q.ack(entry)
    return entry.message


def reject(q: Queue, now: float = 0.0) -> None:
    entry = q.get(now=now)
    assert entry is not None
    q.discard(entry, now=now)


def setup(vh: VirtualHost, xtype: str = "fanout", **args: Any) -> tuple[Queue, Queue]:
    vh.declare_exchange("dlx", xtype)
    dlq = vh.declare_queue("dlq")
    vh.bind_queue("dlq", "dlx", "#" if xtype == "topic" else "")
    src = vh.declare_queue("src", arguments={"x-dead-letter-exchange": "dlx", **args})
    return src, dlq


def test_rejected_x_death_golden(vh: VirtualHost) -> None:
    src, dlq = setup(vh)
    publish(vh, "", "src", b"payload", headers={"h": 1}, expiration="60000", message_id="m1")
    reject(src)
    dead = take(dlq)
    assert (dead.exchange, dead.routing_key, dead.body) == ("dlx", "src", b"payload")
    props = dead.properties
    assert props.expiration is None and props.message_id == "m1"
    headers = props.headers
    assert headers is not None
    assert list(headers) == sorted(headers)  # usort'ed, as RabbitMQ 3.13 rebuilds it
    [death] = headers["x-death"]
    # Field order of mc_amqpl:death_table/7, original-expiration first.
    assert list(death) == [
        "original-expiration",
        "count",
        "reason",
        "queue",
        "time",
        "exchange",
        "routing-keys",
    ]
    assert death == {
        "original-expiration": "60000",
        "count": 1,
        "reason": "rejected",
        "queue": "src",
        "time": int(WALL),
        "exchange": "",
        "routing-keys": ["src"],
    }
    assert type(death["count"]) is Int64 and type(death["time"]) is Timestamp
    assert headers["x-first-death-queue"] == "src"
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-exchange"] == ""
    assert headers["x-last-death-queue"] == "src"
    assert headers["x-last-death-reason"] == "rejected"
    assert headers["x-last-death-exchange"] == ""
    assert headers["h"] == 1


def test_x_death_wire_types() -> None:
    """On the wire: count is 'l' (signed 64), time 'T', routing-keys an array of 'S'."""
    headers = record_death(
        {},
        queue="q",
        reason="expired",
        exchange="ex",
        routing_keys=["k"],
        time=1234,
        original_expiration=None,
    )
    raw = encode_table({"x-death": headers["x-death"]})
    entry = (
        b"\x05countl" + (1).to_bytes(8, "big")
        + b"\x06reasonS" + (7).to_bytes(4, "big") + b"expired"
        + b"\x05queueS" + (1).to_bytes(4, "big") + b"q"
        + b"\x04timeT" + (1234).to_bytes(8, "big")
        + b"\x08exchangeS" + (2).to_bytes(4, "big") + b"ex"
        + b"\x0crouting-keysA" + (6).to_bytes(4, "big") + b"S" + (1).to_bytes(4, "big") + b"k"
    )  # fmt: skip
    table = b"F" + len(entry).to_bytes(4, "big") + entry
    body = b"\x07x-deathA" + len(table).to_bytes(4, "big") + table
    assert raw == len(body).to_bytes(4, "big") + body
    decoded, _ = decode_table(raw, 0)
    assert decoded == {"x-death": headers["x-death"]}


def test_repeated_death_increments_count_and_keeps_first_values(vh: VirtualHost) -> None:
    src, dlq = setup(vh)
    publish(vh, "", "src", b"again")
    reject(src)
    first = take(dlq)
    first_death = first.headers()["x-death"][0]  # type: ignore[index]
    # A client republishes what it got, x-death included: the broker interprets it (3.13.3+).
    vh.wall_clock = lambda: WALL + 100
    queues, again = vh.route_message("", Message("", "src", first.properties_raw, first.body))
    for q in queues:
        q.enqueue(again, now=1.0)
    reject(src, now=1.0)
    headers = take(dlq).headers()
    [death] = headers["x-death"]  # type: ignore[misc]
    assert death["count"] == 2 and type(death["count"]) is Int64
    assert death["time"] == first_death["time"] == int(WALL)
    assert headers["x-first-death-reason"] == "rejected"


def test_different_reasons_prepend_most_recent_first(vh: VirtualHost) -> None:
    src, dlq = setup(vh)
    vh.declare_queue("ttl", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": "dlx2"})
    vh.declare_exchange("dlx2", "fanout")
    vh.bind_queue("src", "dlx2", "")
    publish(vh, "", "ttl", b"m")
    vh.tick(1.0)  # expires from "ttl" into "src" via dlx2
    reject(src, now=1.0)  # rejected from "src" into dlq
    headers = take(dlq).headers()
    deaths: Any = headers["x-death"]
    assert [(d["queue"], d["reason"]) for d in deaths] == [("src", "rejected"), ("ttl", "expired")]
    assert deaths[0]["exchange"] == "dlx2" and deaths[1]["exchange"] == ""
    assert headers["x-first-death-queue"] == "ttl"
    assert headers["x-first-death-reason"] == "expired"
    assert headers["x-last-death-queue"] == "src"
    assert headers["x-last-death-reason"] == "rejected"
    assert headers["x-last-death-exchange"] == "dlx2"


def test_routing_keys_cc_and_bcc(vh: VirtualHost) -> None:
    vh.declare_exchange("dlx", "direct")
    vh.declare_exchange("in", "direct")
    for key in ("k", "cc1", "bcc1", "rk2"):
        vh.declare_queue("d_" + key)
        vh.bind_queue("d_" + key, "dlx", key)
    vh.declare_queue("plain", arguments={"x-dead-letter-exchange": "dlx"})
    vh.declare_queue(
        "withrk",
        arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "rk2"},
    )
    for name in ("plain", "withrk"):
        vh.bind_queue(name, "in", "k")
    publish(vh, "in", "k", headers={"CC": ["cc1"], "BCC": ["bcc1"]})
    reject(vh.queues["plain"])
    reject(vh.queues["withrk"])
    for key in ("k", "cc1", "bcc1"):
        dead = take(vh.queues["d_" + key])
        headers: Any = dead.headers()
        assert dead.routing_key == "k" and headers["CC"] == ["cc1"] and "BCC" not in headers
        assert headers["x-death"][0]["routing-keys"] == ["k", "cc1"]
        assert headers["x-death"][0]["exchange"] == "in"
    dead = take(vh.queues["d_rk2"])
    headers = dead.headers()
    assert dead.routing_key == "rk2" and "CC" not in headers and "BCC" not in headers
    assert headers["x-death"][0]["routing-keys"] == ["k", "cc1"]
    assert vh.queues["d_rk2"].message_count == 0


def test_missing_dlx_drops_silently(vh: VirtualHost) -> None:
    src = vh.declare_queue("src", arguments={"x-dead-letter-exchange": "nowhere"})
    publish(vh, "", "src")
    reject(src)
    assert src.message_count == 0 and src.unacked_count == 0


def test_default_exchange_as_dlx(vh: VirtualHost) -> None:
    vh.declare_queue("target")
    src = vh.declare_queue(
        "src", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "target"}
    )
    publish(vh, "", "src", b"via-default")
    reject(src)
    assert take(vh.queues["target"]).body == b"via-default"


def test_expiry_dead_letters_with_dlrk_and_no_original_expiration(vh: VirtualHost) -> None:
    _src, dlq = setup(vh, "topic", **{"x-message-ttl": 20, "x-dead-letter-routing-key": "dl.rk"})
    publish(vh, "", "src", b"short-lived")
    assert vh.next_deadline() == 0.02
    vh.tick(0.02)
    dead = take(dlq)
    assert (dead.body, dead.routing_key) == (b"short-lived", "dl.rk")
    death: Any = dead.headers()["x-death"]
    assert (death[0]["reason"], death[0]["queue"]) == ("expired", "src")
    assert "original-expiration" not in death[0]


def test_per_message_expiry_keeps_original_expiration(vh: VirtualHost) -> None:
    _src, dlq = setup(vh)
    publish(vh, "", "src", b"m", expiration="20")
    vh.tick(0.02)
    dead = take(dlq)
    death: Any = dead.headers()["x-death"]
    assert death[0]["original-expiration"] == "20" and dead.properties.expiration is None


def test_drop_head_and_reject_publish_dlx_are_maxlen(vh: VirtualHost) -> None:
    _src, dlq = setup(vh, **{"x-max-length": 1})
    publish(vh, "", "src", b"m0")
    publish(vh, "", "src", b"m1")
    assert take(dlq).headers()["x-death"][0]["reason"] == "maxlen"  # type: ignore[index]
    vh.declare_queue(
        "rp",
        arguments={
            "x-dead-letter-exchange": "dlx",
            "x-max-length": 1,
            "x-overflow": "reject-publish-dlx",
        },
    )
    rp = vh.queues["rp"]
    assert rp.enqueue(Message("", "rp", b"", b"first"), now=0.0)
    assert not rp.enqueue(Message("", "rp", b"", b"second"), now=0.0)
    dead = take(dlq)
    assert dead.body == b"second"
    assert dead.headers()["x-death"][0]["reason"] == "maxlen"  # type: ignore[index]


def test_expiry_cycle_is_dropped(vh: VirtualHost) -> None:
    # src expires into itself: {src, expired} is in the history, no rejection: dropped.
    vh.declare_queue(
        "src",
        arguments={
            "x-message-ttl": 10,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "src",
        },
    )
    publish(vh, "", "src")
    vh.tick(1.0)
    assert vh.queues["src"].message_count == 0
    assert vh.next_deadline() is None


def test_two_queue_ttl_loop_is_broken_on_the_way_back(vh: VirtualHost) -> None:
    for name, other in (("a", "b"), ("b", "a")):
        vh.declare_queue(
            name,
            arguments={
                "x-message-ttl": 10,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": other,
            },
        )
    publish(vh, "", "a")
    vh.tick(0.01)  # a -> b
    assert vh.queues["b"].message_count == 1
    vh.tick(0.02)  # b -> a would be a cycle: dropped
    assert vh.queues["a"].message_count == 0 and vh.queues["b"].message_count == 0


def test_reject_loop_goes_on(vh: VirtualHost) -> None:
    # A client-driven retry loop: a rejection in the history means no cycle.
    src = vh.declare_queue(
        "src", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "src"}
    )
    publish(vh, "", "src")
    for count in (1, 2, 3):
        reject(src)
        [death] = src.get(now=0.0).message.headers()["x-death"]  # type: ignore[union-attr,misc]
        assert death["count"] == count
        src.requeue(list(src._unacked.values()), now=0.0)


def test_is_death_cycle_walks_most_recent_first() -> None:
    def d(queue: str, reason: str) -> dict[str, Any]:
        return {"queue": queue, "reason": reason}

    assert not is_death_cycle("a", [])
    assert is_death_cycle("a", [d("a", "expired")])
    assert is_death_cycle("a", [d("b", "maxlen"), d("a", "expired")])
    assert not is_death_cycle("a", [d("b", "rejected"), d("a", "expired")])
    assert not is_death_cycle("a", [d("a", "rejected")])
    assert is_death_cycle("a", [d("a", "expired"), d("b", "rejected")])
    assert not is_death_cycle("c", [d("a", "expired"), d("b", "maxlen")])


def test_malformed_client_x_death_is_replaced() -> None:
    headers = record_death(
        {"x-death": "nonsense"},
        queue="q",
        reason="rejected",
        exchange="",
        routing_keys=["q"],
        time=1,
        original_expiration=None,
    )
    assert [e["count"] for e in headers["x-death"]] == [1]
    assert headers["x-first-death-queue"] == "q"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["rejected", "expired"])),
        min_size=1,
        max_size=20,
    )
)
def test_model_x_death_history(deaths: list[tuple[str, str]]) -> None:
    """One entry per {queue, reason}, most recent first; counts add up; first/last headers."""
    headers: dict[str, Any] = {}
    for i, (queue, reason) in enumerate(deaths):
        headers = record_death(
            headers,
            queue=queue,
            reason=reason,
            exchange=f"x{i}",
            routing_keys=[f"k{i}"],
            time=1000 + i,
            original_expiration=None,
        )
    entries = headers["x-death"]
    pairs = [(e["queue"], e["reason"]) for e in entries]
    recency = list(dict.fromkeys(reversed(deaths)))
    assert pairs == recency
    for e in entries:
        key = (e["queue"], e["reason"])
        first = deaths.index(key)
        assert e["count"] == deaths.count(key) and type(e["count"]) is Int64
        assert (e["time"], e["exchange"], e["routing-keys"]) == (
            1000 + first,
            f"x{first}",
            [f"k{first}"],
        )
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == deaths[0]
    assert headers["x-first-death-exchange"] == "x0"
    assert (headers["x-last-death-queue"], headers["x-last-death-reason"]) == deaths[-1]
    assert headers["x-last-death-exchange"] == f"x{len(deaths) - 1}"


def test_bcc_keys_survive_on_the_message_not_in_its_headers(vh: VirtualHost) -> None:
    vh.declare_queue("q")
    message = Message("", "q", BasicProperties(headers={"BCC": ["q", 5]}).encode(), b"x")
    [_queue], routed = vh.route_message("", message)
    assert routed.bcc == ("q",) and "BCC" not in routed.headers()
    assert routed.with_properties(routed.properties).bcc == ("q",)


def test_queue_ttl_zero_dead_letters_unless_delivered(vh: VirtualHost) -> None:
    src, dlq = setup(vh, **{"x-message-ttl": 0})
    publish(vh, "", "src", b"gone")
    assert src.message_count == 0 and take(dlq).body == b"gone"


def test_client_supplied_entries_come_back_canonical() -> None:
    client_entry = {
        "routing-keys": ["k"],
        "exchange": "ex",
        "time": Timestamp(5),
        "queue": "other",
        "reason": "expired",
        "count": 3,  # a client re-encoded it as a plain int (signed 32 on the wire)
    }
    headers = record_death(
        {"x-death": [client_entry]},
        queue="q",
        reason="rejected",
        exchange="",
        routing_keys=["q"],
        time=9,
        original_expiration=None,
    )
    old = headers["x-death"][1]
    assert list(old) == ["count", "reason", "queue", "time", "exchange", "routing-keys"]
    assert type(old["count"]) is Int64 and old["count"] == 3
    assert type(old["time"]) is Timestamp and old["time"] == 5
    assert "x-first-death-queue" not in headers  # it had a history already
