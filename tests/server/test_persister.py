"""The group-commit persister: one fsync per batch, callbacks in order after it, failures
stop the broker."""

from __future__ import annotations

import pytest
import trio

from amqpd.server.persister import StorageFailure, run_persister
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles


def _log(files: FakeFiles) -> DiskDurableLog:
    log = DiskDurableLog.open(files)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    log.commit()
    return log


def _publish(log: DiskDurableLog, n: int) -> None:
    log.message_published("/", ["q"], "", "q", b"\x00\x00", b"%d" % n)


async def test_a_burst_is_one_fsync_and_callbacks_run_in_order() -> None:
    files = FakeFiles()
    log = _log(files)
    done: list[int] = []
    all_done = trio.Event()
    before = files.fsyncs
    async with trio.open_nursery() as nursery:
        await nursery.start(run_persister, log)
        for i in range(50):
            _publish(log, i)
            log.after_commit(lambda i=i: done.append(i))  # type: ignore[misc]
        log.after_commit(lambda: all_done.set())  # type: ignore[func-returns-value]
        with trio.fail_after(10):
            await all_done.wait()
        nursery.cancel_scope.cancel()
    assert done == list(range(50))
    assert files.fsyncs - before == 1
    assert log.log.committed_token == log.log.last_token


async def test_appends_during_a_write_go_to_the_next_batch() -> None:
    files = FakeFiles()
    log = _log(files)
    order: list[str] = []
    second = trio.Event()
    before = files.fsyncs
    async with trio.open_nursery() as nursery:
        await nursery.start(run_persister, log)
        _publish(log, 1)
        log.after_commit(lambda: order.append("first"))  # type: ignore[func-returns-value]
        # Let the persister take the first batch (trio may run other tasks first: it
        # shuffles its run queue, so one checkpoint is not always enough).
        with trio.fail_after(10):
            while log.sync_needed:
                await trio.lowlevel.checkpoint()
        _publish(log, 2)
        log.after_commit(lambda: order.append("second") or second.set())  # type: ignore[func-returns-value]
        with trio.fail_after(10):
            await second.wait()
        nursery.cancel_scope.cancel()
    assert order == ["first", "second"]
    assert files.fsyncs - before == 2  # two batches


async def test_follow_ups_run_once_per_batch() -> None:
    log = _log(FakeFiles())
    flushes: list[None] = []
    ran = trio.Event()

    def flush() -> None:
        flushes.append(None)
        ran.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(run_persister, log)
        for i in range(10):
            _publish(log, i)
            log.after_commit(lambda: flush)
        with trio.fail_after(10):
            await ran.wait()
        nursery.cancel_scope.cancel()
    assert len(flushes) == 1


async def test_a_failed_fsync_stops_the_persister_with_storage_failure() -> None:
    files = FakeFiles()
    log = _log(files)
    confirmed: list[None] = []
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_persister, log)
            files.fail_at = files.ops + 2  # the data write succeeds, the fsync fails
            _publish(log, 1)
            log.after_commit(lambda: confirmed.append(None))  # type: ignore[func-returns-value]
    assert info.value.subgroup(StorageFailure) is not None
    assert confirmed == []  # never confirmed what may not be on disk
    assert log.log.broken
