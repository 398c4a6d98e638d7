"""Bucket files: where a delayed-message schedule keeps the entries not due soon.

Rules of this module (docs/storage.md "Delayed messages"):
- A bucket is one file, ``NNNNNNNN.bucket``, of length-prefixed records (u32 little-endian
  length, then the payload the schedule encoded), appended unsorted: adding is O(1), and
  the schedule reads a bucket whole, in the order written, when its time comes.
- Nothing here is durable: the durable log is the truth about pending delayed messages,
  and a restart rebuilds the schedule from it. So files are never fsynced, carry no
  checksum, and every bucket file is removed when the store opens and when it closes.
- Appends are buffered per bucket and written in chunks (a bucket's buffer at
  ``BUFFER`` bytes, all of them when the buffers together pass ``TOTAL_BUFFER``), so RAM
  for buffers is bounded whatever the number of buckets; no file stays open between
  calls (there may be thousands of buckets). Reads stream a file in ``READ_CHUNK``
  pieces, then the unwritten buffer, so a large bucket is never read into memory at once.
- A failed write (disk full) makes the store ``broken``: the record being appended and
  what every bucket had buffered stay in the buffers and are read from there (a file is
  read only up to the bytes known to be written), ``append`` refuses from then on, and
  the caller keeps every later entry in memory.
- Synchronous, through a ``FileLayer``: the broker calls it without awaiting, as it reads
  paged bodies (bodies.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from amqpd.storage.files import FileLayer

SUFFIX = ".bucket"
BUFFER = 64 * 1024
TOTAL_BUFFER = 1024 * 1024
READ_CHUNK = 256 * 1024
_LEN = struct.Struct("<I")


def bucket_name(number: int) -> str:
    return f"{number:08d}{SUFFIX}"


class DelayBuckets:
    """The bucket files of every delayed schedule of one broker (numbers are shared)."""

    def __init__(
        self, files: FileLayer, *, buffer_size: int = BUFFER, total_buffer: int = TOTAL_BUFFER
    ) -> None:
        for name in files.list():
            if name.endswith(SUFFIX):
                files.remove(name)  # a previous run's: the durable log rebuilds them
        self._files = files
        self._buffer_size = buffer_size
        self._total_buffer = total_buffer
        self._next = 0
        self._buffers: dict[int, bytearray] = {}
        self._written: dict[int, int] = {}  # bytes of each bucket already in its file
        self._buffered = 0
        self.broken = False
        self.bytes_written = 0  # statistics, tests
        self.reads = 0

    def new(self) -> int:
        """A new, empty bucket's number (no file until something is written)."""
        self._next += 1
        self._buffers[self._next] = bytearray()
        self._written[self._next] = 0
        return self._next

    def append(self, number: int, payload: bytes) -> None:
        """Add one record to bucket ``number``. OSError only if the store was already
        broken (then nothing was added); a write failing now breaks it but the record,
        like everything buffered, stays readable."""
        if self.broken:
            raise OSError("an earlier write to the delayed-message buckets failed")
        buffer = self._buffers[number]
        buffer += _LEN.pack(len(payload))
        buffer += payload
        self._buffered += 4 + len(payload)
        try:
            if len(buffer) >= self._buffer_size:
                self._flush(number)
            elif self._buffered >= self._total_buffer:
                for n in [n for n, b in self._buffers.items() if b]:
                    self._flush(n)
        except OSError:
            pass  # broken now (_flush): the caller keeps later entries in memory

    def records(self, number: int) -> Iterator[bytes]:
        """Every record of bucket ``number``, in the order appended (as of the first
        record: the caller may append to other buckets meanwhile, flushing buffers)."""
        written = self._written[number]
        tail = bytes(self._buffers[number])
        if written:
            handle = self._files.open_read(bucket_name(number))
            try:
                pending = b""
                offset = 0
                while offset < written:
                    chunk = handle.pread(offset, min(READ_CHUNK, written - offset))
                    self.reads += 1
                    if not chunk:
                        raise OSError(f"bucket {number} is cut short at {offset}")
                    offset += len(chunk)
                    data = pending + chunk
                    at = 0
                    while at + 4 <= len(data):
                        (size,) = _LEN.unpack_from(data, at)
                        if at + 4 + size > len(data):
                            break
                        yield data[at + 4 : at + 4 + size]
                        at += 4 + size
                    pending = data[at:]
                if pending:
                    raise OSError(f"bucket {number} ends inside a record")
            finally:
                handle.close()
        at = 0
        while at < len(tail):
            (size,) = _LEN.unpack_from(tail, at)
            yield tail[at + 4 : at + 4 + size]
            at += 4 + size

    def remove(self, number: int) -> None:
        """Bucket ``number`` is done with (loaded, split or emptied): its file goes."""
        buffer = self._buffers.pop(number, None)
        if buffer is not None:
            self._buffered -= len(buffer)
        if self._written.pop(number, 0):
            self._files.remove(bucket_name(number))

    def close(self) -> None:
        """Stop: every bucket file goes."""
        for number in list(self._written):
            self.remove(number)

    def _flush(self, number: int) -> None:
        buffer = self._buffers[number]
        try:
            handle = self._files.open_append(bucket_name(number))
            try:
                handle.write(bytes(buffer))
            finally:
                handle.close()
        except OSError:
            # The file may hold part of it: it is read only up to _written, the rest
            # stays in the buffer, and nothing more is written anywhere.
            self.broken = True
            raise
        self._written[number] += len(buffer)
        self.bytes_written += len(buffer)
        self._buffered -= len(buffer)
        buffer.clear()
