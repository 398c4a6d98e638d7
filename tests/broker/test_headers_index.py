"""The headers exchange's index routes exactly as scanning every binding would.

exchanges/headers.py indexes bindings by one (key, value) they need; this checks, against
the plain scan (every destination whose some binding ``headers_match``es, in the order the
destinations were first bound), that no binding is missed, none is added and the order is
kept, through binds and unbinds of every value type the field-table decoder produces.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.exchanges.headers import HeadersExchange, headers_match
from amqpd.protocol.fieldtable import ByteArray, Int8, Int64, Timestamp

KEYS = st.sampled_from(["a", "b", "c", "x-k"])
VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(["1", "v", "é"]),
    st.sampled_from([b"1", b"v", ByteArray(b"v"), "é".encode()]),
    st.integers(-2, 2),
    st.sampled_from([Int8(1), Int64(2), Timestamp(1)]),
    st.booleans(),
    st.sampled_from([1.0, 2.5, float("nan"), Decimal(1), Decimal("2.5")]),
    st.none(),
    st.just([1]),
    st.just({"a": 1}),
)
MATCH = st.sampled_from([None, "all", "any", "all-with-x", "any-with-x", b"any"])


@st.composite
def bindings(draw: st.DrawFn) -> dict[str, Any]:
    table = draw(st.dictionaries(KEYS, VALUES, max_size=3))
    kind = draw(MATCH)
    if kind is not None:
        table["x-match"] = kind
    return table


def scan(order: dict[str, int], bound: list[tuple[str, Any]], headers: dict[str, Any]) -> list[str]:
    """The plain scan: destinations in first-bound order, each once if a binding matches."""
    return [d for d in order if any(headers_match(a, headers) for x, a in bound if x == d)]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["q1", "q2", "q3", "q4"]), bindings()),
        max_size=25,
    ),
    messages=st.lists(st.dictionaries(KEYS, VALUES, max_size=4), min_size=1, max_size=5),
)
def test_index_routes_as_the_scan(
    ops: list[tuple[bool, str, dict[str, Any]]], messages: list[dict[str, Any]]
) -> None:
    x = HeadersExchange()
    # The scan's destination order: first bound since it last had no binding (the
    # insertion order of the dict the unindexed implementation scanned).
    order: dict[str, int] = {}
    for add, dest, table in ops:
        if add:
            if x.bind(dest, "", table):
                order[dest] = order.get(dest, 0) + 1
            continue
        present = [a for d, _, a in x.bindings() if d == dest]
        if present and x.unbind(dest, "", present[0]):
            order[dest] -= 1
            if not order[dest]:
                del order[dest]
    bound = [(d, a) for d, _, a in x.bindings()]
    for headers in messages:
        assert list(x.route([""], headers)) == scan(order, bound, headers)


def test_route_order_is_first_bound_order() -> None:
    x = HeadersExchange()
    x.bind("q2", "", {"a": "v"})
    x.bind("q1", "", {"a": None})  # scanned, bound second
    x.bind("q3", "", {"x-match": "any", "a": "v", "b": 1})
    assert list(x.route([""], {"a": "v"})) == ["q2", "q1", "q3"]
    x.unbind("q2", "", {"a": "v"})
    x.bind("q2", "", {"a": b"v"})  # bound again: now the last
    assert list(x.route([""], {"a": "v"})) == ["q1", "q3", "q2"]


def test_many_bindings_one_match() -> None:
    x = HeadersExchange()
    for i in range(1000):
        x.bind("sink", "", {"x-match": "all", "type": f"t{i}", "v": i})
    x.bind("target", "", {"type": "target"})
    assert list(x.route([""], {"type": "target"})) == ["target"]
    assert list(x.route([""], {"type": "t7", "v": Int8(7)})) == ["sink"]
    assert list(x.route([""], {"type": "t7", "v": 8})) == []
