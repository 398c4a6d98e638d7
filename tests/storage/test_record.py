"""The record codec: golden bytes, round trips, and what scan makes of damaged data."""

from __future__ import annotations

import binascii

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.storage.record import HEADER_SIZE, MAX_PAYLOAD, Record, Stop, encode, scan

# length 2 | crc32(length, kind, payload) | kind 7 | b"hi"
GOLDEN = [
    (7, b"hi", bytes.fromhex("02000000 81e0f696 07 6869")),
    (1, b"", bytes.fromhex("00000000 8bc725b1 01")),
]


def test_golden_encode_and_scan() -> None:
    for kind, payload, wire in GOLDEN:
        assert encode(kind, payload) == wire
        result = scan(wire)
        assert result.records == [(0, Record(kind, payload))]
        assert result.stop is Stop.END and result.good_end == len(wire)


def test_crc_covers_length_kind_and_payload() -> None:
    wire = GOLDEN[0][2]
    expected = binascii.crc32(wire[:4] + wire[8:])
    assert int.from_bytes(wire[4:8], "little") == expected


def test_kind_must_fit_a_byte() -> None:
    import pytest

    with pytest.raises(ValueError):
        encode(256, b"")


def test_length_beyond_max_is_corrupt_not_a_wait() -> None:
    bogus = (MAX_PAYLOAD + 1).to_bytes(4, "little") + b"\0\0\0\0\x01"
    assert scan(bogus).stop is Stop.CORRUPT


records = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=6)


@settings(max_examples=60)
@given(records)
def test_round_trip(recs: list[tuple[int, bytes]]) -> None:
    data = b"".join(encode(k, p) for k, p in recs)
    result = scan(data)
    assert [(r.kind, r.payload) for _, r in result.records] == recs
    assert result.stop is Stop.END


def _boundaries(recs: list[tuple[int, bytes]]) -> list[int]:
    out, pos = [0], 0
    for kind, payload in recs:
        pos += len(encode(kind, payload))
        out.append(pos)
    return out


SAMPLE = [(1, b"first"), (2, b""), (3, b"third record"), (9, bytes(range(50)))]
SAMPLE_DATA = b"".join(encode(k, p) for k, p in SAMPLE)


def test_truncated_at_every_byte_keeps_every_whole_record_before_the_cut() -> None:
    bounds = _boundaries(SAMPLE)
    for cut in range(len(SAMPLE_DATA) + 1):
        result = scan(SAMPLE_DATA[:cut])
        whole = max(i for i, b in enumerate(bounds) if b <= cut)
        assert [(r.kind, r.payload) for _, r in result.records] == SAMPLE[:whole]
        assert result.good_end == bounds[whole]
        assert result.stop is (Stop.END if cut == bounds[whole] else Stop.TORN)


def test_a_flipped_bit_anywhere_ends_the_log_at_that_record() -> None:
    bounds = _boundaries(SAMPLE)
    for pos in range(len(SAMPLE_DATA)):
        damaged = bytearray(SAMPLE_DATA)
        damaged[pos] ^= 0x10
        result = scan(bytes(damaged))
        index = max(i for i, b in enumerate(bounds) if b <= pos)
        # Every record before the damaged one survives; the damaged one never does.
        assert [(r.kind, r.payload) for _, r in result.records][:index] == SAMPLE[:index]
        assert len(result.records) == index
        assert result.good_end == bounds[index]
        assert result.stop in (Stop.CORRUPT, Stop.TORN)
        assert result.good_end >= 0 and HEADER_SIZE > 0
