"""basic.consume / basic.cancel / basic.qos and the consumer object queues deliver to.

Rules of this module (reference 1.3, 2.7; RabbitMQ ``rabbit_channel`` basic.consume,
basic.cancel and basic.qos clauses, ``cancel_consumer/3``, ``rabbit_queue_consumers``):
- A consumer tag is unique per channel: reuse → 530 NOT_ALLOWED (connection) "attempt to
  reuse consumer tag 'x'". An empty tag gets a server tag ``amq.ctag-<22 base64url chars>``
  (``rabbit_guid:binary(gen_secure(), "amq.ctag")``).
- ``no_local`` is ignored (RabbitMQ does not implement it); ``arguments`` go to the queue.
- ``x-priority`` (consumer priority) must be an integer of any width, else 406
  (``rabbit_amqqueue:check_consume_arguments``); the queue serves higher priorities first
  (``amqpd.broker.consumers``). Waiting single-active consumers get consume-ok like any.
- consume-ok goes out before the first delivery: the consumer is registered with the queue
  while not yet ready, and the queue is dispatched after the reply.
- Unknown tag on basic.cancel → cancel-ok anyway ("spec requires we ignore this").
- Server-side cancel (queue deleted): basic.cancel(tag, no-wait=true) only if the client
  announced the ``consumer_cancel_notify`` capability; otherwise the consumer just goes.
- Per-consumer prefetch is the channel's ``basic.qos(global=false)`` value at consume time;
  a no-ack consumer has none (``rabbit_queue_consumers:add``). The shared limit is the
  channel's ``Limiter``.
- ``deliver`` is the hot path: one ``encode_deliver`` call (the consumer tag encoded once,
  at consume; the message encodes exchange and routing key once for all its queues), one
  ``Unacked`` record (none for no-ack: the queue settled the message before the call).
"""

from __future__ import annotations

import base64
import secrets
from typing import TYPE_CHECKING, Any, cast

from amqpd import errors
from amqpd.broker.arguments import check_consume_args_for_type, is_int, type_name
from amqpd.errors import NotAllowed, PreconditionFailed
from amqpd.protocol import methods as M
from amqpd.protocol.frames import encode_deliver, shortstr
from amqpd.protocol.methods import BasicCancel, BasicCancelOk, BasicConsumeOk, BasicQosOk
from amqpd.session import reply_to
from amqpd.session.unacked import Unacked

if TYPE_CHECKING:
    from amqpd.protocol.assembler import Command
    from amqpd.session.channel import Channel


def consumer_priority(arguments: dict[str, Any], queue: Any) -> int:
    """The ``x-priority`` consume argument (0 when absent); 406 unless an integer.

    Text as the oracle words it: invalid arg 'x-priority' for queue 'q' in vhost '/':
    "expected integer, got longstr" (rabbit_amqqueue:check_int_arg/2).
    """
    value = arguments.get("x-priority") if arguments else None
    if value is None:
        return 0
    if not is_int(value):
        raise PreconditionFailed(
            f"invalid arg 'x-priority' for {queue.resource()}: "
            f'"expected integer, got {type_name(value)}"'
        )
    return int(value)


def generate_consumer_tag() -> str:
    raw = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=")
    return "amq.ctag-" + raw.decode("ascii")


