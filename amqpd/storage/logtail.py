"""Log tails: a restored queue's messages left in the durable log, read back in chunks.

Rules of this module (docs/storage.md "Restart: a queue's tail as ranges of the log"):
- A ``LogTail`` is one queue's live messages as replay found them (the catalog's
  ``ReplayedMessages``, taken over by restore: ids, record locations, record sizes, body
  sizes, delivered flags, in log order, which is queue order). Nothing is read when it is
  made: its length and body bytes are known from the arrays.
- ``read`` hands out the next chunk, in order, as ``RecoveredMessage``s: each record is
  parsed in place for exchange, routing key and properties (never the body), with one
  ``pread`` per chunk: a chunk stays within one segment and one ``WINDOW``, and is bounded
  in count and in bytes of properties and names. The kind, size and id of each record are
  checked against the arrays (a mismatch raises OSError: the file changed under us).
- No object per message: 25 bytes each in the arrays, and the part already read is cut off
  once it is more than half of them, so the tail's RAM shrinks as it drains. With a delta
  queue to page to (``page_out``: the server's delta files) only the first ``BLOCK``
  entries of the arrays stay in memory; the rest go to the delta as blocks of ``BLOCK``
  entries (the arrays' bytes), each read back when the one before is used up, so a
  restored tail costs the same RAM whatever its length.
- The records stay on disk as long as the tail needs them: the catalog's per-segment
  counts pin them (every message of the tail is held by its queue).
- Synchronous file calls through the FileLayer, on the caller's thread, as delta reads.
"""

from __future__ import annotations

import struct
from array import array
from typing import NamedTuple

from amqpd.storage.bodies import LOCATION_SHIFT
from amqpd.storage.catalog import DELIVERED, ReplayedMessages
from amqpd.storage.delta import DeltaQueue
from amqpd.storage.entries import MessagePublished
from amqpd.storage.files import FileLayer, ReadFile
from amqpd.storage.record import HEADER as RECORD_HEADER
from amqpd.storage.record import HEADER_SIZE as RECORD_HEADER_SIZE
from amqpd.storage.segment import segment_name

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PUBLISHED = MessagePublished.KIND
_OFFSET_MASK = (1 << LOCATION_SHIFT) - 1
CACHE_LIMIT = 4096  # distinct exchange names, routing keys, properties shared
#: A chunk's records are read with one pread of at most this many bytes (or one record).
WINDOW = 1024 * 1024
_TRIM_MIN = 65536  # entries read before the arrays are worth cutting
#: Entries of the arrays kept in memory (and per block in the delta) once paged out.
BLOCK = 65536


class RecoveredMessage(NamedTuple):
    """A live message of a recovered queue, read back from its record (not its body)."""

    id: int
    segment: int
    exchange: str
    routing_key: str
    properties_raw: bytes
    body_at: int  # location of the body in the log (also for an empty body)
    body_size: int
    delivered: bool  # the log says it was delivered from this queue


