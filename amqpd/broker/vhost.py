"""VirtualHost: the exchanges, queues and bindings of one vhost, and routing between them.

Rules of this module:
- The VirtualHost is the one owner of its exchange and queue tables and of the bindings
  between them (each exchange's routing index is held by its ExchangeType; the vhost keeps
  the reverse index, destination -> source exchanges, so deleting a queue is cheap).
- Every operation checks in RabbitMQ's order and raises RabbitMQ's error with its text
  (rabbit_channel.erl handle_method/3 for exchange.*, queue.*; rabbit_amqqueue.erl;
  rabbit_exchange.erl; rabbit_binding.erl). The texts were confirmed on a live RabbitMQ.
- Names arrive as the client sent them; declare, delete and (un)bind strip CR and LF
  first, as RabbitMQ's ``strip_cr_lf/1`` does; publish, consume, get and purge do not.
- ``owner`` is the opaque connection identity used for exclusive queues (405).
- Dead-lettering (reference 2.1): a queue's ``on_dead_letter`` hook lands in
  ``_dead_letter``, which builds the message (deadletter.py) and routes it through the
  queue's dead-letter exchange with the normal routing (bindings, exchange-to-exchange,
  alternate exchanges). A missing DLX drops the message silently; a destination queue
  already in the message's death history without a ``rejected`` death since is skipped
  (``mc:is_death_cycle``). The x-death ``time`` is wall-clock seconds from ``wall_clock``.
- Timers: queues report deadlines (head TTL, x-expires) through ``on_deadline``; the vhost
  keeps them in a heap (stale entries are skipped when popped), ``next_deadline()`` /
  ``tick(now)`` serve them, and ``on_deadline_moved`` tells the server's timer that the
  earliest deadline moved earlier.
- Durable changes go to ``self.durable`` (a ``DurableLog``; the no-op one unless the broker
  has a data directory) where they happen: creation of a durable exchange or queue,
  ``_delete_exchange`` / ``_delete_queue`` (every path, auto-delete included; the log
  drops the bindings and messages that go with them), and ``_bind`` / ``_unbind`` when a
  binding between two durable ends really appears or disappears.
"""

from __future__ import annotations

import base64
import functools
import heapq
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from typing import Any, cast

import attrs

from amqpd.broker import delayed
from amqpd.broker.arguments import (
    QUEUE_TYPE_ARGS,
    QUEUE_TYPE_MODULES,
    FieldTable,
    assert_args_equivalence,
    assert_field_equivalence,
    is_longstr,
    queue_type_of,
    type_name,
    validate_queue_args,
)
from amqpd.broker.deadletter import is_death_cycle, make_dead_letter
from amqpd.broker.durability import (
    LoggedDelayed,
    QueueJournal,
    delayed_store,
    enqueue_routed,
    load_delayed,
    log_delayed,
)
from amqpd.broker.exchange import Exchange
from amqpd.broker.exchanges import EXCHANGE_TYPES
from amqpd.broker.limits import VhostLimits
from amqpd.broker.message import Message
from amqpd.broker.paging import Paging
from amqpd.broker.permissions import Access
from amqpd.broker.policies import Policy, matching
from amqpd.broker.queue import Queue
from amqpd.broker.stream import StreamQueue, check_declare
from amqpd.broker.stream_disk import DiskSegments
from amqpd.errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked
from amqpd.storage.durable import NULL_LOG, DurableLog
from amqpd.storage.streamdirs import StreamDirs

Owner = Hashable

DEFAULT_EXCHANGE = ""

# Exchanges every vhost has (rabbit_vhost:add/2 declares them; `rabbitmqctl list_exchanges`).
PREDECLARED_EXCHANGES: tuple[tuple[str, str], ...] = (
    ("", "direct"),
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
    ("amq.rabbitmq.trace", "topic"),
)

_EMPTY: Mapping[str, Any] = {}


@attrs.frozen(slots=True)
class VirtualHostStatistics:
    name: str
    exchanges: int
    queues: int
    bindings: int
    messages_ready: int
    messages_unacknowledged: int
    consumers: int


def strip_cr_lf(name: str) -> str:
    # rabbit_channel:strip_cr_lf/1: names may not carry CR or LF; RabbitMQ drops them.
    if "\r" in name or "\n" in name:
        return name.replace("\r", "").replace("\n", "")
    return name


