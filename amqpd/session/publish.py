"""basic.publish, publisher confirms (class 85) and transactions (class 90).

Rules of this module (reference 1.3, 2.6, 2.8; RabbitMQ 3.13 ``rabbit_channel`` publish,
confirm and tx clauses, ``deliver_to_queues/3``, ``process_routing_mandatory/5``):
- basic.publish checks, in RabbitMQ's order: immediate=true → 540 "immediate=true"
  (connection); body size (406); write permission on the exchange (403); the exchange
  (404 missing, 403 internal: ``vhost.route``); the topic write permission (403);
  the fast reply-to rewrite (406); user_id (406); expiration (406). The property checks only
  decode the properties when their flag bits say one of them is present.
- Routed: enqueued into each queue; unroutable with mandatory → basic.return 312
  "NO_ROUTE" with the message, sent before the publish's confirm.
- confirm.select (no-wait honoured): every later publish takes a sequence number, confirmed
  once its queues accepted it; in memory that is at once, and the ack goes out coalesced on
  ``Channel.flush``. A persistent message that went to durable queues (and so to the
  durable log: ``message.store_id`` set) is confirmed only once the log has fsynced it
  (``DurableLog.after_commit``), the batch's confirms again coalesced into one flush: it
  waits in the ``ConfirmTracker`` with its record's token, and the channel keeps one
  commit callback registered while any publish waits (not one per publish).
  tx.select on a confirm channel → 406 "cannot switch from confirm to tx mode";
  confirm.select on a tx channel → 406 "cannot switch from tx to confirm mode".
- tx: see ``amqpd.session.tx``; tx.commit / tx.rollback without tx.select → 406 "channel is
  not transactional"; a second tx.select is fine. tx.commit-ok waits for the fsync when the
  commit logged a persistent message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import attrs

from amqpd import errors
from amqpd.broker.durability import enqueue_routed
from amqpd.broker.message import Message
from amqpd.errors import NO_ROUTE, PreconditionFailed
from amqpd.protocol import methods as M
from amqpd.protocol.frames import encode_basic_return
from amqpd.protocol.methods import (
    ConfirmSelectOk,
    TxCommitOk,
    TxRollbackOk,
    TxSelectOk,
)
from amqpd.session import reply_to
from amqpd.session.confirms import ConfirmTracker
from amqpd.session.publish_checks import check_size, check_user_id, parse_expiration
from amqpd.session.tx import TxBuffer
from amqpd.storage.durable import FollowUp

if TYPE_CHECKING:
    from amqpd.protocol.assembler import Command
    from amqpd.session.channel import Channel

# Property flag bits (spec 4.2.6.1, basic class) of the properties that need checking.
_FLAG_REPLY_TO = 1 << 9
_FLAG_EXPIRATION = 1 << 8
_FLAG_USER_ID = 1 << 4
_CHECKED_FLAGS = _FLAG_REPLY_TO | _FLAG_EXPIRATION | _FLAG_USER_ID
_EMPTY = b"\x00\x00"


def basic_publish(ch: Channel, cmd: Command) -> None:
    m = cast(M.BasicPublish, cmd.method)
    if m.immediate:
        raise errors.NotImplemented("immediate=true")
    body = cmd.body or b""
    props_raw = cmd.properties_raw or _EMPTY
    max_size = ch.conn.config.max_message_size
    if len(body) > max_size:
        check_size(len(body), max_size)
    message = Message(m.exchange, m.routing_key, props_raw, body)
    vhost = ch.vhost
    access = ch.access
    access.publish(m.exchange)  # before the lookup: a missing exchange is refused too
    check_props = len(props_raw) >= 2 and ((props_raw[0] << 8) | props_raw[1]) & _CHECKED_FLAGS
    if check_props or access.topic_restricted:
        # rabbit_channel: the exchange (404 / 403), the topic permission, the property
        # checks (406), then the route. Without any of these route_message does the
        # exchange checks itself.
        exchange = vhost.publish_exchange(m.exchange)
        if access.topic_restricted:
            access.check_topic("write", m.exchange, exchange.type, m.routing_key)
        if check_props:
            message = _check_properties(ch, message)
    holds = vhost.durable_holds
    # The message comes back without its BCC header, if any.
    queues, message = vhost.route_message(m.exchange, message, ch.now)
    # Routing appends to the log only when a durable delayed exchange holds the message:
    # then the confirm waits for the log (beyond the plugin, whose confirm does not).
    held = vhost.durable_holds != holds
    if m.exchange == "" and m.routing_key.startswith(reply_to.PREFIX):
        # Before the tx check: RabbitMQ delivers replies at publish time even in a tx.
        reply_to.deliver(ch, m.routing_key, message)
    tx = ch.tx
    if tx is not None:
        tx.add_publish(message, queues, m.mandatory)
        return
    accepted = deliver_publish(ch, message, queues, m.mandatory)
    confirms = ch.confirms
    if confirms is not None:
        seq = confirms.take_seq()
        if not accepted:
            confirms.reject(seq)
        elif message.store_id or held:
            # On disk first: in a durable queue, or held by a durable delayed exchange.
            _confirm_when_durable(ch, confirms, seq)
        else:
            confirms.confirm(seq)


def _confirm_when_durable(ch: Channel, confirms: ConfirmTracker, seq: int) -> None:
    durable = ch.vhost.durable
    confirms.wait_for_disk(seq, durable.last_token)
    if confirms.disk_watched:
        return  # the channel's commit callback will see it
    confirms.disk_watched = True

    # One callback per channel and commit, not one per publish.
    def on_disk() -> FollowUp | None:
        confirms.disk_watched = False
        if ch.closed or ch.confirms is not confirms:
            return None
        if confirms.on_disk(durable.committed_token):
            confirms.disk_watched = True  # publishes of the next batch
            durable.after_commit(on_disk)
        return ch.flush

    durable.after_commit(on_disk)


def _check_properties(ch: Channel, message: Any) -> Any:
    props = message.properties
    if props.reply_to == reply_to.PSEUDO_QUEUE:
        new_reply_to = reply_to.rewrite_reply_to(ch)
        message = message.with_properties(attrs.evolve(props, reply_to=new_reply_to))
        props = message.properties
    check_user_id(props.user_id, ch.conn.user.name)
    parse_expiration(props.expiration)
    return message


def deliver_publish(ch: Channel, message: Any, queues: list[Any], mandatory: bool) -> bool:
    """Enqueue a routed publish; basic.return if mandatory and unroutable.

    Returns False when a queue refused the message (``enqueue`` returned False: x-overflow
    reject-publish): the publish is then nacked, though the other queues keep their copy
    (reference 2.3, 2.6). A refused publish still counts as routed: no basic.return.
    """
    vhost = ch.vhost
    accepted = enqueue_routed(vhost.durable, vhost.name, message, queues, ch.now)
    if not queues and mandatory:
        conn = ch.conn
        conn.send(
            encode_basic_return(
                ch.number,
                NO_ROUTE,
                "NO_ROUTE",
                message.exchange,
                message.routing_key,
                message.properties_raw,
                message.body,
                conn.frame_max,
            )
        )
    return accepted


def confirm_select(ch: Channel, cmd: Command) -> None:
    if ch.tx is not None:
        raise PreconditionFailed("cannot switch from tx to confirm mode")
    if ch.confirms is None:
        ch.confirms = ConfirmTracker()
    if not cast(M.ConfirmSelect, cmd.method).nowait:
        ch.send_method(ConfirmSelectOk())


def tx_select(ch: Channel, cmd: Command) -> None:
    if ch.confirms is not None:
        raise PreconditionFailed("cannot switch from confirm to tx mode")
    if ch.tx is None:
        ch.tx = TxBuffer()
    ch.send_method(TxSelectOk())


def tx_commit(ch: Channel, cmd: Command) -> None:
    tx = ch.tx
    if tx is None:
        raise PreconditionFailed("channel is not transactional")
    publishes, settlements = tx.take()
    vhost = ch.vhost
    durable = False
    for p in publishes:
        if p.queues:
            # A queue deleted since the publish just misses it; the publish still counts
            # as routed (RabbitMQ delivers to the queues looked up at publish time).
            live = [queue for queue in p.queues if not queue.deleted]
            enqueue_routed(vhost.durable, vhost.name, p.message, live, ch.now)
            durable = durable or bool(p.message.store_id)
        else:
            deliver_publish(ch, p.message, p.queues, p.mandatory)
    for op, records in settlements:
        ch.settle(op, records)
    if not durable:
        ch.send_method(TxCommitOk())
        return

    def on_disk() -> FollowUp | None:
        if not ch.closed:
            ch.send_method(TxCommitOk())
        return None

    vhost.durable.after_commit(on_disk)


def tx_rollback(ch: Channel, cmd: Command) -> None:
    tx = ch.tx
    if tx is None:
        raise PreconditionFailed("channel is not transactional")
    ch.unacked.restore(tx.rollback())
    ch.send_method(TxRollbackOk())