class RecordParser:
    """Parses message records in place; names and property sets shared between messages
    (a backlog repeats a few: one object each instead of one per message)."""

    __slots__ = ("numbers", "properties", "strings")

    def __init__(self) -> None:
        self.strings: dict[bytes, str] = {}
        self.properties: dict[bytes, bytes] = {}
        self.numbers: dict[int, int] = {}

    def trim(self) -> None:
        if max(len(self.strings), len(self.properties), len(self.numbers)) > CACHE_LIMIT:
            self.strings.clear()  # messages that all differ: nothing to share
            self.properties.clear()
            self.numbers.clear()

    def parse(
        self, window: bytes, start: int, msg_id: int, size: int, where: int, delivered: bool
    ) -> RecoveredMessage:
        """The record of message ``msg_id`` (``size`` bytes at location ``where``) at
        ``start`` in ``window``."""
        u16, u32, u64 = _U16.unpack_from, _U32.unpack_from, _U64.unpack_from
        if len(window) < start + size:
            raise OSError(f"message record {msg_id} is cut")
        length, _crc, kind = RECORD_HEADER.unpack_from(window, start)
        pos = start + RECORD_HEADER_SIZE
        if kind != _PUBLISHED or length + RECORD_HEADER_SIZE != size:
            raise OSError(f"message record {msg_id} changed on disk since replay")
        if u64(window, pos)[0] != msg_id:
            raise OSError(f"message record {msg_id} changed on disk since replay")
        pos += 10 + u16(window, pos + 8)[0]  # id, vhost
        (count,) = u16(window, pos)
        pos += 2
        for _ in range(count):
            pos += 2 + u16(window, pos)[0]
        strings = self.strings
        (n,) = u16(window, pos)
        raw = window[pos + 2 : pos + 2 + n]
        pos += 2 + n
        exchange = strings.get(raw)
        if exchange is None:
            exchange = strings[raw] = raw.decode("utf-8", "surrogatepass")
        (n,) = u16(window, pos)
        raw = window[pos + 2 : pos + 2 + n]
        pos += 2 + n
        routing_key = strings.get(raw)
        if routing_key is None:
            routing_key = strings[raw] = raw.decode("utf-8", "surrogatepass")
        (n,) = u32(window, pos)
        raw = window[pos + 4 : pos + 4 + n]
        pos += 4 + n
        props = self.properties.get(raw)
        if props is None:
            props = self.properties[raw] = raw
        (body_size,) = u32(window, pos)
        # Sizes repeat too (one int object each, not one per message).
        body_size = self.numbers.setdefault(body_size, body_size)
        return RecoveredMessage(
            msg_id,
            where >> LOCATION_SHIFT,
            exchange,
            routing_key,
            props,
            where + (pos + 4 - start),
            body_size,
            delivered,
        )


