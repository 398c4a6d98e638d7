"""Classes 40 (exchange) and 50 (queue): thin calls into the vhost, replies unless no-wait.

Rules of this module (reference 1.2, 2.8, 2.9; RabbitMQ ``rabbit_channel``
``expand_shortcuts/2``, ``strip_cr_lf/1`` and the exchange/queue clauses):
- The vhost validates names, arguments and equivalence and raises RabbitMQ's errors; this
  layer only resolves the channel-scoped shortcuts and formats the replies.
- Queue name "" on queue.bind / unbind / purge / delete (and basic.consume / get) means the
  queue most recently declared on this channel; none yet → 404 "no previously declared
  queue". queue.bind / unbind with *both* queue and routing key empty also take that name
  as the routing key.
- queue.declare (including passive and no-wait ones, and reply-to pseudo-queues) records
  the declared name as the channel's most recent queue. A passive declare of "" is a
  lookup of the queue named "" → 404 "no queue '' in vhost '/'" (oracle).
- CR and LF are stripped from the exchange and queue names of declare, delete and bind
  methods, as RabbitMQ does (not from purge, consume, get or publish).
- declare-ok reports the ready message count and all consumers (RabbitMQ's reading).
- queue.unbind has no no-wait bit: it is always answered.
- Permissions (``rabbit_channel`` check_*_permitted, order checked on the oracle): declare
  checks configure inside the vhost (after the name checks, before the lookup; a new queue
  with a DLX also needs read on itself and write on the DLX, a new exchange with an AE read
  on itself and write on the AE); delete needs configure; (un)bind needs write on the
  destination, then read on the source (and the topic read permission on the routing key);
  purge needs read. Passive declares need nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from amqpd.errors import NotFound
from amqpd.protocol import methods as M
from amqpd.protocol.methods import (
    ExchangeBindOk,
    ExchangeDeclareOk,
    ExchangeDeleteOk,
    ExchangeUnbindOk,
    QueueBindOk,
    QueueDeclareOk,
    QueueDeleteOk,
    QueuePurgeOk,
    QueueUnbindOk,
)
from amqpd.session import reply_to

if TYPE_CHECKING:
    from amqpd.broker.permissions import Kind
    from amqpd.protocol.assembler import Command
    from amqpd.session.channel import Channel


def strip_cr_lf(name: str) -> str:
    if "\r" in name or "\n" in name:
        return name.replace("\r", "").replace("\n", "")
    return name


def exchange_declare(ch: Channel, cmd: Command) -> None:
    m = cast(M.ExchangeDeclare, cmd.method)
    ch.vhost.declare_exchange(
        strip_cr_lf(m.exchange),
        m.type,
        passive=m.passive,
        durable=m.durable,
        auto_delete=m.auto_delete,
        internal=m.internal,
        arguments=m.arguments,
        access=ch.access,
    )
    if not m.no_wait:
        ch.send_method(ExchangeDeclareOk())


def exchange_delete(ch: Channel, cmd: Command) -> None:
    m = cast(M.ExchangeDelete, cmd.method)
    name = strip_cr_lf(m.exchange)
    if name and not name.startswith("amq."):
        # The default and amq.* exchanges are refused (by the vhost) before configure.
        ch.access.configure("exchange", name)
    ch.vhost.delete_exchange(name, if_unused=m.if_unused)
    if not m.no_wait:
        ch.send_method(ExchangeDeleteOk())


def exchange_bind(ch: Channel, cmd: Command) -> None:
    m = cast(M.ExchangeBind, cmd.method)
    destination, source = strip_cr_lf(m.destination), strip_cr_lf(m.source)
    _check_binding(ch, "exchange", destination, source, m.routing_key)
    ch.vhost.bind_exchange(destination, source, m.routing_key, m.arguments)
    if not m.no_wait:
        ch.send_method(ExchangeBindOk())


def exchange_unbind(ch: Channel, cmd: Command) -> None:
    m = cast(M.ExchangeUnbind, cmd.method)
    destination, source = strip_cr_lf(m.destination), strip_cr_lf(m.source)
    _check_binding(ch, "exchange", destination, source, m.routing_key)
    ch.vhost.unbind_exchange(destination, source, m.routing_key, m.arguments)
    if not m.no_wait:
        ch.send_method(ExchangeUnbindOk())


def queue_declare(ch: Channel, cmd: Command) -> None:
    m = cast(M.QueueDeclare, cmd.method)
    name = strip_cr_lf(m.queue)
    if name.startswith(reply_to.PSEUDO_QUEUE):
        # rabbit_channel: "all declares to these are effectively passive".
        reply_to.declare(ch, name)
        ch.last_queue = name
        if not m.no_wait:
            ch.send_method(QueueDeclareOk(queue=name, message_count=0, consumer_count=1))
        return
    if m.passive and not name:
        raise NotFound(f"no queue '' in vhost '{ch.vhost.name}'")
    queue = ch.vhost.declare_queue(
        name,
        passive=m.passive,
        durable=m.durable,
        exclusive=m.exclusive,
        auto_delete=m.auto_delete,
        arguments=m.arguments,
        owner=ch.conn,
        now=ch.now,
        access=ch.access,
    )
    ch.last_queue = queue.name
    if not m.no_wait:
        ch.send_method(
            QueueDeclareOk(
                queue=queue.name,
                message_count=queue.message_count,
                consumer_count=queue.consumer_count,
            )
        )


def _binding_names(ch: Channel, queue: str, routing_key: str) -> tuple[str, str]:
    if not queue and not routing_key:
        routing_key = ch.expand_queue_name("")
    return strip_cr_lf(ch.expand_queue_name(queue)), routing_key


def _check_binding(ch: Channel, kind: Kind, destination: str, source: str, key: str) -> None:
    """rabbit_channel:binding_action/10's permission checks, in its order."""
    access = ch.access
    access.write(kind, destination)
    if source == "" or (kind == "exchange" and destination == ""):
        return  # the vhost refuses the default exchange before the read check would run
    access.read("exchange", source)
    exchange = ch.vhost.exchanges.get(source)
    if exchange is not None:
        access.check_topic("read", source, exchange.type, key)


