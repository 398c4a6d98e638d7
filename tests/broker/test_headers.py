"""Headers exchange matching table (rabbit_exchange_type_headers.erl semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.exchanges.headers import HeadersExchange, headers_match
from amqpd.errors import PreconditionFailed
from amqpd.protocol.fieldtable import Int8, Int64

CASES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    # missing x-match = all
    ({"a": 1}, {"a": 1}, True),
    ({"a": 1, "b": 2}, {"a": 1}, False),
    ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),
    ({"x-match": "all", "a": 1}, {"a": 2}, False),
    # all over zero pairs matches everything; any over zero pairs matches nothing
    ({}, {}, True),
    ({"x-match": "all"}, {"a": 1}, True),
    ({"x-match": "any"}, {"a": 1}, False),
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"a": 2, "b": 3}, False),
    # void matches on presence
    ({"a": None}, {"a": "anything"}, True),
    ({"a": None}, {}, False),
    ({"x-match": "any", "a": None}, {"a": 0}, True),
    # x- binding keys are skipped unless -with-x
    ({"x-foo": 1}, {}, True),
    ({"x-match": "any", "x-foo": 1}, {"x-foo": 1}, False),
    ({"x-match": "all-with-x", "x-foo": 1}, {"x-foo": 1}, True),
    ({"x-match": "all-with-x", "x-foo": 1}, {}, False),
    ({"x-match": "any-with-x", "x-foo": 1, "a": 1}, {"x-foo": 1}, True),
    ({"x-match": "any-with-x", "x-foo": 1}, {"x-foo": 2}, False),
    # data x- keys are fine for plain matching of non-x binding keys
    ({"a": 1}, {"a": 1, "x-bar": 2}, True),
    # numbers compare by value across widths; booleans are not numbers
    ({"a": Int8(1)}, {"a": Int64(1)}, True),
    ({"a": 1}, {"a": 1.0}, True),
    ({"a": True}, {"a": 1}, False),
    ({"a": 1}, {"a": True}, False),
    ({"a": True}, {"a": True}, True),
    # longstr as str or bytes
    ({"a": "x"}, {"a": b"x"}, True),
    ({"a": "x"}, {"a": "y"}, False),
]


@pytest.mark.parametrize(("binding", "headers", "expected"), CASES)
def test_headers_match(binding: dict[str, Any], headers: dict[str, Any], expected: bool) -> None:
    assert headers_match(binding, headers) is expected
    x = HeadersExchange()
    x.bind("q", "", binding)
    assert (list(x.route([""], headers)) == ["q"]) is expected


def test_any_binding_of_a_destination_matches_once() -> None:
    x = HeadersExchange()
    x.bind("q", "", {"a": 1})
    x.bind("q", "", {"b": 1})
    assert list(x.route([""], {"a": 1, "b": 1})) == ["q"]
    x.unbind("q", "", {"a": 1})
    assert list(x.route([""], {"a": 1})) == []
    assert list(x.route([""], {"b": 1})) == ["q"]


@pytest.mark.parametrize("value", ["all", "any", "all-with-x", "any-with-x"])
def test_valid_x_match(value: str) -> None:
    HeadersExchange().validate_binding("", {"x-match": value})


def test_invalid_x_match_texts() -> None:
    x = HeadersExchange()
    with pytest.raises(PreconditionFailed) as info:
        x.validate_binding("", {"x-match": "foo"})
    assert info.value.detail == (
        'Invalid x-match field value <<"foo">>; expected all, any, all-with-x, or any-with-x'
    )
    with pytest.raises(PreconditionFailed) as info:
        x.validate_binding("", {"x-match": 1})
    assert info.value.detail == "Invalid x-match field type signedint (value 1); expected longstr"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "Invalid x-match field type bool (value true); expected longstr"),
        (
            {"a": 1},
            'Invalid x-match field type table (value [{<<"a">>,signedint,1}]); expected longstr',
        ),
        (
            ["a", 1],
            "Invalid x-match field type array "
            '(value [{longstr,<<"a">>},{signedint,1}]); expected longstr',
        ),
        (None, "Invalid x-match field type void (value undefined); expected longstr"),
        ("é", 'Invalid x-match field value <<"é">>; expected all, any, all-with-x, or any-with-x'),
    ],
)
def test_invalid_x_match_types(value: object, text: str) -> None:
    # Texts as a live RabbitMQ prints them (Erlang terms for the value).
    with pytest.raises(PreconditionFailed) as info:
        HeadersExchange().validate_binding("", {"x-match": value})
    assert info.value.detail == text
