"""Segment files: names, the file header, reading one segment.

Rules of this module (docs/storage.md "Segments"):
- A segment is ``NNNNNNNN.seg`` (zero-padded decimal, so names sort in log order): a
  24-byte header, then records (record.py). The header is ``MAGIC``, the number and
  final length of the segment before it (0, 0 for the first) and a CRC-32 of those: a
  segment cut short at a
  record boundary scans clean, and only its successor's claim reveals that its tail is
  missing. (The predecessor may be gone, reclaimed; then there is nothing to check.)
  Segments are append-only;
  once the log moves on to the next one, a segment is never written again, only deleted
  whole when every record in it is dead.
- ``scan_segment`` collects a segment's records; ``scan_segment_with`` hands each to a
  visitor instead (record.scan_with), for the durable log's replay.
- A segment set aside by recovery (it followed a damaged one) is renamed ``*.seg.dropped``
  and never read again; its number is never reused.
"""

from __future__ import annotations

import struct
import zlib

import attrs

from amqpd.storage.record import ScanResult, Stop, Visitor, scan, scan_with

MAGIC = b"AMQPDSG1"  # "amqpd segment, format 1"
_HEADER = struct.Struct("<8sIQI")
HEADER_SIZE = _HEADER.size  # 24
SUFFIX = ".seg"
DROPPED_SUFFIX = ".seg.dropped"


def segment_name(number: int) -> str:
    return f"{number:08d}{SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, bool] | None:
    """``(number, dropped)`` for a segment file name, else None (the lock file, strays)."""
    for suffix, dropped in ((DROPPED_SUFFIX, True), (SUFFIX, False)):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            if stem.isdigit() and stem.isascii():
                return int(stem), dropped
            return None
    return None


def _header_crc(previous: int, previous_length: int) -> int:
    return zlib.crc32(_HEADER.pack(MAGIC, previous, previous_length, 0)[:-4])


def encode_header(previous: int, previous_length: int) -> bytes:
    crc = _header_crc(previous, previous_length)
    return _HEADER.pack(MAGIC, previous, previous_length, crc)


@attrs.frozen(slots=True)
class SegmentScan:
    result: ScanResult
    previous: int  # the predecessor's number and length, from the header (0, 0 if unknown)
    previous_length: int


def scan_segment(data: bytes) -> SegmentScan:
    """The records of one segment file; ``good_end`` 0 means not even the header is good."""
    if len(data) < HEADER_SIZE:
        # A segment created but cut off before its header reached the disk is a torn tail;
        # bytes that are not our magic are something else entirely.
        n = min(len(data), len(MAGIC))
        stop = Stop.TORN if data[:n] == MAGIC[:n] else Stop.CORRUPT
        return SegmentScan(ScanResult([], 0, stop), 0, 0)
    magic, previous, previous_length, crc = _HEADER.unpack_from(data)
    if magic != MAGIC or crc != _header_crc(previous, previous_length):
        return SegmentScan(ScanResult([], 0, Stop.CORRUPT), 0, 0)
    return SegmentScan(scan(data, HEADER_SIZE), previous, previous_length)


def scan_segment_with(data: bytes, visit: Visitor) -> tuple[int, Stop, int]:
    """``scan_segment`` handing records to ``visit`` (record.scan_with): (good end, stop,
    records visited)."""
    head = scan_segment(data[:HEADER_SIZE])
    if head.result.good_end < HEADER_SIZE:
        return head.result.good_end, head.result.stop, 0
    return scan_with(data, HEADER_SIZE, visit)
