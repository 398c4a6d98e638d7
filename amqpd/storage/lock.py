"""The data directory lock: one amqpd per data directory.

Rules of this module:
- ``lock_data_dir`` takes an exclusive ``fcntl.flock`` on ``<dir>/LOCK`` without waiting and
  keeps the file open for the life of the process; the kernel drops the lock when the
  process dies, however it dies, so a crash never leaves a stale lock behind.
- The holder's pid is written into the file so the error names who holds it.
- Failure is ``DataDirError`` with a message fit for ``amqpd: error: ...``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = "LOCK"


class DataDirError(Exception):
    """The data directory cannot be used; the message says why, for the user."""


class DataDirLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def lock_data_dir(directory: Path) -> DataDirLock:
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataDirError(f"cannot use data directory {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = b""
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 32, 0).strip()
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            who = f" (pid {holder.decode(errors='replace')})" if holder else ""
            raise DataDirError(
                f"data directory {directory} is in use by another amqpd{who}"
            ) from None
        raise DataDirError(f"cannot lock data directory {directory}: {exc.strerror}") from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(fd, path)
