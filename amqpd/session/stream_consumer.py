"""basic.consume on a stream queue, and the settlements streams refuse.

Rules of this module (RabbitMQ 3.13 ``rabbit_channel`` basic.consume →
``rabbit_amqqueue:basic_consume`` → ``rabbit_stream_queue:consume/3``; oracle-checked texts):
- Checks, in RabbitMQ's order: the consume arguments (``x-stream-offset``: 406
  ``invalid_stream_offset_arg`` / 541; then ``x-priority`` or ``x-cancel-on-ha-failover``:
  406 "invalid arg ... of queue type rabbit_stream_queue", oracle); the channel's per-consumer
  prefetch must be set: 406 "consumer prefetch count is not set for '<queue>'" (a global
  basic.qos alone does not set it); no-ack → 540 "automatic acknowledgement not supported
  by stream queues <queue>" (connection); a global limit in force → 540 "<queue> does not
  support global qos"; an ``x-stream-offset`` of a type osiris cannot read → 541.
- A stream consumer is a ``ChannelConsumer`` (its qos prefetch is its credit; acks give
  the credit back and the queue reads on). The queue gets a reader at the start position
  the offset spec names (``amqpd.broker.stream``); consume-ok goes out before any delivery.
- basic.nack / basic.reject of a stream delivery → 540 "basic.nack and basic.reject not
  supported by stream queues <queue>"; basic.recover with stream deliveries outstanding →
  541 (the oracle's channel crashes). basic.get and queue.purge are refused by the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amqpd import errors
from amqpd.broker.arguments import check_consume_args_for_type
from amqpd.broker.stream import (
    OffsetSpec,
    StreamCrash,
    StreamQueue,
    filter_spec,
    parse_offset_arg,
)
from amqpd.errors import PreconditionFailed
from amqpd.protocol.methods import BasicConsume, BasicConsumeOk
from amqpd.session.consumer import ChannelConsumer

if TYPE_CHECKING:
    from amqpd.session.channel import Channel
    from amqpd.session.unacked import Unacked


def basic_consume(ch: Channel, m: BasicConsume, queue: StreamQueue, tag: str) -> None:
    resource = queue.resource()
    prefetch = ch.limiter.consumer_prefetch
    spec: OffsetSpec = parse_offset_arg(m.arguments.get("x-stream-offset"), resource, queue.wall_ms)
    # x-priority and x-cancel-on-ha-failover are other queue types' arguments (oracle).
    check_consume_args_for_type(m.arguments, "stream", resource)
    consumer = ChannelConsumer(
        ch,
        queue,
        tag,
        no_ack=False,
        exclusive=m.exclusive,
        prefetch=prefetch,
        arguments=m.arguments,
    )
    if prefetch == 0:
        raise PreconditionFailed(f"consumer prefetch count is not set for '{resource}'")
    if m.no_ack:
        raise errors.NotImplemented(
            f"automatic acknowledgement not supported by stream queues {resource}"
        )
    if ch.limiter.global_limit:
        raise errors.NotImplemented(f"{resource} does not support global qos")
    if spec.kind == "invalid":
        raise StreamCrash(f"osiris:init_reader: bad offset for {resource}")
    queue.add_reader(consumer, spec, ch.now, filter_spec(m.arguments))
    ch.consumers[consumer.tag] = consumer
    if not m.no_wait:
        ch.send_method(BasicConsumeOk(consumer_tag=consumer.tag))
    consumer.active = True
    queue.dispatch(ch.now)


def refuse_reject(records: list[Unacked]) -> None:
    """basic.nack / basic.reject naming a stream delivery: 540 (see module rules)."""
    _refuse(records, "nack and reject")


def refuse_recover(records: Any) -> None:
    """basic.recover while stream deliveries are outstanding: 541 (see module rules)."""
    _refuse(records, "recover")


def _refuse(records: Any, what: str) -> None:
    for record in records:
        queue = record.queue
        if isinstance(queue, StreamQueue):
            if what == "recover":
                raise StreamCrash(f"basic.recover with deliveries of {queue.resource()}")
            raise errors.NotImplemented(
                f"basic.nack and basic.reject not supported by stream queues {queue.resource()}"
            )
