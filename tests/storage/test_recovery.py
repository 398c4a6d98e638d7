"""Recovery of damaged segment files: truncated and corrupted at every boundary and inside."""

from __future__ import annotations

import pytest

from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.log import SegmentLog
from amqpd.storage.record import Record, Visitor, encode
from amqpd.storage.recovery import RecoveryReport, recover_log, recover_segments, replay_log
from amqpd.storage.segment import (
    HEADER_SIZE,
    encode_header,
    parse_segment_name,
    segment_name,
)


def _written(n: int = 12, segment_size: int = 120) -> tuple[FakeFiles, list[bytes]]:
    files = FakeFiles()
    log = SegmentLog(files, segment_size=segment_size)
    payloads = [f"record {i}".encode() * (1 + i % 3) for i in range(n)]
    for p in payloads:
        log.pin(log.append(5, p).segment)  # pinned: nothing is reclaimed
        if len(payloads) % 4 == 0:
            log.commit()
    log.commit()
    return files, payloads


def _segments(files: FakeFiles) -> list[str]:
    return [n for n in files.list() if n.endswith(".seg")]


def _recovered(files: FakeFiles) -> list[bytes]:
    return [r.payload for _, r in recover_segments(files).records]


def test_clean_log_recovers_everything_in_order() -> None:
    files, payloads = _written()
    assert len(_segments(files)) > 2
    result = recover_segments(files)
    assert [r.payload for _, r in result.records] == payloads
    assert not result.report.damaged and result.report.records == len(payloads)
    assert result.report.segments == len(_segments(files))
    assert result.next_segment == len(_segments(files)) + 1


def _record_bounds(data: bytes) -> list[int]:
    bounds, pos = [HEADER_SIZE], HEADER_SIZE
    while pos < len(data):
        pos += 9 + int.from_bytes(data[pos : pos + 4], "little")
        bounds.append(pos)
    return bounds


def _cases(files: FakeFiles) -> list[tuple[str, int]]:
    out = []
    for name in _segments(files):
        data = files.read(name)
        bounds = _record_bounds(data)
        # every boundary, one byte into each record's header, one into each payload, and
        # every byte of the magic
        points = set(bounds) | {b + 1 for b in bounds[:-1]} | {b + 10 for b in bounds[:-1]}
        points |= set(range(HEADER_SIZE))
        out += [(name, p) for p in sorted(points) if p <= len(data)]
    return out


CASES = _cases(_written()[0])


def _expected_before(files: FakeFiles, payloads: list[bytes], name: str, cut: int) -> int:
    """How many records lie wholly before byte ``cut`` of segment ``name``."""
    count = 0
    for seg in _segments(files):
        data = files.read(seg)
        if seg == name:
            return count + sum(1 for b in _record_bounds(data)[1:] if b <= cut)
        count += len(_record_bounds(data)) - 1
    raise AssertionError(name)


@pytest.mark.parametrize(("name", "cut"), CASES)
def test_truncated_segment(name: str, cut: int) -> None:
    files, payloads = _written()
    names = _segments(files)
    data = files.read(name)
    keep = len(payloads) if cut == len(data) else _expected_before(files, payloads, name, cut)
    later = names[names.index(name) + 1 :]
    in_later = sum(len(_record_bounds(files.read(s))) - 1 for s in later)
    files.write_raw(name, data[:cut])
    result = recover_segments(files)
    assert [r.payload for _, r in result.records] == payloads[:keep]
    report = result.report
    if cut == len(data):
        assert not report.damaged  # nothing was cut
    else:
        # Cut inside a record, or at a boundary: then the next segment's header (which
        # names this one's length) gives it away; in the last segment a cut at a boundary
        # is indistinguishable from a clean end, and nothing after it is lost.
        assert report.damaged == bool(later or cut not in _record_bounds(data))
    if report.damaged:
        assert report.damaged_segment == name
        assert report.dropped_segments == later
        assert report.dropped_records == in_later
    # Recovery is idempotent: the second time the log is clean and says the same.
    again = recover_segments(files)
    assert [r.payload for _, r in again.records] == payloads[:keep]
    assert not again.report.damaged
    for seg in later if report.damaged else []:
        assert seg not in files.list()
        assert seg.removesuffix(".seg") + ".seg.dropped" in files.list()


