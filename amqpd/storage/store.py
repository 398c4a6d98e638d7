"""The message store interface the broker writes persistent messages through.

Rules of this module:
- Keys are integers the caller chooses (a message id); values are opaque bytes (the
  caller's encoding of the message). The store knows nothing about queues or AMQP.
- ``sync()`` is the durability point: after it returns, every earlier ``put``/``delete``
  survives a crash. The in-memory store has nothing to sync; the durability issue adds a
  disk store (segment log) behind the same interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class MessageStore(Protocol):
    def put(self, key: int, data: bytes) -> None:
        """Store ``data`` under ``key`` (a key is written once)."""
        ...

    def get(self, key: int) -> bytes | None: ...

    def delete(self, key: int) -> None:
        """Forget ``key``; deleting a missing key is a no-op."""
        ...

    def sync(self) -> None: ...

    def keys(self) -> Iterator[int]: ...

    def __len__(self) -> int: ...


class MemoryStore:
    """A MessageStore in a dict: for transient messages and tests."""

    def __init__(self) -> None:
        self._data: dict[int, bytes] = {}

    def put(self, key: int, data: bytes) -> None:
        if key in self._data:
            raise KeyError(f"key {key} already stored")
        self._data[key] = data

    def get(self, key: int) -> bytes | None:
        return self._data.get(key)

    def delete(self, key: int) -> None:
        self._data.pop(key, None)

    def sync(self) -> None:
        return None

    def keys(self) -> Iterator[int]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)
