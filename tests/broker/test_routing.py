"""Bindings and routing: direct/fanout/topic/headers, e2e, alternate exchange, CC/BCC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from amqpd.broker.vhost import VirtualHost
from amqpd.errors import AccessRefused, NotFound, PreconditionFailed

A = object()


def names(queues: list[Any]) -> set[str]:
    return {q.name for q in queues}


def setup_queues(vhost: VirtualHost, *qs: str) -> None:
    for q in qs:
        vhost.declare_queue(q, owner=A)


def test_default_exchange_routes_by_queue_name(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "q")
    assert names(vhost.route("", msg(routing_key="q"))) == {"q"}
    assert vhost.route("", msg(routing_key="nope")) == []


def test_default_exchange_cannot_be_bound(vhost: VirtualHost) -> None:
    setup_queues(vhost, "q")
    vhost.declare_exchange("x", "direct")
    calls: list[Callable[[], None]] = [
        lambda: vhost.bind_queue("q", "", "k", owner=A),
        lambda: vhost.unbind_queue("q", "", "k", owner=A),
        lambda: vhost.bind_exchange("x", "", "k"),
        lambda: vhost.bind_exchange("", "x", "k"),
        lambda: vhost.unbind_exchange("x", "", "k"),
    ]
    for call in calls:
        with pytest.raises(AccessRefused) as info:
            call()
        assert info.value.detail == "operation not permitted on the default exchange"


def test_bind_missing(vhost: VirtualHost) -> None:
    setup_queues(vhost, "q")
    with pytest.raises(NotFound) as info:
        vhost.bind_queue("nope", "amq.direct", "k", owner=A)
    assert info.value.detail == "no queue 'nope' in vhost '/'"
    with pytest.raises(NotFound) as info:
        vhost.bind_queue("q", "nope", "k", owner=A)
    assert info.value.detail == "no exchange 'nope' in vhost '/'"
    with pytest.raises(NotFound) as info:  # the exchange is reported first
        vhost.bind_queue("nope", "nope2", "k", owner=A)
    assert info.value.detail == "no exchange 'nope2' in vhost '/'"
    with pytest.raises(NotFound) as info:
        vhost.bind_exchange("amq.direct", "nope", "k")
    assert info.value.detail == "no exchange 'nope' in vhost '/'"
    with pytest.raises(NotFound) as info:
        vhost.bind_exchange("nope", "amq.direct", "k")
    assert info.value.detail == "no exchange 'nope' in vhost '/'"


def test_unbind_is_idempotent(vhost: VirtualHost) -> None:
    setup_queues(vhost, "q")
    vhost.unbind_queue("nope", "amq.direct", "k", owner=A)
    vhost.unbind_queue("q", "nope", "k", owner=A)
    vhost.unbind_queue("q", "amq.direct", "zz", owner=A)
    vhost.unbind_exchange("amq.fanout", "nope", "k")
    vhost.unbind_exchange("amq.fanout", "amq.direct", "zz")


def test_direct(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "a", "b")
    vhost.bind_queue("a", "amq.direct", "k1", owner=A)
    vhost.bind_queue("b", "amq.direct", "k1", owner=A)
    vhost.bind_queue("a", "amq.direct", "k2", owner=A)
    vhost.bind_queue("a", "amq.direct", "k2", owner=A)  # duplicate: no-op
    vhost.bind_queue("a", "amq.direct", "k2", {"foo": 1}, owner=A)  # other args: a 2nd binding
    assert names(vhost.route("amq.direct", msg(routing_key="k1"))) == {"a", "b"}
    assert [q.name for q in vhost.route("amq.direct", msg(routing_key="k2"))] == ["a"]
    vhost.unbind_queue("a", "amq.direct", "k2", owner=A)
    assert names(vhost.route("amq.direct", msg(routing_key="k2"))) == {"a"}
    vhost.unbind_queue("a", "amq.direct", "k2", {"foo": 1}, owner=A)
    assert vhost.route("amq.direct", msg(routing_key="k2")) == []


def test_fanout(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "a", "b")
    vhost.bind_queue("a", "amq.fanout", "x", owner=A)
    vhost.bind_queue("b", "amq.fanout", "y", owner=A)
    assert names(vhost.route("amq.fanout", msg(routing_key="whatever"))) == {"a", "b"}


def test_topic(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "a", "b", "c")
    vhost.bind_queue("a", "amq.topic", "*.orange.*", owner=A)
    vhost.bind_queue("b", "amq.topic", "*.*.rabbit", owner=A)
    vhost.bind_queue("b", "amq.topic", "lazy.#", owner=A)
    vhost.bind_queue("c", "amq.topic", "#", owner=A)
    cases = {
        "quick.orange.rabbit": {"a", "b", "c"},
        "lazy.orange.elephant": {"a", "b", "c"},
        "quick.orange.fox": {"a", "c"},
        "lazy.brown.fox": {"b", "c"},
        "lazy": {"b", "c"},
        "quick.brown.fox": {"c"},
        "": {"c"},
    }
    for key, expected in cases.items():
        assert names(vhost.route("amq.topic", msg(routing_key=key))) == expected, key


def test_headers_exchange_routes(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "all", "any")
    vhost.bind_queue("all", "amq.headers", "", {"x-match": "all", "a": 1, "b": "x"}, owner=A)
    vhost.bind_queue("any", "amq.match", "", {"x-match": "any", "a": 1, "b": "x"}, owner=A)
    vhost.bind_exchange("amq.match", "amq.headers", "")
    m = msg(headers={"a": 1, "b": "x"})
    assert names(vhost.route("amq.headers", m)) == {"all", "any"}
    assert names(vhost.route("amq.headers", msg(headers={"a": 1}))) == {"any"}
    assert names(vhost.route("amq.headers", msg())) == set()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (
            "foo",
            'Invalid x-match field value <<"foo">>; expected all, any, all-with-x, or any-with-x',
        ),
        (1, "Invalid x-match field type signedint (value 1); expected longstr"),
    ],
)
def test_invalid_x_match(vhost: VirtualHost, value: object, text: str) -> None:
    setup_queues(vhost, "q")
    with pytest.raises(PreconditionFailed) as info:
        vhost.bind_queue("q", "amq.headers", "", {"x-match": value}, owner=A)
    assert info.value.detail == text
    with pytest.raises(PreconditionFailed):
        vhost.bind_exchange("amq.direct", "amq.headers", "", {"x-match": value})


def test_publish_missing_and_internal(vhost: VirtualHost, msg: Any) -> None:
    with pytest.raises(NotFound) as info:
        vhost.route("nope", msg())
    assert info.value.reply_text == "NOT_FOUND - no exchange 'nope' in vhost '/'"
    with pytest.raises(NotFound):  # publish does not strip CR/LF
        vhost.route("amq.\ndirect", msg())
    vhost.declare_exchange("pint", "direct", internal=True)
    with pytest.raises(AccessRefused) as ar:
        vhost.route("pint", msg())
    assert ar.value.detail == "cannot publish to internal exchange 'pint' in vhost '/'"
    with pytest.raises(AccessRefused):
        vhost.route("amq.rabbitmq.trace", msg())


def test_exchange_to_exchange(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "q1", "q2")
    vhost.declare_exchange("x1", "fanout")
    vhost.declare_exchange("x2", "direct")
    vhost.declare_exchange("x3", "fanout", internal=True)  # internal is fine as a hop
    vhost.bind_exchange("x2", "x1", "")
    vhost.bind_exchange("x3", "x2", "k")
    vhost.bind_queue("q1", "x2", "k", owner=A)
    vhost.bind_queue("q1", "x3", "", owner=A)  # two paths to q1: still one copy
    vhost.bind_queue("q2", "x3", "", owner=A)
    assert sorted(q.name for q in vhost.route("x1", msg(routing_key="k"))) == ["q1", "q2"]
    assert vhost.route("x1", msg(routing_key="other")) == []


def test_e2e_cycles(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "q")
    vhost.declare_exchange("x1", "fanout")
    vhost.declare_exchange("x2", "fanout")
    vhost.bind_exchange("x2", "x1", "")
    vhost.bind_exchange("x1", "x2", "")
    vhost.bind_exchange("x1", "x1", "")  # self loop
    vhost.bind_queue("q", "x2", "", owner=A)
    assert names(vhost.route("x1", msg())) == {"q"}
    assert names(vhost.route("x2", msg())) == {"q"}


def test_alternate_exchange(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "main", "unrouted")
    vhost.declare_exchange("ae", "fanout")
    vhost.bind_queue("unrouted", "ae", "", owner=A)
    vhost.declare_exchange("x", "direct", arguments={"alternate-exchange": "ae"})
    vhost.bind_queue("main", "x", "k", owner=A)
    assert names(vhost.route("x", msg(routing_key="k"))) == {"main"}
    assert names(vhost.route("x", msg(routing_key="z"))) == {"unrouted"}
    # a missing AE is skipped silently
    vhost.declare_exchange("y", "direct", arguments={"alternate-exchange": "missing"})
    assert vhost.route("y", msg(routing_key="z")) == []


def test_alternate_exchange_per_exchange(vhost: VirtualHost, msg: Any) -> None:
    # x1 routes to x2 (an exchange destination counts), x2 routes nowhere → x2's AE fires,
    # x1's AE does not.
    setup_queues(vhost, "ae1q", "ae2q")
    vhost.declare_exchange("ae1", "fanout")
    vhost.declare_exchange("ae2", "fanout")
    vhost.bind_queue("ae1q", "ae1", "", owner=A)
    vhost.bind_queue("ae2q", "ae2", "", owner=A)
    vhost.declare_exchange("x1", "fanout", arguments={"alternate-exchange": "ae1"})
    vhost.declare_exchange("x2", "direct", arguments={"alternate-exchange": "ae2"})
    vhost.bind_exchange("x2", "x1", "")
    assert names(vhost.route("x1", msg(routing_key="k"))) == {"ae2q"}
    # an AE loop terminates
    vhost.declare_exchange("l1", "direct", arguments={"alternate-exchange": "l2"})
    vhost.declare_exchange("l2", "direct", arguments={"alternate-exchange": "l1"})
    assert vhost.route("l1", msg(routing_key="k")) == []


def test_cc_bcc(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "a", "b", "c")
    for q in ("a", "b", "c"):
        vhost.bind_queue(q, "amq.direct", q, owner=A)
    m = msg(routing_key="a", headers={"CC": ["b"], "BCC": ["c", 7], "other": 1})
    queues, delivered = vhost.route_message("amq.direct", m)
    assert names(queues) == {"a", "b", "c"}
    assert delivered.properties.headers == {"CC": ["b"], "other": 1}
    assert delivered.routing_key == "a" and delivered.body == m.body
    # default exchange honours CC too
    queues, delivered = vhost.route_message("", msg(routing_key="a", headers={"CC": ["c"]}))
    assert names(queues) == {"a", "c"}
    # a message without BCC comes back as the same object
    plain = msg(routing_key="a")
    assert vhost.route_message("amq.direct", plain)[1] is plain


def test_cc_must_be_an_array(vhost: VirtualHost, msg: Any) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.route("", msg(routing_key="a", headers={"CC": "a"}))
    assert info.value.detail == 'invalid message: {unacceptable_type_in_header,"CC",longstr}'


def test_auto_delete_exchange(vhost: VirtualHost) -> None:
    setup_queues(vhost, "q1", "q2")
    vhost.declare_exchange("ad", "direct", auto_delete=True)
    assert "ad" in vhost.exchanges  # created unbound: stays
    vhost.bind_queue("q1", "ad", "k", owner=A)
    vhost.bind_queue("q2", "ad", "k", owner=A)
    vhost.unbind_queue("q1", "ad", "k", owner=A)
    assert "ad" in vhost.exchanges
    vhost.delete_queue("q2", owner=A)  # last binding goes with the queue
    assert "ad" not in vhost.exchanges


def test_auto_delete_cascade(vhost: VirtualHost) -> None:
    vhost.declare_exchange("src", "fanout", auto_delete=True)
    vhost.declare_exchange("mid", "fanout", auto_delete=True)
    setup_queues(vhost, "q")
    vhost.bind_exchange("mid", "src", "")
    vhost.bind_queue("q", "mid", "", owner=A)
    vhost.delete_queue("q", owner=A)  # mid loses its last binding → gone → src too
    assert "mid" not in vhost.exchanges and "src" not in vhost.exchanges


def test_delete_exchange_removes_bindings_both_ways(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "q")
    vhost.declare_exchange("x", "fanout")
    vhost.bind_exchange("x", "amq.fanout", "")
    vhost.bind_queue("q", "x", "", owner=A)
    vhost.delete_exchange("x")
    assert not vhost.exchanges["amq.fanout"].impl.has_bindings()
    assert vhost.route("amq.fanout", msg()) == []
    vhost.declare_exchange("x", "fanout")  # a new one starts clean
    assert not vhost.exchanges["x"].impl.has_bindings()


def test_delete_queue_removes_bindings(vhost: VirtualHost, msg: Any) -> None:
    setup_queues(vhost, "q")
    vhost.bind_queue("q", "amq.topic", "#", owner=A)
    vhost.bind_queue("q", "amq.direct", "k", owner=A)
    vhost.delete_queue("q", owner=A)
    assert not vhost.exchanges["amq.topic"].impl.has_bindings()
    assert not vhost.exchanges["amq.direct"].impl.has_bindings()
    assert vhost.statistics().bindings == 0