@pytest.mark.parametrize(("name", "pos"), CASES[::3])
def test_corrupted_byte(name: str, pos: int) -> None:
    files, payloads = _written()
    data = bytearray(files.read(name))
    if pos >= len(data):
        return
    data[pos] ^= 0x01
    files.write_raw(name, bytes(data))
    keep = _expected_before(files, payloads, name, pos)
    result = recover_segments(files)
    got = [r.payload for _, r in result.records]
    assert got == payloads[:keep]  # everything before the damaged record, nothing after
    assert result.report.damaged and result.report.damaged_segment == name
    assert result.report.bytes_dropped == len(data) - (result.report.truncated_at or 0)


def test_header_damage_removes_the_segment_and_numbers_are_not_reused() -> None:
    files, _ = _written()
    names = _segments(files)
    files.write_raw(names[-1], b"NOTMAGIC" + files.read(names[-1])[8:])
    result = recover_segments(files)
    assert names[-1] not in files.list()
    assert result.report.damage == "corrupt"
    assert result.next_segment == len(names) + 1 or result.next_segment == len(names)
    assert parse_segment_name(segment_name(3)) == (3, False)
    assert parse_segment_name("00000003.seg.dropped") == (3, True)
    assert parse_segment_name("LOCK") is None and parse_segment_name("x.seg") is None


def test_dropped_segment_number_is_never_reused() -> None:
    files, _ = _written()
    names = _segments(files)
    first = files.read(names[0])
    files.write_raw(names[0], first[:-1])
    result = recover_segments(files)
    assert result.next_segment == len(names) + 1  # .dropped files still count
    assert result.report.dropped_records > 0


def test_stray_files_are_ignored() -> None:
    files, payloads = _written()
    files.write_raw("LOCK", b"123\n")
    files.write_raw("notes.txt", b"hello")
    assert _recovered(files) == payloads


def test_unknown_kind_with_good_checksum_counts_as_corrupt() -> None:
    files = FakeFiles()
    files.write_raw(
        segment_name(1), encode_header(0, 0) + encode(1, b"a") + encode(200, b"?") + encode(1, b"b")
    )

    def decode(record: Record) -> bytes:
        if record.kind == 200:
            raise ValueError("unknown kind")
        return record.payload

    result = recover_log(files, decode)
    assert [p for _, p in result.records] == [b"a"]
    assert result.report.damage == "corrupt"


def _replayed(files: FakeFiles) -> tuple[list[tuple[int, bytes]], RecoveryReport]:
    seen: list[tuple[int, bytes]] = []

    def visitor(number: int) -> Visitor:
        def visit(data: bytes, offset: int, kind: int, length: int) -> None:
            seen.append((number, data[offset + 9 : offset + 9 + length]))

        return visit

    return seen, replay_log(files, visitor).report


@pytest.mark.parametrize(("name", "cut"), CASES)
@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_replay_log_reads_and_cuts_exactly_as_recover_log(name: str, cut: int, damage: str) -> None:
    """The durable log's replay (records visited in place, none kept) ends the log at the
    same spot, reports the same and leaves the same files as the collecting recovery."""
    copies = [_written()[0], _written()[0]]
    for files in copies:
        data = files.read(name)
        if damage == "cut":
            files.write_raw(name, data[:cut])
        elif cut < len(data):
            files.write_raw(name, data[:cut] + bytes([data[cut] ^ 0x40]) + data[cut + 1 :])
    collected = recover_segments(copies[0])
    seen, report = _replayed(copies[1])
    assert seen == [(n, r.payload) for n, r in collected.records]
    assert report == collected.report
    assert sorted(copies[0].list()) == sorted(copies[1].list())
    assert all(copies[0].read(f) == copies[1].read(f) for f in copies[0].list())


def test_a_visitor_refusing_a_record_ends_the_log_there() -> None:
    files, payloads = _written()

    def visitor(number: int) -> Visitor:
        def visit(data: bytes, offset: int, kind: int, length: int) -> None:
            if data[offset + 9 : offset + 9 + length] == payloads[5]:
                raise ValueError("undecodable")

        return visit

    report = replay_log(files, visitor).report
    assert report.damage == "corrupt" and report.records == 5