class ChannelConsumer:
    """One basic.consume: the ``Consumer`` a queue delivers to."""

    __slots__ = (
        "active",
        "arguments",
        "channel",
        "ctag",
        "exclusive",
        "no_ack",
        "outstanding",
        "prefetch",
        "priority",
        "queue",
        "tag",
    )

    def __init__(
        self,
        channel: Channel,
        queue: Any,
        tag: str,
        *,
        no_ack: bool,
        exclusive: bool,
        prefetch: int,
        arguments: dict[str, Any],
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.ctag = shortstr(tag)  # as every basic.deliver carries it
        self.no_ack = no_ack
        self.exclusive = exclusive
        # rabbit_queue_consumers:add: a no-ack consumer gets no credit limit.
        self.prefetch = 0 if no_ack else prefetch
        self.arguments = arguments
        self.priority = consumer_priority(arguments, queue)
        self.outstanding = 0  # unacked deliveries, for the per-consumer prefetch
        self.active = False  # False until consume-ok is out, and after cancel/close

    def ready(self) -> bool:
        if not self.active:
            return False
        limiter = self.channel.limiter
        if limiter.global_limit and limiter.volume >= limiter.global_limit:
            return False
        return not self.prefetch or self.outstanding < self.prefetch

    def deliver(self, queue: Any, entry: Any) -> None:
        channel = self.channel
        tag = channel.next_tag
        channel.next_tag = tag + 1
        message = entry.message
        conn = channel.conn
        conn.send(
            encode_deliver(
                channel.number,
                self.ctag,
                tag,
                entry.redelivered,
                message.route,
                message.properties_raw,
                message.body,
                conn.frame_max,
            )
        )
        if self.no_ack:
            return  # the queue settled it already (Queue._hand_to)
        channel.unacked.add(Unacked(tag, queue, entry, self))
        self.outstanding += 1
        limiter = channel.limiter
        if limiter.global_limit:
            limiter.volume += 1

    def cancelled_by_server(self, queue: Any) -> None:
        channel = self.channel
        self.active = False
        if channel.consumers.get(self.tag) is not self:
            return
        del channel.consumers[self.tag]
        if channel.conn.capabilities.get("consumer_cancel_notify") is True:
            cancel = BasicCancel(consumer_tag=self.tag, no_wait=True)
            if channel.deferred_cancels is not None:
                channel.deferred_cancels.append(cancel)
            else:
                channel.send_method(cancel)


def basic_consume(ch: Channel, cmd: Command) -> None:
    m = cast(M.BasicConsume, cmd.method)
    tag = m.consumer_tag
    if tag and tag in ch.consumers:
        raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
    if m.queue == reply_to.PSEUDO_QUEUE:
        reply_to.consume(ch, tag or generate_consumer_tag(), m.no_ack, m.no_wait)
        return
    name = ch.expand_queue_name(m.queue)
    ch.access.read("queue", name)  # after the tag check, before the lookup (rabbit_channel)
    queue = ch.vhost.get_queue(name, ch.conn)
    if queue.queue_type == "stream":
        from amqpd.session import stream_consumer  # it builds on ChannelConsumer

        stream_consumer.basic_consume(ch, m, queue, tag or generate_consumer_tag())
        return
    consumer = ChannelConsumer(
        ch,
        queue,
        tag or generate_consumer_tag(),
        no_ack=m.no_ack,
        exclusive=m.exclusive,
        prefetch=ch.limiter.consumer_prefetch,
        arguments=m.arguments,
    )
    check_consume_args_for_type(m.arguments, queue.queue_type, queue.resource())
    queue.add_consumer(consumer, ch.now)  # raises 403 "in exclusive use" etc. before any reply
    ch.consumers[consumer.tag] = consumer
    if not m.no_wait:
        ch.send_method(BasicConsumeOk(consumer_tag=consumer.tag))
    consumer.active = True
    queue.unblock(consumer)  # parked if a dispatch met it before it was active
    queue.dispatch(ch.now, recheck=False)


def basic_cancel(ch: Channel, cmd: Command) -> None:
    m = cast(M.BasicCancel, cmd.method)
    tag = m.consumer_tag
    if ch.reply is not None and ch.reply.tag == tag:
        reply_to.cancel(ch)
    else:
        consumer = ch.consumers.pop(tag, None)
        if consumer is not None:
            consumer.active = False
            consumer.queue.remove_consumer(consumer, ch.now)
    if not m.no_wait:
        ch.send_method(BasicCancelOk(consumer_tag=tag))


def basic_qos(ch: Channel, cmd: Command) -> None:
    m = cast(M.BasicQos, cmd.method)
    if m.prefetch_size != 0:
        raise errors.NotImplemented(f"prefetch_size!=0 ({m.prefetch_size})")
    ch.limiter.qos(m.prefetch_count, m.global_, len(ch.unacked))
    ch.send_method(BasicQosOk())
    # A raised or removed shared limit may let blocked consumers go on.
    ch.dispatch_consumer_queues()
