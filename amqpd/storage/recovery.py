"""Recovery of the raw log: read every segment in order, cut off a torn or corrupt tail.

Rules of this module (docs/storage.md "Recovery"):
- Segments are read in number order; records in file order. That order is the log order.
- At the first bad spot (a record cut short, a checksum mismatch, a bad header, a segment
  shorter than the next one's header says it was: a tail lost at a record boundary) the log
  ends: that segment is truncated there (removed if not even its header is good) and every
  later segment is renamed ``*.seg.dropped``, kept for inspection, never replayed. Replaying
  records after a hole could apply an ack without its publish's context, so everything
  after the first bad record is set aside; everything before it is replayed.
- Never raises for damaged content; only file-system errors (``OSError``) escape, which the
  caller reports as an unusable data directory.
- ``recover_log`` collects the decoded records (``RecoveredLog.records``); ``replay_log``
  hands each record to a visitor as its segment is read and keeps none, so replaying a log
  larger than memory holds two segment files at a time (the one read and its successor,
  whose header says how long the first one was).
- The ``RecoveryReport`` says what was read and what was cut, with counts, so the CLI can
  log it; nothing is ever dropped without appearing in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from amqpd.storage.files import FileLayer
from amqpd.storage.record import Record, ScanResult, Stop, Visitor
from amqpd.storage.segment import (
    DROPPED_SUFFIX,
    HEADER_SIZE,
    parse_segment_name,
    scan_segment,
    scan_segment_with,
)


@attrs.define
class RecoveryReport:
    """What recovery found. The broker adds the entity counts after replay."""

    segments: int = 0
    records: int = 0
    # The damage, if any: which segment, where its good part ends, why, what was cut.
    damaged_segment: str | None = None
    damage: str | None = None  # "torn" | "corrupt"
    truncated_at: int | None = None
    bytes_dropped: int = 0
    # A segment shorter than its successor's header says it was: bytes lost, not cut.
    missing_bytes: int = 0
    dropped_segments: list[str] = attrs.Factory(list)
    # Records readable in the dropped segments (a lower bound: they may be damaged too).
    dropped_records: int = 0
    exchanges: int = 0
    queues: int = 0
    bindings: int = 0
    messages: int = 0
    clean_shutdown: bool = False

    @property
    def damaged(self) -> bool:
        return self.damage is not None

    @property
    def empty(self) -> bool:
        """Nothing was there to recover: a new data directory, not a crash (its
        ``clean_shutdown`` is False only because no stop was ever recorded)."""
        return self.segments == 0 and not self.damaged and not self.dropped_segments

    def fields(self) -> dict[str, object]:
        """Key-value form for a structured log line."""
        return attrs.asdict(self)


T = TypeVar("T")


@attrs.frozen(slots=True)
class RecoveredLog(Generic[T]):
    records: list[tuple[int, T]]  # (segment number, decoded record) in log order
    report: RecoveryReport
    segments: list[int]  # the segment numbers still on disk, in order
    next_segment: int  # the first number never used by any file
    last: tuple[int, int]  # number and length of the last segment kept, (0, 0) if none


def recover_segments(files: FileLayer) -> RecoveredLog[Record]:
    """Read the log as raw records."""
    return recover_log(files, _raw)


def _raw(record: Record) -> Record:
    return record


def recover_log(
    files: FileLayer,
    decode: Callable[[Record], T],
    locate: Callable[[T, Record, int, int], T] | None = None,
) -> RecoveredLog[T]:
    """Read the log, decoding each record once; a record with a good checksum that
    ``decode`` refuses (raises ValueError) counts as corrupt, like a bad checksum.
    ``locate(value, record, segment, offset)``, if given, may replace each decoded value
    knowing where its record is; it may refuse a record too (ValueError)."""
    records: list[tuple[int, T]] = []

    def read(data: bytes, number: int) -> tuple[int, Stop, int]:
        result, decoded = _decoded(scan_segment(data).result, decode, locate, number)
        records.extend((number, value) for value in decoded)
        return result.good_end, result.stop, len(decoded)

    return _recover(files, read, records)


def replay_log(files: FileLayer, visitor: Callable[[int], Visitor]) -> RecoveredLog[None]:
    """Read the log as ``recover_log`` does, keeping nothing: each good record goes to
    ``visitor(segment)(data, offset, kind, length)`` (record.scan_with) in log order, as
    its segment is read; a ValueError from it makes that record the bad spot."""

    def read(data: bytes, number: int) -> tuple[int, Stop, int]:
        return scan_segment_with(data, visitor(number))

    return _recover(files, read, [])


def _recover(
    files: FileLayer,
    read: Callable[[bytes, int], tuple[int, Stop, int]],
    records: list[tuple[int, T]],
) -> RecoveredLog[T]:
    """The walk over the segments; ``read(data, number)`` interprets one segment's records
    and returns (where its good part ends, why it stopped, how many records it read)."""
    live: list[tuple[int, str]] = []
    highest = 0
    for name in files.list():
        parsed = parse_segment_name(name)
        if parsed is None:
            continue
        number, dropped = parsed
        highest = max(highest, number)
        if not dropped:
            live.append((number, name))
    live.sort()
    report = RecoveryReport()
    kept: list[int] = []
    last = (0, 0)
    following = files.read(live[0][1]) if live else b""
    for index, (number, name) in enumerate(live):
        data = following
        following = files.read(live[index + 1][1]) if index + 1 < len(live) else b""
        good_end, stop, count = read(data, number)
        report.records += count
        report.segments += 1
        damage = None if stop is Stop.END else stop.value
        if damage is None and index + 1 < len(live):
            # Scanned clean; did it lose a tail that ended at a record boundary?
            claim = scan_segment(following[:HEADER_SIZE])
            if claim.previous == number and claim.previous_length > len(data):
                damage = Stop.TORN.value
                report.missing_bytes = claim.previous_length - len(data)
        if damage is None:
            kept.append(number)
            last = (number, len(data))
            continue
        report.damaged_segment = name
        report.damage = damage
        report.truncated_at = good_end
        report.bytes_dropped = len(data) - good_end
        if good_end < HEADER_SIZE:
            files.remove(name)
        else:
            if good_end < len(data):
                files.truncate(name, good_end)
            kept.append(number)
            last = (number, good_end)
        for _, later in live[index + 1 :]:
            report.dropped_records += _count_readable(files.read(later))
            files.rename(later, later.removesuffix(".seg") + DROPPED_SUFFIX)
            report.dropped_segments.append(later)
        files.sync_dir()
        break
    return RecoveredLog(records, report, kept, highest + 1, last)


def _decoded(
    result: ScanResult,
    decode: Callable[[Record], T],
    locate: Callable[[T, Record, int, int], T] | None,
    number: int,
) -> tuple[ScanResult, list[T]]:
    values: list[T] = []
    for index, (offset, record) in enumerate(result.records):
        try:
            value = decode(record)
            if locate is not None:
                value = locate(value, record, number, offset)
        except ValueError:
            return ScanResult(result.records[:index], offset, Stop.CORRUPT), values
        values.append(value)
    return result, values


def _count_readable(data: bytes) -> int:
    return len(scan_segment(data).result.records)
