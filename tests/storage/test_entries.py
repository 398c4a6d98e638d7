"""Record kinds: every entry round-trips through its payload; bad payloads are ValueErrors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.protocol.fieldtable import Int64, UInt8
from amqpd.storage import entries as E

names = st.text(max_size=12)
tables = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.one_of(st.integers(-(2**31), 2**31 - 1), st.text(max_size=5), st.booleans()),
    max_size=3,
)
ids = st.lists(st.integers(0, 2**64 - 1), max_size=5).map(tuple)

any_entry = st.one_of(
    st.builds(E.ExchangeDeclared, names, names, names, st.booleans(), st.booleans(), tables),
    st.builds(E.ExchangeDeleted, names, names),
    st.builds(E.QueueDeclared, names, names, st.booleans(), tables),
    st.builds(E.QueueDeleted, names, names),
    st.builds(E.BindingAdded, names, names, st.booleans(), names, names, tables),
    st.builds(E.BindingRemoved, names, names, st.booleans(), names, names, tables),
    st.builds(
        E.MessagePublished,
        st.integers(0, 2**64 - 1),
        names,
        st.lists(names, max_size=4).map(tuple),
        names,
        names,
        st.binary(max_size=20),
        st.binary(max_size=50),
    ),
    st.builds(E.MessagesDelivered, names, names, ids),
    st.builds(E.MessagesRemoved, names, names, ids),
    st.just(E.CleanShutdown()),
)


@settings(max_examples=100)
@given(any_entry)
def test_round_trip(entry: E.Entry) -> None:
    assert E.decode_entry(entry.KIND, entry.encode()) == entry


def test_kinds_are_distinct_and_fixed() -> None:
    # The kind byte is the on-disk format: these numbers may never change.
    kinds = {
        E.ExchangeDeclared: 1,
        E.ExchangeDeleted: 2,
        E.QueueDeclared: 3,
        E.QueueDeleted: 4,
        E.BindingAdded: 5,
        E.BindingRemoved: 6,
        E.MessagePublished: 7,
        E.MessagesDelivered: 8,
        E.MessagesRemoved: 9,
        E.CleanShutdown: 10,
    }
    assert {cls: cls.KIND for cls in kinds} == kinds


def test_golden_queue_declared() -> None:
    entry = E.QueueDeclared("/", "q", False, {"x-max-length": 10})
    wire = bytes.fromhex("0100 2f 0100 71 00 00000012 0c 782d6d61782d6c656e677468 49 0000000a")
    assert entry.encode() == wire
    assert E.decode_entry(3, wire) == entry


def test_argument_widths_survive() -> None:
    entry = E.QueueDeclared("/", "q", True, {"a": UInt8(3), "b": Int64(5)})
    back = E.decode_entry(3, entry.encode())
    assert isinstance(back, E.QueueDeclared)
    assert type(back.arguments["a"]) is UInt8 and type(back.arguments["b"]) is Int64


@pytest.mark.parametrize("kind", range(1, 12))
@pytest.mark.parametrize("payload", [b"\xff", b"\x05\x00ab", b"\x00" * 3])
def test_garbage_is_a_value_error(kind: int, payload: bytes) -> None:
    with pytest.raises(ValueError):
        E.decode_entry(kind, payload)
