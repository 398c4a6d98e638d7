"""amqpd storage layer (see docs/internals.md)."""

from amqpd.storage.store import MemoryStore, MessageStore

__all__ = ["MemoryStore", "MessageStore"]
