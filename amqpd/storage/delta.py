"""Delta files: the on-disk part of a queue's ready backlog, one FIFO of byte records each.

Rules of this module (docs/storage.md "Paging"):
- The storage layer sees only bytes: a ``DeltaQueue`` is a FIFO of records (the broker's
  descriptors of ready entries, broker/paging.py serialises them), appended at the tail and
  read back in order from the head, in chunks bounded in both record count and bytes.
- One ``DeltaQueue`` per ready FIFO (a queue, or one priority level of one), its files
  named ``<queue number>-<file number>.delta`` in the spill directory. Files are at most
  ``file_size`` bytes (a record larger than that gets a file of its own); a file is deleted
  as soon as it has been read back completely, and ``clear`` deletes all of a queue's
  files, so disk use tracks the backlog.
- Nothing here is promised to survive a restart: files are never fsynced, and every
  ``*.delta`` (and every old ``*.spill``) file in the directory is removed when
  ``DeltaFiles`` opens it. Durable messages are in the durable log and come back from it.
- Writes are buffered (``buffer_size``) and reads are synchronous ``pread`` on the caller's
  thread: the core never awaits. Records still in the write buffer are read from it.
- A failed write (disk full) never loses a record: the queue stops writing and keeps
  what follows in its buffer, in memory, in order (as a broker without a data directory
  would); ``broken`` says so until the queue has been read back empty, when it deletes
  its files and tries the disk again.
- Record framing in a file: u32 little-endian length, then the record.
"""

from __future__ import annotations

import contextlib
import struct

from amqpd.storage.files import AppendFile, FileLayer, ReadFile

DELTA_SUFFIX = ".delta"
DELTA_FILE_SIZE = 16 * 1024 * 1024
DELTA_BUFFER = 128 * 1024
_LEN = struct.Struct("<I")
_LEN_SIZE = _LEN.size


def delta_name(queue: int, number: int) -> str:
    return f"{queue:08d}-{number:08d}{DELTA_SUFFIX}"


class DeltaFiles:
    """The delta files of every ready FIFO, in one directory (``<data-dir>/spill/``)."""

    def __init__(
        self,
        files: FileLayer,
        *,
        file_size: int = DELTA_FILE_SIZE,
        buffer_size: int = DELTA_BUFFER,
    ) -> None:
        for name in files.list():
            if name.endswith((DELTA_SUFFIX, ".spill")):
                files.remove(name)  # a previous run's: nothing in it is alive any more
        self.files = files
        self.file_size = file_size
        self.buffer_size = buffer_size
        self._next = 0
        self.queues = 0  # DeltaQueues handed out (statistics)

    def close(self) -> None:
        """Stop: every delta file goes (nothing in them outlives the process)."""
        for name in self.files.list():
            if name.endswith(DELTA_SUFFIX):
                self.files.remove(name)

    def new_queue(self) -> DeltaQueue:
        self._next += 1
        self.queues += 1
        return DeltaQueue(self, self._next)


