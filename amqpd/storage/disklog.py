"""DiskDurableLog: the ``DurableLog`` on segment files, with recovery and group commit.

Rules of this module (docs/storage.md):
- ``open(files)`` recovers: reads the segments (recovery.py, cutting a damaged tail),
  streams every record through the catalog (which keeps ids and record locations, not
  content), reclaims segments that hold only dead records, and keeps the
  ``RecoveryReport``. The broker then rebuilds itself from ``catalog`` and
  ``recovered_messages`` (each live message's record read back, not its body;
  broker/restore.py) and calls ``replay_done()``.
- Every ``DurableLog`` call appends one record (buffered) and tells the catalog; message
  removals and delivered markers come with the segments of the messages' records (the
  broker's ``Message.store_segment``), which is all the catalog counts. ``on_sync_needed``
  fires when the buffer goes from empty to non-empty, so the server's
  persister knows to commit.
- Except the one-message settlements (``message_delivered`` / ``message_removed``, one
  per delivery and ack): they update the catalog's counts at once but their records wait,
  per queue, and are appended as one ``MessagesDelivered`` and one ``MessagesRemoved``
  record per queue at the next ``prepare_commit``, before the next record of any other
  kind than a message, or when a queue has ``SETTLE_BATCH`` waiting. A delivered marker
  whose message is removed before its record was appended is dropped (the removal says
  more). So those records may land after message records appended after the calls:
  a crash can lose an ack while keeping a later publish (as it may lose any ack the
  disk has not seen), never a record that a returned commit covered.
- Commit is the segment log's three steps (log.py); ``complete_commit`` returns the
  ``after_commit`` callbacks now due, in the order they were registered, for the caller to
  run. A failed write or fsync leaves the log broken (``StorageBroken`` from then on).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from amqpd.storage.bodies import LOCATION_SHIFT, BodyReader, location
from amqpd.storage.catalog import DELIVERED, REMOVED, Catalog, DurableQueue, ReplayLiveness
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
from amqpd.storage.files import FileLayer, ReadFile
from amqpd.storage.log import DEFAULT_SEGMENT_SIZE, Batch, Position, SegmentLog, StorageBroken
from amqpd.storage.logtail import CACHE_LIMIT as _CACHE_LIMIT
from amqpd.storage.logtail import LogTail, RecordParser, RecoveredMessage
from amqpd.storage.record import HEADER_SIZE as RECORD_HEADER_SIZE
from amqpd.storage.record import Visitor
from amqpd.storage.recovery import RecoveryReport, replay_log
from amqpd.storage.segment import segment_name

Callback = Callable[[], None]
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PUBLISHED = MessagePublished.KIND
# Restore reads the records of a backlog in log order: big windows, few preads.
RESTORE_READ_AHEAD = 1024 * 1024
_OFFSET_MASK = (1 << LOCATION_SHIFT) - 1
# One-message settlements waiting for their records, per queue, at most (then appended):
# bounds a record's size (a purge-sized batch) and what replay decodes at once.
SETTLE_BATCH = 4096
# The ``expiration`` property's bit (1 << 8 of the big-endian flag word: basic class,
# spec 0-9-1 4.2.6.1) in the word's first byte.
_EXPIRATION_BIT = 1


def _replayer(catalog: Catalog) -> Callable[[int], Visitor]:
    """The visitor of each segment's records at replay (recovery.replay_log)."""
    # (vhost, queues) by the raw bytes that encode them: a backlog names the same few.
    holders: dict[bytes, tuple[str, tuple[str, ...]]] = {}
    u16, u32, u64 = _U16.unpack_from, _U32.unpack_from, _U64.unpack_from
    apply, published = catalog.apply, catalog.published
    # The fields between a message record's id and its body length (vhost, queues,
    # exchange, routing key, properties) of the last message record, and what they say:
    # a backlog repeats them record after record, and bytes equal to them parse the same,
    # so such a record costs one ``startswith`` instead of a parse.
    last: list[Any] = [b"", "", (), False]  # nothing parsed yet

    def visitor(number: int) -> Visitor:
        base = location(number, 0)

        def visit(data: bytes, offset: int, kind: int, length: int) -> None:
            start = offset + RECORD_HEADER_SIZE
            end = start + length
            if kind != _PUBLISHED:
                apply(decode_entry(kind, data[start:end]), number)
                return
            # A message record: its id, vhost and queues, and where it is, not its
            # content (docs/storage.md "Replay and liveness"). Exchange, routing key,
            # properties and body are only checked to fill the payload exactly, as
            # decode_entry would; restore reads them back (``recovered_messages``).
            try:
                (msg_id,) = u64(data, start)
                prefix = last[0]
                if prefix and data.startswith(prefix, start + 8):
                    pos = start + 8 + len(prefix)
                    (body_size,) = u32(data, pos)
                    if pos + 4 + body_size != end:
                        raise ValueError("bad message record payload")
                    published(
                        msg_id,
                        last[1],
                        last[2],
                        base | offset,
                        end - offset,
                        number,
                        body_size,
                        last[3],
                    )
                    return
                pos = start + 10 + u16(data, start + 8)[0]  # vhost
                (count,) = u16(data, pos)
                pos += 2
                for _ in range(count):
                    pos += 2 + u16(data, pos)[0]
                raw = data[start + 8 : pos]
                pos += 2 + u16(data, pos)[0]  # exchange
                pos += 2 + u16(data, pos)[0]  # routing key
                (n,) = u32(data, pos)  # properties; the flag word's first byte holds
                expiring = n >= 2 and bool(data[pos + 4] & _EXPIRATION_BIT)  # expiration
                pos += 4 + n
                body_at = pos
                (body_size,) = u32(data, pos)
                pos += 4 + body_size
            except (struct.error, IndexError) as exc:
                raise ValueError(f"record payload too short: {exc}") from None
            if pos != end:
                raise ValueError("bad message record payload")
            known = holders.get(raw)
            if known is None:
                if len(holders) >= _CACHE_LIMIT:
                    holders.clear()
                known = holders[raw] = _holders(raw)
            last[:] = [data[start + 8 : body_at], known[0], known[1], expiring]
            published(
                msg_id,
                known[0],
                known[1],
                base | offset,
                end - offset,
                number,
                body_size,
                expiring,
            )

        return visit

    return visitor


