"""Stream segments on disk: the ``SegmentStore`` of stream queues when there is a data dir.

Rules of this module (docs/storage.md "Stream segment files"):
- A stream's directory (storage/streamdirs.py) holds one file per segment, named by its
  first offset (``NNNNNNNNNNNNNNNNNNNN.seg``, 20 digits, so names sort in offset order).
  A file is the main log's segment format (storage/segment.py: the 24-byte header with the
  predecessor's name number and final length, then records of storage/record.py, length +
  CRC-32): one record per chunk, kind ``MESSAGE`` (offset, timestamp, exchange, routing
  key, raw properties, body) or ``TRACKING`` (offset, timestamp: the snapshot chunk a new
  segment starts with).
- Recovery is the main log's (storage/recovery.py ``recover_log``): the first torn or
  corrupt record ends the stream, its segment is cut there and later ones are set aside
  as ``*.seg.dropped``. A record whose offset is not the next one counts as corrupt.
  What remains comes back with the same offsets, timestamps and segment layout, so
  retention state (the first retained offset, the retained bytes) is the same.
- Writes: each chunk is written (write(2)) when it is appended, never fsynced, as RabbitMQ
  streams do not fsync (they rely on replication, which amqpd lacks): a process crash or
  kill -9 loses nothing written, an OS crash or power cut may lose the newest chunks
  (recovery cuts what is torn). A new segment's creation is made durable (directory
  fsync), once per segment. Publisher confirms of stream messages go out at once.
- Reads: synchronous ``pread`` of the segment file on the trio thread (the core never
  awaits). Memory per stream is an index of a few integers per chunk (file position,
  length, timestamp) plus a bounded cache of decoded entries (``CACHE_ENTRIES`` entries and
  ``CACHE_BYTES`` bytes of bodies, the newest written and the recently read), so a large
  stream does not live in RAM. Recovery reads one segment file at a time.
- A failed write (disk full, I/O error) raises ``OSError`` to the publish (its connection
  gets 541, as for any unexpected error) after cutting the partial record off the file; the
  chunk is not in the stream and its offset is used by the next message.
- Retention removes whole segment files; deleting the stream removes its directory.
- ``segment-size`` holds the stream's segment size in decimal, written once when the
  stream is created (temp file, fsync, rename, directory fsync), read when it is
  reopened: a policy may have set it, and a later policy must not change it. A missing
  or unreadable one (a data directory from before it, a crash while writing it) is
  written anew from the size the declaration and policy give at reopen.
"""

from __future__ import annotations

import contextlib
import struct
from array import array
from collections import OrderedDict
from collections.abc import Callable

from amqpd.broker.message import Message
from amqpd.broker.stream import (
    CHUNK_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    Segment,
    StreamEntry,
)
from amqpd.storage.files import AppendFile, FileLayer, ReadFile
from amqpd.storage.record import HEADER_SIZE as RECORD_FRAME
from amqpd.storage.record import Record, encode, scan
from amqpd.storage.recovery import RecoveryReport, recover_log
from amqpd.storage.segment import HEADER_SIZE as SEGMENT_HEADER
from amqpd.storage.segment import encode_header, parse_segment_name
from amqpd.storage.streamdirs import StreamDirs

MESSAGE = 1
TRACKING = 2
_MESSAGE_HEAD = struct.Struct("<QqHHI")  # offset, timestamp, len(exchange), len(rk), len(props)
_TRACKING = struct.Struct("<Qq")  # offset, timestamp
CACHE_ENTRIES = 1024
CACHE_BYTES = 8 * 1024 * 1024
SEGMENT_SIZE_FILE = "segment-size"


def stream_segment_name(first_offset: int) -> str:
    return f"{first_offset:020d}.seg"


def encode_entry(entry: StreamEntry) -> bytes:
    message = entry.message
    if message is None:
        return encode(TRACKING, _TRACKING.pack(entry.offset, entry.timestamp))
    exchange = message.exchange.encode("utf-8")
    routing_key = message.routing_key.encode("utf-8")
    props = message.properties_raw
    head = _MESSAGE_HEAD.pack(
        entry.offset, entry.timestamp, len(exchange), len(routing_key), len(props)
    )
    return encode(MESSAGE, b"".join((head, exchange, routing_key, props, message.body)))


