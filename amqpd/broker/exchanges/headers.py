"""Headers exchange: match on message headers (rabbit_exchange_type_headers.erl).

- x-match all (the default when absent): every binding pair must match; any: at least one;
  all-with-x / any-with-x (3.10+): the same, but binding keys starting with "x-" take part.
  Otherwise binding keys starting with "x-" are skipped.
- A binding value of type void (None) matches on the key's presence alone.
- all over zero pairs matches everything; any over zero pairs matches nothing.
- Values compare as Erlang's ==: types are ignored except that numbers compare by value
  and booleans are not numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from amqpd.broker.arguments import erlang_term, type_name
from amqpd.broker.exchanges.base import Destination, ExchangeType
from amqpd.errors import PreconditionFailed

_MATCH_KINDS = ("all", "any", "all-with-x", "any-with-x")


def _match_kind(arguments: Mapping[str, Any]) -> str:
    value = arguments.get("x-match")
    if value is None:
        return "all"
    return value.decode() if isinstance(value, bytes) else str(value)


def _values_equal(pattern: object, data: object) -> bool:
    if isinstance(pattern, bool) or isinstance(data, bool):
        return type(pattern) is type(data) and pattern == data
    if isinstance(pattern, str) and isinstance(data, bytes):
        return pattern.encode() == data
    if isinstance(pattern, bytes) and isinstance(data, str):
        return pattern == data.encode()
    return bool(pattern == data)


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    kind = _match_kind(arguments)
    with_x = kind.endswith("-with-x")
    want_all = kind.startswith("all")
    any_matched = False
    for key, pattern in arguments.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        if key in headers and (pattern is None or _values_equal(pattern, headers[key])):
            any_matched = True
            if not want_all:
                return True
        elif want_all:
            return False
    return want_all or any_matched


class HeadersExchange(ExchangeType):
    name = "headers"
    uses_headers = True

    def __init__(self) -> None:
        super().__init__()
        # destination -> the argument tables of its bindings (RabbitMQ scans them all).
        self._index: dict[Destination, list[Mapping[str, Any]]] = {}

    def validate_binding(self, routing_key: str, arguments: Mapping[str, Any]) -> None:
        # rabbit_exchange_type_headers:validate_binding/2
        if "x-match" not in arguments:
            return
        value = arguments["x-match"]
        if type_name(value) != "longstr":
            raise PreconditionFailed(
                f"Invalid x-match field type {type_name(value)} (value {erlang_term(value)}); "
                "expected longstr"
            )
        if _match_kind(arguments) not in _MATCH_KINDS:
            raise PreconditionFailed(
                f"Invalid x-match field value {erlang_term(value)}; "
                "expected all, any, all-with-x, or any-with-x"
            )

    def _add(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        self._index.setdefault(destination, []).append(arguments)

    def _remove(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        tables = self._index[destination]
        for i, table in enumerate(tables):
            if table is arguments:
                del tables[i]
                break
        if not tables:
            del self._index[destination]

    def route(
        self, routing_keys: Sequence[str], headers: Mapping[str, Any] | None
    ) -> Iterable[Destination]:
        data = headers or {}
        return [
            dest
            for dest, tables in self._index.items()
            if any(headers_match(args, data) for args in tables)
        ]
