"""DurableLog: the interface the broker records durable changes through, and its no-op.

Rules of this module (docs/internals.md "storage/"):
- The broker calls ``DurableLog`` methods with plain values (names, flags, field tables,
  bytes), never with broker objects: storage knows nothing of queues' behaviour.
- The broker calls only for durable things: a durable exchange declared or deleted, a
  durable queue declared or deleted, a binding whose source and destination are both
  durable, a persistent message enqueued on durable queues (``message_published`` returns
  the message's id; ``last_segment`` then is its record's segment), and, for such a
  message, its first delivery from a queue and its final removal from a queue (ack,
  reject, purge, drop, expiry, dead-lettering), with the ids and their records' segments.
  ``message_delivered`` / ``message_removed`` (one message: each delivery and ack) may
  keep their records back until the next commit, to write one record per queue and batch;
  the catalog's counts change at once either way.
- ``after_commit(callback)``: the callback runs (on the caller's thread) once every record
  logged before the call is on disk. Publisher confirms and tx.commit-ok wait on it. A
  callback may return a follow-up (a channel's ``flush``); the follow-ups of one batch run
  once each, after all its callbacks, so a thousand confirms become one basic.ack.
- ``DurableLog`` itself (``NULL_LOG``; the in-memory default: no data directory, unit
  tests) records nothing and runs ``after_commit`` callbacks at once; ``enabled`` is False
  so the broker can skip the work of building records at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amqpd.storage.bodies import BodyReader

FollowUp = Callable[[], None]
CommitCallback = Callable[[], FollowUp | None]


def run_callbacks(callbacks: Iterable[CommitCallback]) -> None:
    """Run commit callbacks in order, then each distinct follow-up once, in first-seen order."""
    follow_ups: dict[FollowUp, None] = {}
    for callback in callbacks:
        follow_up = callback()
        if follow_up is not None:
            follow_ups[follow_up] = None
    for follow_up in follow_ups:
        follow_up()


class DurableLog:
    """The interface, and the implementation that records nothing (no data directory).

    A base class rather than a Protocol so the no-op behaviour is written once; the disk
    log (disklog.DiskDurableLog) overrides every method.
    """

    enabled = False

    def exchange_declared(
        self,
        vhost: str,
        name: str,
        type: str,
        *,
        auto_delete: bool,
        internal: bool,
        arguments: Mapping[str, Any],
    ) -> None:
        return None

    def exchange_deleted(self, vhost: str, name: str) -> None:
        return None

    def queue_declared(
        self, vhost: str, name: str, *, auto_delete: bool, arguments: Mapping[str, Any]
    ) -> None:
        return None

    def queue_deleted(self, vhost: str, name: str) -> None:
        return None

    def binding_added(
        self,
        vhost: str,
        source: str,
        destination: str,
        routing_key: str,
        arguments: Mapping[str, Any],
        *,
        to_exchange: bool,
    ) -> None:
        return None

    def binding_removed(
        self,
        vhost: str,
        source: str,
        destination: str,
        routing_key: str,
        arguments: Mapping[str, Any],
        *,
        to_exchange: bool,
    ) -> None:
        return None

    def message_published(
        self,
        vhost: str,
        queues: Sequence[str],
        exchange: str,
        routing_key: str,
        properties_raw: bytes,
        body: bytes,
    ) -> int:
        return 0

    def messages_delivered(
        self, vhost: str, queue: str, ids: Iterable[int], segments: Iterable[int]
    ) -> None:
        """``segments``: the segment of each message's record (``Message.store_segment``),
        in the order of ``ids``: all the log's catalog counts (no per-message state)."""
        return None

    def messages_removed(
        self, vhost: str, queue: str, ids: Iterable[int], segments: Iterable[int]
    ) -> None:
        """As ``messages_delivered``: the ids and the segments of their records."""
        return None

    def message_delivered(self, vhost: str, queue: str, msg_id: int, segment: int) -> None:
        """``messages_delivered`` of one message, whose record may wait (batched with the
        others of its queue until the next commit: the disk log's module rules)."""
        return None

    def message_removed(self, vhost: str, queue: str, msg_id: int, segment: int) -> None:
        """``messages_removed`` of one message, batched like ``message_delivered``."""
        return None

    def after_commit(self, callback: CommitCallback) -> None:
        run_callbacks((callback,))

    @property
    def last_token(self) -> int:
        """The commit token of the last record appended (0: nothing is ever written)."""
        return 0

    @property
    def committed_token(self) -> int:
        """The token of the last record known to be on disk."""
        return 0

    @property
    def last_segment(self) -> int:
        """The segment the last record appended went to (0: nothing is ever written)."""
        return 0

    def last_body(self) -> tuple[BodyReader, int] | None:
        """Where the body of the message just logged will be readable once committed
        (paging, docs/storage.md); None when nothing is written to disk."""
        return None


NullDurableLog = DurableLog
NULL_LOG = DurableLog()