def decode_entry(record: Record) -> StreamEntry:
    """The entry a record holds; ValueError for a record that is not one."""
    payload = record.payload
    if record.kind == TRACKING:
        if len(payload) != _TRACKING.size:
            raise ValueError("bad tracking chunk")
        offset, timestamp = _TRACKING.unpack(payload)
        return StreamEntry(offset, timestamp, None)
    if record.kind != MESSAGE or len(payload) < _MESSAGE_HEAD.size:
        raise ValueError("not a stream chunk")
    offset, timestamp, x_len, rk_len, p_len = _MESSAGE_HEAD.unpack_from(payload)
    at = _MESSAGE_HEAD.size
    if at + x_len + rk_len + p_len > len(payload):
        raise ValueError("bad stream chunk lengths")
    try:
        exchange = payload[at : at + x_len].decode("utf-8")
        routing_key = payload[at + x_len : at + x_len + rk_len].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("bad stream chunk names") from None
    at += x_len + rk_len
    props = payload[at : at + p_len]
    body = payload[at + p_len :]
    return StreamEntry(offset, timestamp, Message(exchange, routing_key, props, body))


class _Index:
    """Where one chunk is, as recovery found it (the entry itself is not kept)."""

    __slots__ = ("length", "offset", "position", "size", "timestamp", "tracking")

    def __init__(self, offset: int, timestamp: int, size: int, tracking: bool) -> None:
        self.offset = offset
        self.timestamp = timestamp
        self.size = size
        self.tracking = tracking
        self.position = 0
        self.length = 0


def _index_of(record: Record) -> _Index:
    entry = decode_entry(record)
    return _Index(entry.offset, entry.timestamp, entry.size, entry.message is None)


def _locate(value: _Index, record: Record, segment: int, position: int) -> _Index:
    value.position = position
    value.length = RECORD_FRAME + len(record.payload)
    return value


class DiskSegment(Segment):
    """A segment file: an index of its chunks; entries are read back through the cache."""

    __slots__ = (
        "_append",
        "_broken",
        "_lengths",
        "_positions",
        "_reader",
        "_store",
        "_timestamps",
        "file_length",
        "name",
    )

    def __init__(self, store: DiskSegments, first_offset: int, file_length: int) -> None:
        super().__init__(first_offset)
        self._store = store
        self.name = stream_segment_name(first_offset)
        self._positions = array("q")
        self._lengths = array("q")
        self._timestamps = array("q")
        self._append: AppendFile | None = None
        self._reader: ReadFile | None = None
        self._broken = False
        self.file_length = file_length

    def _add(self, timestamp: int, size: int, position: int, length: int) -> None:
        self._positions.append(position)
        self._lengths.append(length)
        self._timestamps.append(timestamp)
        self.size += size

    def append(self, entry: StreamEntry) -> None:
        data = encode_entry(entry)
        if self._broken:
            raise OSError(f"stream segment {self.name}: an earlier write failed")
        try:
            if self._append is None:
                self._append = self._store.files.open_append(self.name)
            self._append.write(data)
        except OSError:
            self._cut_failed_write()
            raise
        self._add(entry.timestamp, entry.size, self.file_length, len(data))
        self.file_length += len(data)
        if entry.message is not None:
            self.last_message = entry.offset
        self._store.cache(entry)

    def _cut_failed_write(self) -> None:
        # A short write left part of a record: cut it, so the file ends at the last whole
        # chunk and the next append (and recovery) find a clean end; if even that fails,
        # this segment takes no more writes (the stream refuses publishes until restart).
        if self._append is not None:
            self._append.close()
            self._append = None
        try:
            self._store.files.truncate(self.name, self.file_length)
        except OSError:
            self._broken = True

    def __len__(self) -> int:
        return len(self._positions)

    def get(self, index: int) -> StreamEntry:
        offset = self.first_offset + index
        entry = self._store.cached(offset)
        if entry is not None:
            return entry
        if self._reader is None:
            self._reader = self._store.files.open_read(self.name)
        length = self._lengths[index]
        data = self._reader.pread(self._positions[index], length)
        if len(data) != length:
            raise OSError(f"stream segment {self.name}: short read at offset {offset}")
        found = scan(data).records
        if len(found) != 1:
            raise OSError(f"stream segment {self.name}: bad record at offset {offset}")
        entry = decode_entry(found[0][1])
        self._store.cache(entry)
        return entry

    def timestamp_at(self, index: int) -> int:
        return self._timestamps[index]

    @property
    def last_timestamp(self) -> int:
        return self._timestamps[-1]

    def close(self) -> None:
        for handle in (self._append, self._reader):
            if handle is not None:
                handle.close()
        self._append = self._reader = None


