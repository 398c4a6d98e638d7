"""DiskDurableLog: the ``DurableLog`` on segment files, with recovery and group commit.

Rules of this module (docs/storage.md):
- ``open(files)`` recovers: reads the segments (recovery.py, cutting a damaged tail),
  replays every record through the catalog, reclaims segments that hold only dead records,
  and keeps the ``RecoveryReport``. The broker then rebuilds itself from ``catalog``
  (broker/restore.py) and calls ``replay_done()``.
- Every ``DurableLog`` call appends one record (buffered) and applies it to the catalog;
  ``on_sync_needed`` fires when the buffer goes from empty to non-empty, so the server's
  persister knows to commit.
- Commit is the segment log's three steps (log.py); ``complete_commit`` returns the
  ``after_commit`` callbacks now due, in the order they were registered, for the caller to
  run. A failed write or fsync leaves the log broken (``StorageBroken`` from then on).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from amqpd.storage.bodies import BodyReader, location
from amqpd.storage.catalog import Catalog
from amqpd.storage.durable import CommitCallback, DurableLog, run_callbacks
from amqpd.storage.entries import (
    BindingAdded,
    BindingRemoved,
    CleanShutdown,
    Entry,
    ExchangeDeclared,
    ExchangeDeleted,
    MessagePublished,
    MessagesDelivered,
    MessagesRemoved,
    QueueDeclared,
    QueueDeleted,
    decode_entry,
)
from amqpd.storage.files import FileLayer
from amqpd.storage.log import DEFAULT_SEGMENT_SIZE, Batch, Position, SegmentLog
from amqpd.storage.record import HEADER_SIZE as RECORD_HEADER_SIZE
from amqpd.storage.record import Record
from amqpd.storage.recovery import RecoveryReport, recover_log
from amqpd.storage.segment import segment_name

Callback = Callable[[], None]


def _decode(record: Record) -> Entry:
    return decode_entry(record.kind, record.payload)


def _locate(entry: Entry, record: Record, segment: int, offset: int) -> Entry:
    """Recovery keeps where a message's body is, not the body (docs/storage.md "Paging")."""
    if type(entry) is not MessagePublished or not entry.body:
        return entry
    size = len(entry.body)
    start = offset + RECORD_HEADER_SIZE + len(record.payload) - size
    return attrs.evolve(entry, body=b"", body_at=location(segment, start), body_size=size)


class DiskDurableLog(DurableLog):
    enabled = True

    def __init__(self, log: SegmentLog, catalog: Catalog, report: RecoveryReport) -> None:
        self.log = log
        self.catalog = catalog
        self.report = report
        self.on_sync_needed: Callback | None = None
        self._next_id = catalog.max_message_id + 1
        self._waiters: deque[tuple[int, CommitCallback]] = deque()
        # Paging (docs/storage.md "Paging"): bodies read back from the segments, and where
        # the body of the last logged message is.
        self.bodies = BodyReader(log.files, segment_name)
        log.on_reclaimed = self.bodies.forget
        self._last_body = 0

    @classmethod
    def open(cls, files: FileLayer, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> DiskDurableLog:
        recovered = recover_log(files, _decode, _locate)
        log = SegmentLog(
            files,
            existing=recovered.segments,
            next_segment=recovered.next_segment,
            previous=recovered.last,
            segment_size=segment_size,
        )
        catalog = Catalog(log, keep_content=True)
        for segment, entry in recovered.records:
            catalog.apply(entry, segment)
        report = recovered.report
        report.clean_shutdown = catalog.clean_shutdown
        report.exchanges = len(catalog.exchanges)
        report.queues = len(catalog.queues)
        report.bindings = len(catalog.bindings)
        report.messages = len(catalog.messages)
        log.commit()  # nothing to write; applies what replay released and reclaims
        return cls(log, catalog, report)

    def replay_done(self) -> None:
        self.catalog.forget_content()

    # -- recording --------------------------------------------------------------------------
    def _append(self, entry: Entry, payload: bytes | None = None) -> Position:
        log = self.log
        notify = not log.sync_needed
        position = log.append(entry.KIND, entry.encode() if payload is None else payload)
        self.catalog.apply(entry, position.segment)
        if notify and self.on_sync_needed is not None:
            self.on_sync_needed()
        return position

    @property
    def last_token(self) -> int:
        return self.log.last_token

    @property
    def committed_token(self) -> int:
        return self.log.committed_token

    @property
    def last_segment(self) -> int:
        return self.log.head

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
        self._append(ExchangeDeclared(vhost, name, type, auto_delete, internal, arguments))

    def exchange_deleted(self, vhost: str, name: str) -> None:
        self._append(ExchangeDeleted(vhost, name))

    def queue_declared(
        self, vhost: str, name: str, *, auto_delete: bool, arguments: Mapping[str, Any]
    ) -> None:
        self._append(QueueDeclared(vhost, name, auto_delete, arguments))

    def queue_deleted(self, vhost: str, name: str) -> None:
        self._append(QueueDeleted(vhost, name))

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
        self._append(BindingAdded(vhost, source, to_exchange, destination, routing_key, arguments))

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
        self._append(
            BindingRemoved(vhost, source, to_exchange, destination, routing_key, arguments)
        )

    def message_published(
        self,
        vhost: str,
        queues: Sequence[str],
        exchange: str,
        routing_key: str,
        properties_raw: bytes,
        body: bytes,
    ) -> int:
        msg_id = self._next_id
        self._next_id = msg_id + 1
        entry = MessagePublished(
            msg_id, vhost, tuple(queues), exchange, routing_key, properties_raw, body
        )
        payload = entry.encode()
        position = self._append(entry, payload)
        # The body is the payload's last field: readable there once the record is written.
        start = position.offset + RECORD_HEADER_SIZE + len(payload) - len(body)
        self._last_body = location(position.segment, start)
        return msg_id

    def last_body(self) -> tuple[BodyReader, int] | None:
        return self.bodies, self._last_body

    def messages_delivered(self, vhost: str, queue: str, ids: Iterable[int]) -> None:
        ids = tuple(ids)
        if ids:
            self._append(MessagesDelivered(vhost, queue, ids))

    def messages_removed(self, vhost: str, queue: str, ids: Iterable[int]) -> None:
        ids = tuple(ids)
        if ids:
            self._append(MessagesRemoved(vhost, queue, ids))

    def after_commit(self, callback: CommitCallback) -> None:
        token = self.log.last_token
        if token <= self.log.committed_token:
            run_callbacks((callback,))
        else:
            self._waiters.append((token, callback))

    # -- committing (the server's persister) ------------------------------------------------
    @property
    def sync_needed(self) -> bool:
        return self.log.sync_needed

    def prepare_commit(self) -> Batch | None:
        return self.log.prepare_commit()

    def complete_commit(self, batch: Batch) -> list[CommitCallback]:
        committed = self.log.complete_commit(batch)
        due: list[CommitCallback] = []
        waiters = self._waiters
        while waiters and waiters[0][0] <= committed:
            due.append(waiters.popleft()[1])
        return due

    def commit(self) -> list[CommitCallback]:
        """All three steps on this thread (tests, shutdown)."""
        batch = self.prepare_commit()
        if batch is None:
            return []
        batch.write()
        return self.complete_commit(batch)

    def close(self, *, clean: bool = True) -> list[CommitCallback]:
        """Commit what is buffered and, if ``clean``, mark the log as cleanly stopped."""
        due: list[CommitCallback] = []
        if not self.log.broken:
            if clean:
                self._append(CleanShutdown())
            due = self.commit()
        self.log.close()
        self.bodies.close()
        return due
