"""LogTail: a restored queue's messages read back from the log in chunks, and what replay
notes for it (body sizes, per-message TTLs) without reading the messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.protocol.properties import BasicProperties
from amqpd.storage import logtail as logtail_module
from amqpd.storage.delta import DeltaFiles
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.logtail import LogTail

PERSISTENT = BasicProperties(delivery_mode=2).encode()
EXPIRING = BasicProperties(delivery_mode=2, expiration="60000").encode()


def _log(files: FakeFiles, messages: list[tuple[str, bytes, bytes]]) -> list[int]:
    """Queues "q" and "other"; ``messages`` are (queue, properties, body); clean stop."""
    log = DiskDurableLog.open(files, segment_size=4096)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    log.queue_declared("/", "other", auto_delete=False, arguments={})
    ids = []
    for queue, props, body in messages:
        ids.append(log.message_published("/", [queue], "ex", "rk-" + queue, props, body))
    log.close()
    return ids


def _reopen(files: FakeFiles) -> DiskDurableLog:
    return DiskDurableLog.open(files, segment_size=4096)


def _drain(tail: LogTail, count: int = 7, size: int = 1 << 20) -> list[list[int]]:
    chunks = []
    while len(tail):
        chunk = tail.read(count, size)
        assert chunk, "a non-empty tail always gives at least one"
        chunks.append([m.id for m in chunk])
    assert tail.read(count, size) == []
    return chunks


def test_a_tail_reads_back_what_restore_would_read_in_order_and_in_chunks() -> None:
    files = FakeFiles()
    messages = [("q" if i % 3 else "other", PERSISTENT, b"body-%03d" % i) for i in range(200)]
    ids = _log(files, messages)
    log = _reopen(files)
    expected = list(log.recovered_messages("/", "q"))
    tail = log.take_tail("/", "q")
    assert tail is not None and len(tail) == len(expected) == 133
    assert tail.body_bytes == sum(m.body_size for m in expected) == 133 * 8
    got = []
    while len(tail):
        before = tail.body_bytes
        chunk = tail.read(10, 1 << 20)
        assert 1 <= len(chunk) <= 10
        assert len({m.segment for m in chunk}) == 1  # one read of one segment per chunk
        assert before - tail.body_bytes == sum(m.body_size for m in chunk)
        got += chunk
    assert got == expected
    assert [m.id for m in got] == [
        i for i, (q, _, _) in zip(ids, messages, strict=True) if q == "q"
    ]
    assert all(m.exchange == "ex" and m.routing_key == "rk-q" for m in got)
    # The body is where the message says.
    assert [log.bodies.read(m.body_at, m.body_size) for m in got[:3]] == [
        b"body-001",
        b"body-002",
        b"body-004",
    ]
    assert log.take_tail("/", "q") is None  # taken over: once
    assert log.take_tail("/", "nothing") is None


def test_chunks_are_bounded_by_count_bytes_and_window(monkeypatch: pytest.MonkeyPatch) -> None:
    files = FakeFiles()
    _log(files, [("q", PERSISTENT, b"x" * 100) for _ in range(30)])
    log = _reopen(files)
    tail = log.take_tail("/", "q")
    assert tail is not None
    # Bytes count names and properties (what a chunk puts in memory), never the body.
    first = tail.copy().read(100, 1)
    assert len(first) == 1  # at least one, whatever the byte bound
    monkeypatch.setattr(logtail_module, "WINDOW", 300)  # about two records of 140 bytes
    assert all(len(chunk) <= 3 for chunk in _drain(tail.copy(), count=100))
    monkeypatch.setattr(logtail_module, "WINDOW", 1 << 20)
    assert [len(c) for c in _drain(tail.copy(), count=4)][:3] == [4, 4, 4]


def test_stored_undelivered_and_clear() -> None:
    files = FakeFiles()
    ids = _log(files, [("q", PERSISTENT, b"m%d" % i) for i in range(10)])
    log = DiskDurableLog.open(files, segment_size=4096)
    segments = [m.segment for m in log.recovered_messages("/", "q")]
    log.messages_delivered("/", "q", ids[2:4], segments[2:4])
    log.messages_removed("/", "q", ids[5:6], segments[5:6])  # out of order: compacted away
    log.close()
    log = _reopen(files)
    tail = log.take_tail("/", "q")
    assert tail is not None and len(tail) == 9
    assert tail.read(2, 1 << 20)[0].delivered is False
    live = ids[2:5] + ids[6:]
    undelivered, _ = tail.undelivered()
    assert list(undelivered) == [ids[4], *ids[6:]]
    assert [m.delivered for m in tail.copy().read(3, 1 << 20)] == [True, True, False]
    stored_ids, stored_segments = tail.stored()  # and forgotten
    assert list(stored_ids) == live and len(stored_segments) == len(live)
    assert len(tail) == 0 and tail.body_bytes == 0 and tail.read(5, 5) == []
    tail.clear()
    assert len(tail) == 0


def test_a_record_changed_under_the_tail_is_an_os_error() -> None:
    files = FakeFiles()
    _log(files, [("q", PERSISTENT, b"m%d" % i) for i in range(5)])
    log = _reopen(files)
    tail = log.take_tail("/", "q")
    assert tail is not None
    first = tail.copy().read(1, 1 << 20)[0]
    name = f"{first.segment:08d}.seg"
    data = bytearray(files.read(name))
    at = next(i for i in range(len(data)) if data[i : i + 8] == first.id.to_bytes(8, "little"))
    data[at : at + 8] = (first.id + 1000).to_bytes(8, "little")  # its id, not its place
    files.write_raw(name, bytes(data))
    with pytest.raises(OSError, match="changed on disk"):
        _drain(tail)


def test_the_arrays_shrink_as_the_tail_drains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logtail_module, "_TRIM_MIN", 16)
    files = FakeFiles()
    _log(files, [("q", PERSISTENT, b"m%d" % i) for i in range(100)])
    log = _reopen(files)
    tail = log.take_tail("/", "q")
    assert tail is not None
    seen = []
    while len(tail) > 10:
        seen += [m.id for m in tail.read(8, 1 << 20)]
    assert len(tail._ids) < 50  # the part already read was cut off
    seen += [i for chunk in _drain(tail) for i in chunk]
    assert seen == list(range(1, 101))


def test_replay_notes_body_sizes_and_per_message_ttls_without_reading_messages() -> None:
    files = FakeFiles()
    _log(
        files,
        [("q", PERSISTENT, b"a" * 10), ("other", EXPIRING, b"b" * 5), ("q", PERSISTENT, b"")],
    )
    log = _reopen(files)
    q = log.catalog.queues[("/", "q")].replayed
    other = log.catalog.queues[("/", "other")].replayed
    assert q is not None and other is not None
    assert list(q.bodies) == [10, 0] and not q.expiring
    assert list(other.bodies) == [5] and other.expiring


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["q", "other"]),
            st.sampled_from([PERSISTENT, EXPIRING, b"", PERSISTENT + b"\x00"]),
            st.binary(max_size=300),
        ),
        max_size=60,
    )
)
def test_replay_of_repeating_records_is_the_full_parse(
    messages: list[tuple[str, bytes, bytes]],
) -> None:
    # Replay skips parsing a record whose fields repeat the previous one's; whatever the
    # mix, it must find what parsing every record finds (what restore reads back).
    files = FakeFiles()
    ids = _log(files, messages)
    log = _reopen(files)
    for name in ("q", "other"):
        wanted = [(i, b) for i, (q, _, b) in zip(ids, messages, strict=True) if q == name]
        replayed = log.catalog.queues[("/", name)].replayed
        found = list(log.recovered_messages("/", name))
        assert [m.id for m in found] == [i for i, _ in wanted]
        assert [log.bodies.read(m.body_at, m.body_size) for m in found] == [b for _, b in wanted]
        if wanted:
            assert replayed is not None
            assert list(replayed.bodies) == [len(b) for _, b in wanted]
            ttl = any(p == EXPIRING for q, p, _ in messages if q == name)
            assert replayed.expiring == ttl


def test_paged_out_arrays_come_back_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logtail_module, "BLOCK", 16)
    files = FakeFiles()
    spill = FakeFiles()
    ids = _log(files, [("q", PERSISTENT, b"m%d" % i) for i in range(100)])
    log = _reopen(files)
    tail = log.take_tail("/", "q")
    assert tail is not None
    tail.read(3, 1 << 20)
    tail.page_out(DeltaFiles(spill, file_size=200).new_queue())
    assert len(tail) == 97 and len(tail._ids) - tail._pos == 16  # one block in memory
    assert tail.body_bytes == sum(len(b"m%d" % i) for i in range(3, 100))
    assert any(n.endswith(".delta") for n in spill.list())
    got = [i for chunk in _drain(tail, count=5) for i in chunk]
    assert got == ids[3:] and tail.body_bytes == 0
    assert not any(n.endswith(".delta") for n in spill.list())  # read back: deleted
    # A purge takes the ids of the blocks still on disk too, and the files go.
    log = _reopen(files)
    tail = log.take_tail("/", "q")
    assert tail is not None
    tail.page_out(DeltaFiles(spill).new_queue())
    taken = len(tail.read(20, 1 << 20))  # a chunk never goes past the block in memory
    assert taken == 16
    stored_ids, segments = tail.stored()
    assert list(stored_ids) == ids[16:] and len(segments) == 84
    assert len(tail) == 0 and not any(n.endswith(".delta") for n in spill.list())


def test_the_last_records_replayed_keep_their_segments_through_restarts() -> None:
    # Replay counts a run of message records when the run ends; in a log that ends with
    # one (a crash: no CleanShutdown after it) the last run ends after the liveness was
    # handed to the segment log, and must still pin its segment there.
    files = FakeFiles()
    log = DiskDurableLog.open(files, segment_size=4096)
    log.queue_declared("/", "q", auto_delete=False, arguments={})
    ids = [log.message_published("/", ["q"], "", "q", PERSISTENT, b"m%d" % i) for i in range(300)]
    log.commit()
    files.crash()
    for _ in range(3):
        log = _reopen(files)
        assert log.catalog.queues[("/", "q")].count == 300
        found = list(log.recovered_messages("/", "q"))
        assert [m.id for m in found] == ids
        log.replay_done()
        # A commit runs reclamation: a segment whose pins were lost would go now.
        log.messages_delivered("/", "q", [ids[0]], [found[0].segment])
        log.commit()
        log.close()
