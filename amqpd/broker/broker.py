"""Broker: the vhosts, users, permissions, limits and policies of one amqpd node.

Rules of this module:
- The Broker owns the vhost table, the user table (``users.py``), the permission table
  (``permissions.py``), per-vhost limits (``limits.py``) and policies (``policies.py``), all
  as plain data; nothing else holds them. Config and definitions files are read at the
  process edge, which calls the methods here.
- ``Broker()`` alone is RabbitMQ's out-of-the-box node: vhost "/" and user guest/guest
  (administrator, loopback only) with ".*" ".*" ".*" on "/".
- The session asks: ``authenticate`` at login, ``open_connection`` at connection.open (vhost
  missing → 530 "vhost v not found"; the vhost connection limit, then vhost access, in
  ``rabbit_reader:handle_method0(connection.open)``'s order), ``close_connection`` when it
  goes, and the ``Access`` it got for every resource check.
- Time: the broker never reads a monotonic clock. ``next_deadline()`` / ``tick(now)`` run
  the vhosts' timers (delayed messages, TTL at the head, x-expires); ``on_deadline_moved``
  (set by the server) is called when the earliest deadline moved earlier, so the server's
  timer task can wake up. ``wall_clock`` (injected; ``time.time`` by default) is read only
  for wall-clock fields such as the x-death ``time``, so tests pass a fake one.
- ``attach_durable_log`` hands the durable log to every vhost, present and future;
  ``attach_paging`` the memory budget for ready bodies (paging.py) likewise;
  ``attach_stream_dirs`` where stream queues keep their segment files (stream_disk.py);
  ``attach_delay_buckets`` where delayed schedules keep the entries not due soon
  (delayed.py; before ``recover``, so restored entries can go there too).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable

from amqpd.broker.definitions import ApplyReport, Definitions
from amqpd.broker.durability import DelayedCodec
from amqpd.broker.limits import UserLimits, VhostLimits
from amqpd.broker.paging import Paging
from amqpd.broker.passwords import PasswordHash
from amqpd.broker.permissions import Access, Permission, PermissionTable
from amqpd.broker.policies import Policy
from amqpd.broker.stream import StreamQueue
from amqpd.broker.users import User, UserTable
from amqpd.broker.vhost import VirtualHost
from amqpd.errors import NotAllowed
from amqpd.storage.delaybuckets import DelayBuckets
from amqpd.storage.durable import NULL_LOG, DurableLog
from amqpd.storage.streamdirs import StreamDirs, escape_name

__all__ = ["Broker", "User"]


class Broker:
    def __init__(
        self, *, default_user: bool = True, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.wall_clock = wall_clock
        self.on_deadline_moved: Callable[[], None] | None = None
        self.durable: DurableLog = NULL_LOG
        self.paging: Paging | None = None
        self.stream_dirs: StreamDirs | None = None  # stream segment files (stream_disk.py)
        self.delay_buckets: DelayBuckets | None = None  # delayed schedules' bucket files
        self.vhosts: dict[str, VirtualHost] = {}
        self.policies: dict[tuple[str, str], Policy] = {}
        self.add_vhost("/")
        self.user_table = UserTable()
        self.permissions = PermissionTable()
        #: rabbitmqctl set_user_limits (max-connections, max-channels) by user name.
        self.user_limits: dict[str, UserLimits] = {}
        #: Node-wide connection limit (config ``limits.max_connections``); None: no limit.
        self.max_connections: int | None = None
        self._connections: dict[Hashable, tuple[str, str]] = {}  # owner -> (user, vhost)
        # Open connections per vhost and per user, kept with ``_connections``: the limits
        # are checked at every connection.open, which must not scan all connections.
        self._per_vhost: Counter[str] = Counter()
        self._per_user: Counter[str] = Counter()
        if default_user:
            # RabbitMQ's default user: guest/guest, administrator, loopback only, full
            # access to "/" (rabbit.app default_user / default_permissions).
            self.add_user("guest", "guest", tags=("administrator",), loopback_only=True)
            self.permissions.set("guest", "/", Permission())

    # -- vhosts ------------------------------------------------------------------------------
    def add_vhost(self, name: str, limits: VhostLimits | None = None) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VirtualHost(name, wall_clock=self.wall_clock)
            vhost.on_deadline_moved = self._deadline_moved
            vhost.durable = self.durable
            vhost.set_policies(p for p in self.policies.values() if p.vhost == name)
            vhost.paging = self.paging
            vhost.stream_dirs = self.stream_dirs
            if self.delay_buckets is not None:
                vhost.delayed.attach(self.delay_buckets, DelayedCodec())
        if limits is not None:
            vhost.limits = limits
        return vhost

    def delete_vhost(self, name: str) -> None:
        self.vhosts.pop(name, None)
        self.permissions.clear_vhost(name)
        for key in [k for k in self.policies if k[0] == name]:
            del self.policies[key]

    def attach_durable_log(self, log: DurableLog) -> None:
        """From now on durable changes in every vhost go to ``log``."""
        self.durable = log
        for vhost in self.vhosts.values():
            vhost.durable = log
            for queue in vhost.queues.values():
                vhost.attach_journal(queue)

    def attach_stream_dirs(self, dirs: StreamDirs) -> None:
        """From now on stream queues keep their segments in ``dirs`` (before ``recover``:
        recovered streams reopen their files there)."""
        self.stream_dirs = dirs
        for vhost in self.vhosts.values():
            vhost.stream_dirs = dirs

    def attach_delay_buckets(self, buckets: DelayBuckets) -> None:
        """From now on every vhost's delayed schedule keeps the entries of durable delayed
        exchanges not due soon in ``buckets``' files (delayed.py; before ``recover``)."""
        self.delay_buckets = buckets
        for vhost in self.vhosts.values():
            vhost.delayed.attach(buckets, DelayedCodec())

    def remove_stale_stream_dirs(
        self, durable_queues: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Delete the directories of streams that do not exist (deleted, or declared in a
        moment the crash cut off before the declaration was logged); returns them.

        ``durable_queues`` are the (vhost, queue) names the durable log holds: a stream the
        restore skipped (an argument this version refuses) keeps its files."""
        dirs = self.stream_dirs
        if dirs is None:
            return []
        live = {(escape_name(vhost), escape_name(queue)) for vhost, queue in durable_queues}
        live.update(
            (escape_name(vhost.name), escape_name(queue.name))
            for vhost in self.vhosts.values()
            for queue in vhost.queues.values()
            if isinstance(queue, StreamQueue)
        )
        stale = [pair for pair in dirs.names() if pair not in live]
        for vhost_name, queue_name in stale:
            dirs.remove_escaped(vhost_name, queue_name)
        return stale

    def attach_paging(self, paging: Paging) -> None:
        """From now on ready bodies beyond ``paging.budget`` go to disk (paging.py)."""
        self.paging = paging
        for vhost in self.vhosts.values():
            vhost.paging = paging
            for queue in vhost.queues.values():
                queue.paging = paging  # its ready store counts what it already holds

    # -- timers ------------------------------------------------------------------------------
    def _deadline_moved(self) -> None:
        if self.on_deadline_moved is not None:
            self.on_deadline_moved()

    def next_deadline(self) -> float | None:
        """The earliest time ``tick`` must run (None: no timer pending)."""
        deadlines = [d for v in self.vhosts.values() if (d := v.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> None:
        """Run every vhost timer due at ``now``."""
        for vhost in list(self.vhosts.values()):
            vhost.tick(now)

    # -- users -------------------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        password: str | PasswordHash | None,
        *,
        tags: tuple[str, ...] = (),
        loopback_only: bool = False,
    ) -> User:
        """Add or replace a user; a ``str`` password is hashed here, never kept."""
        return self.user_table.add(User(name, tuple(tags), loopback_only), password)

    def delete_user(self, name: str) -> None:
        self.user_table.delete(name)
        self.permissions.clear_user(name)

    @property
    def users(self) -> dict[str, User]:
        return self.user_table.users()

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password is right, else None (the session sends the 403)."""
        return self.user_table.authenticate(username, password)

    def authenticate_external(self, username: str) -> User | None:
        """EXTERNAL (x509): the user the client certificate names, if it exists."""
        return self.users.get(username)

    def set_permissions(self, user: str, vhost: str, permission: Permission) -> None:
        self.permissions.set(user, vhost, permission)

    def add_policy(self, policy: Policy, now: float | None = None) -> None:
        self.policies[(policy.vhost, policy.name)] = policy
        self._apply_policies(now)

    def _apply_policies(self, now: float | None) -> None:
        """Hand every vhost its policies; they re-apply where they changed, at ``now``."""
        for name, vhost in self.vhosts.items():
            vhost.set_policies((p for p in self.policies.values() if p.vhost == name), now)

    # -- connections -------------------------------------------------------------------------
    def open_connection(
        self, owner: Hashable, user: User, vhost_name: str
    ) -> tuple[VirtualHost, Access]:
        """connection.open: the vhost and the user's ``Access`` there, or 530 NOT_ALLOWED."""
        vhost = self.vhosts.get(vhost_name)
        if vhost is None:
            raise NotAllowed(f"vhost {vhost_name} not found")
        if self.max_connections is not None and len(self._connections) >= self.max_connections:
            # RabbitMQ 3.12+ (connection_max) refuses at accept time; amqpd's own text.
            raise NotAllowed(
                f"connection refused: node connection limit ({self.max_connections}) is reached"
            )
        vhost.limits.check_connection(vhost_name, user.name, self._per_vhost[vhost_name])
        limits = self.user_limits.get(user.name)
        if limits is not None:
            limits.check_connection(user.name, self._per_user[user.name])
        if self.permissions.get(user.name, vhost_name) is None:
            raise NotAllowed(f"access to vhost '{vhost_name}' refused for user '{user.name}'")
        self.close_connection(owner)  # an owner reopening replaces its entry
        self._connections[owner] = (user.name, vhost_name)
        self._per_vhost[vhost_name] += 1
        self._per_user[user.name] += 1
        return vhost, Access(self.permissions, user.name, vhost_name)

    # -- definitions (start and reload) -----------------------------------------------------
    def apply_definitions(self, d: Definitions, now: float | None = None) -> ApplyReport:
        """Make vhosts, users, permissions and policies match ``d``; see ``ApplyReport``.

        Policies re-apply at once to the existing queues and exchanges whose policy changed
        (``now``: the time of the change; None: each queue's latest time).

        As RabbitMQ on delete_user / delete_vhost (rabbit_connection_tracking_handler), the
        connections of a deleted user or vhost are to be closed; changed permissions apply
        to the next operation of open connections. A vhost that still holds messages is
        not deleted unless ``d.delete_vhosts_with_messages`` names it: it is reported in
        ``kept_vhosts`` and keeps its permissions.
        """
        report = ApplyReport()
        for name in [n for n in self.vhosts if n not in d.vhosts]:
            confirmed = name in d.delete_vhosts_with_messages
            if not confirmed and self._holds_messages(self.vhosts[name]):
                report.kept_vhosts.append(name)
                continue
            report.to_close += [(o, f"vhost '{name}' is deleted") for o in self._on_vhost(name)]
            self.delete_vhost(name)
            report.changes.append(f"deleted vhost {name!r}")
        for name, limits in d.vhosts.items():
            if name not in self.vhosts:
                report.changes.append(f"added vhost {name!r}")
            self.add_vhost(name, limits)
        wanted = {u.name for u in d.users}
        for name in [n for n in self.users if n not in wanted]:
            report.to_close += [(o, f"user '{name}' is deleted") for o in self.connections_of(name)]
            self.delete_user(name)
            report.changes.append(f"deleted user {name!r}")
        for u in d.users:
            if u.name not in self.users:
                report.changes.append(f"added user {u.name!r}")
            self.add_user(u.name, u.password, tags=u.tags, loopback_only=u.loopback_only)
        self.user_limits = {u.name: u.limits for u in d.users if u.limits != UserLimits()}
        table = PermissionTable()
        # A vhost kept for its messages keeps its permissions, so its users can drain it.
        for user, vhost, permission in self.permissions.items():
            if vhost in report.kept_vhosts and user in wanted:
                table.set(user, vhost, permission)
        for user, vhost, topic in self.permissions.topic_items():
            if vhost in report.kept_vhosts and user in wanted:
                table.set_topic(user, vhost, topic)
        for user, vhost, permission in d.permissions:
            table.set(user, vhost, permission)
        for user, vhost, topic in d.topic_permissions:
            table.set_topic(user, vhost, topic)
        self.permissions.replace(table)
        self.policies = {(p.vhost, p.name): p for p in d.policies}
        self._apply_policies(now)
        # Closing may release connections (close_connection); take no live views above.
        return report

    @staticmethod
    def _holds_messages(vhost: VirtualHost) -> bool:
        return any(q.message_count or q.unacked_count for q in vhost.queues.values())

    def _on_vhost(self, vhost: str) -> list[Hashable]:
        return [owner for owner, (_, v) in self._connections.items() if v == vhost]

    def check_channel_open(self, owner: Hashable, user: str) -> None:
        """One more channel for ``user``: 530 over its max-channels (all its connections)."""
        limits = self.user_limits.get(user)
        if limits is None or limits.max_channels is None:
            return
        counts: list[int] = [
            getattr(o, "channel_count", 0) for o in self.connections_of(user) if o is not owner
        ]
        limits.check_channel(user, sum(counts) + getattr(owner, "channel_count", 0))

    def close_connection(self, owner: Hashable) -> None:
        entry = self._connections.pop(owner, None)
        if entry is not None:
            user, vhost = entry
            for counts, key in ((self._per_user, user), (self._per_vhost, vhost)):
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]

    def connections_of(self, user: str) -> list[Hashable]:
        """Open connections of ``user`` (a reload closes a deleted user's)."""
        return [owner for owner, (u, _) in self._connections.items() if u == user]
