"""amqpd storage layer (see docs/internals.md and docs/storage.md).

Synchronous and trio-free: file I/O goes through a ``FileLayer`` (files.py); the server's
persister runs the fsync step in a worker thread.
"""

from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.durable import NULL_LOG, DurableLog, NullDurableLog
from amqpd.storage.files import FileLayer, OsFiles
from amqpd.storage.lock import DataDirError, DataDirLock, lock_data_dir
from amqpd.storage.log import StorageBroken
from amqpd.storage.recovery import RecoveryReport
from amqpd.storage.store import MemoryStore, MessageStore

__all__ = [
    "NULL_LOG",
    "DataDirError",
    "DataDirLock",
    "DiskDurableLog",
    "DurableLog",
    "FileLayer",
    "MemoryStore",
    "MessageStore",
    "NullDurableLog",
    "OsFiles",
    "RecoveryReport",
    "StorageBroken",
    "lock_data_dir",
]
