"""DiskDurableLog: group commit, after_commit ordering, replay, reclamation, clean stop."""

from __future__ import annotations

import pytest

from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.log import StorageBroken


def _segments(files: FakeFiles) -> list[str]:
    return [n for n in files.list() if n.endswith(".seg")]


# The broker's knowledge: each message's segment (Message.store_segment), per log object.
_SEGMENTS: dict[tuple[int, int], int] = {}


def _publish(log: DiskDurableLog, queues: list[str], body: bytes = b"x" * 40) -> int:
    msg_id = log.message_published("/", queues, "", queues[0], b"\x00\x00", body)
    _SEGMENTS[(id(log), msg_id)] = log.last_segment
    return msg_id


def _segs(log: DiskDurableLog, ids: list[int]) -> list[int]:
    return [_SEGMENTS[(id(log), i)] for i in ids]


def _delivered(log: DiskDurableLog, queue: str, ids: list[int]) -> None:
    log.messages_delivered("/", queue, ids, _segs(log, ids))


def _removed(log: DiskDurableLog, queue: str, ids: list[int]) -> None:
    log.messages_removed("/", queue, ids, _segs(log, ids))


def _queue_ids(log: DiskDurableLog, name: str) -> list[int]:
    """The ids replay found in queue ``name`` (before ``replay_done``)."""
    return [i for i, *_ in log.catalog.queues[("/", name)].replayed or ()]


def _held(log: DiskDurableLog) -> int:
    return sum(q.count for q in log.catalog.queues.values())


def test_many_appends_one_fsync_and_callbacks_in_order() -> None:
    files = FakeFiles()
    log = DiskDurableLog.open(files)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    order: list[int] = []
    for i in range(100):
        _publish(log, ["q"])
        log.after_commit(lambda i=i: order.append(i))
    assert order == [] and log.sync_needed
    before = files.fsyncs
    for callback in log.commit():
        callback()
    assert files.fsyncs - before == 1
    assert order == list(range(100))
    log.after_commit(lambda: order.append(-1))  # nothing pending: runs at once
    assert order[-1] == -1


def test_callbacks_wait_for_the_batch_that_holds_their_records() -> None:
    log = DiskDurableLog.open(FakeFiles())
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    ran: list[str] = []
    _publish(log, ["q"])
    log.after_commit(lambda: ran.append("first"))
    batch = log.prepare_commit()
    assert batch is not None
    _publish(log, ["q"])  # appended while the batch is being written
    log.after_commit(lambda: ran.append("second"))
    batch.write()
    for cb in log.complete_commit(batch):
        cb()
    assert ran == ["first"]
    for cb in log.commit():
        cb()
    assert ran == ["first", "second"]


def test_on_sync_needed_fires_once_per_batch() -> None:
    log = DiskDurableLog.open(FakeFiles())
    calls: list[None] = []
    log.on_sync_needed = lambda: calls.append(None)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    _publish(log, ["q"])
    assert len(calls) == 1
    log.commit()
    _publish(log, ["q"])
    assert len(calls) == 2


def test_replay_restores_everything_in_order() -> None:
    files = FakeFiles()
    log = DiskDurableLog.open(files)
    log.exchange_declared("/", "x", "topic", auto_delete=False, internal=False, arguments={})
    log.queue_declared("/", "q1", auto_delete=False, arguments={"x-max-length": 5})
    log.queue_declared("/", "q2", auto_delete=True, arguments={})
    log.binding_added("/", "x", "q1", "a.#", {}, to_exchange=False)
    log.binding_added("/", "amq.topic", "x", "k", {}, to_exchange=True)
    ids = [_publish(log, ["q1", "q2"], body=bytes([i])) for i in range(5)]
    _delivered(log, "q1", ids[:2])
    _removed(log, "q1", [ids[0]])
    _removed(log, "q2", [ids[3]])
    log.commit()
    log.close(clean=False)

    again = DiskDurableLog.open(files)
    cat = again.catalog
    assert set(cat.exchanges) == {("/", "x")}
    assert set(cat.queues) == {("/", "q1"), ("/", "q2")}
    assert len(cat.bindings) == 2
    assert _queue_ids(again, "q1") == ids[1:]
    assert _queue_ids(again, "q2") == ids[:3] + ids[4:]
    q1 = {m.id: m for m in again.recovered_messages("/", "q1")}
    assert q1[ids[1]].delivered and not q1[ids[2]].delivered
    assert not any(m.delivered for m in again.recovered_messages("/", "q2"))
    # Replay keeps where each record is; restore reads the record back but not the body
    # (docs/storage.md "Paging").
    entry = q1[ids[2]]
    assert (entry.exchange, entry.routing_key, entry.properties_raw) == ("", "q1", b"\x00\x00")
    assert again.bodies.read(entry.body_at, entry.body_size) == bytes([2])
    assert entry.segment == _SEGMENTS[(id(log), ids[2])]
    # Five distinct messages, eight copies (a fanout counts once).
    assert not again.report.clean_shutdown and again.report.messages == 5
    assert _held(again) == 8
    # New ids never collide with recovered ones.
    assert _publish(again, ["q1"]) > max(ids)