def server_queue_name() -> str:
    """``amq.gen-`` + 22 chars of url-safe base64 of 16 random bytes (rabbit_guid:binary/2)."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=")
    return "amq.gen-" + raw.decode("ascii")


def _check_name(kind: str, name: str) -> None:
    # rabbit_channel:check_name/2: users may not create names in the amq. namespace.
    if name.startswith("amq."):
        raise AccessRefused(f"{kind} name '{name}' contains reserved prefix 'amq.*'")


def _not_default(name: str) -> None:
    # rabbit_channel:check_not_default_exchange/1
    if name == DEFAULT_EXCHANGE:
        raise AccessRefused("operation not permitted on the default exchange")


def _lock_message(queue: Queue) -> str:
    return (
        f"cannot obtain exclusive access to locked {queue.resource()}. It could be "
        "originally declared on another connection or the exclusive property value does "
        "not match that of the original declaration."
    )


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class VirtualHost:
    def __init__(self, name: str = "/", *, wall_clock: Callable[[], float] = time.time) -> None:
        self.name = name
        # Wall-clock seconds, only for the x-death "time" field (the broker's clock).
        self.wall_clock = wall_clock
        # Called when next_deadline() moved earlier (the server's timer wakes up).
        self.on_deadline_moved: Callable[[], None] | None = None
        self._timers: list[tuple[float, int, Queue]] = []
        # Messages held by x-delayed-message exchanges until they are due (delayed.py).
        self.delayed = delayed.DelaySchedule()
        # Pending delayed messages read back from the log, until the first tick schedules
        # them: (exchange, routing keys, message, due wall-clock ms).
        self._restored_delayed: list[tuple[Exchange, tuple[str, ...], LoggedDelayed, int]] = []
        # Held messages of durable delayed exchanges whose record is not committed yet, in
        # log order: each forgets its message once it is (LoggedDelayed.page_out).
        self._delayed_unpaged: deque[LoggedDelayed] = deque()
        # Messages a durable delayed exchange logged (held): a publish that changes it
        # confirms only after the commit (session/publish.py), as for a durable queue.
        self.durable_holds = 0
        self._page_out_armed = False  # an after_commit callback will page them out
        self._timer_seq = itertools.count()
        self._now = 0.0
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.limits = VhostLimits()  # rabbitmqctl set_vhost_limits (max-queues here)
        # Direct reply-to registry (the session's; amq.rabbitmq.reply-to.* name -> consumer).
        self.reply_to: dict[str, object] = {}
        # destination (Queue or Exchange) -> source exchanges with bindings to it.
        self._sources: dict[Queue | Exchange, set[Exchange]] = {}
        self._exclusive: dict[Owner, set[str]] = {}
        self.durable: DurableLog = NULL_LOG
        # This vhost's policies (the broker's, set_policies): applied at declare and
        # re-applied to every queue and exchange when they change.
        self.policies: tuple[Policy, ...] = ()
        self.paging: Paging | None = None  # the broker's memory budget (paging.py)
        # Where stream queues keep their segment files (None: in memory; stream_disk.py).
        self.stream_dirs: StreamDirs | None = None
        for xname, xtype in PREDECLARED_EXCHANGES:
            self.exchanges[xname] = Exchange(xname, xtype, vhost=name, durable=True)
        # amq.rabbitmq.trace is internal: the firehose publishes to it, clients may not.
        self.exchanges["amq.rabbitmq.trace"].internal = True

    def _rs(self, kind: str, name: str) -> str:
        return f"{kind} '{name}' in vhost '{self.name}'"

    # -- policies ----------------------------------------------------------------------------
    def set_policies(self, policies: Iterable[Policy], now: float | None = None) -> None:
        """This vhost's policies are now ``policies``: re-apply them where they changed.

        As rabbit_policy:update_matched_objects/3, only a queue or exchange whose policy is
        not the same as before is told (rabbit_amqqueue:policy_changed/2), at ``now``.
        """
        self.policies = tuple(policies)
        now = self._clock(now)
        for exchange in list(self.exchanges.values()):
            policy = matching(self.policies, "exchange", exchange.name)
            if policy != exchange.policy:
                exchange.apply_policy(policy)
        for queue in list(self.queues.values()):
            policy = matching(self.policies, "queue", queue.name)
            if isinstance(queue, Queue) and policy != queue.policy:
                queue.apply_policy(policy, now)

    def _policy_for(self, kind: str, name: str) -> Policy | None:
        return matching(self.policies, kind, name) if self.policies else None

    # -- lookups -----------------------------------------------------------------------------
    def _exchange_or_404(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"no {self._rs('exchange', name)}")
        return exchange

    def _queue_or_404(self, name: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"no {self._rs('queue', name)}")
        return queue

    @staticmethod
    def _check_exclusive_access(queue: Queue, owner: Owner | None) -> None:
        # rabbit_amqqueue:check_exclusive_access/3, lax mode: a non-exclusive queue is open
        # to all; an exclusive one only to its connection.
        if queue.exclusive_owner is not None and queue.exclusive_owner != owner:
            raise ResourceLocked(_lock_message(queue))

    def get_queue(self, name: str, owner: Owner | None = None) -> Queue:
        """The queue for basic.consume / basic.get / queue.purge (404 missing, 405 locked).

        These take the name as sent: RabbitMQ's qbin_to_resource/2 does not strip CR/LF
        (only declare, delete and bind/unbind do), so "pc\nr" is a 404 even if "pcr" exists.
        """
        queue = self._queue_or_404(name)
        self._check_exclusive_access(queue, owner)
        return queue

    def get_exchange(self, name: str) -> Exchange:
        return self._exchange_or_404(strip_cr_lf(name))

    # -- exchanges ---------------------------------------------------------------------------
    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: FieldTable | None = None,
        access: Access | None = None,
    ) -> Exchange:
        name = strip_cr_lf(name)
        if passive:
            # A passive declare ignores every other field, the type included.
            _not_default(name)
            return self._exchange_or_404(name)
        if type not in EXCHANGE_TYPES and type != delayed.EXCHANGE_TYPE:
            # rabbit_exchange:check_type/1. 406 from RabbitMQ 3.13.3 (503 before). RabbitMQ
            # says "invalid exchange type" when the name happens to be an existing Erlang
            # atom and "unknown exchange type" otherwise; the latter is the general case.
            raise PreconditionFailed(f"unknown exchange type '{type}'")
        _not_default(name)
        if access is not None:
            access.configure("exchange", name)  # rabbit_channel: before the lookup
        args = arguments or _EMPTY
        exchange = self.exchanges.get(name)
        if exchange is None:
            _check_name("exchange", name)
            ae = args.get("alternate-exchange")
            if ae is not None and not is_longstr(ae):
                raise PreconditionFailed(
                    f"invalid type '{type_name(ae)}' for arg 'alternate-exchange' in "
                    f"{self._rs('exchange', name)}"
                )
            if ae is not None and access is not None:
                # A new exchange with an AE: read on it, write on the AE (rabbit_channel).
                access.read("exchange", name)
                access.write("exchange", _text(ae))
            # Exchange() runs the type's validate/1 (x-delayed-type: 406), as
            # rabbit_exchange:declare does for a new exchange only.
            exchange = Exchange(
                name,
                type,
                vhost=self.name,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=args,
            )
            exchange.apply_policy(self._policy_for("exchange", name))
            self.exchanges[name] = exchange
            if durable:
                self.durable.exchange_declared(
                    self.name,
                    name,
                    type,
                    auto_delete=auto_delete,
                    internal=internal,
                    arguments=args,
                )
                if exchange.delayed:
                    self._log_delayed_store(exchange)
            return exchange
        # rabbit_exchange:assert_equivalence/6: type, durable, auto_delete, internal, args.
        resource = exchange.resource()
        assert_field_equivalence(exchange.type, type, resource, "type")
        assert_field_equivalence(exchange.durable, durable, resource, "durable")
        assert_field_equivalence(exchange.auto_delete, auto_delete, resource, "auto_delete")
        assert_field_equivalence(exchange.internal, internal, resource, "internal")
        # rabbit_exchange_type:*:assert_args_equivalence: only alternate-exchange.
        assert_args_equivalence(exchange.arguments, args, resource, ("alternate-exchange",))
        return exchange

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        name = strip_cr_lf(name)
        _not_default(name)
        if name.startswith("amq."):
            # Checked by name, before the lookup: even a missing amq.* exchange is refused.
            raise AccessRefused(
                f"deletion of system exchange '{name}' in vhost '{self.name}' not allowed"
            )
        exchange = self.exchanges.get(name)
        if exchange is None:
            return  # exchange.delete is idempotent (RabbitMQ 3.x)
        if if_unused and exchange.impl.has_bindings():
            # "in use" means bound as a source; bindings to it as a destination don't count.
            raise PreconditionFailed(f"{exchange.resource()} in use")
        self._delete_exchange(exchange)

    def _delete_exchange(self, exchange: Exchange) -> None:
        if exchange.deleted:
            return
        exchange.deleted = True
        del self.exchanges[exchange.name]
        if exchange.durable:
            self.durable.exchange_deleted(self.name, exchange.name)
            if exchange.delayed:
                # Its pending messages go with it (the plugin's are never delivered either).
                self.durable.queue_deleted(self.name, delayed_store(exchange.name))
        if exchange.delayed:
            self.delayed.drop_exchange(exchange)  # and its bucket files
        for dest in exchange.impl.destinations():
            self._forget_source(dest, exchange)  # type: ignore[arg-type]
        exchange.impl.remove_all()
        self._remove_as_destination(exchange)

    def _remove_as_destination(self, dest: Queue | Exchange) -> None:
        """Drop every binding to ``dest``; auto-delete sources left without bindings."""
        sources = self._sources.pop(dest, None)
        if not sources:
            return
        for source in sources:
            source.impl.remove_destination(dest)
        for source in sources:
            self._maybe_auto_delete(source)

    def _maybe_auto_delete(self, exchange: Exchange) -> None:
        # An auto-delete exchange goes when its last binding as a source goes (it never
        # goes just for being created unbound).
        if exchange.auto_delete and not exchange.deleted and not exchange.impl.has_bindings():
            self._delete_exchange(exchange)

    def _forget_source(self, dest: Queue | Exchange, source: Exchange) -> None:
        sources = self._sources.get(dest)
        if sources is not None:
            sources.discard(source)
            if not sources:
                del self._sources[dest]

    # -- bindings ----------------------------------------------------------------------------
    def _bind(
        self,
        source: Exchange,
        dest: Queue | Exchange,
        routing_key: str,
        arguments: FieldTable,
    ) -> None:
        if source.impl.bind(dest, routing_key, arguments):
            self._sources.setdefault(dest, set()).add(source)
            self._log_binding(True, source, dest, routing_key, arguments)

    def _log_binding(
        self,
        added: bool,
        source: Exchange,
        dest: Queue | Exchange,
        routing_key: str,
        arguments: FieldTable,
    ) -> None:
        # A binding is durable when both its ends are (RabbitMQ's rule).
        if source.durable and dest.durable:
            record = self.durable.binding_added if added else self.durable.binding_removed
            to_exchange = isinstance(dest, Exchange)
            record(
                self.name, source.name, dest.name, routing_key, arguments, to_exchange=to_exchange
            )

    def _unbind(
        self,
        source: Exchange,
        dest: Queue | Exchange,
        routing_key: str,
        arguments: FieldTable,
    ) -> None:
        if source.impl.unbind(dest, routing_key, arguments):
            self._log_binding(False, source, dest, routing_key, arguments)
            if not source.impl.bindings_to(dest):
                self._forget_source(dest, source)
            self._maybe_auto_delete(source)

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: FieldTable | None = None,
        owner: Owner | None = None,
    ) -> None:
        qname, xname = strip_cr_lf(queue), strip_cr_lf(exchange)
        _not_default(xname)
        source = self._exchange_or_404(xname)  # the source is looked up first
        dest = self._queue_or_404(qname)
        args = arguments or _EMPTY
        source.impl.validate_binding(routing_key, args)
        self._check_exclusive_access(dest, owner)
        self._bind(source, dest, routing_key, args)

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: FieldTable | None = None,
        owner: Owner | None = None,
    ) -> None:
        qname, xname = strip_cr_lf(queue), strip_cr_lf(exchange)
        _not_default(xname)
        source = self.exchanges.get(xname)
        dest = self.queues.get(qname)
        args = arguments or _EMPTY
        # queue.unbind is idempotent: missing queue, exchange or binding → unbind-ok. The
        # exclusive check applies only when there is a binding to remove (rabbit_binding).
        if source is None or dest is None:
            return
        if not source.impl.has_binding(dest, routing_key, args):
            return
        self._check_exclusive_access(dest, owner)
        self._unbind(source, dest, routing_key, args)

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str,
        arguments: FieldTable | None = None,
    ) -> None:
        dname, sname = strip_cr_lf(destination), strip_cr_lf(source)
        _not_default(dname)
        _not_default(sname)
        src = self._exchange_or_404(sname)
        dst = self._exchange_or_404(dname)
        args = arguments or _EMPTY
        src.impl.validate_binding(routing_key, args)
        self._bind(src, dst, routing_key, args)

    def unbind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str,
        arguments: FieldTable | None = None,
    ) -> None:
        dname, sname = strip_cr_lf(destination), strip_cr_lf(source)
        _not_default(dname)
        _not_default(sname)
        src = self.exchanges.get(sname)
        dst = self.exchanges.get(dname)
        if src is None or dst is None:
            return
        self._unbind(src, dst, routing_key, arguments or _EMPTY)

    # -- queues ------------------------------------------------------------------------------
    def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: FieldTable | None = None,
        owner: Owner | None = None,
        now: float | None = None,
        access: Access | None = None,
        recovered: bool = False,
    ) -> Queue:
        """``recovered``: recreating a queue from the durable log at start (a server-named
        ``amq.gen-`` queue may come back under its name)."""
        now = self._clock(now)
        if passive:
            found = self._queue_or_404(strip_cr_lf(name))
            self._check_exclusive_access(found, owner)
            found.touch(now)  # a passive declare counts as use for x-expires (oracle)
            return found
        args = arguments or _EMPTY
        # An exclusive queue is never durable: the flag is ignored, no error.
        durable = durable and not exclusive
        if name == "":
            qtype = queue_type_of(args)
            if qtype != "classic":
                raise PreconditionFailed(
                    f"Cannot declare a server-named queue for type {QUEUE_TYPE_MODULES[qtype]}"
                )
            name = server_queue_name()
            while name in self.queues:
                name = server_queue_name()
        else:
            name = strip_cr_lf(name)
            if not recovered:
                _check_name("queue", name)
        if access is not None:
            access.configure("queue", name)  # server-named ones too (rabbit_channel)
        declared_owner = owner if exclusive else None
        queue = self.queues.get(name)
        if queue is not None:
            self._assert_queue_equivalence(queue, durable, auto_delete, args, declared_owner)
            queue.touch(now)  # a redeclare renews the x-expires lease (classic queues)
            return queue
        resource = self._rs("queue", name)
        # Only a queue that would be created counts against max-queues (rabbit_channel
        # check_vhost_queue_limit/2).
        self.limits.check_queue(self.name, name, len(self.queues))
        dlx = args.get("x-dead-letter-exchange")
        if dlx is not None and not is_longstr(dlx):
            raise PreconditionFailed(
                f"invalid type '{type_name(dlx)}' for arg 'x-dead-letter-exchange' in {resource}"
            )
        if dlx is not None and access is not None:
            # A new queue with a DLX: read on the queue, write on the DLX (rabbit_channel).
            access.read("queue", name)
            access.write("exchange", _text(dlx))
        validate_queue_args(args, resource)
        qtype = queue_type_of(args)
        if qtype != "classic":
            # rabbit_queue_type_util run_checks: quorum and stream queues must be
            # non-auto-delete, non-exclusive and durable, checked in that order (oracle).
            if auto_delete:
                raise PreconditionFailed(f"invalid property 'auto-delete' for {resource}")
            if exclusive:
                raise PreconditionFailed(f"invalid property 'exclusive-owner' for {resource}")
            if not durable:
                raise PreconditionFailed(f"invalid property 'non-durable' for {resource}")
        make_queue: Callable[..., Queue] = Queue
        if qtype == "stream":
            check_declare(args)  # then rabbit_stream_queue's own checks (stream.py)
            store = None
            if self.stream_dirs is not None:
                # A recovered stream reopens its files; a new one starts from nothing.
                store = DiskSegments.open(self.stream_dirs, self.name, name, fresh=not recovered)
            make_queue = functools.partial(StreamQueue, wall_clock=self.wall_clock, store=store)
        queue = make_queue(
            name,
            vhost=self.name,
            durable=durable,
            exclusive_owner=declared_owner,
            auto_delete=auto_delete,
            arguments=args,
            queue_type=qtype,
            now=now,
            policy=self._policy_for("queue", name),
        )
        queue.on_unused = self._queue_unused
        queue.on_dead_letter = self._dead_letter
        queue.on_deadline = self._schedule
        queue.paging = self.paging
        self.queues[name] = queue
        if durable:
            self.durable.queue_declared(self.name, name, auto_delete=auto_delete, arguments=args)
            self.attach_journal(queue)
        if declared_owner is not None:
            self._exclusive.setdefault(declared_owner, set()).add(name)
        queue.touch(now)  # starts the x-expires lease, if any
        return queue

    def _assert_queue_equivalence(
        self,
        queue: Queue,
        durable: bool,
        auto_delete: bool,
        args: FieldTable,
        declared_owner: Owner | None,
    ) -> None:
        # rabbit_amqqueue:assert_equivalence/5: exclusivity (strict), durable, auto_delete,
        # then the args the queue's type lists.
        if queue.exclusive_owner != declared_owner:
            raise ResourceLocked(_lock_message(queue))
        resource = queue.resource()
        assert_field_equivalence(queue.durable, durable, resource, "durable")
        assert_field_equivalence(queue.auto_delete, auto_delete, resource, "auto_delete")
        current = queue.arguments
        keys = QUEUE_TYPE_ARGS[queue.queue_type]
        if ("x-queue-type" in current) != ("x-queue-type" in args):
            # An absent x-queue-type means classic: "classic" on one side only is no change.
            present = current if "x-queue-type" in current else args
            if _text(present["x-queue-type"]) == "classic":
                keys = tuple(k for k in keys if k != "x-queue-type")
        assert_args_equivalence(current, args, resource, keys)

    def _queue_unused(self, queue: Queue) -> None:
        if not queue.deleted and self.queues.get(queue.name) is queue:
            self._delete_queue(queue)

    def attach_journal(self, queue: Queue) -> None:
        """Give a durable queue its journal (when this vhost has a durable log)."""
        if self.durable.enabled and queue.durable:
            queue.journal = QueueJournal(self.durable, self.name, queue.name)

    def _delete_queue(self, queue: Queue) -> int:
        del self.queues[queue.name]
        if queue.durable:
            self.durable.queue_deleted(self.name, queue.name)
            queue.journal = None  # the log dropped its messages with the queue
        owner = queue.exclusive_owner
        if owner is not None:
            names = self._exclusive.get(owner)
            if names is not None:
                names.discard(queue.name)
                if not names:
                    del self._exclusive[owner]
        self._remove_as_destination(queue)
        return queue.delete()

    def delete_queue(
        self,
        name: str,
        *,
        if_unused: bool = False,
        if_empty: bool = False,
        owner: Owner | None = None,
    ) -> int:
        queue = self.queues.get(strip_cr_lf(name))
        if queue is None:
            return 0  # queue.delete is idempotent: delete-ok with message count 0
        self._check_exclusive_access(queue, owner)
        if isinstance(queue, StreamQueue):
            # rabbit_stream_queue:delete/4 ignores if-unused and if-empty (oracle).
            return self._delete_queue(queue)
        if if_unused and queue.consumer_count:
            raise PreconditionFailed(f"{queue.resource()} in use")
        if if_empty and queue.message_count:
            # Only ready messages count: unacked ones do not make a queue "not empty".
            raise PreconditionFailed(f"{queue.resource()} not empty")
        return self._delete_queue(queue)

    def purge_queue(self, name: str, owner: Owner | None = None) -> int:
        queue = self.get_queue(name, owner)
        return queue.purge()

    def connection_closed(self, owner: Owner) -> None:
        """Delete the exclusive queues of a connection that went away."""
        names = self._exclusive.pop(owner, None)
        if not names:
            return
        for name in sorted(names):
            queue = self.queues.get(name)
            if queue is not None and queue.exclusive_owner == owner:
                self._delete_queue(queue)

    # -- routing -----------------------------------------------------------------------------
    def route(self, exchange_name: str, message: Message) -> list[Queue]:
        """The queues ``message`` published to ``exchange_name`` goes to.

        404 for a missing exchange, 403 for an internal one. Use ``route_message`` to also
        get the message to enqueue (BCC removed).
        """
        return self.route_message(exchange_name, message)[0]

    def publish_exchange(self, exchange_name: str) -> Exchange:
        """The exchange a basic.publish names: 404 when missing, 403 when internal."""
        # basic.publish does not strip CR/LF from the exchange name (unlike declare/bind):
        # RabbitMQ answers 404 for "amq.\ndirect".
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            raise NotFound(f"no {self._rs('exchange', exchange_name)}")
        if exchange.internal:
            raise AccessRefused(f"cannot publish to internal {exchange.resource()}")
        return exchange

    def route_message(
        self, exchange_name: str, message: Message, now: float | None = None
    ) -> tuple[list[Queue], Message]:
        """Route a publish: (destination queues, the message to enqueue in each).

        The message is the one given unless it carried a BCC header, which RabbitMQ
        removes from the delivered copy (sender-selected distribution, rabbit_basic).
        A delayed-message exchange may keep the message for later (it then routes to no
        queue now); ``now`` is when it was published.
        """
        exchange = self.publish_exchange(exchange_name)
        headers: Mapping[str, Any] | None = None
        routing_keys = [message.routing_key]
        raw = message.properties_raw
        # Fast path: only decode properties when some exchange needs the headers or the raw
        # bytes could hold a CC/BCC header key (b"CC" is a substring of both).
        if b"CC" in raw:
            headers = message.headers()
            extra = _header_routes(headers)
            if extra:
                routing_keys.extend(extra)
            if "BCC" in headers:
                message = _strip_bcc(message, headers)
        return self._route_exchange(exchange, routing_keys, message, headers, now), message

    def _route_default(self, routing_keys: list[str]) -> list[Queue]:
        # The default exchange binds every queue by its name, and nothing else.
        queues = self.queues
        if len(routing_keys) == 1:
            queue = queues.get(routing_keys[0])
            return [queue] if queue is not None else []
        out: dict[Queue, None] = {}
        for key in routing_keys:
            queue = queues.get(key)
            if queue is not None:
                out[queue] = None
        return list(out)

    def _route_exchange(
        self,
        exchange: Exchange,
        routing_keys: list[str],
        message: Message,
        headers: Mapping[str, Any] | None,
        now: float | None = None,
    ) -> list[Queue]:
        if exchange.name == DEFAULT_EXCHANGE:
            return self._route_default(routing_keys)
        # rabbit_exchange:route1/3: a work list of exchanges, each visited once per pass
        # (cycles allowed), queues collected once each. An exchange's alternate exchange is
        # added when that exchange's own route found no destination at all (exchange
        # destinations count).
        if headers is None and (exchange.impl.uses_headers or exchange.delayed):
            headers = message.headers()
        first = self._destinations(exchange, routing_keys, message, headers, now)
        if exchange.alternate_exchange is None and not exchange.impl.forwarding:
            # The common case: one exchange straight to queues (no exchange is bound to it).
            return list(first)  # type: ignore[arg-type]
        queues: dict[Queue, None] = {}
        seen: set[Exchange] = {exchange}
        work: list[Exchange] = []

        def visit(x: Exchange, dests: Any) -> None:
            found = False
            for dest in dests:
                found = True
                if isinstance(dest, Queue):
                    queues[dest] = None
                elif dest not in seen:
                    seen.add(dest)
                    work.append(dest)
            if not found:
                ae_name = x.alternate_exchange
                if ae_name is not None:
                    ae = self.exchanges.get(ae_name)
                    if ae is not None and ae not in seen:
                        seen.add(ae)
                        work.append(ae)

        visit(exchange, first)
        while work:
            x = work.pop()
            if headers is None and (x.impl.uses_headers or x.delayed):
                headers = message.headers()
            visit(x, self._destinations(x, routing_keys, message, headers, now))
        return list(queues)

    def _destinations(
        self,
        exchange: Exchange,
        routing_keys: list[str],
        message: Message,
        headers: Mapping[str, Any] | None,
        now: float | None,
    ) -> Iterable[object]:
        """One exchange's own route, or nothing while a delayed exchange holds the message.

        The plugin's route/2 returns [] for a message it delays, in whatever routing pass
        it meets it (a publish, an exchange-to-exchange hop, a dead-lettering), so the
        alternate exchange fires and a mandatory publish is returned at once.
        """
        if exchange.delayed:
            delay = delayed.delay_of(headers)
            if delay is not None:
                self._hold(exchange, routing_keys, message, self._clock(now), delay)
                return ()
        return exchange.impl.route(routing_keys, headers)

    def _hold(
        self,
        exchange: Exchange,
        routing_keys: list[str],
        message: Message,
        now: float,
        delay_ms: int,
    ) -> None:
        held: Message | LoggedDelayed = message
        if exchange.durable and self.durable.enabled:
            # The held copy is its own Message: the one routed on (to an alternate
            # exchange, say) may be logged for queues under an id of its own.
            copy = Message(
                message.exchange,
                message.routing_key,
                message.properties_raw,
                message.body,
                bcc=message.bcc,
            )
            due_wall_ms = int(self.wall_clock() * 1000) + delay_ms
            held = log_delayed(
                self.durable, self.name, exchange.name, copy, routing_keys, due_wall_ms
            )
            self.durable_holds += 1
            self._page_out_delayed()
            if held.where >= 0:
                self._delayed_unpaged.append(held)
                self._arm_page_out()
        self._schedule_delayed(exchange, routing_keys, held, now + delay_ms / 1000)

    def _page_out_delayed(self) -> None:
        """Forget the messages of held records now committed (docs/storage.md "Delayed
        messages"): at each commit (``after_commit``), each hold and each release, so only
        records not yet on disk keep their messages in memory."""
        unpaged = self._delayed_unpaged
        if not unpaged:
            return
        committed = self.durable.committed_token
        while unpaged and unpaged[0].token <= committed:
            unpaged.popleft().page_out()
        self.delayed.spill_paged()  # bucket entries now paged out go to their files

    def _arm_page_out(self) -> None:
        # One callback per commit, not per message: it pages out what that commit wrote.
        if self._delayed_unpaged and not self._page_out_armed:
            self._page_out_armed = True
            self.durable.after_commit(self._after_delayed_commit)

    def _after_delayed_commit(self) -> None:
        self._page_out_armed = False
        self._page_out_delayed()
        self._arm_page_out()

    def _schedule_delayed(
        self,
        exchange: Exchange,
        routing_keys: Sequence[str],
        message: Message | LoggedDelayed,
        due: float,
    ) -> None:
        earliest = self.next_deadline()
        self.delayed.add(due, exchange, routing_keys, message)
        if (earliest is None or due < earliest) and self.on_deadline_moved is not None:
            self.on_deadline_moved()

    def _log_delayed_store(self, exchange: Exchange) -> None:
        self.durable.queue_declared(
            self.name, delayed_store(exchange.name), auto_delete=False, arguments={}
        )

    def restore_delayed(
        self,
        exchange_name: str,
        routing_keys: Sequence[str],
        held: LoggedDelayed,
        due_wall_ms: int,
    ) -> bool:
        """A pending delayed message read back from the log at start; False if its
        exchange is not a delayed exchange any more (the message is then dropped).

        It is scheduled by the first ``tick``, which knows the monotonic time: due then
        plus what was left of its delay by the wall clock; one overdue is routed at once.
        """
        exchange = self.exchanges.get(exchange_name)
        if exchange is None or not exchange.delayed:
            return False
        self._restored_delayed.append((exchange, tuple(routing_keys), held, due_wall_ms))
        return True

    def ensure_delayed_stores(self, logged: Container[str]) -> None:
        """Log the store of every durable delayed exchange that ``logged`` lacks (after
        recovery: one declared while no log was attached, or by an older amqpd)."""
        if not self.durable.enabled:
            return
        for exchange in self.exchanges.values():
            durable_delayed = exchange.delayed and exchange.durable
            if durable_delayed and delayed_store(exchange.name) not in logged:
                self._log_delayed_store(exchange)

    def _schedule_restored(self, now: float) -> None:
        restored, self._restored_delayed = self._restored_delayed, []
        wall_ms = self.wall_clock() * 1000
        for exchange, routing_keys, held, due_wall_ms in restored:
            left = max(0.0, due_wall_ms - wall_ms) / 1000
            self.delayed.add(now + left, exchange, routing_keys, held)

    def _release_delayed(self, now: float) -> None:
        """Route every delayed message now due, once, x-delay negated; unroutable ones go.

        rabbit_delayed_message: at the timer it routes the stored delivery through its
        exchange once, without mandatory or confirms; a message whose exchange was deleted
        meanwhile has nowhere to go.
        """
        self._page_out_delayed()
        due = [
            entry
            for entry in self.delayed.pop_due(now)
            # A deleted exchange's store went with it (_delete_exchange): nothing to read.
            if not cast(Exchange, entry[0]).deleted
        ]
        if not due:
            return
        logged = [h for _x, _k, h in due if isinstance(h, LoggedDelayed)]
        loaded = iter(load_delayed(logged))
        for exchange, routing_keys, holder in due:
            assert isinstance(exchange, Exchange)
            held = next(loaded) if isinstance(holder, LoggedDelayed) else holder
            message = delayed.swap_delay_header(held)
            headers = message.headers()
            queues = self._route_exchange(exchange, list(routing_keys), message, headers, now)
            # Routed (and logged for durable queues) before it leaves the store: a crash in
            # between delivers it twice rather than never.
            enqueue_routed(self.durable, self.name, message, queues, now)
            if isinstance(holder, LoggedDelayed):
                self.durable.messages_removed(
                    self.name, delayed_store(exchange.name), (holder.store_id,), (holder.segment,)
                )

    # -- dead-lettering ---------------------------------------------------------------------
    def _dead_letter(self, queue: Queue, message: Message, reason: str, now: float) -> None:
        """``Queue.on_dead_letter``: republish through the queue's dead-letter exchange."""
        # The effective DLX and DLRK: the arguments, else the policy's (queue_settings.py).
        dlx_name = queue.settings.dead_letter_exchange
        dlrk = queue.settings.dead_letter_routing_key
        if dlx_name is None:
            return
        dlx = self.exchanges.get(dlx_name)
        if dlx is None:
            return  # a missing DLX drops the message silently (docs "Dead Letter Exchanges")
        now = self._clock(now)
        dead = make_dead_letter(
            message,
            queue=queue.name,
            reason=reason,
            dlx=dlx_name,
            dlrk=dlrk,
            time=int(self.wall_clock()),
        )
        headers = dead.message.headers() if dlx.impl.uses_headers else None
        targets = [
            target
            for target in self._route_exchange(dlx, dead.routing_keys, dead.message, headers, now)
            # rabbit_dead_letter:detect_cycles/3: a cycle without a rejection is dropped.
            if not is_death_cycle(target.name, dead.deaths)
        ]
        # A persistent message dead-lettered into durable queues is logged like a publish
        # (a new Message: make_dead_letter never reuses the stored one).
        enqueue_routed(self.durable, self.name, dead.message, targets, now)

    # -- timers ------------------------------------------------------------------------------
    def _clock(self, now: float | None) -> float:
        if now is not None and now > self._now:
            self._now = now
        return self._now

    def _schedule(self, queue: Queue, deadline: float) -> None:
        """``Queue.on_deadline``: remember that ``queue`` wants a tick at ``deadline``."""
        timers = self._timers
        earliest = timers[0][0] if timers else None
        heapq.heappush(timers, (deadline, next(self._timer_seq), queue))
        if (earliest is None or deadline < earliest) and self.on_deadline_moved is not None:
            self.on_deadline_moved()

    def next_deadline(self) -> float | None:
        """When ``tick`` must next run (None: nothing scheduled). May be early, never late."""
        if self._restored_delayed:
            return self._now  # at once: only a tick knows the time to schedule them by
        queue_due = self._timers[0][0] if self._timers else None
        delayed_due = self.delayed.next_due()
        if queue_due is None or (delayed_due is not None and delayed_due < queue_due):
            return delayed_due
        return queue_due

    def tick(self, now: float) -> None:
        """Run every deadline due at ``now``: delayed messages, TTL at the head, x-expires."""
        now = self._clock(now)
        if self._restored_delayed:
            self._schedule_restored(now)
        self._release_delayed(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, queue = heapq.heappop(timers)
            # An entry the queue has since replaced (it reported an earlier one, or was
            # ticked and re-reported) is stale: skip it so duplicates cannot pile up.
            if not queue.deleted and queue.scheduled_deadline == deadline:
                queue.tick(now)

    # -- statistics --------------------------------------------------------------------------
    def statistics(self) -> VirtualHostStatistics:
        queues = self.queues.values()
        return VirtualHostStatistics(
            name=self.name,
            exchanges=len(self.exchanges),
            queues=len(self.queues),
            bindings=sum(x.impl.binding_count() for x in self.exchanges.values()),
            messages_ready=sum(q.message_count for q in queues),
            messages_unacknowledged=sum(q.unacked_count for q in queues),
            consumers=sum(q.consumer_count for q in queues),
        )


_ROUTING_HEADERS = ("CC", "BCC")


def _header_routes(headers: Mapping[str, Any]) -> list[str]:
    """Extra routing keys from the CC and BCC headers (rabbit_basic:header_routes/1).

    Each must be an array; its longstr elements are routing keys, other elements are
    ignored. A CC/BCC of any other type makes the message invalid (406).
    """
    keys: list[str] = []
    for header in _ROUTING_HEADERS:
        if header not in headers:
            continue
        value = headers[header]
        if isinstance(value, list):
            keys.extend(_text(v) for v in value if is_longstr(v))
        else:
            raise PreconditionFailed(
                f'invalid message: {{unacceptable_type_in_header,"{header}",{type_name(value)}}}'
            )
    return keys


def _strip_bcc(message: Message, headers: Mapping[str, Any]) -> Message:
    new_headers = {k: v for k, v in headers.items() if k != "BCC"}
    props = attrs.evolve(message.properties, headers=new_headers or None)
    # The BCC keys stay with the message (not its headers) for dead-lettering.
    bcc = tuple(_text(v) for v in headers["BCC"] if is_longstr(v))
    return Message(message.exchange, message.routing_key, props.encode(), message.body, props, bcc)
