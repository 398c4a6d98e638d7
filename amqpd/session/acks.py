"""basic.get, basic.ack / nack / reject and basic.recover.

Rules of this module (reference 1.3, 2.6, 2.7; RabbitMQ ``rabbit_channel`` clauses for
these methods, ``collect_acks/3``, ``internal_reject/4``, ``handle_basic_get/7``):
- basic.get ignores qos; get-ok carries the next delivery tag and the number of messages
  left ready in the queue (oracle: 3 messages → 2, 1, 0); get-empty when none. Without
  no-ack the delivery is tracked like a consumer's, but settling it gives no qos credit back.
- ack / nack / reject name deliveries as ``UnackedTracker.collect`` describes (multiple,
  tag 0, 406 "unknown delivery tag N"). nack/reject with requeue=true put the messages back
  at their original position with redelivered set (``Queue.requeue``); requeue=false
  discards them (dead-lettering is the queue's business). Inside a transaction they are
  buffered until tx.commit (``amqpd.session.tx``).
- basic.recover / recover-async with requeue=true requeue every unacked delivery of the
  channel (recover answers recover-ok, recover-async nothing); requeue=false → 540
  NOT_IMPLEMENTED "requeue=false" (connection, oracle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from amqpd import errors
from amqpd.protocol import methods as M
from amqpd.protocol.frames import encode_basic_get_ok
from amqpd.protocol.methods import BasicGetEmpty, BasicRecoverOk
from amqpd.session import stream_consumer
from amqpd.session.tx import SettleOp
from amqpd.session.unacked import Unacked

if TYPE_CHECKING:
    from amqpd.protocol.assembler import Command
    from amqpd.session.channel import Channel


def basic_get(ch: Channel, cmd: Command) -> None:
    m = cast(M.BasicGet, cmd.method)
    name = ch.expand_queue_name(m.queue)
    ch.access.read("queue", name)  # before the lookup (rabbit_channel basic.get)
    queue = ch.vhost.get_queue(name, ch.conn)
    entry = queue.get(ch.now)
    if entry is None:
        ch.send_method(BasicGetEmpty())
        return
    tag = ch.next_tag
    ch.next_tag = tag + 1
    message = entry.message
    ch.conn.send(
        encode_basic_get_ok(
            ch.number,
            tag,
            entry.redelivered,
            message.exchange,
            message.routing_key,
            queue.message_count,
            message.properties_raw,
            message.body,
            ch.conn.frame_max,
        )
    )
    if m.no_ack:
        queue.ack(entry)
    else:
        ch.unacked.add(Unacked(tag, queue, entry, None))


def basic_ack(ch: Channel, cmd: Command) -> None:
    m = cast(M.BasicAck, cmd.method)
    records = ch.unacked.collect(m.delivery_tag, m.multiple)
    if ch.tx is not None:
        ch.tx.add_settlement("ack", records)
    else:
        ch.settle("ack", records)


def basic_nack(ch: Channel, cmd: Command) -> None:
    m = cast(M.BasicNack, cmd.method)
    _reject(ch, ch.unacked.collect(m.delivery_tag, m.multiple), m.requeue)


def basic_reject(ch: Channel, cmd: Command) -> None:
    m = cast(M.BasicReject, cmd.method)
    _reject(ch, ch.unacked.collect(m.delivery_tag, False), m.requeue)


def _reject(ch: Channel, records: list[Unacked], requeue: bool) -> None:
    stream_consumer.refuse_reject(records)  # 540 for stream deliveries
    op: SettleOp = "requeue" if requeue else "discard"
    if ch.tx is not None:
        ch.tx.add_settlement(op, records)
    else:
        ch.settle(op, records)


def basic_recover_async(ch: Channel, cmd: Command) -> None:
    _recover(ch, cast(M.BasicRecoverAsync, cmd.method).requeue)


def basic_recover(ch: Channel, cmd: Command) -> None:
    _recover(ch, cast(M.BasicRecover, cmd.method).requeue)
    ch.send_method(BasicRecoverOk())


def _recover(ch: Channel, requeue: bool) -> None:
    if not requeue:
        raise errors.NotImplemented("requeue=false")
    stream_consumer.refuse_recover(ch.unacked)  # 541 for stream deliveries
    ch.settle("requeue", ch.unacked.pop_all())
