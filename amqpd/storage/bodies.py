"""Message bodies kept on disk instead of in memory: reading them back, and the spill files.

Rules of this module (docs/storage.md "Paging"):
- A paged-out body is in one of two places. The segment log, for a persistent message all
  of whose queues are durable: its ``MessagePublished`` record holds the body, and the
  catalog pins that segment while any durable queue holds the message, so reclamation can
  never delete a body still referenced. The spill files, for every other message
  (transient ones, or persistent ones also routed to a non-durable queue, whose copy the
  log would not keep alive).
- A body's place is one int, ``location(file number, offset)``: one small object per paged
  message instead of a tuple.
- Reads are synchronous ``pread`` on the caller's (trio) thread: the core never awaits.
  A page-cache hit costs a few microseconds; a backlog drained in order is one ``pread``
  per ``READ_AHEAD`` window, served from the window after that (a one-window cache per
  reader). Files only ever grow at the end, so a cached window never goes stale.
- Spill files are not fsynced (nothing in them is promised to survive a restart: they hold
  only what RabbitMQ would lose in a restart too), are all removed when the store opens,
  and are written in buffered chunks; a read of bytes still in the buffer is served from
  it. Each file has a count of the live bodies in it; a file other than the one being
  written is deleted when its count drops to zero, so spill disk use tracks the spilled
  backlog, as the log's reclamation does.
"""

from __future__ import annotations

from collections.abc import Callable

from amqpd.storage.files import AppendFile, FileLayer, ReadFile

READ_AHEAD = 128 * 1024
SPILL_FILE_SIZE = 64 * 1024 * 1024
SPILL_BUFFER = 256 * 1024
SPILL_SUFFIX = ".spill"
_SHIFT = 40  # offsets below 1 TiB; segments are 8 MiB, spill files 64 MiB
_MASK = (1 << _SHIFT) - 1
LOCATION_SHIFT = _SHIFT
_MAX_OPEN = 64


def location(number: int, offset: int) -> int:
    return number << _SHIFT | offset


def file_of(where: int) -> int:
    """The file (segment) number of a ``location``."""
    return where >> _SHIFT


def spill_name(number: int) -> str:
    return f"{number:08d}{SPILL_SUFFIX}"


class BodyReader:
    """Reads bodies at ``location``s in the files of one directory, with read-ahead."""

    def __init__(self, files: FileLayer, name_of: Callable[[int], str]) -> None:
        self._files = files
        self._name_of = name_of
        self._open: dict[int, ReadFile] = {}
        self._window_file = -1
        self._window_start = 0
        self._window = b""
        self.reads = 0  # preads issued (statistics, tests)

    def read(self, where: int, size: int, *, ahead: bool = True) -> bytes:
        """``size`` bytes at ``where``; ``ahead=False`` reads just those (a random read
        whose neighbours are not wanted next), still served from the window if there."""
        number = where >> _SHIFT
        offset = where & _MASK
        if number == self._window_file:
            start = offset - self._window_start
            if start >= 0 and start + size <= len(self._window):
                return self._window[start : start + size]
        handle = self._open.get(number)
        if handle is None:
            if len(self._open) >= _MAX_OPEN:
                self._open.pop(next(iter(self._open))).close()
            handle = self._open[number] = self._files.open_read(self._name_of(number))
        data = handle.pread(offset, max(size, READ_AHEAD) if ahead else size)
        self.reads += 1
        if len(data) < size:
            raise OSError(f"paged body of {size} bytes at {offset} of file {number} is cut short")
        if not ahead:
            return data
        self._window_file, self._window_start, self._window = number, offset, data
        return data[:size]

    def forget(self, number: int) -> None:
        """File ``number`` was deleted: close it, drop its window."""
        handle = self._open.pop(number, None)
        if handle is not None:
            handle.close()
        if self._window_file == number:
            self._window_file, self._window = -1, b""

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()
        self._window_file, self._window = -1, b""


class SpillFiles:
    """Where bodies of messages the log does not keep go when they are paged out."""

    def __init__(
        self,
        files: FileLayer,
        *,
        file_size: int = SPILL_FILE_SIZE,
        buffer_size: int = SPILL_BUFFER,
    ) -> None:
        for name in files.list():
            if name.endswith(SPILL_SUFFIX):
                files.remove(name)  # a previous run's: nothing in it is alive any more
        self._files = files
        self._file_size = file_size
        self._buffer_size = buffer_size
        self._reader = BodyReader(files, spill_name)
        self._number = 0
        self._handle: AppendFile | None = None
        self._written = 0  # bytes of the current file already written out
        self._buffer = bytearray()
        self._live: dict[int, int] = {}
        self.bytes_spilled = 0
        self.broken = False

    @property
    def files(self) -> int:
        return len(self._live)

    def write(self, body: bytes) -> int:
        """Spill ``body``; returns its location. OSError (disk full): keep it in memory."""
        if self.broken:
            raise OSError("an earlier write to the spill files failed")
        end = self._written + len(self._buffer)
        if self._handle is None or (end and end + len(body) > self._file_size):
            self._roll()
            end = 0
        where = location(self._number, end)
        self._buffer += body
        self._live[self._number] += 1
        if len(self._buffer) >= self._buffer_size:
            self._flush()
        self.bytes_spilled += len(body)
        return where

    def read(self, where: int, size: int) -> bytes:
        offset = where & _MASK
        if where >> _SHIFT == self._number and offset >= self._written:
            start = offset - self._written
            return bytes(self._buffer[start : start + size])
        return self._reader.read(where, size)

    def release(self, where: int) -> None:
        """The message whose body is at ``where`` is gone."""
        number = where >> _SHIFT
        left = self._live.get(number, 0) - 1
        if left > 0 or number == self._number:
            self._live[number] = max(left, 0)
            return
        self._live.pop(number, None)
        self._reader.forget(number)
        self._files.remove(spill_name(number))

    def _flush(self) -> None:
        if self._buffer and self._handle is not None:
            data = bytes(self._buffer)
            try:
                self._handle.write(data)
            except OSError:
                # The file may hold half of it: never write there again. What is in the
                # buffer stays there and is read from there; nothing more is spilled.
                self.broken = True
                raise
            self._buffer.clear()
            self._written += len(data)

    def _roll(self) -> None:
        old = self._number
        if self._handle is not None:
            self._flush()
            self._handle.close()
            if not self._live.get(old):
                self._live.pop(old, None)
                self._reader.forget(old)
                self._files.remove(spill_name(old))
        self._number = old + 1
        self._handle = self._files.open_append(spill_name(self._number))
        self._written = 0
        self._live[self._number] = 0

    def close(self) -> None:
        """Stop: every spill file goes (transient messages do not outlive the process)."""
        self._reader.close()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        for number in list(self._live):
            self._files.remove(spill_name(number))
        self._live.clear()
        self._buffer.clear()
