"""SegmentLog: the append-only record log with group commit and segment reclamation.

Rules of this module (docs/storage.md "Group commit", "Reclamation"):
- ``append`` only buffers: it returns the record's ``Position`` (a token, increasing, and
  the segment the record will live in) at once. ``commit`` writes every buffered record and
  fsyncs once: a record whose ``commit`` returned survives any crash.
- Commit is split for the server's persister so the fsync can run in a worker thread while
  the trio thread keeps appending: ``prepare_commit`` (caller's thread: takes the buffer),
  ``Batch.write`` (any thread: file I/O only, touches nothing else), ``complete_commit``
  (caller's thread: bookkeeping, reclamation). One batch at a time. ``Batch.write`` touches
  only the file handles and pending headers of its own segments, which the caller's thread
  leaves alone until ``complete_commit``; ``append`` meanwhile only adds to a new buffer.
- Liveness is the caller's knowledge, told to the log: ``pin(segment, n)`` when live
  records land there, ``release(segment, n)`` when they die (applied only once the records
  appended so far are committed, so a death the disk has not seen yet never deletes
  anything), and ``depend(segment, targets)`` for a record (an ack, a deletion) that must
  stay on disk as long as any of the segments holding what it killed does; records of one
  segment with the same targets share one dependency, so the log's bookkeeping grows with
  segments, not with records. A segment other than the head with no pins and no surviving
  targets is deleted (at a commit, or ``reclaim``), and the directory fsynced before any
  segment that depended on it can go.
- After a failed write or fsync the log is ``broken``: nothing more is written, because we
  no longer know what is on disk. Reopening (recovery) is the only way on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from amqpd.storage.files import AppendFile, FileLayer
from amqpd.storage.record import HEADER_SIZE as RECORD_HEADER_SIZE
from amqpd.storage.record import header
from amqpd.storage.segment import HEADER_SIZE, encode_header, segment_name

DEFAULT_SEGMENT_SIZE = 8 * 1024 * 1024


class StorageBroken(Exception):
    """A write or fsync failed earlier: the log refuses further writes."""


class Position(NamedTuple):
    token: int
    segment: int
    offset: int = 0  # where the record starts in its segment (paged bodies are read there)


class _Segment:
    __slots__ = ("live", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.live = 0


class _Dependent:
    """Records of one segment that must outlive the segments holding what they killed."""

    __slots__ = ("key", "remaining", "segment")

    def __init__(self, segment: int, remaining: set[int], key: frozenset[int]) -> None:
        self.segment = segment
        self.remaining = remaining
        self.key = key


class Batch:
    """Records taken by ``prepare_commit``; ``write`` puts them on disk (worker thread)."""

    def __init__(
        self,
        log: SegmentLog,
        chunks: list[tuple[int, bytearray]],
        token: int,
        releases: dict[int, int],
    ) -> None:
        self._log = log
        self.chunks = chunks
        self.token = token
        self.releases = releases
        self.written = False

    def write(self) -> None:
        log = self._log
        files = log.files
        touched: list[AppendFile] = []
        created = False
        try:
            for number, data in self.chunks:
                handle = log._handles.get(number)
                if handle is None:
                    handle = log._handles[number] = files.open_append(segment_name(number))
                    handle.write(log._headers.pop(number))
                    created = True
                handle.write(bytes(data))
                if not touched or touched[-1] is not handle:
                    touched.append(handle)
            for handle in touched:
                handle.sync()
            if created:
                files.sync_dir()
        except BaseException:
            log.broken = True
            raise
        self.written = True


class SegmentLog:
    def __init__(
        self,
        files: FileLayer,
        *,
        existing: Iterable[int] = (),
        next_segment: int = 1,
        previous: tuple[int, int] = (0, 0),
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        self.files = files
        self.segment_size = segment_size
        self.broken = False
        self._segments: dict[int, _Segment] = {n: _Segment(n) for n in existing}
        self.head = next_segment
        self._segments[self.head] = _Segment(self.head)
        self._head_size = HEADER_SIZE
        self._handles: dict[int, AppendFile] = {}
        # Header of each segment not yet created: it names its predecessor and its length.
        self._headers: dict[int, bytes] = {self.head: encode_header(*previous)}
        self._chunks: list[tuple[int, bytearray]] = []
        self._releases: dict[int, int] = {}  # segment -> deaths not yet committed
        self._dependents: dict[int, list[_Dependent]] = {}
        # (segment, targets) -> the pending dependency: one per distinct pair.
        self._depending: dict[tuple[int, frozenset[int]], _Dependent] = {}
        self._next_token = 1
        self.committed_token = 0
        self._in_flight: Batch | None = None
        # Told the number of each segment deleted by reclamation (the body reader closes it).
        self.on_reclaimed: Callable[[int], None] | None = None

    # -- appending --------------------------------------------------------------------------
    def append(self, kind: int, payload: bytes) -> Position:
        offset = self.append_at(kind, payload)
        return Position(self._next_token - 1, self.head, offset)

    def append_at(self, kind: int, payload: bytes) -> int:
        """``append`` returning only the record's offset (its segment is ``head``, its
        token ``last_token``): the message path's, with no Position object."""
        if self.broken:
            raise StorageBroken("an earlier write to the data directory failed")
        prefix = header(kind, payload)
        size = RECORD_HEADER_SIZE + len(payload)
        offset = self._head_size
        if offset > HEADER_SIZE and offset + size > self.segment_size:
            self._roll()
            offset = self._head_size
        self._head_size = offset + size
        chunks = self._chunks
        if chunks and chunks[-1][0] == self.head:
            chunk = chunks[-1][1]
        else:
            chunk = bytearray()
            chunks.append((self.head, chunk))
        chunk += prefix  # header and payload straight into the buffer: no joined copy
        chunk += payload
        self._next_token += 1
        return offset

    def _roll(self) -> None:
        previous = (self.head, self._head_size)
        self.head += 1
        self._segments[self.head] = _Segment(self.head)
        self._headers[self.head] = encode_header(*previous)
        self._head_size = HEADER_SIZE

    @property
    def sync_needed(self) -> bool:
        """Records are buffered that no commit has taken yet."""
        return bool(self._chunks) or bool(self._releases)

    @property
    def last_token(self) -> int:
        return self._next_token - 1

    # -- liveness ---------------------------------------------------------------------------
    def pin(self, segment: int, count: int = 1) -> None:
        self._segments[segment].live += count

    def release(self, segment: int, count: int = 1) -> None:
        releases = self._releases
        releases[segment] = releases.get(segment, 0) + count

    def depend(self, segment: int, targets: Iterable[int]) -> None:
        remaining = {t for t in targets if t != segment and t in self._segments}
        if not remaining:
            return
        key = (segment, frozenset(remaining))
        if key in self._depending:
            return  # an earlier record of this segment already keeps it for these targets
        self._segments[segment].live += 1
        dependent = _Dependent(segment, remaining, key[1])
        self._depending[key] = dependent
        for target in remaining:
            self._dependents.setdefault(target, []).append(dependent)

    @property
    def segments(self) -> list[int]:
        """Segment numbers on disk (or about to be), in order."""
        return sorted(self._segments)

    # -- committing -------------------------------------------------------------------------
    def prepare_commit(self) -> Batch | None:
        if self.broken:
            raise StorageBroken("an earlier write to the data directory failed")
        assert self._in_flight is None, "one batch at a time"
        if not self._chunks and not self._releases:
            return None
        batch = Batch(self, self._chunks, self.last_token, self._releases)
        self._chunks, self._releases = [], {}
        self._in_flight = batch
        return batch

    def complete_commit(self, batch: Batch) -> int:
        """Bookkeeping after ``batch.write()`` returned; returns the committed token."""
        assert batch is self._in_flight and batch.written
        self._in_flight = None
        self.committed_token = batch.token
        # Segments rolled past are complete on disk once no buffered record (appended while
        # this batch was being written) still goes to them: close their files.
        pending = {n for n, _ in self._chunks}
        for number in [n for n in self._handles if n != self.head and n not in pending]:
            self._handles.pop(number).close()
        for segment, count in batch.releases.items():
            self._segments[segment].live -= count
        self._reclaim()
        return batch.token

    def commit(self) -> int:
        """Write and fsync everything appended so far (tests and synchronous callers)."""
        batch = self.prepare_commit()
        if batch is None:
            return self.committed_token
        batch.write()
        return self.complete_commit(batch)

    def reclaim(self) -> None:
        """Delete the dead segments now (after replay: nothing to commit may follow)."""
        if self.broken:
            raise StorageBroken("an earlier write to the data directory failed")
        self._reclaim()

    def _reclaim(self) -> None:
        pending = {n for n, _ in self._chunks}
        while True:
            dead = [
                s.number
                for s in self._segments.values()
                if s.live <= 0 and s.number != self.head and s.number not in pending
            ]
            if not dead:
                return
            try:
                for number in dead:
                    handle = self._handles.pop(number, None)
                    if handle is not None:
                        handle.close()
                    self.files.remove(segment_name(number))
                # Durable before any record that depended on these segments may go too.
                self.files.sync_dir()
            except BaseException:
                self.broken = True
                raise
            for number in dead:
                del self._segments[number]
                if self.on_reclaimed is not None:
                    self.on_reclaimed(number)
                for dependent in self._dependents.pop(number, ()):
                    dependent.remaining.discard(number)
                    if not dependent.remaining:
                        del self._depending[(dependent.segment, dependent.key)]
                        seg = self._segments.get(dependent.segment)
                        if seg is not None:
                            seg.live -= 1

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
