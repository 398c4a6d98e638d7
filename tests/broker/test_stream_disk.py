"""Stream segments on disk (stream_disk.py) over FakeFiles: append and read back, retention
deletes whole files, a torn or corrupt tail is cut at recovery, offsets, timestamps and
the segment layout are identical after reopening, deletion removes the directory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker import stream_disk
from amqpd.broker.broker import Broker
from amqpd.broker.message import Message
from amqpd.broker.stream import OffsetSpec, Retention, StreamLog, StreamQueue
from amqpd.broker.stream_disk import DiskSegments, stream_segment_name
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.streamdirs import FakeStreamDirs, escape_name

PROPS = BasicProperties(content_type="text/plain").encode()


def _message(i: int, size: int = 100) -> Message:
    return Message("amq.direct", "k", PROPS, (b"%d " % i).ljust(size, b"x"))


def _snapshot(log: StreamLog) -> list[tuple[int, int, bytes | None]]:
    out = []
    for offset in range(log.first_offset, log.next_offset):
        entry = log.entry(offset)
        assert entry is not None
        body = None if entry.message is None else entry.message.body
        out.append((entry.offset, entry.timestamp, body))
    return out


def _state(log: StreamLog) -> tuple[int, int, int, int, int]:
    return (
        log.first_offset,
        log.next_offset,
        log.bytes,
        log.segment_count,
        log.start_of(OffsetSpec("last")),
    )


def _segment_files(files: FakeFiles) -> list[str]:
    return [n for n in files.list() if n.endswith(".seg")]


def test_append_and_read_back_after_reopen() -> None:
    files = FakeFiles()
    retention = Retention(max_segment_size=1000)
    log = StreamLog(retention, DiskSegments(files))
    for i in range(30):
        log.append(_message(i), 1000 + i)
    before, state = _snapshot(log), _state(log)
    assert log.segment_count > 3  # several files, tracking chunks between them
    assert _segment_files(files)[0] == stream_segment_name(0)

    reopened = StreamLog(retention, DiskSegments(files))
    assert _snapshot(reopened) == before  # read from the files: the cache is new
    assert _state(reopened) == state
    assert reopened.offset_for_timestamp(1010) == log.offset_for_timestamp(1010)
    # Appending goes on at the same offsets as it would have.
    log.append(_message(99), 2000)
    reopened.append(_message(99), 2000)
    assert _snapshot(reopened) == _snapshot(log)


def test_retention_deletes_whole_segment_files() -> None:
    files = FakeFiles()
    retention = Retention(max_segment_size=1000, max_bytes=3000)
    log = StreamLog(retention, DiskSegments(files))
    for i in range(60):
        log.append(_message(i), 1000 + i)
    assert log.first_offset > 0
    names = _segment_files(files)
    assert len(names) == log.segment_count
    assert names[0] == stream_segment_name(log.first_offset)
    reopened = StreamLog(retention, DiskSegments(files))
    assert _state(reopened) == _state(log)
    assert _snapshot(reopened) == _snapshot(log)


def test_the_same_offsets_as_the_memory_log() -> None:
    retention = Retention(max_segment_size=700, max_bytes=2500, max_age_ms=30)
    memory = StreamLog(retention)
    disk = StreamLog(retention, DiskSegments(FakeFiles()))
    for i in range(80):
        memory.append(_message(i, 50 + i % 7 * 40), 1000 + i)
        disk.append(_message(i, 50 + i % 7 * 40), 1000 + i)
    assert _state(disk) == _state(memory)
    assert _snapshot(disk) == _snapshot(memory)


def test_a_torn_tail_is_cut_at_recovery() -> None:
    files = FakeFiles()
    retention = Retention(max_segment_size=100_000)
    log = StreamLog(retention, DiskSegments(files))
    for i in range(10):
        log.append(_message(i), 1000 + i)
    name = _segment_files(files)[-1]
    data = files.read(name)
    files.write_raw(name, data[:-7])  # the last chunk's write cut short
    store = DiskSegments(files)
    assert store.report.damage == "torn"
    reopened = StreamLog(retention, store)
    assert reopened.next_offset == 9
    assert [body for _, _, body in _snapshot(reopened)] == [_message(i).body for i in range(9)]
    assert files.read(name) == data[: len(files.read(name))]  # truncated on disk too
    reopened.append(_message(9), 2000)  # the cut offset is written again
    again = StreamLog(retention, DiskSegments(files))
    assert _snapshot(again) == _snapshot(reopened)


def test_a_corrupt_record_ends_the_stream_and_later_segments_are_set_aside() -> None:
    files = FakeFiles()
    retention = Retention(max_segment_size=1000)
    log = StreamLog(retention, DiskSegments(files))
    for i in range(30):
        log.append(_message(i), 1000 + i)
    names = _segment_files(files)
    second = names[1]
    data = bytearray(files.read(second))
    data[-3] ^= 0xFF  # bit rot in the last chunk of the second segment
    files.write_raw(second, bytes(data))
    store = DiskSegments(files)
    assert store.report.damage == "corrupt"
    reopened = StreamLog(retention, store)
    first_of_second = int(second.removesuffix(".seg"))
    assert reopened.first_offset == 0
    # The second segment keeps all but its last chunk; the later ones are set aside.
    assert reopened.segment_count == 2
    assert [n for n in files.list() if n.endswith(".dropped")] == [
        n.removesuffix(".seg") + ".seg.dropped" for n in names[2:]
    ]
    assert _snapshot(reopened) == _snapshot(log)[: reopened.next_offset]
    assert reopened.next_offset > first_of_second


def test_a_crash_between_filling_a_segment_and_opening_the_next() -> None:
    files = FakeFiles()
    retention = Retention(max_segment_size=1000)
    log = StreamLog(retention, DiskSegments(files))
    i = 0
    while log.segment_count == 1:
        log.append(_message(i), 1000 + i)
        i += 1
    files.remove(_segment_files(files)[-1])  # the new segment never made it
    reopened = StreamLog(retention, DiskSegments(files))
    assert _state(reopened) == _state(log)  # it is opened again, tracking chunk first


def test_a_new_declaration_drops_leftover_files_and_delete_removes_the_directory() -> None:
    dirs = FakeStreamDirs()
    vhost = VirtualHost("/", wall_clock=lambda: 1000.0)
    vhost.stream_dirs = dirs
    args = {"x-queue-type": "stream"}
    key = (escape_name("/"), escape_name("s"))
    dirs.files("/", "s").write_raw(stream_segment_name(0), b"leftover")
    queue = vhost.declare_queue("s", durable=True, arguments=args)
    assert isinstance(queue, StreamQueue)
    queue.enqueue(_message(1))
    assert _segment_files(dirs.dirs[key]) == [stream_segment_name(0)]
    # A recovered declaration reopens the files.
    other = VirtualHost("/", wall_clock=lambda: 1000.0)
    other.stream_dirs = dirs
    again = other.declare_queue("s", durable=True, arguments=args, recovered=True)
    assert isinstance(again, StreamQueue) and again.log.next_offset == 1
    vhost.delete_queue("s")
    assert key not in dirs.dirs


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_a_failed_write_leaves_the_stream_consistent(nth: int) -> None:
    files = FakeFiles()
    retention = Retention(max_segment_size=1000)
    log = StreamLog(retention, DiskSegments(files))
    for i in range(5):
        log.append(_message(i), 1000 + i)
    files.fail_at = files.ops + nth  # the write, or a step of opening the next segment
    failed = 0
    for i in range(5, 12):
        try:
            log.append(_message(i), 1000 + i)
        except OSError:
            failed += 1
    assert failed == 1
    reopened = StreamLog(retention, DiskSegments(files))
    assert _state(reopened) == _state(log)
    assert _snapshot(reopened) == _snapshot(log)
    assert _snapshot(log)[-1][2] == _message(11).body


def test_the_cache_is_bounded() -> None:
    files = FakeFiles()
    store = DiskSegments(files)
    log = StreamLog(Retention(), store)
    for i in range(stream_disk.CACHE_ENTRIES + 50):
        log.append(_message(i), 1000)
    assert len(store._cache) == stream_disk.CACHE_ENTRIES
    assert log.entry(0) is not None and log.entry(0).message.body == _message(0).body  # type: ignore[union-attr]


def test_directories_of_streams_that_do_not_exist_are_removed() -> None:
    dirs = FakeStreamDirs()
    broker = Broker()
    broker.attach_stream_dirs(dirs)
    broker.add_vhost("/").declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    dirs.files("/", "gone")
    dirs.files("/", "skipped")  # in the log, but the restore refused it
    assert broker.remove_stale_stream_dirs([("/", "skipped")]) == [("%2F", "gone")]
    assert dirs.names() == [("%2F", "s"), ("%2F", "skipped")]


def test_escaped_names_are_single_path_steps() -> None:
    assert escape_name("/") == "%2F"
    assert escape_name("..") == "%2E%2E"
    assert escape_name("a.b/c") == "a%2Eb%2Fc"
    assert len(escape_name("é" * 255)) <= 200


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=60),
    segment=st.integers(300, 3000),
    max_bytes=st.one_of(st.none(), st.integers(500, 6000)),
)
def test_reopen_is_identical(sizes: list[int], segment: int, max_bytes: int | None) -> None:
    files = FakeFiles()
    retention = Retention(max_segment_size=segment, max_bytes=max_bytes)
    log = StreamLog(retention, DiskSegments(files))
    memory = StreamLog(retention)
    for i, size in enumerate(sizes):
        log.append(_message(i, size), 1000 + i)
        memory.append(_message(i, size), 1000 + i)
    reopened = StreamLog(retention, DiskSegments(files))
    assert _state(reopened) == _state(log) == _state(memory)
    assert _snapshot(reopened) == _snapshot(memory)
