"""Exchange types, one module each (see base.py for the interface)."""

from __future__ import annotations

from amqpd.broker.exchanges.base import Destination, ExchangeType
from amqpd.broker.exchanges.direct import DirectExchange
from amqpd.broker.exchanges.fanout import FanoutExchange
from amqpd.broker.exchanges.headers import HeadersExchange
from amqpd.broker.exchanges.topic import TopicExchange

EXCHANGE_TYPES: dict[str, type[ExchangeType]] = {
    "direct": DirectExchange,
    "fanout": FanoutExchange,
    "topic": TopicExchange,
    "headers": HeadersExchange,
}

__all__ = [
    "EXCHANGE_TYPES",
    "Destination",
    "DirectExchange",
    "ExchangeType",
    "FanoutExchange",
    "HeadersExchange",
    "TopicExchange",
]