class DiskSegments:
    """The ``SegmentStore`` of one stream over its directory's ``FileLayer``."""

    def __init__(self, files: FileLayer, on_destroy: Callable[[], None] | None = None) -> None:
        self.files = files
        self._on_destroy = on_destroy
        self._cache: OrderedDict[int, StreamEntry] = OrderedDict()
        self._cache_bytes = 0
        self._segments: list[DiskSegment] = []
        self.report: RecoveryReport = RecoveryReport()
        self._recover()

    @classmethod
    def open(cls, dirs: StreamDirs, vhost: str, queue: str, *, fresh: bool) -> DiskSegments:
        """The store of stream ``queue``; ``fresh`` (a new declaration) drops leftovers."""
        if fresh:
            dirs.remove(vhost, queue)
        return cls(dirs.files(vhost, queue), lambda: dirs.remove(vhost, queue))

    # -- recovery ---------------------------------------------------------------------------
    def _recover(self) -> None:
        recovered = recover_log(self.files, _index_of, _locate)
        self.report = recovered.report
        by_number: dict[int, list[_Index]] = {}
        for number, index in recovered.records:
            by_number.setdefault(number, []).append(index)
        expected: int | None = None
        for number in recovered.segments:
            indexes = by_number.get(number, [])
            if expected is not None and number != expected:
                break  # a gap in the offsets (a segment lost): the stream ends before it
            segment = DiskSegment(self, number, 0)
            good = True
            for index in indexes:
                if index.offset != number + len(segment):
                    good = False
                    break
                segment._add(index.timestamp, index.size, index.position, index.length)
                if not index.tracking:
                    segment.last_message = index.offset
            if len(segment):
                last = len(segment) - 1
                segment.file_length = segment._positions[last] + segment._lengths[last]
            else:
                segment.file_length = SEGMENT_HEADER
            if not good:
                # Records beyond the last consecutive offset: cut them like a corrupt tail.
                self.files.truncate(segment.name, segment.file_length)
                self._segments.append(segment)
                self._set_aside(recovered.segments[recovered.segments.index(number) + 1 :])
                return
            self._segments.append(segment)
            expected = number + len(segment)

    def _set_aside(self, numbers: list[int]) -> None:
        for number in numbers:
            name = stream_segment_name(number)
            self.files.rename(name, name.removesuffix(".seg") + ".seg.dropped")
            self.report.dropped_segments.append(name)
        self.files.sync_dir()

    # -- SegmentStore -----------------------------------------------------------------------
    def recovered(self) -> list[Segment]:
        return list(self._segments)

    def open_segment(self, first_offset: int) -> Segment:
        previous = self._segments[-1] if self._segments else None
        if previous is not None:
            previous.close()
        segment = DiskSegment(self, first_offset, SEGMENT_HEADER)
        header = (
            encode_header(previous.first_offset, previous.file_length)
            if previous is not None
            else encode_header(0, 0)
        )
        try:
            handle = self.files.open_append(segment.name)
            segment._append = handle
            handle.write(header)
            self.files.sync_dir()
        except OSError:
            # Not opened: the log stays on the full segment and tries again next append.
            segment.close()
            with contextlib.suppress(OSError):
                self.files.remove(segment.name)
            raise
        self._segments.append(segment)
        return segment

    def kept_segment_size(self, size: int) -> int:
        try:
            text = self.files.read(SEGMENT_SIZE_FILE).decode("ascii")
        except (OSError, UnicodeDecodeError):
            text = ""
        if text.isdigit():
            return int(text)
        temp = SEGMENT_SIZE_FILE + ".tmp"
        if temp in self.files.list():
            self.files.remove(temp)  # a crash while writing it: open_append would add to it
        handle = self.files.open_append(temp)
        try:
            handle.write(str(size).encode("ascii"))
            handle.sync()
        finally:
            handle.close()
        self.files.rename(temp, SEGMENT_SIZE_FILE)
        self.files.sync_dir()
        return size

    def delete_segment(self, segment: Segment) -> None:
        assert isinstance(segment, DiskSegment)
        segment.close()
        self._segments.remove(segment)
        self.files.remove(segment.name)
        for offset in range(segment.first_offset, segment.first_offset + len(segment)):
            self._uncache(offset)

    def destroy(self) -> None:
        for segment in self._segments:
            segment.close()
        self._segments.clear()
        self._cache.clear()
        self._cache_bytes = 0
        for name in self.files.list():
            if parse_segment_name(name) is not None or name == SEGMENT_SIZE_FILE:
                self.files.remove(name)
        if self._on_destroy is not None:
            self._on_destroy()  # the directory itself

    # -- the cache --------------------------------------------------------------------------
    def cached(self, offset: int) -> StreamEntry | None:
        entry = self._cache.get(offset)
        if entry is not None:
            self._cache.move_to_end(offset)
        return entry

    def cache(self, entry: StreamEntry) -> None:
        if entry.offset in self._cache:
            return
        self._cache[entry.offset] = entry
        self._cache_bytes += _body_size(entry)
        while len(self._cache) > CACHE_ENTRIES or (
            self._cache_bytes > CACHE_BYTES and len(self._cache) > 1
        ):
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= _body_size(old)

    def _uncache(self, offset: int) -> None:
        entry = self._cache.pop(offset, None)
        if entry is not None:
            self._cache_bytes -= _body_size(entry)


def _body_size(entry: StreamEntry) -> int:
    return entry.size - CHUNK_HEADER_SIZE - RECORD_HEADER_SIZE
