"""Open the data directory's durable log at start-up, recover the broker from it, log how.

Rules of this module:
- The data directory holds ``LOCK`` (storage/lock.py; taken by the CLI first), ``log/``,
  the segment files, ``spill/``, the queues' delta files, where ready entries beyond the
  memory budget go (emptied at every start; docs/storage.md "Paging"), and ``streams/``, the
  stream queues' segment files (broker/stream_disk.py), attached before recovery so
  recovered streams reopen theirs; directories of streams that no longer exist are
  removed after it. ``delay-buckets/`` holds the delayed schedules' time buckets
  (storage/delaybuckets.py; not durable: emptied at every start, attached before
  recovery, rebuilt from the log). Anything that makes the
  directory unusable (permissions, an I/O error while recovering) is a ``DataDirError``
  with a message for ``amqpd: error: ...``.
- The recovery report is always logged, as one line with its counts; damage (a torn or
  corrupt tail cut off, segments set aside) is a warning naming what was dropped. An
  empty log (a new data directory) says so (``empty=True``), not ``clean_shutdown=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from amqpd.broker.paging import DEFAULT_BUDGET, Paging
from amqpd.broker.restore import recover
from amqpd.broker.stream import StreamQueue
from amqpd.broker.stream_disk import DiskSegments
from amqpd.storage.delaybuckets import DelayBuckets
from amqpd.storage.delta import DeltaFiles
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.files import OsFiles
from amqpd.storage.lock import DataDirError
from amqpd.storage.streamdirs import OsStreamDirs

if TYPE_CHECKING:
    from amqpd.broker.broker import Broker

log = structlog.get_logger("amqpd.storage")

LOG_DIR = "log"
SPILL_DIR = "spill"
STREAMS_DIR = "streams"
DELAY_BUCKETS_DIR = "delay-buckets"


def open_storage(
    data_dir: Path, broker: Broker, *, memory_budget: int | None = None
) -> DiskDurableLog:
    """Recover ``broker`` from ``data_dir`` (already locked) and return its durable log.

    Also gives the broker its memory budget for ready message bodies (``memory_budget``
    bytes; None: ``paging.DEFAULT_BUDGET``).
    """
    directory = data_dir / LOG_DIR
    try:
        directory.mkdir(exist_ok=True)
        durable = DiskDurableLog.open(OsFiles(directory))
        broker.attach_stream_dirs(OsStreamDirs(data_dir / STREAMS_DIR))
        buckets_dir = data_dir / DELAY_BUCKETS_DIR
        buckets_dir.mkdir(exist_ok=True)
        broker.attach_delay_buckets(DelayBuckets(OsFiles(buckets_dir)))
        logged_queues = list(durable.catalog.queues)  # before restore changes anything
        spill_dir = data_dir / SPILL_DIR
        spill_dir.mkdir(exist_ok=True)
        budget = DEFAULT_BUDGET if memory_budget is None else memory_budget
        # Before the restore: a recovered backlog beyond the budget goes to the queues'
        # delta files as it is enqueued, so a restart fits in the same RAM as the run.
        broker.attach_paging(Paging(budget, log=durable, deltas=DeltaFiles(OsFiles(spill_dir))))
        restored = recover(broker, durable)
        stale_streams = broker.remove_stale_stream_dirs(logged_queues)
    except OSError as exc:
        raise DataDirError(f"cannot use data directory {data_dir}: {exc}") from None
    report = durable.report
    # Zero counts and absent damage say nothing; whether the last stop was clean always does.
    fields = {
        k: v for k, v in report.fields().items() if k == "clean_shutdown" or v not in (None, [], 0)
    }
    if report.damaged:
        log.warning("recovered data directory after cutting off a damaged tail", **fields)
    elif report.empty:
        # No CleanShutdown record because no stop was ever recorded, not because of a
        # crash: clean_shutdown=False here would read as one.
        log.info("recovered data directory: empty, a new data directory (not a crash)", empty=True)
    else:
        log.info("recovered data directory", **fields)
    for what in restored.skipped:
        log.warning("could not restore", what=what)
    for vhost in broker.vhosts.values():
        for queue in vhost.queues.values():
            store = queue.log.store if isinstance(queue, StreamQueue) else None
            if isinstance(store, DiskSegments) and store.report.damaged:
                fields = {k: v for k, v in store.report.fields().items() if v not in (None, [], 0)}
                log.warning(
                    "recovered stream after cutting off a damaged tail",
                    vhost=vhost.name,
                    queue=queue.name,
                    **fields,
                )
    for vhost_dir, queue_dir in stale_streams:
        log.info(
            "removed the segment files of a stream that no longer exists",
            vhost=vhost_dir,
            queue=queue_dir,
        )
    return durable
