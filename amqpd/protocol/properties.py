"""Basic-class content properties (the property list of a content header frame).

Rules of this module:

- ``BasicProperties.encode()`` gives, and ``BasicProperties.decode(raw)`` takes, the content
  header payload *after* class-id, weight and body-size: the property flag word(s) followed
  by the present properties in flag order (spec 4.2.6.1). Messages keep this raw form; decode
  it only when a property is actually needed.
- The 14 basic properties map to flag bits 15 (content-type) down to 2 (cluster-id, the
  spec's ``reserved``). Bit 0 is the continuation bit: another flag word follows (spec
  4.2.6.1). Bit 1 would be a 15th property; RabbitMQ ignores it and so do we. A continuation
  word that sets any flag names a property basic does not have: ``FrameError``.
- Shortstr properties decode with ``surrogateescape``: RabbitMQ does not check them for
  UTF-8, so neither do we, and the bytes survive a decode/encode round trip unchanged.
- A truncated or overlong property list raises ``FrameError``.
"""

from __future__ import annotations

import struct
from typing import Any, TypeAlias

import attrs

from amqpd.errors import FrameError
from amqpd.protocol.fieldtable import FieldTable, decode_table, encode_table

__all__ = ["EMPTY_PROPERTIES", "BasicProperties", "peek_delivery_mode"]

Buffer: TypeAlias = bytes | bytearray | memoryview

#: The property list of a message without properties: one all-zero flag word.
EMPTY_PROPERTIES = b"\x00\x00"

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_OCTET = tuple(bytes((i,)) for i in range(256))

# (attribute, flag bit, type) in spec order.
_SPEC: tuple[tuple[str, int, str], ...] = (
    ("content_type", 1 << 15, "shortstr"),
    ("content_encoding", 1 << 14, "shortstr"),
    ("headers", 1 << 13, "table"),
    ("delivery_mode", 1 << 12, "octet"),
    ("priority", 1 << 11, "octet"),
    ("correlation_id", 1 << 10, "shortstr"),
    ("reply_to", 1 << 9, "shortstr"),
    ("expiration", 1 << 8, "shortstr"),
    ("message_id", 1 << 7, "shortstr"),
    ("timestamp", 1 << 6, "timestamp"),
    ("type", 1 << 5, "shortstr"),
    ("user_id", 1 << 4, "shortstr"),
    ("app_id", 1 << 3, "shortstr"),
    ("cluster_id", 1 << 2, "shortstr"),
)
_FLAG_DELIVERY_MODE = 1 << 12
_FLAG_CONTINUATION = 1


def _enc_ss(value: str, name: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise ValueError(f"property {name} longer than 255 octets")
    return _OCTET[len(raw)] + raw


@attrs.frozen(slots=True)
class BasicProperties:
    """The 14 properties of class basic; ``None`` means absent."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: FieldTable | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None

    def encode(self) -> bytes:
        """Flag word plus the present properties (the raw form messages keep)."""
        flags = 0
        parts: list[bytes] = [b""]
        for name, bit, kind in _SPEC:
            value: Any = getattr(self, name)
            if value is None:
                continue
            flags |= bit
            if kind == "shortstr":
                parts.append(_enc_ss(value, name))
            elif kind == "octet":
                if not 0 <= value <= 255:
                    raise ValueError(f"property {name}={value} does not fit an octet")
                parts.append(_OCTET[value])
            elif kind == "table":
                parts.append(encode_table(value))
            else:
                parts.append(_U64.pack(value))
        parts[0] = _U16.pack(flags)
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: Buffer) -> BasicProperties:
        """Decode a property list (flag words + values); ``FrameError`` if malformed."""
        try:
            return cls(**_decode(raw))
        except (IndexError, struct.error):
            raise FrameError("truncated content header property list") from None


def _read_flags(raw: Buffer) -> tuple[int, int]:
    (flags,) = _U16.unpack_from(raw, 0)
    off = 2
    more = flags & _FLAG_CONTINUATION
    while more:
        (extra,) = _U16.unpack_from(raw, off)
        off += 2
        if extra & ~_FLAG_CONTINUATION:
            raise FrameError(f"content header property flags {extra:#06x} name no property")
        more = extra & _FLAG_CONTINUATION
    return flags, off


def _dec_ss(raw: Buffer, off: int) -> tuple[str, int]:
    end = off + 1 + raw[off]
    if end > len(raw):
        raise FrameError(f"property shortstr at offset {off} overruns the content header")
    return str(raw[off + 1 : end], "utf-8", "surrogateescape"), end


def _decode(raw: Buffer) -> dict[str, Any]:
    flags, off = _read_flags(raw)
    values: dict[str, Any] = {}
    if flags & 0xFFFC:
        for name, bit, kind in _SPEC:
            if not flags & bit:
                continue
            if kind == "shortstr":
                values[name], off = _dec_ss(raw, off)
            elif kind == "octet":
                values[name] = raw[off]
                off += 1
            elif kind == "table":
                values[name], off = decode_table(raw, off)
            else:
                values[name] = _U64.unpack_from(raw, off)[0]
                off += 8
    if off != len(raw):
        raise FrameError(f"{len(raw) - off} unexpected octets after the content properties")
    return values


def peek_delivery_mode(raw: Buffer) -> int | None:
    """delivery-mode from a raw property list without decoding the rest (None if absent).

    Skips content-type, content-encoding and headers by their lengths without checking
    what it skips; a list too short to hold the answer raises ``FrameError``.
    """
    try:
        (flags,) = _U16.unpack_from(raw, 0)
        if not flags & _FLAG_DELIVERY_MODE:
            return None
        off = 2
        if flags & _FLAG_CONTINUATION:
            _, off = _read_flags(raw)
        if flags & (1 << 15):
            off += 1 + raw[off]
        if flags & (1 << 14):
            off += 1 + raw[off]
        if flags & (1 << 13):
            off += 4 + _U32.unpack_from(raw, off)[0]
        mode: int = raw[off]
    except (IndexError, struct.error):
        raise FrameError("truncated content header property list") from None
    return mode