class DeltaQueue:
    """A FIFO of byte records in files: ``append`` at the tail, ``read`` from the head."""

    __slots__ = (
        "_buffer",
        "_count",
        "_handle",
        "_number",
        "_owner",
        "_read_file",
        "_read_offset",
        "_reader",
        "_sizes",
        "_write_file",
        "_written",
        "broken",
        "reads",
    )

    def __init__(self, owner: DeltaFiles, number: int) -> None:
        self._owner = owner
        self._number = number
        self._count = 0
        self._write_file = 0  # 0: no file yet (or all read back and deleted)
        self._handle: AppendFile | None = None
        self._written = 0  # bytes of the write file already written out
        self._buffer = bytearray()  # the write file's bytes not written out yet
        self._sizes: dict[int, int] = {}  # final size of each full file not yet deleted
        self._read_file = 0
        self._read_offset = 0
        self._reader: ReadFile | None = None
        self.broken = False
        self.reads = 0  # preads issued (statistics, tests)

    def __len__(self) -> int:
        return self._count

    @property
    def file_count(self) -> int:
        return len(self._sizes) + (1 if self._write_file else 0)

    def append(self, record: bytes) -> None:
        owner = self._owner
        end = self._written + len(self._buffer)
        if not self.broken and (
            not self._write_file or (end and end + _LEN_SIZE + len(record) > owner.file_size)
        ):
            self._roll()
        self._buffer += _LEN.pack(len(record))
        self._buffer += record
        self._count += 1
        if len(self._buffer) >= owner.buffer_size and not self.broken:
            self._flush()

    def read(self, max_count: int, max_bytes: int) -> list[bytes]:
        """Remove and return up to ``max_count`` records from the head, stopping once
        ``max_bytes`` are reached (at least one record, however large)."""
        out: list[bytes] = []
        taken = 0
        while self._count and len(out) < max_count and taken < max_bytes:
            if self._read_file != self._write_file and self._read_offset >= self._sizes.get(
                self._read_file, 0
            ):
                self._next_file()
                continue
            data, base = self._window(max_bytes - taken)
            pos = 0
            while len(out) < max_count and taken < max_bytes and pos + _LEN_SIZE <= len(data):
                (size,) = _LEN.unpack_from(data, pos)
                if pos + _LEN_SIZE + size > len(data):
                    if pos:
                        break  # the rest of the window is cut: read again from there
                    data = self._exact(base, _LEN_SIZE + size)
                out.append(bytes(data[pos + _LEN_SIZE : pos + _LEN_SIZE + size]))
                pos += _LEN_SIZE + size
                taken += size
                self._count -= 1
            self._read_offset = base + pos
        if not self._count:
            self._reset()
        return out

    def _window(self, want: int) -> tuple[bytes | bytearray, int]:
        """Bytes from the read position (up to ``want`` + a header or so), and its offset."""
        offset = self._read_offset
        size = max(want, 4096) + _LEN_SIZE
        if self._read_file == self._write_file:
            if offset >= self._written:
                start = offset - self._written
                return self._buffer[start : start + size], offset
            size = min(size, self._written - offset)
        return self._pread(offset, size), offset

    def _exact(self, offset: int, size: int) -> bytes | bytearray:
        if self._read_file == self._write_file and offset >= self._written:
            start = offset - self._written
            return self._buffer[start : start + size]
        if self._read_file == self._write_file and offset + size > self._written:
            head = self._pread(offset, self._written - offset)
            return head + self._buffer[: offset + size - self._written]
        return self._pread(offset, size)

    def _pread(self, offset: int, size: int) -> bytes:
        if self._reader is None:
            self._reader = self._owner.files.open_read(delta_name(self._number, self._read_file))
        data = self._reader.pread(offset, size)
        self.reads += 1
        if not data:
            raise OSError(f"delta file {delta_name(self._number, self._read_file)} is cut short")
        return data

    def _next_file(self) -> None:
        # The head file is read back completely: it goes.
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._sizes.pop(self._read_file, None)
        self._owner.files.remove(delta_name(self._number, self._read_file))
        self._read_file += 1
        self._read_offset = 0

    def _flush(self) -> None:
        if not self._buffer or self._handle is None:
            return
        data = bytes(self._buffer)
        try:
            self._handle.write(data)
        except OSError:
            # The file may hold half of it: never write there again. What is in the
            # buffer stays there, and so does everything appended from now on.
            self.broken = True
            return
        self._buffer.clear()
        self._written += len(data)

    def _roll(self) -> None:
        if self._handle is not None:
            self._flush()
            if self.broken:
                return
            self._handle.close()
            self._sizes[self._write_file] = self._written
        previous = self._write_file
        number = previous + 1 if previous else self._read_file + 1
        try:
            self._handle = self._owner.files.open_append(delta_name(self._number, number))
        except OSError:
            self._handle = None
            self.broken = True
            if not previous:
                # No file at all: the buffer is the whole delta, read from the start.
                self._write_file = self._read_file = number
                self._written = self._read_offset = 0
            return
        if not previous:
            self._read_file = number
            self._read_offset = 0
        self._write_file = number
        self._written = 0

    def _reset(self) -> None:
        """Everything was read back: delete the files, start afresh at the next append
        (after a failed write too: the disk may have room again)."""
        self._close_files(remove=True)
        self._buffer.clear()
        self.broken = False

    def _close_files(self, *, remove: bool) -> None:
        files = self._owner.files
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        numbers = set(self._sizes)
        if self._write_file:
            numbers.add(self._write_file)
        if remove:
            for number in sorted(numbers):
                with contextlib.suppress(FileNotFoundError):
                    files.remove(delta_name(self._number, number))
        self._sizes.clear()
        self._read_file = self._read_offset = 0
        self._write_file = self._written = 0

    def clear(self) -> None:
        """Drop every record (purge, queue deleted): all of this queue's files go."""
        self._close_files(remove=True)
        self._buffer.clear()
        self._count = 0
        self.broken = False
