"""The group-commit persister: one task that writes and fsyncs the durable log in batches.

Rules of this module (docs/storage.md "Group commit"):
- Sleeps until the log says records are buffered (``on_sync_needed``), then takes the whole
  buffer as one batch, writes and fsyncs it in a worker thread (the trio thread keeps
  serving and appending to the next batch meanwhile), and back on the trio thread runs the
  batch's ``after_commit`` callbacks in order: confirms and tx.commit-oks go out then.
  While one fsync runs, the next batch grows: confirmed throughput is not bounded by fsync
  latency.
- A batch, once taken, is finished even if the persister is cancelled (shielded), so a
  shutdown never leaves the log half-committed in memory.
- A failed write or fsync is fatal to the broker (``StorageFailure``): we no longer know
  what is on disk, and confirming anything more would be a lie. The next start recovers.
"""

from __future__ import annotations

import structlog
import trio

from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.durable import run_callbacks

log = structlog.get_logger("amqpd.storage")


class StorageFailure(Exception):
    """Writing the data directory failed; the broker must stop."""


async def run_persister(
    durable: DiskDurableLog, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    wake = trio.Event()
    durable.on_sync_needed = wake.set
    task_status.started()
    try:
        while True:
            if not durable.sync_needed:
                await wake.wait()
            wake = trio.Event()
            durable.on_sync_needed = wake.set
            with trio.CancelScope(shield=True):
                await _commit_once(durable)
    finally:
        durable.on_sync_needed = None


async def _commit_once(durable: DiskDurableLog) -> None:
    batch = durable.prepare_commit()
    if batch is None:
        return
    try:
        await trio.to_thread.run_sync(batch.write)
        due = durable.complete_commit(batch)
    except OSError as exc:
        log.error("writing the data directory failed; stopping", error=str(exc))
        raise StorageFailure(f"writing the data directory failed: {exc}") from exc
    run_callbacks(due)
