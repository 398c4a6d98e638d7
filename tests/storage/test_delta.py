"""Delta files (storage/delta.py): a FIFO of byte records on disk, read back in chunks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.storage.delta import DeltaFiles, DeltaQueue, delta_name
from amqpd.storage.fakefiles import FakeFiles


def _records(n: int, size: int = 100) -> list[bytes]:
    return [f"r{i:05d}".encode().ljust(size, b".") for i in range(n)]


def _delta_files(files: FakeFiles) -> list[str]:
    return [n for n in files.list() if n.endswith(".delta")]


def _drain(queue: DeltaQueue, count: int = 7, size: int = 10**9) -> list[bytes]:
    out: list[bytes] = []
    while len(queue):
        chunk = queue.read(count, size)
        assert chunk
        out += chunk
    return out


def test_records_come_back_in_order_in_chunks_bounded_in_count_and_bytes() -> None:
    files = FakeFiles()
    queue = DeltaFiles(files, file_size=1000, buffer_size=300).new_queue()
    records = _records(50)
    for r in records:
        queue.append(r)
    assert len(queue) == 50
    assert len(queue.read(3, 10**9)) == 3  # the count bound
    chunk = queue.read(100, 250)  # the byte bound: stops once 250 bytes are in
    assert len(chunk) == 3
    assert [*records[:3], *chunk] == records[:6]
    assert _drain(queue) == records[6:]
    assert len(queue) == 0


def test_a_record_larger_than_the_chunk_and_the_file_still_comes_back_whole() -> None:
    files = FakeFiles()
    queue = DeltaFiles(files, file_size=1000, buffer_size=64).new_queue()
    big = bytes(range(256)) * 20  # 5 KiB: beyond the file size and the read window
    queue.append(b"a")
    queue.append(big)
    queue.append(b"b")
    assert queue.read(10, 1) == [b"a"]  # the 1-byte bound is reached
    assert queue.read(10, 10) == [big]  # at least one record, however large
    assert queue.read(10, 10) == [b"b"]


def test_files_are_bounded_and_deleted_once_read_back() -> None:
    files = FakeFiles()
    queue = DeltaFiles(files, file_size=1000, buffer_size=300).new_queue()
    for r in _records(100):
        queue.append(r)
    assert len(_delta_files(files)) == 12  # 9 records of 104 bytes per file
    assert all(len(files.read(n)) <= 1000 for n in _delta_files(files))
    got = queue.read(30, 10**9)
    assert len(_delta_files(files)) == 9  # the three files read back completely are gone
    got += _drain(queue)
    assert got == _records(100)
    assert _delta_files(files) == []  # empty: nothing left on disk
    queue.append(b"again")  # a fresh start after a drain
    assert queue.read(5, 100) == [b"again"]


def test_reads_interleaved_with_appends_see_the_write_buffer() -> None:
    files = FakeFiles()
    queue = DeltaFiles(files, file_size=1000, buffer_size=10**6).new_queue()
    queue.append(b"one")
    assert queue.read(5, 100) == [b"one"]  # never written out: read from the buffer
    queue.append(b"two")
    queue.append(b"three")
    assert queue.read(1, 100) == [b"two"]
    queue.append(b"four")
    assert queue.read(5, 100) == [b"three", b"four"]


def test_clear_deletes_every_file_of_the_queue_and_only_of_it() -> None:
    files = FakeFiles()
    deltas = DeltaFiles(files, file_size=500, buffer_size=100)
    a, b = deltas.new_queue(), deltas.new_queue()
    for r in _records(20):
        a.append(r)
        b.append(r)
    a.read(2, 10**9)
    a.clear()
    assert len(a) == 0
    assert _delta_files(files) and all(n.startswith("00000002-") for n in _delta_files(files))
    assert _drain(b) == _records(20)
    a.append(b"x")
    assert a.read(1, 10) == [b"x"]


def test_opening_removes_what_a_previous_run_left_and_close_removes_the_rest() -> None:
    files = FakeFiles()
    files.write_raw(delta_name(3, 7), b"left by the last run")
    files.write_raw("00000001.spill", b"older spill file")
    files.write_raw("unrelated", b"kept")
    deltas = DeltaFiles(files, file_size=500, buffer_size=10)
    assert files.list() == ["unrelated"]
    queue = deltas.new_queue()
    for r in _records(20):
        queue.append(r)
    deltas.close()
    assert files.list() == ["unrelated"]


def test_a_failed_write_keeps_every_record_in_memory_in_order() -> None:
    files = FakeFiles()
    queue = DeltaFiles(files, file_size=1000, buffer_size=200).new_queue()
    for r in _records(5):
        queue.append(r)  # 520 bytes: two writes done
    files.fail_at = files.ops + 1  # the next write fails halfway
    for r in _records(30)[5:]:
        queue.append(r)
    assert queue.broken
    assert _drain(queue, 4) == _records(30)
    assert not queue.broken  # drained: it tries the disk again
    assert _delta_files(files) == []
    queue.append(b"later")
    assert queue.read(1, 10) == [b"later"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(0, 700)),
            st.tuples(st.just("read"), st.integers(1, 9), st.integers(1, 2000)),
            st.tuples(st.just("clear")),
        ),
        max_size=80,
    )
)
def test_a_delta_queue_is_a_fifo(ops: list[tuple[object, ...]]) -> None:
    files = FakeFiles()
    queue = DeltaFiles(files, file_size=1500, buffer_size=512).new_queue()
    model: list[bytes] = []
    n = 0
    for op in ops:
        if op[0] == "append":
            record = bytes([n % 251]) * int(op[1])  # type: ignore[call-overload]
            n += 1
            queue.append(record)
            model.append(record)
        elif op[0] == "read":
            count, size = int(op[1]), int(op[2])  # type: ignore[call-overload]
            got = queue.read(count, size)
            assert got == model[: len(got)]
            assert len(got) <= count
            assert len(got) == min(count, len(model)) or sum(map(len, got)) >= size
            del model[: len(got)]
        else:
            queue.clear()
            model.clear()
        assert len(queue) == len(model)
        if not model:
            assert _delta_files(files) == []
    assert _drain(queue) == model
