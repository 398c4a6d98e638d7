"""One open AMQP channel: classes 40, 50, 60, 85, 90 and channel.flow, RabbitMQ-style.

Rules of this module (docs/internals.md "session/"; reference 1.3, 1.4, 2.6-2.9):
- Sync and sans-I/O: ``handle(cmd, now)`` runs one command to completion, writes replies
  through ``conn.send`` / ``conn.send_method`` and raises ``AMQPError`` for the Connection to
  turn into channel.close / connection.close. This class never sends a close itself.
- Dispatch is a table from method class to handler function; the handlers live in small
  modules by topic (``declare``, ``consumer``, ``acks``, ``publish``, ``reply_to``) and take
  the channel as their first argument. A method missing from the table is one a client may
  not send (basic.deliver, get-ok, *-ok replies, ...): 503 COMMAND_INVALID "unimplemented
  method" (connection), RabbitMQ's catch-all ``handle_method`` clause.
- Publisher confirms accumulate and go out on ``flush()``: the Connection calls it after
  processing each received chunk (one coalesced basic.ack per burst). ``handle`` also
  flushes before raising, so acks of earlier publishes precede the channel.close.
- ``on_closed()`` (idempotent): deliveries stop, consumers are removed (no frames), every
  unacked delivery goes back to its queue at its original position with redelivered set,
  the reply-to key is released, pending confirms and the tx are dropped (RabbitMQ sends
  nothing once a channel is closing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from amqpd import errors
from amqpd.errors import AMQPError, CommandInvalid, NotFound
from amqpd.protocol import methods as M
from amqpd.session import acks, consumer, declare, publish, reply_to
from amqpd.session.confirms import ConfirmTracker
from amqpd.session.limiter import Limiter
from amqpd.session.tx import SettleOp, TxBuffer
from amqpd.session.unacked import Unacked, UnackedTracker

if TYPE_CHECKING:
    from amqpd.protocol.assembler import Command
    from amqpd.session.consumer import ChannelConsumer
    from amqpd.session.reply_to import ReplyConsumer


class Channel:
    def __init__(self, conn: Any, number: int) -> None:
        self.conn = conn
        self.number = number
        self.vhost = conn.vhost
        self.access = conn.access  # the broker's permission checks for this user and vhost
        self.closed = False
        self.next_tag = 1  # delivery tags: per channel, from 1 (spec basic.deliver)
        self.unacked = UnackedTracker()
        self.limiter = Limiter()
        self.consumers: dict[str, ChannelConsumer] = {}
        self.reply: ReplyConsumer | None = None
        self.confirms: ConfirmTracker | None = None
        self.tx: TxBuffer | None = None
        self.last_queue = ""  # RabbitMQ's most_recently_declared_queue
        # Set while this channel's queue.delete runs: server cancels wait for delete-ok.
        self.deferred_cancels: list[M.Method] | None = None
        # The ``now`` of the command being handled (or the last one): handlers pass it to the
        # queues, which need time for TTL and x-expires.
        self.now = 0.0

    # -- the Connection's interface ----------------------------------------------------------

    def handle(self, cmd: Command, now: float) -> None:
        handler = _HANDLERS.get(type(cmd.method))
        if now > self.now:
            self.now = now
        try:
            if handler is None:
                raise CommandInvalid("unimplemented method")
            handler(self, cmd)
        except AMQPError as exc:
            if exc.class_id == 0 and exc.method_id == 0:
                exc.class_id = cmd.method.CLASS_ID
                exc.method_id = cmd.method.METHOD_ID
            self.flush()
            raise

    def flush(self) -> None:
        """Send the confirms accumulated since the last flush, coalesced."""
        confirms = self.confirms
        if confirms is None or not confirms.has_output or self.closed:
            return
        send_method = self.conn.send_method
        for frame in confirms.flush():
            if frame.ack:
                send_method(
                    self.number,
                    M.BasicAck(delivery_tag=frame.delivery_tag, multiple=frame.multiple),
                )
            else:
                send_method(
                    self.number,
                    M.BasicNack(
                        delivery_tag=frame.delivery_tag, multiple=frame.multiple, requeue=False
                    ),
                )

    def on_closed(self, now: float | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if now is not None and now > self.now:
            self.now = now
        now = self.now
        consumers = list(self.consumers.values())
        for c in consumers:
            c.active = False  # requeued messages must not come back to this channel
        records = self.unacked.pop_all()
        if self.tx is not None:
            # Acks of an uncommitted tx never happened: the queue requeues everything the
            # channel had not settled (rabbit_amqqueue_process on channel down).
            records.extend(self.tx.rollback())
            self.tx = None
        # rabbit_amqqueue_process:handle_ch_down/2: the consumers go first (a single active
        # consumer hands over), then each queue requeues and runs, so the requeued messages
        # go to the new active consumer in their original order.
        self.consumers.clear()
        for c in consumers:
            c.queue.remove_consumer(c, now)
        self._requeue(records)
        requeued = {id(r.queue) for r in records}
        for q in {id(c.queue): c.queue for c in consumers}.values():
            if id(q) not in requeued:
                q.dispatch(now)  # requeue_and_run with nothing to requeue still runs
        reply_to.cancel(self)
        if self.confirms is not None:
            self.confirms.clear()

    # -- helpers for the handler modules -----------------------------------------------------

    def send_method(self, method: M.Method) -> None:
        self.conn.send_method(self.number, method)

    def expand_queue_name(self, name: str) -> str:
        """The queue a name means: "" is the queue last declared on this channel
        (rabbit_channel:expand_queue_name_shortcut/2)."""
        if name:
            return name
        if not self.last_queue:
            raise NotFound("no previously declared queue")
        return self.last_queue

    def settle(self, op: SettleOp, records: list[Unacked]) -> None:
        """Apply ack / requeue / discard to settled deliveries and give their credit back.

        As ``rabbit_channel:foreach_per_queue/3``: one step per (queue, consumer) group, in
        (queue name, consumer tag) order with basic.get deliveries (keyed by their integer
        tag, which Erlang sorts before binaries) first. Each step returns that consumer's
        credit before the queue acts, so a requeue goes back to the consumer whose credit
        it freed first (oracle: two consumers with prefetch 2, nack of A's two and B's
        one → A, A, B). The shared limit gets its credit back after all groups
        (``notify_limiter``), and then every queue this channel consumes from may go on.
        """
        if not records:
            return
        if len(records) == 1:
            r = records[0]
            groups: list[tuple[Any, Any, list[Any]]] = [(r.queue, r.consumer, [r.entry])]
        else:
            groups = _groups(records)
        from_consumers = 0
        now = self.now
        for queue, owner, entries in groups:
            if owner is not None:
                owner.outstanding -= len(entries)
                from_consumers += len(entries)
                # Its credit is back: the queue asks it again (and nobody else, so a settle
                # does not cost O(busy consumers); broker/consumers.py parks them).
                queue.unblock(owner)
            if op == "requeue":
                queue.requeue(entries, now)  # original positions, redelivered; it dispatches
                continue
            if op == "ack":
                for entry in entries:
                    queue.ack(entry)
            else:
                for entry in entries:
                    queue.discard(entry, now)  # dead-lettered (reason rejected) if a DLX is set
            queue.dispatch(now, recheck=False)
        if self.limiter.settled(from_consumers):
            # The shared limit was full: every queue this channel consumes from may go on.
            self.dispatch_consumer_queues()

    def dispatch_consumer_queues(self) -> None:
        """The shared limit opened or changed: every consumer of this channel may go on."""
        consumers = list(self.consumers.values())
        for c in consumers:
            c.queue.unblock(c)
        seen: set[int] = set()
        for c in consumers:
            q = c.queue
            if id(q) not in seen:
                seen.add(id(q))
                q.dispatch(self.now, recheck=False)

    def _requeue(self, records: list[Unacked]) -> None:
        """Channel close: each queue takes back all of this channel's deliveries at once
        (``rabbit_amqqueue:notify_down_all``), at their original positions."""
        by_queue: dict[int, tuple[Any, list[Any]]] = {}
        for r in records:
            slot = by_queue.get(id(r.queue))
            if slot is None:
                by_queue[id(r.queue)] = (r.queue, [r.entry])
            else:
                slot[1].append(r.entry)
        for q, entries in by_queue.values():
            q.requeue(entries, self.now)


def _channel_flow(ch: Channel, cmd: Command) -> None:
    # RabbitMQ 3.x: the client may not pause deliveries (reference 1.1).
    if not cast(M.ChannelFlow, cmd.method).active:
        raise errors.NotImplemented("active=false")
    ch.send_method(M.ChannelFlowOk(active=True))


_HANDLERS: dict[type[M.Method], Callable[[Channel, Command], None]] = {
    M.ChannelFlow: _channel_flow,
    M.ExchangeDeclare: declare.exchange_declare,
    M.ExchangeDelete: declare.exchange_delete,
    M.ExchangeBind: declare.exchange_bind,
    M.ExchangeUnbind: declare.exchange_unbind,
    M.QueueDeclare: declare.queue_declare,
    M.QueueBind: declare.queue_bind,
    M.QueueUnbind: declare.queue_unbind,
    M.QueuePurge: declare.queue_purge,
    M.QueueDelete: declare.queue_delete,
    M.BasicQos: consumer.basic_qos,
    M.BasicConsume: consumer.basic_consume,
    M.BasicCancel: consumer.basic_cancel,
    M.BasicPublish: publish.basic_publish,
    M.BasicGet: acks.basic_get,
    M.BasicAck: acks.basic_ack,
    M.BasicReject: acks.basic_reject,
    M.BasicNack: acks.basic_nack,
    M.BasicRecoverAsync: acks.basic_recover_async,
    M.BasicRecover: acks.basic_recover,
    M.ConfirmSelect: publish.confirm_select,
    M.TxSelect: publish.tx_select,
    M.TxCommit: publish.tx_commit,
    M.TxRollback: publish.tx_rollback,
}


def _groups(records: list[Unacked]) -> list[tuple[Any, Any, list[Any]]]:
    """Records grouped by (queue, consumer), in rabbit_channel's settlement order."""
    groups: dict[tuple[int, object], tuple[tuple[str, int, int | str], Any, Any, list[Any]]] = {}
    for r in records:
        c = r.consumer
        key: tuple[int, object] = (id(r.queue), r.tag if c is None else id(c))
        group = groups.get(key)
        if group is None:
            order = (r.queue.name, 0, r.tag) if c is None else (r.queue.name, 1, c.tag)
            groups[key] = (order, r.queue, c, [r.entry])
        else:
            group[3].append(r.entry)
    ordered = sorted(groups.values(), key=lambda g: g[0])
    return [(queue, consumer, entries) for _, queue, consumer, entries in ordered]
