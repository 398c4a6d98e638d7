"""Alarms: RabbitMQ's memory and free-disk resource alarms, as a state machine fed numbers.

Rules of this module (docs/internals.md "broker/", RabbitMQ docs "Memory and Disk Alarms"):
- Sans-I/O: the server measures (process RSS, free bytes on the data directory's file
  system) and calls ``update``; this object only compares and remembers. Tests feed it
  made-up numbers.
- The memory alarm is on while the memory used is above ``memory_limit``
  (``vm_memory_high_watermark`` times total RAM; rabbit vm_memory_monitor sets the alarm when
  used > limit and clears it when used < limit, no hysteresis). The disk alarm is on while
  the free bytes are below ``disk_free_limit`` (rabbit_disk_monitor: free < limit). A
  limit of None turns that alarm off for good; a measurement of None (could not measure)
  leaves that alarm as it was.
- ``reason`` is the text of connection.blocked, exactly rabbit_reader:blocked_by_message/1:
  ``"low on " ++ join(" & ", [memory | disk])``, so "low on memory", "low on disk" or
  "low on memory & disk"; None when no alarm is on. The server hands it to every
  connection (``Connection.set_blocked``), which blocks only those that publish.
"""

from __future__ import annotations

MEMORY = "memory"
DISK = "disk"


class Alarms:
    def __init__(self, *, memory_limit: int | None, disk_free_limit: int | None) -> None:
        self.memory_limit = memory_limit
        self.disk_free_limit = disk_free_limit
        self._on: set[str] = set()
        self.memory_used: int | None = None
        self.disk_free: int | None = None

    @property
    def active(self) -> frozenset[str]:
        """The alarms that are on (``MEMORY``, ``DISK``)."""
        return frozenset(self._on)

    @property
    def reason(self) -> str | None:
        if not self._on:
            return None
        return "low on " + " & ".join(r for r in (MEMORY, DISK) if r in self._on)

    def update(self, *, memory_used: int | None = None, disk_free: int | None = None) -> bool:
        """Take new measurements; True when the set of alarms on changed."""
        before = set(self._on)
        if memory_used is not None:
            self.memory_used = memory_used
            limit = self.memory_limit
            if limit is not None and memory_used > limit:
                self._on.add(MEMORY)
            elif limit is None or memory_used < limit:
                self._on.discard(MEMORY)
        if disk_free is not None:
            self.disk_free = disk_free
            limit = self.disk_free_limit
            if limit is not None and disk_free < limit:
                self._on.add(DISK)
            else:
                self._on.discard(DISK)
        return self._on != before
