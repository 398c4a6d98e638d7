"""Headers exchange: match on message headers (rabbit_exchange_type_headers.erl).

- x-match all (the default when absent): every binding pair must match; any: at least one;
  all-with-x / any-with-x (3.10+): the same, but binding keys starting with "x-" take part.
  Otherwise binding keys starting with "x-" are skipped.
- A binding value of type void (None) matches on the key's presence alone.
- all over zero pairs matches everything; any over zero pairs matches nothing.
- Values compare as Erlang's ==: types are ignored except that numbers compare by value
  and booleans are not numbers.
- Routing does not scan every binding (RabbitMQ's does): a binding that can only match
  when one header has one value (x-match all with a string or integer pair; x-match any
  whose every pair is one) is indexed by that (key, value), and a publish looks up its
  own header pairs; the rest (void values, booleans, floats, tables, ... and "all" over
  no pair) are scanned. The index only picks candidates: each is checked with
  ``headers_match``, so the result is the scan's, in the same order (destinations in the
  order they were first bound). A publish costs O(its headers + candidates + unindexed
  bindings), not O(bindings) (benchmarks/scaling.py "bindings").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
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


# (header key, normalised value): what an indexed binding needs one header to be.
_Pair = tuple[str, tuple[str, object]]
_BindingId = tuple[Destination, int]  # (destination, id(arguments)): one binding


def _index_value(value: object) -> tuple[str, object] | None:
    """A hashable stand-in for ``value`` such that _values_equal(p, d) implies
    _index_value(p) == _index_value(d) for every indexable p; None: not indexable.

    Strings and bytes compare by their bytes; numbers by value (Python hashes equal
    numbers alike across int, float and Decimal); booleans are not numbers.
    """
    if isinstance(value, bytes):
        return ("s", bytes(value))
    if isinstance(value, str):
        try:
            return ("s", value.encode())
        except UnicodeEncodeError:
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ("n", int(value))
    return None


def _data_value(value: object) -> tuple[str, object] | None:
    """The index key a header value can meet (numbers of any kind may equal an int)."""
    if isinstance(value, (bytes, str, int)):
        return _index_value(value)
    if isinstance(value, float):
        return ("n", value) if value == value else None  # NaN equals nothing
    if isinstance(value, Decimal):
        return None if value.is_nan() else ("n", value)
    return None


class HeadersExchange(ExchangeType):
    name = "headers"
    uses_headers = True

    def __init__(self) -> None:
        super().__init__()
        # Destination -> its number of bindings, in the order destinations were first
        # bound: the order route() reports them in (a plain scan's order).
        self._dests: dict[Destination, int] = {}
        self._rank: dict[Destination, int] = {}
        self._next_rank = 0
        # binding -> (destination, arguments) for the bindings that must be scanned.
        self._scan: dict[_BindingId, tuple[Destination, Mapping[str, Any]]] = {}
        # (key, value) -> the indexed bindings that need that header, and where each is.
        self._by_pair: dict[_Pair, dict[_BindingId, tuple[Destination, Mapping[str, Any]]]] = {}
        self._pairs_of: dict[_BindingId, list[_Pair]] = {}

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

    def _index_pairs(self, arguments: Mapping[str, Any]) -> list[_Pair] | None:
        """The pairs to index a binding under (any one met makes it a candidate); None:
        it must be scanned."""
        kind = _match_kind(arguments)
        with_x = kind.endswith("-with-x")
        pairs: list[_Pair] = []
        unindexable = False
        for key, pattern in arguments.items():
            if key == "x-match" or (not with_x and key.startswith("x-")):
                continue
            value = None if pattern is None else _index_value(pattern)
            if value is None:
                unindexable = True
            else:
                pairs.append((key, value))
        if not pairs:
            return None
        if kind.startswith("all"):
            # Every pair must match, so any one is a necessary condition: the one with the
            # fewest bindings so far keeps the candidate lists short.
            by_pair = self._by_pair
            return [min(pairs, key=lambda pair: len(by_pair.get(pair, ())))]
        # any: one unindexable pair could match alone, so only all-indexable ones go in.
        return None if unindexable else pairs

    def _add(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        count = self._dests.get(destination, 0)
        if not count:
            self._rank[destination] = self._next_rank
            self._next_rank += 1
        self._dests[destination] = count + 1
        binding = (destination, id(arguments))
        entry = (destination, arguments)
        pairs = self._index_pairs(arguments)
        if pairs is None:
            self._scan[binding] = entry
            return
        self._pairs_of[binding] = pairs
        for pair in pairs:
            self._by_pair.setdefault(pair, {})[binding] = entry

    def _remove(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        binding = (destination, id(arguments))
        if self._scan.pop(binding, None) is None:
            for pair in self._pairs_of.pop(binding, ()):
                bucket = self._by_pair[pair]
                del bucket[binding]
                if not bucket:
                    del self._by_pair[pair]
        count = self._dests[destination] - 1
        if count:
            self._dests[destination] = count
        else:
            del self._dests[destination]
            del self._rank[destination]

    def route(
        self, routing_keys: Sequence[str], headers: Mapping[str, Any] | None
    ) -> Iterable[Destination]:
        data = headers or {}
        found: dict[Destination, None] = {}
        for destination, arguments in self._scan.values():
            if destination not in found and headers_match(arguments, data):
                found[destination] = None
        by_pair = self._by_pair
        if by_pair:
            for key, value in data.items():
                wanted = _data_value(value)
                if wanted is None:
                    continue
                bucket = by_pair.get((key, wanted))
                if bucket is None:
                    continue
                for destination, arguments in bucket.values():
                    if destination not in found and headers_match(arguments, data):
                        found[destination] = None
        if len(found) < 2:
            return list(found)
        rank = self._rank
        return sorted(found, key=lambda d: rank[d])
