"""Direct exchange: a destination gets the message when binding key == routing key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from amqpd.broker.exchanges.base import Destination, ExchangeType


class DirectExchange(ExchangeType):
    name = "direct"

    def __init__(self) -> None:
        super().__init__()
        # routing key -> destination -> number of bindings (bindings with the same key and
        # destination but different arguments are distinct bindings, one route).
        self._index: dict[str, dict[Destination, int]] = {}

    def _add(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        dests = self._index.setdefault(routing_key, {})
        dests[destination] = dests.get(destination, 0) + 1

    def _remove(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        dests = self._index[routing_key]
        n = dests[destination] - 1
        if n:
            dests[destination] = n
        else:
            del dests[destination]
            if not dests:
                del self._index[routing_key]

    def route(
        self, routing_keys: Sequence[str], headers: Mapping[str, Any] | None
    ) -> Iterable[Destination]:
        if len(routing_keys) == 1:
            return self._index.get(routing_keys[0], {}).keys()
        out: dict[Destination, None] = {}
        for key in routing_keys:
            out.update(dict.fromkeys(self._index.get(key, ())))
        return out.keys()
