"""The group-commit persister: one fsync per batch, callbacks in order after it, failures
stop the broker."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import trio
import trio.testing

from amqpd.server import ListenAddress, run_broker
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
        # Until the persister has taken the batch and waits for its write in the thread.
        await trio.testing.wait_all_tasks_blocked()
        assert not log.sync_needed
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


async def _broker(factory: object, log: DiskDurableLog, task_status: Any) -> None:
    await run_broker(
        None,
        [ListenAddress("127.0.0.1", 0)],
        connection_factory=factory,  # type: ignore[arg-type]
        durable_log=log,
        task_status=task_status,
    )


async def test_run_broker_closes_the_log_cleanly_on_shutdown_and_stops_on_failure(
    fake_connections,
) -> None:
    """run_broker with a durable log: a graceful stop ends in a clean-shutdown record; a
    storage failure ends run_broker with StorageFailure (the CLI's exit 1)."""
    factory, _ = fake_connections
    files = FakeFiles()
    log = _log(files)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(_broker, factory, log)
            _publish(log, 1)
            os.kill(os.getpid(), signal.SIGTERM)
    assert DiskDurableLog.open(files).report.clean_shutdown

    files = FakeFiles()
    log = _log(files)
    with trio.fail_after(20), pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(_broker, factory, log)
            files.fail_at = files.ops + 1
            _publish(log, 1)
    assert info.value.subgroup(StorageFailure) is not None
    files.crash()
    assert not DiskDurableLog.open(files).report.clean_shutdown
