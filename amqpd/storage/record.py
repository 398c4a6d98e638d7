"""The record codec: how one log record is framed on disk.

Rules of this module (docs/storage.md "Records"):
- A record is ``length (u32 LE) | crc (u32 LE) | kind (u8) | payload``; ``length`` counts
  the payload only. ``crc`` is zlib.crc32 over length, kind and payload, so a flipped bit in
  the length field is caught as well as one in the data.
- Why CRC-32 (zlib): it is in the standard library, runs at memory speed in C, and is made
  for exactly our threat, torn writes and bit rot (every burst error up to 32 bits, all odd
  bit-error counts); we do not defend against an adversary, so a cryptographic hash would
  only cost time. CRC-32C would be as good but is not in the standard library.
- ``scan`` never raises on bad input: it returns the records it could read, where the good
  part ends and why it stopped, so recovery can cut a torn or corrupt tail. ``scan_with``
  is the same walk handing each good record to a visitor instead of collecting copies
  (the durable log's replay: no object per record).
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Callable
from typing import NamedTuple

import attrs

HEADER = struct.Struct("<IIB")
HEADER_SIZE = HEADER.size  # 9
# A length beyond this is corruption, not a record: no message may be bigger (the session
# caps bodies at max_message_size, 128 MiB) and we refuse to wait for gigabytes of tail.
MAX_PAYLOAD = 512 * 1024 * 1024
_LEN = struct.Struct("<I")
_LEN_KIND = struct.Struct("<IB")


class Stop(enum.Enum):
    """Why a scan stopped."""

    END = "end"  # clean end of data
    TORN = "torn"  # a record runs past the end: a write cut short by a crash
    CORRUPT = "corrupt"  # checksum mismatch or impossible length


class Record(NamedTuple):
    # A NamedTuple, not attrs: recovery makes one per record on disk.
    kind: int
    payload: bytes


@attrs.frozen(slots=True)
class ScanResult:
    records: list[tuple[int, Record]]  # (offset, record) of each good record
    good_end: int  # offset just after the last good record
    stop: Stop


def _crc(length: int, kind: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(_LEN.pack(length) + bytes((kind,))))


def header(kind: int, payload: bytes) -> bytes:
    """The 9 bytes that go before ``payload`` (``encode`` without the copy of it)."""
    if not 0 <= kind <= 255:
        raise ValueError(f"record kind {kind} out of range")
    length = len(payload)
    if length > MAX_PAYLOAD:
        raise ValueError(f"record payload of {length} bytes is too large")
    # _crc with one pack for the length and kind: this runs once per persistent publish.
    return HEADER.pack(length, zlib.crc32(payload, zlib.crc32(_LEN_KIND.pack(length, kind))), kind)


def encode(kind: int, payload: bytes) -> bytes:
    return header(kind, payload) + payload


def scan(data: bytes, start: int = 0) -> ScanResult:
    """Read records from ``data[start:]`` until the end or the first bad one."""
    records: list[tuple[int, Record]] = []
    data = bytes(data)
    view = memoryview(data)
    crc32 = zlib.crc32
    offset = start
    end = len(data)
    while True:
        if offset == end:
            return ScanResult(records, offset, Stop.END)
        if end - offset < HEADER_SIZE:
            return ScanResult(records, offset, Stop.TORN)
        length, crc, kind = HEADER.unpack_from(data, offset)
        if length > MAX_PAYLOAD:
            return ScanResult(records, offset, Stop.CORRUPT)
        body_start = offset + HEADER_SIZE
        body_end = body_start + length
        if body_end > end:
            return ScanResult(records, offset, Stop.TORN)
        # _crc without building its input: the kind byte and the payload are adjacent
        # (recovery runs this for every record of the log).
        if crc32(view[offset + 8 : body_end], crc32(view[offset : offset + 4])) != crc:
            return ScanResult(records, offset, Stop.CORRUPT)
        records.append((offset, Record(kind, data[body_start:body_end])))
        offset = body_end


Visitor = Callable[[bytes, int, int, int], None]


def scan_with(data: bytes, start: int, visit: Visitor) -> tuple[int, Stop, int]:
    """``scan`` without collecting: ``visit(data, offset, kind, length)`` for each good
    record, in order (its payload is ``data[offset + HEADER_SIZE:][:length]``). A
    ValueError from ``visit`` makes that record the bad spot (``Stop.CORRUPT``), as an
    undecodable record is for recovery. Returns where the good part ends, why, and how
    many records were visited."""
    data = bytes(data)
    view = memoryview(data)
    crc32 = zlib.crc32
    unpack = HEADER.unpack_from
    offset = start
    end = len(data)
    count = 0
    while True:
        if offset == end:
            return offset, Stop.END, count
        if end - offset < HEADER_SIZE:
            return offset, Stop.TORN, count
        length, crc, kind = unpack(data, offset)
        if length > MAX_PAYLOAD:
            return offset, Stop.CORRUPT, count
        body_end = offset + HEADER_SIZE + length
        if body_end > end:
            return offset, Stop.TORN, count
        if crc32(view[offset + 8 : body_end], crc32(view[offset : offset + 4])) != crc:
            return offset, Stop.CORRUPT, count
        try:
            visit(data, offset, kind, length)
        except ValueError:
            return offset, Stop.CORRUPT, count
        count += 1
        offset = body_end
