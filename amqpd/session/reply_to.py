"""Direct reply-to: the ``amq.rabbitmq.reply-to`` pseudo-queue (reference 2.9).

Rules of this module (rabbitmq.com "direct-reply-to"; RabbitMQ 3.13 ``rabbit_channel``
reply-consumer clauses, ``maybe_set_fast_reply_to/2``, ``deliver_reply/2``,
``declare_fast_reply_to/1``; every text and quirk below checked on the oracle):
- basic.consume on ``amq.rabbitmq.reply-to`` must be no-ack, else 406 "reply consumer
  cannot acknowledge"; a second one on the channel → 406 "reply consumer already set".
  It creates no queue; the channel remembers (tag, key) and registers the key in the
  vhost's ``reply_to`` registry so other connections can reach it.
- A publish on that channel whose ``reply_to`` property is exactly ``amq.rabbitmq.reply-to``
  has it rewritten to ``amq.rabbitmq.reply-to.<key>``; without a reply consumer → 406 "fast
  reply consumer does not exist".
- A publish to the default exchange with routing key ``amq.rabbitmq.reply-to.<key>`` goes
  straight to that consumer, whatever the publisher's tx mode; unknown key → dropped. It
  never counts as routed, so ``mandatory`` gets basic.return 312 NO_ROUTE *even when it was
  delivered* (RabbitMQ 3.x: ``rabbit_exchange:route`` leaves virtual reply queues out).
- The reply's basic.deliver carries the receiving channel's *next* delivery tag without
  consuming it (RabbitMQ's ``handle_cast({deliver_reply, ...})`` never bumps ``next_tag``):
  several replies share a tag, and the next ordinary delivery reuses it. redelivered=false.
- queue.declare (passive or not) of ``amq.rabbitmq.reply-to`` → declare-ok(0 messages,
  1 consumer); of ``amq.rabbitmq.reply-to.<key>`` → the same while that consumer exists, else
  404 "no queue '<name>' in vhost '<vhost>'"; any other name with that prefix → 404.
- basic.cancel of the reply consumer's tag, or the channel closing, unregisters the key.
"""

from __future__ import annotations

import base64
import secrets
from typing import TYPE_CHECKING, Any

from amqpd.errors import NotFound, PreconditionFailed
from amqpd.protocol.frames import encode_basic_deliver
from amqpd.protocol.methods import BasicConsumeOk

if TYPE_CHECKING:
    from amqpd.session.channel import Channel

PSEUDO_QUEUE = "amq.rabbitmq.reply-to"
PREFIX = "amq.rabbitmq.reply-to."


class ReplyConsumer:
    """A channel's reply consumer; the value stored in ``vhost.reply_to[key]``."""

    __slots__ = ("channel", "key", "tag")

    def __init__(self, channel: Channel, tag: str, key: str) -> None:
        self.channel = channel
        self.tag = tag
        self.key = key

    def deliver_reply(self, message: Any) -> None:
        channel = self.channel
        if channel.closed or channel.reply is not self:
            return
        conn = channel.conn
        conn.send(
            encode_basic_deliver(
                channel.number,
                self.tag,
                channel.next_tag,  # deliberately not consumed: see module rules
                False,
                message.exchange,
                message.routing_key,
                message.properties_raw,
                message.body,
                conn.frame_max,
            )
        )


def _new_key() -> str:
    # Opaque to clients; unguessable so one client cannot read another's replies.
    return base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def consume(ch: Channel, tag: str, no_ack: bool, no_wait: bool) -> None:
    if not no_ack:
        raise PreconditionFailed("reply consumer cannot acknowledge")
    if ch.reply is not None:
        raise PreconditionFailed("reply consumer already set")
    registry = ch.vhost.reply_to
    key = _new_key()
    while key in registry:
        key = _new_key()
    ch.reply = ReplyConsumer(ch, tag, key)
    registry[key] = ch.reply
    if not no_wait:
        ch.send_method(BasicConsumeOk(consumer_tag=tag))


def cancel(ch: Channel) -> None:
    reply = ch.reply
    if reply is None:
        return
    ch.reply = None
    registry = ch.vhost.reply_to
    if registry.get(reply.key) is reply:
        del registry[reply.key]


def rewrite_reply_to(ch: Channel) -> str:
    """The value a publish's ``reply_to: amq.rabbitmq.reply-to`` becomes on this channel."""
    if ch.reply is None:
        raise PreconditionFailed("fast reply consumer does not exist")
    return PREFIX + ch.reply.key


def deliver(ch: Channel, routing_key: str, message: Any) -> None:
    """A publish to the default exchange addressed to a reply consumer (maybe gone)."""
    target = ch.vhost.reply_to.get(routing_key[len(PREFIX) :])
    if isinstance(target, ReplyConsumer):
        target.deliver_reply(message)


def declare(ch: Channel, name: str) -> bool:
    """queue.declare of a reply-to name: True if it "exists", else 404."""
    if name == PSEUDO_QUEUE:
        return True
    if name.startswith(PREFIX) and isinstance(
        ch.vhost.reply_to.get(name[len(PREFIX) :]), ReplyConsumer
    ):
        return True
    raise NotFound(f"no queue '{name}' in vhost '{ch.vhost.name}'")
