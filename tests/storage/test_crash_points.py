"""Crash at every write and fsync boundary: what commit() promised is always recovered.

The workload is scripted; a first run counts its file operations, then it is run once per
operation with that operation failing (a failing write first writes half its bytes), the
"machine" crashes (unsynced bytes lost, or torn, or luckily all kept) and the log reopens.
Invariant: the recovered state is the state after some prefix of the operations that is
at least as long as the last commit() that returned: every committed record exactly once,
in order, and nothing that was not appended.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.log import SegmentLog
from amqpd.storage.recovery import recover_segments

from .model import Known, Linearized, Op, matching_prefix, recovered_state

SEGMENT_SIZE = 400  # small: the workload rolls over and reclaims segments many times
IN_FLIGHT = 4  # ops appended while a split commit's batch is being written


def _script() -> list[Op | str]:
    steps: list[Op | str] = [("declare", "a"), ("declare", "b"), "commit"]
    for i in range(40):
        msg = i + 1
        steps.append(("publish", msg, ("a", "b") if i % 3 == 0 else ("a",)))
        if i % 4 == 1:
            steps.append(("deliver", "a", msg - 1))
            steps.append(("remove", "a", msg - 1))
        elif i % 4 == 3:
            # The broker's acks: one-message settlements, their records batched per queue
            # until the commit (a marker removed meanwhile is never written).
            steps.append(("deliver1", "a", msg - 1))
            steps.append(("deliver1", "a", msg))
            steps.append(("remove1", "a", msg - 1))
        if i % 5 == 4:
            steps.append(("remove1" if i % 10 == 9 else "remove", "b", msg - 4))
        if i == 15:
            steps += [("delete", "b"), ("declare", "b")]
        if i % 3 == 2:
            steps.append("commit")
        elif i % 4 == 1:
            # As the server's persister does it: the next ops arrive while the batch is
            # being written, and belong to the next batch.
            steps.append("split")
    steps.append("commit")
    return steps


SCRIPT = _script()


def _run(files: FakeFiles) -> tuple[list[Op], int, bool]:
    """Run the script until it ends or an injected failure; (ops appended, ops committed,
    failed)."""
    linear = Linearized()
    ops = linear.ops
    committed = 0
    try:
        log = DiskDurableLog.open(files, segment_size=SEGMENT_SIZE)
        known = Known(log)
        split = None
        split_at = in_flight = 0
        for step in SCRIPT:
            if split is not None and not isinstance(step, tuple):
                split.write()
                log.complete_commit(split)
                committed, split = split_at, None
            if step == "commit":
                linear.flush()
                log.commit()
                committed = len(ops)
            elif step == "split":
                linear.flush()
                split = log.prepare_commit()
                split_at, in_flight = len(ops), 0
            else:
                assert isinstance(step, tuple)
                linear.do(known, step)
                in_flight += 1
                if split is not None and in_flight == IN_FLIGHT:
                    split.write()
                    log.complete_commit(split)
                    committed, split = split_at, None
    except OSError:
        return ops, committed, True
    return ops, committed, False


def _count_ops() -> int:
    files = FakeFiles()
    _run(files)
    return files.ops


TORN: dict[str, Callable[[str, int], int] | None] = {
    "lost": None,
    "half": lambda name, n: n // 2,
    "kept": lambda name, n: n,
}


@pytest.mark.parametrize("torn", list(TORN))
def test_every_failure_point(torn: str) -> None:
    total = _count_ops()
    assert total > 60  # the script really exercises rollover and reclamation
    for fail_at in range(1, total + 1):
        files = FakeFiles(fail_at=fail_at)
        ops, committed, failed = _run(files)
        assert failed, f"operation {fail_at} did not fail"
        files.crash(TORN[torn])
        log = DiskDurableLog.open(files, segment_size=SEGMENT_SIZE)
        got = recovered_state(log)
        k = matching_prefix(ops, committed, got)
        assert k is not None, (fail_at, torn, committed, len(ops), got)
        # And the recovered log keeps working: append, commit, recover again.
        log.queue_declared("/", "after", auto_delete=False, arguments={})
        log.commit()
        files.crash()
        again = recovered_state(DiskDurableLog.open(files, segment_size=SEGMENT_SIZE))
        assert again == {**got, "after": ([], frozenset())}


def test_raw_log_every_failure_point() -> None:
    """The same at the segment-log level: records, not state (nothing reclaimed)."""

    def run(files: FakeFiles) -> tuple[list[bytes], int]:
        appended: list[bytes] = []
        committed = 0
        try:
            log = SegmentLog(files, segment_size=200)
            for i in range(40):
                payload = b"r%03d" % i * (1 + i % 4)
                log.pin(log.append(1, payload).segment)
                appended.append(payload)
                if i % 3 == 2:
                    log.commit()
                    committed = len(appended)
            log.commit()
            committed = len(appended)
        except OSError:
            pass
        return appended, committed

    probe = FakeFiles()
    run(probe)
    for fail_at in range(1, probe.ops + 1):
        for torn in TORN.values():
            files = FakeFiles(fail_at=fail_at)
            appended, committed = run(files)
            files.crash(torn)
            got = [r.payload for _, r in recover_segments(files).records]
            assert got == appended[: len(got)], fail_at  # a prefix: in order, no duplicates
            assert len(got) >= committed, fail_at  # every committed record is there
