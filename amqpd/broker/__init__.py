"""amqpd broker layer (see docs/internals.md)."""

from amqpd.broker.broker import Broker, User
from amqpd.broker.exchange import Exchange
from amqpd.broker.message import Message
from amqpd.broker.queue import Consumer, Queue, QueuedMessage
from amqpd.broker.vhost import VirtualHost

__all__ = [
    "Broker",
    "Consumer",
    "Exchange",
    "Message",
    "Queue",
    "QueuedMessage",
    "User",
    "VirtualHost",
]
