"""An in-memory ``FileLayer`` that fails on demand and loses what a crash would lose.

Rules of this module (a test double, kept in the package so every layer's tests can use it):
- It models what POSIX promises and no more: a file's bytes survive a crash only up to its
  last ``sync()``; a file's creation, rename or removal survives only after ``sync_dir()``.
  ``crash()`` throws away everything else, optionally keeping a torn prefix of the unsynced
  bytes of each file (a write the disk had half done).
- Every mutating operation is numbered (``ops``). With ``fail_at=N`` operation N raises
  ``OSError(EIO)``; a failing ``write`` first appends half its bytes (a short write), so the
  engine must never trust a file after a failed write.
"""

from __future__ import annotations

import errno
from collections.abc import Callable


class _Inode:
    __slots__ = ("data", "synced")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = b""


class _FakeAppendFile:
    __slots__ = ("_closed", "_files", "_inode")

    def __init__(self, files: FakeFiles, inode: _Inode) -> None:
        self._files = files
        self._inode = inode
        self._closed = False

    def write(self, data: bytes) -> None:
        assert not self._closed, "write to a closed file"
        if self._files._tick():
            self._inode.data += data[: len(data) // 2]
            raise OSError(errno.EIO, "injected write failure")
        self._inode.data += data

    def sync(self) -> None:
        assert not self._closed, "sync of a closed file"
        self._files._fail_if_due("fsync")
        self._files.fsyncs += 1
        self._inode.synced = bytes(self._inode.data)

    def close(self) -> None:
        self._closed = True


class _FakeReadFile:
    __slots__ = ("_inode",)

    def __init__(self, inode: _Inode) -> None:
        self._inode = inode

    def pread(self, offset: int, size: int) -> bytes:
        # Reads are not numbered operations: they change nothing a crash could lose.
        return bytes(self._inode.data[offset : offset + size])

    def close(self) -> None:
        pass


class FakeFiles:
    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.ops = 0
        self.fsyncs = 0
        self._dir: dict[str, _Inode] = {}
        self._durable_dir: dict[str, _Inode] = {}

    # -- failure injection and crashes ------------------------------------------------------
    def _tick(self) -> bool:
        self.ops += 1
        return self.fail_at is not None and self.ops == self.fail_at

    def _fail_if_due(self, what: str) -> None:
        if self._tick():
            raise OSError(errno.EIO, f"injected {what} failure")

    def crash(self, torn: Callable[[str, int], int] | None = None) -> None:
        """Lose what a power cut loses. ``torn(name, unsynced_len)`` says how many of a
        file's unsynced bytes made it anyway (default none)."""
        self._dir = dict(self._durable_dir)
        for name, inode in self._dir.items():
            unsynced = bytes(inode.data[len(inode.synced) :])
            if not inode.data.startswith(inode.synced):
                unsynced = b""
            keep = torn(name, len(unsynced)) if torn is not None and unsynced else 0
            inode.data = bytearray(inode.synced + unsynced[:keep])
            inode.synced = bytes(inode.data)
        self.fail_at = None

    # -- FileLayer --------------------------------------------------------------------------
    def list(self) -> list[str]:
        return sorted(self._dir)

    def read(self, name: str) -> bytes:
        inode = self._dir.get(name)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", name)
        return bytes(inode.data)

    def open_append(self, name: str) -> _FakeAppendFile:
        inode = self._dir.get(name)
        if inode is None:
            self._fail_if_due("create")
            inode = self._dir[name] = _Inode()
        return _FakeAppendFile(self, inode)

    def open_read(self, name: str) -> _FakeReadFile:
        inode = self._dir.get(name)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", name)
        return _FakeReadFile(inode)

    def truncate(self, name: str, size: int) -> None:
        self._fail_if_due("truncate")
        inode = self._dir[name]
        del inode.data[size:]
        inode.synced = bytes(inode.data)

    def rename(self, name: str, new_name: str) -> None:
        self._fail_if_due("rename")
        self._dir[new_name] = self._dir.pop(name)

    def remove(self, name: str) -> None:
        self._fail_if_due("remove")
        if self._dir.pop(name, None) is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", name)

    def sync_dir(self) -> None:
        self._fail_if_due("directory fsync")
        self._durable_dir = dict(self._dir)

    # -- test helpers -----------------------------------------------------------------------
    def write_raw(self, name: str, data: bytes) -> None:
        """Put a file on "disk" as is (durably): for corruption tests."""
        inode = _Inode()
        inode.data = bytearray(data)
        inode.synced = bytes(data)
        self._dir[name] = self._durable_dir[name] = inode