def test_queue_delete_takes_its_bindings_and_messages() -> None:
    files = FakeFiles()
    log = DiskDurableLog.open(files)
    log.exchange_declared("/", "x", "direct", auto_delete=False, internal=False, arguments={})
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    log.binding_added("/", "x", "q", "k", {}, to_exchange=False)
    _publish(log, ["q"])
    log.queue_deleted("/", "q")
    log.exchange_declared("/", "y", "direct", auto_delete=False, internal=False, arguments={})
    log.binding_added("/", "y", "x", "k", {}, to_exchange=True)
    log.exchange_deleted("/", "x")  # takes the e2e binding with it
    log.close()
    cat = DiskDurableLog.open(files).catalog
    assert not cat.queues and not cat.bindings
    assert set(cat.exchanges) == {("/", "y")}


def test_clean_close_is_reported() -> None:
    files = FakeFiles()
    log = DiskDurableLog.open(files)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    log.close()
    assert DiskDurableLog.open(files).report.clean_shutdown


def test_disk_tracks_the_live_backlog() -> None:
    """Segments whose records are all dead are deleted; acked history costs nothing."""
    files = FakeFiles()
    log = DiskDurableLog.open(files, segment_size=1024)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    for _ in range(20):
        ids = [_publish(log, ["q"]) for _ in range(50)]
        log.commit()
        _delivered(log, "q", ids)
        _removed(log, "q", ids)
        log.commit()
    # 1000 messages went through; only the queue declaration and the head remain.
    assert len(_segments(files)) <= 3
    log.close()
    again = DiskDurableLog.open(files, segment_size=1024)
    assert set(again.catalog.queues) == {("/", "q")} and _held(again) == 0
    assert len(_segments(files)) <= 3


def test_one_old_message_does_not_pin_later_segments() -> None:
    files = FakeFiles()
    log = DiskDurableLog.open(files, segment_size=1024)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    log.queue_declared("/", "slow", auto_delete=False, arguments={})
    keeper = _publish(log, ["slow"])
    for _ in range(20):
        ids = [_publish(log, ["q"]) for _ in range(20)]
        _removed(log, "q", ids)
        log.commit()
    assert len(_segments(files)) <= 4
    log.close(clean=False)
    assert _queue_ids(DiskDurableLog.open(files, segment_size=1024), "slow") == [keeper]


def test_a_deleted_queue_does_not_come_back_when_its_segment_goes() -> None:
    files = FakeFiles()
    log = DiskDurableLog.open(files, segment_size=300)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    for _ in range(10):
        _publish(log, ["q"])
    log.commit()
    log.queue_deleted("/", "q")
    log.queue_declared("/", "q", auto_delete=False, arguments={})  # a new generation
    log.commit()
    for _ in range(10):
        log.queue_declared("/", f"filler{_}", auto_delete=False, arguments={})
        log.commit()
    log.close(clean=False)
    again = DiskDurableLog.open(files, segment_size=300)
    assert ("/", "q") in again.catalog.queues and _held(again) == 0


def test_a_failed_fsync_breaks_the_log() -> None:
    files = FakeFiles()
    log = DiskDurableLog.open(files)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    files.fail_at = files.ops + 3  # create, header, data, -> fsync
    with pytest.raises(OSError):
        log.commit()
    with pytest.raises(StorageBroken):
        _publish(log, ["q"])
    files.crash()
    assert DiskDurableLog.open(files).catalog.queues == {}


def test_deaths_the_disk_has_not_seen_never_delete_a_segment() -> None:
    """Records killed by acks still in the buffer keep their segment until those acks
    are committed: otherwise a crash would keep the acks' effect but lose what came
    between them (a state no prefix of the log describes)."""
    files = FakeFiles()
    log = DiskDurableLog.open(files, segment_size=200)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    log.commit()
    ids = [_publish(log, ["q"]) for _ in range(6)]
    log.commit()
    old = [i for i in ids if _SEGMENTS[(id(log), i)] != log.log.head]
    assert len(old) >= 2
    _publish(log, ["q"])
    batch = log.prepare_commit()
    assert batch is not None
    _removed(log, "q", old[:1])
    newer = _publish(log, ["q"])
    _removed(log, "q", old[1:])
    batch.write()
    log.complete_commit(batch)
    files.crash()  # the removals and the newer publish were never committed
    got = _queue_ids(DiskDurableLog.open(files, segment_size=200), "q")
    assert newer not in got
    assert set(old) <= set(got)


def test_a_message_record_that_does_not_fill_its_payload_ends_the_log() -> None:
    """Replay reads only a message record's id, vhost and queues, but still checks the
    other fields fill the payload exactly: a good checksum over a bad payload is corrupt."""
    from amqpd.storage.entries import MessagePublished

    files = FakeFiles()
    log = DiskDurableLog.open(files)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    good = _publish(log, ["q"])
    payload = MessagePublished(good + 1, "/", ("q",), "", "q", b"", b"body").encode()
    log.log.append(MessagePublished.KIND, payload + b"!")  # one byte too many
    _publish(log, ["q"])
    log.close(clean=False)
    again = DiskDurableLog.open(files)
    assert again.report.damage == "corrupt" and again.report.records == 2
    assert _queue_ids(again, "q") == [good]