def queue_bind(ch: Channel, cmd: Command) -> None:
    m = cast(M.QueueBind, cmd.method)
    queue, routing_key = _binding_names(ch, m.queue, m.routing_key)
    exchange = strip_cr_lf(m.exchange)
    _check_binding(ch, "queue", queue, exchange, routing_key)
    ch.vhost.bind_queue(queue, exchange, routing_key, m.arguments, ch.conn)
    if not m.no_wait:
        ch.send_method(QueueBindOk())


def queue_unbind(ch: Channel, cmd: Command) -> None:
    m = cast(M.QueueUnbind, cmd.method)
    queue, routing_key = _binding_names(ch, m.queue, m.routing_key)
    exchange = strip_cr_lf(m.exchange)
    _check_binding(ch, "queue", queue, exchange, routing_key)
    ch.vhost.unbind_queue(queue, exchange, routing_key, m.arguments, ch.conn)
    ch.send_method(QueueUnbindOk())


def queue_purge(ch: Channel, cmd: Command) -> None:
    m = cast(M.QueuePurge, cmd.method)
    name = ch.expand_queue_name(m.queue)
    ch.access.read("queue", name)
    count = ch.vhost.purge_queue(name, ch.conn)
    if not m.no_wait:
        ch.send_method(QueuePurgeOk(message_count=count))


def queue_delete(ch: Channel, cmd: Command) -> None:
    m = cast(M.QueueDelete, cmd.method)
    # RabbitMQ answers delete-ok before this channel's own consumers of the queue hear the
    # server-side basic.cancel (oracle); hold those back until the reply is out.
    name = strip_cr_lf(ch.expand_queue_name(m.queue))
    ch.access.configure("queue", name)  # before the lookup: a missing queue is refused too
    ch.deferred_cancels = []
    try:
        count = ch.vhost.delete_queue(
            name,
            if_unused=m.if_unused,
            if_empty=m.if_empty,
            owner=ch.conn,
        )
        if not m.no_wait:
            ch.send_method(QueueDeleteOk(message_count=count))
    finally:
        cancels, ch.deferred_cancels = ch.deferred_cancels, None
        for method in cancels:
            ch.send_method(method)
