"""The resource monitor: measures memory and free disk, feeds ``Alarms``, blocks publishers.

Rules of this module (docs/internals.md "server/"):
- ``run_resource_monitor(alarms, server, measure)`` is one task beside the server: every
  ``interval`` seconds it calls ``measure()`` (injectable: tests pass fakes, no real
  memory pressure), feeds ``alarms.update`` and, when the set of alarms changed, hands the
  new reason to every connection (``Server.apply_alarm``); the server hands it to each new
  connection as it opens. RabbitMQ checks memory every ``memory_monitor_interval``
  (2.5 s by default) and disk between every 0.1 and 10 s depending on the free space; one
  second is within both.
- ``system_measure(data_dir)`` is the real source: the process's resident set size from
  ``/proc/self/statm`` (resource.getrusage's peak RSS where there is no /proc) and the
  free bytes of the data directory's file system from ``os.statvfs`` (``f_bavail``: what an
  unprivileged process may still write, as RabbitMQ's disk monitor uses ``df``).
- ``memory_limit(fraction)`` is ``vm_memory_high_watermark`` times total RAM
  (``SC_PHYS_PAGES``; a cgroup limit is not looked at).
- ``raise_fd_limit()`` runs once at start: every connection costs one file descriptor, and
  many systems start processes with a soft limit of 1024 while allowing far more (the hard
  limit), so amqpd raises its soft limit to the hard one, as RabbitMQ's packaging does with
  ``LimitNOFILE``. Raising the hard limit needs the administrator (README "File
  descriptors"); the figure is logged so a refused connection storm is explainable.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import structlog
import trio

if TYPE_CHECKING:
    from amqpd.broker.alarms import Alarms
    from amqpd.server.server import Server

log = structlog.get_logger("amqpd.resources")

CHECK_INTERVAL = 1.0


class Measurement(NamedTuple):
    memory_used: int | None  # bytes (RSS); None: could not measure
    disk_free: int | None  # bytes free on the data directory's file system


Measure = Callable[[], Measurement]


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit(fraction: float) -> int:
    return int(fraction * total_memory())


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (old soft, new soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if wanted <= soft:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        # Some platforms (macOS) refuse values above OPEN_MAX: keep what we have.
        return soft, soft
    return soft, wanted


def resident_memory() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def system_measure(data_dir: Path) -> Measure:
    def measure() -> Measurement:
        try:
            st = os.statvfs(data_dir)
            free: int | None = st.f_bavail * st.f_frsize
        except OSError:
            free = None
        return Measurement(resident_memory(), free)

    return measure


async def run_resource_monitor(
    alarms: Alarms, server: Server, measure: Measure, *, interval: float = CHECK_INTERVAL
) -> None:
    server.alarms = alarms
    while True:
        measured = measure()
        if alarms.update(memory_used=measured.memory_used, disk_free=measured.disk_free):
            reason = alarms.reason
            if reason is None:
                log.info("resource alarm cleared; unblocking publishers")
            else:
                log.warning(
                    "resource alarm set; blocking publishers",
                    reason=reason,
                    memory_used=alarms.memory_used,
                    memory_limit=alarms.memory_limit,
                    disk_free=alarms.disk_free,
                    disk_free_limit=alarms.disk_free_limit,
                )
            server.apply_alarm(reason)
        await trio.sleep(interval)
