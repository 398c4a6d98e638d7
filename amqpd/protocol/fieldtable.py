"""Field tables and field arrays in RabbitMQ's type dialect.

Rules of this module:

- The type tags are those of RabbitMQ's "AMQP 0-9-1 errata" (section 3, "Field types") and
  of ``rabbit_binary_parser``, not the table in the 0-9-1 PDF, because that is what every
  RabbitMQ client sends::

      t bool        b int8     B uint8    s int16 (!)  u uint16
      I int32       i uint32   l int64 (!) L int64 (read only)
      f float32     d float64  D decimal (scale octet + int32, see below)
      S longstr     x byte array   A array   F table   T timestamp (uint64)   V void

- Decimals: the spec grammar and rabbit_binary_parser say the 32-bit value is unsigned,
  but the Java client and pika read and write it signed, and RabbitMQ only passes the octets
  through. We read it signed too, so a client gets back the value it sent.
- Decoding keeps the wire width: ints come back as width-keeping ``int`` subclasses
  (``Int16(5)`` for an ``s``), so re-encoding a decoded table yields the same octets.
  The subclasses compare and hash like plain ints (RabbitMQ's argument equivalence compares
  integers by value whatever their width).
- Keys are shortstrs decoded with ``surrogateescape`` (RabbitMQ never checks them), so a
  non-UTF-8 key survives decode/encode unchanged. ``S`` values are ``str`` when valid UTF-8,
  else ``bytes``.
- Encoding a plain ``int`` picks ``I`` when it fits int32, else ``l``; plain ``bytes`` is
  ``S``; only ``ByteArray`` is ``x``. ``bool`` is checked before ``int``.
- Decoding reads in place (``unpack_from`` at offsets, never reslicing the buffer), checks
  every length against the enclosing table/array bound and raises
  ``amqpd.errors.FrameError`` for anything malformed. Encoding a value we cannot represent
  is a programming error: ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TypeAlias, Union

from amqpd.errors import FrameError

__all__ = [
    "ByteArray",
    "FieldArray",
    "FieldTable",
    "FieldValue",
    "Float32",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "Timestamp",
    "UInt8",
    "UInt16",
    "UInt32",
    "decode_array",
    "decode_table",
    "encode_array",
    "encode_table",
]


class Int8(int):
    """A field value that travels as ``b`` (signed 8-bit)."""

    __slots__ = ()


class UInt8(int):
    """``B`` (unsigned 8-bit)."""

    __slots__ = ()


class Int16(int):
    """``s`` (signed 16-bit; RabbitMQ's reading of the errata)."""

    __slots__ = ()


class UInt16(int):
    """``u`` (unsigned 16-bit)."""

    __slots__ = ()


class Int32(int):
    """``I`` (signed 32-bit)."""

    __slots__ = ()


class UInt32(int):
    """``i`` (unsigned 32-bit)."""

    __slots__ = ()


class Int64(int):
    """``l`` (signed 64-bit)."""

    __slots__ = ()


class Timestamp(int):
    """``T``: POSIX seconds as an unsigned 64-bit integer."""

    __slots__ = ()


class Float32(float):
    """``f`` (IEEE 754 single precision)."""

    __slots__ = ()


class ByteArray(bytes):
    """``x``: opaque bytes (RabbitMQ's ``binary``), distinct from the ``S`` longstr."""

    __slots__ = ()


FieldValue: TypeAlias = Union[  # noqa: UP007 - a recursive alias needs the string form
    bool,
    int,
    float,
    Decimal,
    str,
    bytes,
    list["FieldValue"],
    dict[str, "FieldValue"],
    None,
]
FieldTable: TypeAlias = dict[str, FieldValue]
FieldArray: TypeAlias = list[FieldValue]

Buffer: TypeAlias = bytes | bytearray | memoryview

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_DECIMAL = struct.Struct(">Bi")

# Fixed-width tags: tag -> (struct, width, constructor). One table drives the decoder.
_FIXED: dict[int, tuple[struct.Struct, Callable[[object], FieldValue]]] = {
    ord("b"): (struct.Struct(">b"), Int8),  # type: ignore[dict-item]
    ord("B"): (struct.Struct(">B"), UInt8),  # type: ignore[dict-item]
    ord("s"): (struct.Struct(">h"), Int16),  # type: ignore[dict-item]
    ord("u"): (struct.Struct(">H"), UInt16),  # type: ignore[dict-item]
    ord("I"): (struct.Struct(">i"), Int32),  # type: ignore[dict-item]
    ord("i"): (struct.Struct(">I"), UInt32),  # type: ignore[dict-item]
    ord("l"): (struct.Struct(">q"), Int64),  # type: ignore[dict-item]
    # 'L' is read as signed 64-bit too, as rabbit_binary_parser does (rabbitmq-server#1093).
    ord("L"): (struct.Struct(">q"), Int64),  # type: ignore[dict-item]
    ord("T"): (struct.Struct(">Q"), Timestamp),  # type: ignore[dict-item]
    ord("f"): (struct.Struct(">f"), Float32),  # type: ignore[dict-item]
    ord("d"): (struct.Struct(">d"), float),  # type: ignore[dict-item]
}

# Encoding structs: tag + value in one pack call.
_ENC_INT: dict[type, tuple[struct.Struct, int, int]] = {
    # type -> (struct with tag, min, max)
    Int8: (struct.Struct(">cb"), -(2**7), 2**7 - 1),
    UInt8: (struct.Struct(">cB"), 0, 2**8 - 1),
    Int16: (struct.Struct(">ch"), -(2**15), 2**15 - 1),
    UInt16: (struct.Struct(">cH"), 0, 2**16 - 1),
    Int32: (struct.Struct(">ci"), -(2**31), 2**31 - 1),
    UInt32: (struct.Struct(">cI"), 0, 2**32 - 1),
    Int64: (struct.Struct(">cq"), -(2**63), 2**63 - 1),
    Timestamp: (struct.Struct(">cQ"), 0, 2**64 - 1),
}
_ENC_TAG: dict[type, bytes] = {
    Int8: b"b",
    UInt8: b"B",
    Int16: b"s",
    UInt16: b"u",
    Int32: b"I",
    UInt32: b"i",
    Int64: b"l",
    Timestamp: b"T",
}
_TAG_I = struct.Struct(">ci")
_TAG_L = struct.Struct(">cq")
_TAG_F = struct.Struct(">cf")
_TAG_D = struct.Struct(">cd")
_TAG_LEN = struct.Struct(">cI")
_TAG_DECIMAL = struct.Struct(">cBi")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --------------------------------------------------------------------------- encoding


def encode_table(table: Mapping[str, FieldValue] | None) -> bytes:
    """Encode ``table`` as a field table, including its 4-octet length prefix."""
    if not table:
        return b"\x00\x00\x00\x00"
    parts: list[bytes] = [b""]
    for key, value in table.items():
        name = key.encode("utf-8", "surrogateescape")
        # Field names are shortstrs (spec 4.2.5.3): at most 255 octets.
        if len(name) > 255:
            raise ValueError(f"field table key longer than 255 octets: {key[:40]!r}...")
        parts.append(_U8.pack(len(name)))
        parts.append(name)
        _encode_value(value, parts)
    parts[0] = _U32.pack(sum(map(len, parts)))
    return b"".join(parts)


def encode_array(array: list[FieldValue] | tuple[FieldValue, ...] | None) -> bytes:
    """Encode ``array`` as a field array, including its 4-octet length prefix."""
    if not array:
        return b"\x00\x00\x00\x00"
    parts: list[bytes] = [b""]
    for value in array:
        _encode_value(value, parts)
    parts[0] = _U32.pack(sum(map(len, parts)))
    return b"".join(parts)


def _encode_value(value: object, parts: list[bytes]) -> None:
    cls = type(value)
    if cls is str:
        raw = value.encode("utf-8")  # type: ignore[attr-defined]
        parts.append(_TAG_LEN.pack(b"S", len(raw)))
        parts.append(raw)
    elif cls is bool:
        parts.append(b"t\x01" if value else b"t\x00")
    elif cls is int:
        v: int = value  # type: ignore[assignment]
        if _INT32_MIN <= v <= _INT32_MAX:
            parts.append(_TAG_I.pack(b"I", v))
        elif _INT64_MIN <= v <= _INT64_MAX:
            parts.append(_TAG_L.pack(b"l", v))
        else:
            raise ValueError(f"integer {v} does not fit a field table value (int64)")
    elif cls in _ENC_INT:
        st, lo, hi = _ENC_INT[cls]
        iv = int(value)  # type: ignore[call-overload]
        if not lo <= iv <= hi:
            raise ValueError(f"{cls.__name__}({iv}) out of range [{lo}, {hi}]")
        parts.append(st.pack(_ENC_TAG[cls], iv))
    elif value is None:
        parts.append(b"V")
    elif cls is float:
        parts.append(_TAG_D.pack(b"d", value))
    elif cls is Float32:
        parts.append(_TAG_F.pack(b"f", value))
    elif cls is ByteArray:
        parts.append(_TAG_LEN.pack(b"x", len(value)))  # type: ignore[arg-type]
        parts.append(value)  # type: ignore[arg-type]
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw_b = bytes(value)
        parts.append(_TAG_LEN.pack(b"S", len(raw_b)))
        parts.append(raw_b)
    elif isinstance(value, Mapping):
        parts.append(b"F")
        parts.append(encode_table(value))
    elif isinstance(value, (list, tuple)):
        parts.append(b"A")
        parts.append(encode_array(value))
    elif isinstance(value, Decimal):
        parts.append(_encode_decimal(value))
    elif isinstance(value, str):  # str subclasses
        raw = str(value).encode("utf-8")
        parts.append(_TAG_LEN.pack(b"S", len(raw)))
        parts.append(raw)
    elif isinstance(value, float):
        parts.append(_TAG_D.pack(b"d", value))
    elif isinstance(value, int):  # other int subclasses (e.g. IntEnum)
        _encode_value(int(value), parts)
    else:
        raise TypeError(f"cannot encode {cls.__name__} as a field table value: {value!r}")


def _encode_decimal(value: Decimal) -> bytes:
    if not value.is_finite():
        raise ValueError(f"cannot encode non-finite decimal {value}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits)) or "0")
    if sign:
        unscaled = -unscaled
    if exponent > 0:
        unscaled *= 10**exponent
        exponent = 0
    scale = -exponent
    if scale > 255 or not _INT32_MIN <= unscaled <= _INT32_MAX:
        raise ValueError(f"decimal {value} does not fit scale octet + int32")
    return _TAG_DECIMAL.pack(b"D", scale, unscaled)


# --------------------------------------------------------------------------- decoding


def decode_table(buf: Buffer, offset: int) -> tuple[FieldTable, int]:
    """Decode the field table at ``offset``; return it and the offset just past it."""
    try:
        return _decode_table(buf, offset, len(buf))
    except RecursionError:
        raise FrameError("field table nested too deeply") from None


def decode_array(buf: Buffer, offset: int) -> tuple[FieldArray, int]:
    """Decode the field array at ``offset``; return it and the offset just past it."""
    try:
        return _decode_array(buf, offset, len(buf))
    except RecursionError:
        raise FrameError("field array nested too deeply") from None


def _read_length(buf: Buffer, offset: int, bound: int, what: str) -> int:
    """Read a 4-octet length at ``offset`` and return the end offset it implies."""
    if offset + 4 > bound:
        raise FrameError(f"truncated {what} length at offset {offset}")
    size: int = _U32.unpack_from(buf, offset)[0]
    end = offset + 4 + size
    if end > bound:
        raise FrameError(
            f"{what} length {size} at offset {offset} exceeds the {bound - offset - 4} "
            "octets available"
        )
    return end


def _decode_table(buf: Buffer, offset: int, bound: int) -> tuple[FieldTable, int]:
    end = _read_length(buf, offset, bound, "field table")
    pos = offset + 4
    result: FieldTable = {}
    while pos < end:
        n = buf[pos]
        pos += 1
        name_end = pos + n
        if name_end > end:
            raise FrameError(f"field table key length {n} at offset {pos - 1} overruns the table")
        # RabbitMQ keeps keys as raw binaries; surrogateescape keeps ours lossless too.
        key = str(buf[pos:name_end], "utf-8", "surrogateescape")
        if name_end >= end:
            raise FrameError(f"field table entry {key!r} has no value")
        result[key], pos = _decode_value(buf, name_end, end)
    return result, end


def _decode_array(buf: Buffer, offset: int, bound: int) -> tuple[FieldArray, int]:
    end = _read_length(buf, offset, bound, "field array")
    pos = offset + 4
    result: FieldArray = []
    append = result.append
    while pos < end:
        value, pos = _decode_value(buf, pos, end)
        append(value)
    return result, end


def _decode_value(buf: Buffer, pos: int, bound: int) -> tuple[FieldValue, int]:
    tag = buf[pos]
    pos += 1
    fixed = _FIXED.get(tag)
    if fixed is not None:
        st, ctor = fixed
        nxt = pos + st.size
        if nxt > bound:
            raise FrameError(f"truncated field value of type {chr(tag)!r} at offset {pos - 1}")
        return ctor(st.unpack_from(buf, pos)[0]), nxt
    if tag == 0x53:  # 'S'
        end = _read_length(buf, pos, bound, "longstr")
        raw = buf[pos + 4 : end]
        try:
            return str(raw, "utf-8"), end
        except UnicodeDecodeError:
            return bytes(raw), end
    if tag == 0x74:  # 't'
        if pos >= bound:
            raise FrameError(f"truncated boolean at offset {pos - 1}")
        return buf[pos] != 0, pos + 1
    if tag == 0x46:  # 'F'
        return _decode_table(buf, pos, bound)
    if tag == 0x41:  # 'A'
        return _decode_array(buf, pos, bound)
    if tag == 0x56:  # 'V'
        return None, pos
    if tag == 0x78:  # 'x'
        end = _read_length(buf, pos, bound, "byte array")
        return ByteArray(buf[pos + 4 : end]), end
    if tag == 0x44:  # 'D'
        if pos + 5 > bound:
            raise FrameError(f"truncated decimal at offset {pos - 1}")
        scale, unscaled = _DECIMAL.unpack_from(buf, pos)
        return Decimal(unscaled).scaleb(-scale), pos + 5
    raise FrameError(f"unknown field table value type {tag:#04x} at offset {pos - 1}")
