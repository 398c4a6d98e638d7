"""Where stream queues keep their segment files: one directory per stream.

Rules of this module (docs/storage.md "Stream segment files"):
- Each stream queue has its own directory ``<data-dir>/streams/<vhost>/<queue>/``, both
  names escaped by ``escape_name`` (percent-encoding of every byte outside ``[A-Za-z0-9_-]``,
  so "/" is ``%2F`` and "." or ".." can never be a path step; a name whose escape would be
  longer than 200 characters becomes ``~`` + the SHA-256 of its UTF-8 bytes in hex).
- ``StreamDirs.files`` gives a stream's directory as a ``FileLayer`` (created if missing),
  so the stream's segments go through the file layer like the main log's; ``remove`` deletes
  the directory and everything in it; ``names`` lists the streams present (for removing
  directories of streams that no longer exist).
- ``FakeStreamDirs`` keeps a ``FakeFiles`` per stream, for tests.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.parse
from pathlib import Path
from typing import Protocol

from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.files import FileLayer, OsFiles

_MAX_ESCAPED = 200


def escape_name(name: str) -> str:
    """A file-system-safe, reversible (up to the hash fallback) directory name."""
    escaped = urllib.parse.quote(name, safe="-_").replace(".", "%2E").replace("~", "%7E")
    if not escaped:
        return "%"  # the empty name (the default vhost is "/", never empty, but be safe)
    if len(escaped) > _MAX_ESCAPED:
        return "~" + hashlib.sha256(name.encode("utf-8")).hexdigest()
    return escaped


class StreamDirs(Protocol):
    def files(self, vhost: str, queue: str) -> FileLayer:
        """The stream's directory (created if missing)."""
        ...

    def remove(self, vhost: str, queue: str) -> None:
        """Delete the stream's directory and its files (nothing if there is none)."""
        ...

    def names(self) -> list[tuple[str, str]]:
        """The escaped (vhost, queue) names of the stream directories present."""
        ...

    def remove_escaped(self, vhost: str, queue: str) -> None:
        """``remove`` for a pair ``names`` gave."""
        ...


class OsStreamDirs:
    """Stream directories under ``root`` (``<data-dir>/streams``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, vhost: str, queue: str) -> Path:
        return self.root / escape_name(vhost) / escape_name(queue)

    def files(self, vhost: str, queue: str) -> FileLayer:
        path = self._path(vhost, queue)
        path.mkdir(parents=True, exist_ok=True)
        return OsFiles(path)

    def remove(self, vhost: str, queue: str) -> None:
        shutil.rmtree(self._path(vhost, queue), ignore_errors=True)

    def names(self) -> list[tuple[str, str]]:
        if not self.root.is_dir():
            return []
        return sorted(
            (v.name, q.name)
            for v in self.root.iterdir()
            if v.is_dir()
            for q in v.iterdir()
            if q.is_dir()
        )

    def remove_escaped(self, vhost: str, queue: str) -> None:
        shutil.rmtree(self.root / vhost / queue, ignore_errors=True)


class FakeStreamDirs:
    """In-memory stream directories for tests: a ``FakeFiles`` per stream."""

    def __init__(self) -> None:
        self.dirs: dict[tuple[str, str], FakeFiles] = {}

    def files(self, vhost: str, queue: str) -> FakeFiles:
        key = (escape_name(vhost), escape_name(queue))
        files = self.dirs.get(key)
        if files is None:
            files = self.dirs[key] = FakeFiles()
        return files

    def remove(self, vhost: str, queue: str) -> None:
        self.dirs.pop((escape_name(vhost), escape_name(queue)), None)

    def names(self) -> list[tuple[str, str]]:
        return sorted(self.dirs)

    def remove_escaped(self, vhost: str, queue: str) -> None:
        self.dirs.pop((vhost, queue), None)
