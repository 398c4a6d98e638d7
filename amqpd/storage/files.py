"""The file layer: the only place the storage engine touches the file system.

Rules of this module:
- The engine (segment log, recovery, lock) does every file operation through a ``FileLayer``
  so tests can swap in ``FakeFiles`` (fakefiles.py), which injects a failure at any write /
  fsync / directory boundary and simulates a crash (unsynced data lost or torn).
- Names are plain file names inside one directory (the data directory); no paths, no
  sub-directories. Durability points are explicit: ``AppendFile.sync()`` makes a file's
  bytes durable, ``sync_dir()`` makes creations, renames and removals durable.
- Errors are ``OSError``s, as the OS raises them; the engine decides what they mean.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class AppendFile(Protocol):
    """A file opened for appending (created if missing)."""

    def write(self, data: bytes) -> None:
        """Append all of ``data`` (not yet durable)."""
        ...

    def sync(self) -> None:
        """fsync: every byte written so far survives a crash."""
        ...

    def close(self) -> None: ...


class ReadFile(Protocol):
    """A file opened for reading at offsets (paged message bodies, storage/bodies.py)."""

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the file)."""
        ...

    def close(self) -> None: ...


class FileLayer(Protocol):
    def list(self) -> list[str]:
        """Names of the files in the directory."""
        ...

    def read(self, name: str) -> bytes: ...

    def open_append(self, name: str) -> AppendFile: ...

    def open_read(self, name: str) -> ReadFile: ...

    def truncate(self, name: str, size: int) -> None:
        """Cut ``name`` to ``size`` bytes, durably (the engine calls it during recovery)."""
        ...

    def rename(self, name: str, new_name: str) -> None: ...

    def remove(self, name: str) -> None: ...

    def sync_dir(self) -> None:
        """fsync the directory: creations, renames and removals so far are durable."""
        ...


class _OsAppendFile:
    __slots__ = ("_fd",)

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def sync(self) -> None:
        # fdatasync is enough: we need the data and the file size, not the timestamps.
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _OsReadFile:
    __slots__ = ("_fd",)

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)

    def pread(self, offset: int, size: int) -> bytes:
        # Synchronous, on the trio thread: the core never awaits (docs/storage.md "Paging").
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsFiles:
    """The real file layer over one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def list(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    def read(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def open_append(self, name: str) -> AppendFile:
        return _OsAppendFile(self.directory / name)

    def open_read(self, name: str) -> ReadFile:
        return _OsReadFile(self.directory / name)

    def truncate(self, name: str, size: int) -> None:
        fd = os.open(self.directory / name, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, name: str, new_name: str) -> None:
        os.replace(self.directory / name, self.directory / new_name)

    def remove(self, name: str) -> None:
        os.remove(self.directory / name)

    def sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
