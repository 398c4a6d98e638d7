"""One-message settlements (the broker's deliveries and acks): records batched per queue.

``DiskDurableLog.message_delivered`` / ``message_removed`` change the catalog's counts at
once and append their records at the next commit (or before a record of another kind),
one ``MessagesDelivered`` and one ``MessagesRemoved`` per queue; a marker whose message
is removed meanwhile is not written at all. The state-machine and crash-point tests
(test_store_model.py, test_crash_points.py) mix them with everything else; these pin the
details down.
"""

from __future__ import annotations

import pytest

from amqpd.storage.disklog import SETTLE_BATCH, DiskDurableLog
from amqpd.storage.entries import MessagesDelivered, MessagesRemoved, decode_entry
from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.log import StorageBroken
from amqpd.storage.recovery import recover_segments


def _publish(log: DiskDurableLog, queue: str = "q") -> tuple[int, int]:
    msg_id = log.message_published("/", [queue], "", queue, b"\x00\x00", b"x" * 40)
    return msg_id, log.last_segment


def _settlements(files: FakeFiles) -> list[tuple[str, str, tuple[int, ...]]]:
    """Every settlement record on disk, in log order: (kind, queue, ids)."""
    out = []
    for _number, record in recover_segments(files).records:
        if record.kind in (MessagesDelivered.KIND, MessagesRemoved.KIND):
            entry = decode_entry(record.kind, record.payload)
            assert isinstance(entry, MessagesDelivered)
            kind = "removed" if isinstance(entry, MessagesRemoved) else "delivered"
            out.append((kind, entry.queue, entry.ids))
    return out


def _open(files: FakeFiles, segment_size: int = 8 * 1024 * 1024) -> DiskDurableLog:
    log = DiskDurableLog.open(files, segment_size=segment_size)
    for name in ("q", "r"):
        if ("/", name) not in log.catalog.queues:
            log.queue_declared("/", name, auto_delete=False, arguments={})
    log.commit()
    return log


def _replayed(log: DiskDurableLog, queue: str = "q") -> list[tuple[int, bool]]:
    return [(i, marked) for i, _, _, marked in log.catalog.queues[("/", queue)].replayed or ()]


def test_one_record_per_queue_and_kind_per_commit() -> None:
    files = FakeFiles()
    log = _open(files)
    q = [_publish(log, "q") for _ in range(5)]
    r = [_publish(log, "r") for _ in range(3)]
    log.commit()
    for msg_id, segment in q:
        log.message_delivered("/", "q", msg_id, segment)
    for msg_id, segment in r:
        log.message_delivered("/", "r", msg_id, segment)
    for msg_id, segment in q[:3]:
        log.message_removed("/", "q", msg_id, segment)
    log.commit()
    ids = [i for i, _ in q]
    # The three removed need no marker.
    expected = [
        ("delivered", "q", tuple(ids[3:])),
        ("removed", "q", tuple(ids[:3])),
        ("delivered", "r", tuple(i for i, _ in r)),
    ]
    assert _settlements(files) == expected
    log.close(clean=False)
    again = DiskDurableLog.open(files)
    # An unclean stop marks everything redelivered anyway; the order and ids are exact.
    assert [i for i, _ in _replayed(again)] == ids[3:]


def test_delivered_markers_survive_a_clean_restart() -> None:
    files = FakeFiles()
    log = _open(files)
    first, second = _publish(log), _publish(log)
    log.message_delivered("/", "q", *first)
    log.close()
    again = DiskDurableLog.open(files)
    assert again.report.clean_shutdown
    assert _replayed(again) == [(first[0], True), (second[0], False)]


def test_the_catalog_counts_change_at_once_the_records_wait() -> None:
    files = FakeFiles()
    log = _open(files)
    msgs = [_publish(log) for _ in range(4)]
    log.commit()
    queue = log.catalog.queues[("/", "q")]
    assert queue.count == 4
    log.message_removed("/", "q", *msgs[0])
    assert queue.count == 3 and sum(queue.pins.values()) == 3
    assert log.sync_needed
    assert _settlements(files) == []  # nothing written yet
    log.commit()
    assert _settlements(files) == [("removed", "q", (msgs[0][0],))]
    assert not log.sync_needed


def test_a_settlement_alone_asks_for_a_commit() -> None:
    log = _open(FakeFiles())
    msg = _publish(log)
    log.commit()
    calls: list[None] = []
    log.on_sync_needed = lambda: calls.append(None)
    assert not log.sync_needed
    log.message_delivered("/", "q", *msg)
    log.message_removed("/", "q", *msg)
    assert calls == [None] and log.sync_needed  # once, when the first one waits
    log.commit()
    log.message_removed("/", "q", 999, msg[1])  # not held: still a record, still a commit
    assert calls == [None, None]