def _holders(data: bytes) -> tuple[str, tuple[str, ...]]:
    """Decode vhost (u16 length + UTF-8) and queue names (u16 count, then each as vhost)."""
    try:
        (n,) = _U16.unpack_from(data, 0)
        vhost = data[2 : 2 + n].decode("utf-8", "surrogatepass")
        pos = 2 + n
        (count,) = _U16.unpack_from(data, pos)
        pos += 2
        queues = []
        for _ in range(count):
            (n,) = _U16.unpack_from(data, pos)
            queues.append(data[pos + 2 : pos + 2 + n].decode("utf-8", "surrogatepass"))
            pos += 2 + n
    except struct.error as exc:
        raise ValueError(f"record payload too short: {exc}") from None
    if pos != len(data):
        raise ValueError("bad message record payload")
    return vhost, tuple(dict.fromkeys(queues))


class _Settling:
    """One queue's one-message settlements whose records are not appended yet."""

    __slots__ = ("delivered", "queue", "released", "removed")

    def __init__(self, queue: DurableQueue | None) -> None:
        self.queue = queue  # the catalog's; None: unknown to it (its records change nothing)
        self.delivered: dict[int, int] = {}  # id -> segment of its record, in call order
        self.removed: list[int] = []
        self.released: dict[int, int] = {}  # segment -> removals held there (to release)


