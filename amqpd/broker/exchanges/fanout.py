"""Fanout exchange: every bound destination gets every message; keys are ignored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from amqpd.broker.exchanges.base import Destination, ExchangeType


class FanoutExchange(ExchangeType):
    name = "fanout"

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[Destination, int] = {}

    def _add(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        self._index[destination] = self._index.get(destination, 0) + 1

    def _remove(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        n = self._index[destination] - 1
        if n:
            self._index[destination] = n
        else:
            del self._index[destination]

    def route(
        self, routing_keys: Sequence[str], headers: Mapping[str, Any] | None
    ) -> Iterable[Destination]:
        return self._index.keys()