def test_they_are_written_before_any_record_of_another_kind() -> None:
    """A queue deleted (or declared) after acks: the acks' records come first, as the
    calls did, so replay applies them to the generation they were meant for."""
    files = FakeFiles()
    log = _open(files)
    old = _publish(log)
    log.commit()
    log.message_removed("/", "q", *old)
    log.queue_deleted("/", "q")
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    new = _publish(log)
    log.message_removed("/", "q", *new)  # waits: publishes do not push it out
    newer = _publish(log)
    log.commit()
    assert _settlements(files) == [("removed", "q", (old[0],)), ("removed", "q", (new[0],))]
    log.close(clean=False)
    assert _replayed(DiskDurableLog.open(files)) == [(newer[0], False)]


def test_settlements_of_messages_later_in_the_buffer() -> None:
    """Records of acks move past the publishes appended after them, never before the
    message they settle: the acked message stays gone after a restart."""
    files = FakeFiles()
    log = _open(files)
    a = _publish(log)
    log.message_delivered("/", "q", *a)
    b = _publish(log)
    log.message_removed("/", "q", *a)
    log.message_delivered("/", "q", *b)
    log.close()
    assert _replayed(DiskDurableLog.open(files)) == [(b[0], True)]


def test_a_full_batch_is_written_before_the_commit() -> None:
    files = FakeFiles()
    log = _open(files)
    msgs = [_publish(log) for _ in range(SETTLE_BATCH + 1)]
    log.commit()
    for msg in msgs:
        log.message_removed("/", "q", *msg)
    log.commit()
    records = _settlements(files)
    assert [len(ids) for _, _, ids in records] == [SETTLE_BATCH, 1]
    assert [i for _, _, ids in records for i in ids] == [i for i, _ in msgs]


def test_callbacks_registered_while_settlements_wait_run_after_their_commit() -> None:
    files = FakeFiles()
    log = _open(files)
    msg = _publish(log)
    log.commit()
    batch = log.prepare_commit()
    assert batch is None
    log.message_removed("/", "q", *msg)
    ran: list[str] = []
    log.after_commit(lambda: ran.append("after the ack"))
    assert ran == []  # the ack's record is not even appended yet
    batch = log.prepare_commit()
    assert batch is not None
    log.message_removed("/", "q", 999, msg[1])  # waits for the next batch
    log.after_commit(lambda: ran.append("after the next ack"))
    batch.write()
    for callback in log.complete_commit(batch):
        callback()
    assert ran == ["after the ack"]
    for callback in log.commit():
        callback()
    assert ran == ["after the ack", "after the next ack"]


def test_acks_waiting_while_a_batch_is_in_flight_go_with_the_next() -> None:
    files = FakeFiles()
    log = _open(files)
    a, b = _publish(log), _publish(log)
    batch = log.prepare_commit()
    assert batch is not None
    log.message_removed("/", "q", *a)  # the batch in flight holds a's record, not this
    batch.write()
    log.complete_commit(batch)
    files.crash()
    assert [i for i, _ in _replayed(DiskDurableLog.open(files))] == [a[0], b[0]]


def test_a_crash_loses_only_what_no_commit_covered() -> None:
    files = FakeFiles()
    log = _open(files)
    msgs = [_publish(log) for _ in range(4)]
    log.message_removed("/", "q", *msgs[0])
    log.commit()
    log.message_removed("/", "q", *msgs[1])  # never committed
    log.message_removed("/", "r", 12345, msgs[1][1])  # not held by r: changes nothing
    files.crash()
    assert [i for i, _ in _replayed(DiskDurableLog.open(files))] == [m[0] for m in msgs[1:]]


def test_acked_history_is_reclaimed() -> None:
    """Batched removals release their segments exactly as single records did."""
    files = FakeFiles()
    log = _open(files, segment_size=1024)
    for _ in range(20):
        msgs = [_publish(log) for _ in range(50)]
        log.commit()
        for msg in msgs:
            log.message_delivered("/", "q", *msg)
        log.commit()
        for msg in msgs:
            log.message_removed("/", "q", *msg)
        log.commit()
    assert len([n for n in files.list() if n.endswith(".seg")]) <= 3
    log.close()
    again = DiskDurableLog.open(files, segment_size=1024)
    assert sum(q.count for q in again.catalog.queues.values()) == 0


def test_a_delivered_marker_keeps_its_segment_while_the_message_lives() -> None:
    """A marker's record depends on the segments of its messages: it stays (and the
    message comes back redelivered after a clean restart) while they do."""
    files = FakeFiles()
    log = _open(files, segment_size=300)
    keep = _publish(log)
    log.commit()

    def traffic() -> None:
        msg = _publish(log, "r")
        log.message_removed("/", "r", *msg)
        log.commit()

    while log.last_segment < keep[1] + 2:  # the marker goes two segments later
        traffic()
    log.message_delivered("/", "q", *keep)
    log.commit()
    for _ in range(30):
        traffic()
    log.close()
    assert _replayed(DiskDurableLog.open(files, segment_size=300)) == [(keep[0], True)]


def test_a_broken_log_refuses_settlements() -> None:
    files = FakeFiles()
    log = _open(files)
    msg = _publish(log)
    files.fail_at = files.ops + 1
    with pytest.raises(OSError):
        log.commit()
    with pytest.raises(StorageBroken):
        log.message_removed("/", "q", *msg)