class DiskDurableLog(DurableLog):
    enabled = True

    def __init__(self, log: SegmentLog, catalog: Catalog, report: RecoveryReport) -> None:
        self.log = log
        self.catalog = catalog
        self.report = report
        self.on_sync_needed: Callback | None = None
        self._next_id = catalog.max_message_id + 1
        self._waiters: deque[tuple[int, CommitCallback]] = deque()
        # One-message settlements whose records wait (module rules), by (vhost, queue).
        self._settling: dict[tuple[str, str], _Settling] = {}
        # The encoded middle of message records (vhost, queues, exchange, routing key) and
        # the catalog's queues they name, by those four: a stream of publishes repeats a
        # few. Cleared with every record of another kind (a declare or delete may change
        # which catalog queues the names mean).
        self._heads: dict[
            tuple[str, tuple[str, ...], str, str], tuple[bytes, tuple[DurableQueue, ...]]
        ] = {}
        # Paging (docs/storage.md "Paging"): bodies read back from the segments, and where
        # the body of the last logged message is.
        self.bodies = BodyReader(log.files, segment_name)
        log.on_reclaimed = self.bodies.forget
        self._last_body = 0

    @classmethod
    def open(cls, files: FileLayer, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> DiskDurableLog:
        # Replay streams the records into the catalog one segment at a time; liveness is
        # gathered until the segment log exists (it needs to know which segments survived).
        replay = ReplayLiveness()
        catalog = Catalog(replay, replaying=True)
        recovered = replay_log(files, _replayer(catalog))
        log = SegmentLog(
            files,
            existing=recovered.segments,
            next_segment=recovered.next_segment,
            previous=recovered.last,
            segment_size=segment_size,
        )
        replay.transfer(log)
        catalog.end_replay(log)
        report = recovered.report
        report.clean_shutdown = catalog.clean_shutdown
        report.exchanges = len(catalog.exchanges)
        report.queues = len(catalog.queues)
        report.bindings = len(catalog.bindings)
        report.messages = catalog.message_count()
        log.reclaim()  # the segments that hold only dead records
        return cls(log, catalog, report)

    def recovered_messages(self, vhost: str, queue: str) -> Iterator[RecoveredMessage]:
        """The live messages replay found in ``queue``, in log (= queue) order, each read
        back from its record (exchange, routing key, properties; not the body): one pass
        over the segments in ``RESTORE_READ_AHEAD`` windows, holding one window at a time;
        a record far from the next one wanted is read alone. Until ``replay_done``.

        The checksum was verified by replay moments ago; the kind, size and id are checked
        again (a mismatch raises OSError: the file changed under us)."""
        stored = self.catalog.queues.get((vhost, queue))
        replayed = stored.replayed if stored is not None else None
        if replayed is None or not len(replayed):
            return
        files = self.log.files
        ids, wheres, sizes, flags = replayed.ids, replayed.where, replayed.sizes, replayed.flags
        total = len(ids)
        parser = RecordParser()
        handle: ReadFile | None = None
        number = -1
        window = b""
        window_at = 0  # offset of ``window`` in segment ``number``
        try:
            for i in range(replayed.head, total):
                flag = flags[i]
                if flag & REMOVED:
                    continue
                where = wheres[i]
                size = sizes[i]
                offset = where & _OFFSET_MASK
                start = offset - window_at
                if where >> LOCATION_SHIFT != number or start < 0 or start + size > len(window):
                    if where >> LOCATION_SHIFT != number:
                        if handle is not None:
                            handle.close()
                        number = where >> LOCATION_SHIFT
                        handle = files.open_read(segment_name(number))
                    assert handle is not None
                    following = wheres[i + 1] if i + 1 < total else -1
                    near = 0 <= following - where < RESTORE_READ_AHEAD
                    window = handle.pread(offset, max(size, RESTORE_READ_AHEAD) if near else size)
                    window_at, start = offset, 0
                    parser.trim()
                yield parser.parse(window, start, ids[i], size, where, bool(flag & DELIVERED))
        finally:
            if handle is not None:
                handle.close()

    def take_tail(self, vhost: str, queue: str) -> LogTail | None:
        """Queue ``queue``'s live messages as ranges of the log (storage/logtail.py), read
        back as it drains, instead of ``recovered_messages``; None if it has none. Until
        ``replay_done``."""
        replayed = self.catalog.take_replayed(vhost, queue)
        return None if replayed is None else LogTail(self.log.files, replayed)

    def replay_done(self) -> None:
        self.catalog.replay_done()

    # -- recording --------------------------------------------------------------------------
    def _append(
        self, entry: Entry, payload: bytes | None = None, *, apply: bool = True
    ) -> Position:
        kind = entry.KIND
        if kind != _PUBLISHED:
            if self._settling:
                self._append_settled()  # they happened before this record
            if kind == QueueDeclared.KIND or kind == QueueDeleted.KIND:
                self._heads.clear()
        log = self.log
        notify = not self.sync_needed
        position = log.append(kind, entry.encode() if payload is None else payload)
        if apply:
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
        names = tuple(queues)
        key = (vhost, names, exchange, routing_key)
        cached = self._heads.get(key)
        if cached is None:
            if len(self._heads) >= _CACHE_LIMIT:
                self._heads.clear()
            cached = self._heads[key] = (
                MessagePublished.encode_head(vhost, names, exchange, routing_key),
                self.catalog.holders(vhost, names),
            )
        head, holders = cached
        # MessagePublished.encode with the head pre-encoded: one join, no entry object.
        payload = b"".join(
            (_U64.pack(msg_id), head, _U32.pack(len(properties_raw)), properties_raw,
             _U32.pack(len(body)), body)
        )  # fmt: skip
        log = self.log
        notify = not self.sync_needed
        offset = log.append_at(_PUBLISHED, payload)
        segment = log.head
        self.catalog.hold_queues(holders, segment)
        if notify and self.on_sync_needed is not None:
            self.on_sync_needed()
        # The body is the payload's last field: readable there once the record is written.
        start = offset + RECORD_HEADER_SIZE + len(payload) - len(body)
        self._last_body = segment << LOCATION_SHIFT | start  # bodies.location, inlined
        return msg_id

    def last_body(self) -> tuple[BodyReader, int] | None:
        return self.bodies, self._last_body

    def messages_delivered(
        self, vhost: str, queue: str, ids: Iterable[int], segments: Iterable[int]
    ) -> None:
        ids = tuple(ids)
        if ids:
            position = self._append(MessagesDelivered(vhost, queue, ids), apply=False)
            self.catalog.settle(vhost, queue, segments, position.segment, removed=False)

    def messages_removed(
        self, vhost: str, queue: str, ids: Iterable[int], segments: Iterable[int]
    ) -> None:
        ids = tuple(ids)
        if ids:
            position = self._append(MessagesRemoved(vhost, queue, ids), apply=False)
            self.catalog.settle(vhost, queue, segments, position.segment, removed=True)

    # One-message settlements: the catalog now, the records later (module rules).
    def _settling_of(self, vhost: str, queue: str) -> _Settling:
        if self.log.broken:
            raise StorageBroken("an earlier write to the data directory failed")
        notify = not self.sync_needed
        settling = self._settling[vhost, queue] = _Settling(self.catalog.queues.get((vhost, queue)))
        if notify and self.on_sync_needed is not None:
            self.on_sync_needed()
        return settling

    def message_delivered(self, vhost: str, queue: str, msg_id: int, segment: int) -> None:
        settling = self._settling.get((vhost, queue))
        if settling is None:
            settling = self._settling_of(vhost, queue)
        delivered = settling.delivered
        delivered[msg_id] = segment
        if len(delivered) >= SETTLE_BATCH:
            self._append_settled()

    def message_removed(self, vhost: str, queue: str, msg_id: int, segment: int) -> None:
        settling = self._settling.get((vhost, queue))
        if settling is None:
            settling = self._settling_of(vhost, queue)
        delivered = settling.delivered
        if delivered:
            delivered.pop(msg_id, None)  # its marker is not needed any more
        held = settling.queue
        if held is not None and held.pins.get(segment, 0) > 0:
            held.unpin(segment)
            released = settling.released
            released[segment] = released.get(segment, 0) + 1
        removed = settling.removed
        removed.append(msg_id)
        if len(removed) >= SETTLE_BATCH:
            self._append_settled()

    def _append_settled(self) -> None:
        """Append the waiting settlements' records: per queue one MessagesDelivered (the
        markers of messages not removed meanwhile) and one MessagesRemoved, with the
        liveness ``Catalog.settle`` would have told the segment log."""
        settling, self._settling = self._settling, {}
        log = self.log
        for (vhost, name), waiting in settling.items():
            held = waiting.queue
            if waiting.delivered:
                entry = MessagesDelivered(vhost, name, tuple(waiting.delivered))
                position = log.append(entry.KIND, entry.encode())
                if held is not None:
                    pins = held.pins
                    log.depend(
                        position.segment, {s for s in waiting.delivered.values() if s in pins}
                    )
            if waiting.removed:
                entry = MessagesRemoved(vhost, name, tuple(waiting.removed))
                position = log.append(entry.KIND, entry.encode())
                for segment, count in waiting.released.items():
                    log.release(segment, count)
                log.depend(position.segment, waiting.released)
        self.catalog.clean_shutdown = False

    def after_commit(self, callback: CommitCallback) -> None:
        # Waiting settlements are appended by the next prepare_commit: their first record
        # will be token last_token + 1 (or a later one in the same batch).
        token = self.log.last_token + (1 if self._settling else 0)
        if token <= self.log.committed_token:
            run_callbacks((callback,))
        else:
            self._waiters.append((token, callback))

    # -- committing (the server's persister) ------------------------------------------------
    @property
    def sync_needed(self) -> bool:
        return self.log.sync_needed or bool(self._settling)

    def prepare_commit(self) -> Batch | None:
        if self._settling:
            self._append_settled()
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