class LogTail:
    """One restored queue's messages still in the log, read back in order (module rules)."""

    __slots__ = (
        "_blocks",
        "_bodies",
        "_files",
        "_flags",
        "_handle",
        "_ids",
        "_number",
        "_paged",
        "_parser",
        "_pos",
        "_sizes",
        "_where",
        "body_bytes",
    )

    def __init__(self, files: FileLayer, replayed: ReplayedMessages) -> None:
        """``replayed`` must be compacted (catalog.take_replayed): live from ``head`` on."""
        assert not replayed.removed
        self._files = files
        self._ids = replayed.ids
        self._where = replayed.where
        self._sizes = replayed.sizes
        self._bodies = replayed.bodies
        self._flags = replayed.flags
        self._pos = replayed.head
        self._parser = RecordParser()
        self._handle: ReadFile | None = None
        self._number = -1
        self._blocks: DeltaQueue | None = None  # the arrays beyond the first BLOCK entries
        self._paged = 0  # entries in ``_blocks``
        #: Body bytes of the messages not read yet (what x-max-length-bytes counts).
        self.body_bytes = sum(memoryview(self._bodies)[self._pos :])

    def __len__(self) -> int:
        return len(self._ids) - self._pos + self._paged

    def page_out(self, blocks: DeltaQueue) -> None:
        """Keep the first ``BLOCK`` entries in memory and the rest in ``blocks`` (empty,
        this tail's alone), ``BLOCK`` entries per record, read back in order."""
        assert self._blocks is None and not len(blocks)
        start = self._pos + BLOCK
        total = len(self._ids)
        if start >= total:
            return
        columns = (self._ids, self._where, self._sizes, self._bodies)
        for at in range(start, total, BLOCK):
            end = min(at + BLOCK, total)
            parts = [column[at:end].tobytes() for column in columns]
            blocks.append(b"".join([*parts, bytes(self._flags[at:end])]))
        for column in columns:
            del column[start:]
        del self._flags[start:]
        self._blocks = blocks
        self._paged = total - start

    def _load(self) -> None:
        """The arrays in memory are used up: the next block from the delta replaces them."""
        assert self._blocks is not None
        (data,) = self._blocks.read(1, 1)
        count = len(data) // 25  # 8 + 8 + 4 + 4 + 1 bytes per entry
        columns = []
        at = 0
        for code, size in (("Q", 8), ("Q", 8), ("I", 4), ("I", 4)):
            column = array(code)
            column.frombytes(data[at : at + count * size])
            columns.append(column)
            at += count * size
        self._ids, self._where, self._sizes, self._bodies = columns
        self._flags = bytearray(data[at : at + count])
        self._pos = 0
        self._paged -= count
        if not self._paged:
            self._blocks = None

    def read(self, max_count: int, max_bytes: int) -> list[RecoveredMessage]:
        """The next messages in order: at least one (unless empty), at most ``max_count``
        and ``max_bytes`` of names and properties, all from one read of one segment."""
        ids, wheres, sizes, bodies, flags = (
            self._ids,
            self._where,
            self._sizes,
            self._bodies,
            self._flags,
        )
        first = self._pos
        total = len(ids)
        if first >= total:
            if not self._paged:
                return []
            self._load()
            return self.read(max_count, max_bytes)
        start_at = wheres[first]
        number = start_at >> LOCATION_SHIFT
        limit = start_at + max(WINDOW, sizes[first])
        stop = min(total, first + max_count)
        end = first + 1
        used = sizes[first] - bodies[first]
        while end < stop and used < max_bytes:
            where = wheres[end]
            size = sizes[end]
            # Same segment (the location's high bits) and within the window.
            if where + size > limit or where >> LOCATION_SHIFT != number:
                break
            used += size - bodies[end]
            end += 1
        span = wheres[end - 1] + sizes[end - 1] - start_at
        if number != self._number or self._handle is None:
            self._close()
            self._handle = self._files.open_read(segment_name(number))
            self._number = number
        window = self._handle.pread(start_at & _OFFSET_MASK, span)
        parse = self._parser.parse
        self._parser.trim()
        out = [
            parse(
                window,
                wheres[i] - start_at,
                ids[i],
                sizes[i],
                wheres[i],
                bool(flags[i] & DELIVERED),
            )
            for i in range(first, end)
        ]
        self.body_bytes -= sum(memoryview(bodies)[first:end])
        self._pos = end
        if end >= _TRIM_MIN and 2 * end > total:
            for column in (ids, wheres, sizes, bodies):
                del column[:end]
            del flags[:end]
            self._pos = 0
        return out

    def copy(self) -> LogTail:
        """An independent tail of the messages not read yet (tests look at a queue's
        whole content with it without taking anything); not once paged out."""
        assert not self._paged
        other = object.__new__(LogTail)
        pos = self._pos
        other._files = self._files
        other._ids = self._ids[pos:]
        other._where = self._where[pos:]
        other._sizes = self._sizes[pos:]
        other._bodies = self._bodies[pos:]
        other._flags = self._flags[pos:]
        other._pos = 0
        other._parser = RecordParser()
        other._handle = None
        other._number = -1
        other._blocks = None
        other._paged = 0
        other.body_bytes = self.body_bytes
        return other

    def stored(self) -> tuple[array[int], list[int]]:
        """Ids and record segments of the messages not read yet, which the tail then
        forgets (a purge logs them; paged-out blocks are read back for it)."""
        pos = self._pos
        ids = self._ids[pos:]
        segments = [where >> LOCATION_SHIFT for where in self._where[pos:]]
        while self._paged:
            self._load()
            ids += self._ids
            segments += [where >> LOCATION_SHIFT for where in self._where]
        self.clear()
        return ids, segments

    def undelivered(self) -> tuple[array[int], list[int]]:
        """Ids and segments of the messages not read yet that were never delivered (before
        ``page_out``: the crash marks at restore)."""
        assert not self._paged
        pos = self._pos
        flags = self._flags
        ids, wheres = self._ids, self._where
        if flags.find(DELIVERED, pos) < 0:
            return ids[pos:], [where >> LOCATION_SHIFT for where in wheres[pos:]]
        keep = [i for i in range(pos, len(ids)) if not flags[i] & DELIVERED]
        return array("Q", [ids[i] for i in keep]), [wheres[i] >> LOCATION_SHIFT for i in keep]

    def clear(self) -> None:
        """Forget every message not read yet (a purge or delete has dealt with them)."""
        self._ids = array("Q")
        self._where = array("Q")
        self._sizes = array("I")
        self._bodies = array("I")
        self._flags = bytearray()
        self._pos = 0
        self.body_bytes = 0
        if self._blocks is not None:
            self._blocks.clear()  # its files go
            self._blocks = None
        self._paged = 0
        self._close()

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._number = -1
