"""Frames: reading them off a byte stream and writing them out.

Rules of this module:

- A frame is ``type:8 channel:16 size:32 payload:size frame-end:8`` (spec 4.2.3) with
  frame-end 0xCE. ``FrameReader`` buffers what ``feed`` gives it and returns whole frames
  from ``next_frame``; ``None`` means "need more data", never an exception.
- The size in the 7-octet header is checked against ``frame_max`` as soon as the header is
  there, before waiting for (or keeping) the payload. The rule is RabbitMQ's
  (``rabbit_reader:handle_input``): the payload may be at most ``frame_max - 8`` octets,
  plus ``FRAME_SIZE_FUDGE`` = 8 octets of slack for clients that get the arithmetic wrong,
  so a payload over ``frame_max`` is a 501. ``frame_max == 0`` means no limit. The reader
  starts wherever the caller says; RabbitMQ uses ``FRAME_MIN_SIZE`` until tune-ok.
- Frame-end other than 0xCE, an unknown frame type, and a frame too short for its type
  (``rabbit_command_assembler:analyze_frame``: method < 4 octets, header < 12, heartbeat
  with a payload) are 501 FRAME_ERROR with RabbitMQ's detail text
  (``"type 9, all octets = <<>>: unknown_frame"``). After a FrameError the stream is out of
  sync: the caller must close the connection and not read further.
- Which frames may appear on which channel (heartbeat on channel 0 only, content frames on
  non-zero channels) is the connection's business, not the reader's.
- Encoders return one ``bytes`` per call. Body frames carry at most ``frame_max - 8`` octets
  (spec 4.2.6.2); an empty body gets no body frame at all.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Protocol, TypeAlias

from amqpd.errors import FrameError
from amqpd.protocol._erl import format_tuple, payload_snippet
from amqpd.protocol.constants import (
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_OVERHEAD,
    PROTOCOL_HEADER,
)

__all__ = [
    "HEARTBEAT_FRAME",
    "Frame",
    "FrameReader",
    "Publish",
    "encode_basic_deliver",
    "encode_basic_get_ok",
    "encode_basic_return",
    "encode_content",
    "encode_deliver",
    "encode_frame",
    "encode_method_frame",
    "shortstr",
]

Buffer: TypeAlias = bytes | bytearray | memoryview


class _Encodable(Protocol):
    def encode(self) -> bytes: ...


class Frame(NamedTuple):
    """One frame: its type (FRAME_METHOD, ...), channel number and payload."""

    type: int
    channel: int
    payload: bytes


class Publish(NamedTuple):
    """A whole basic.publish as ``FrameReader.peek_publish`` finds it."""

    channel: int
    end: int  # buffer position after its last frame (for ``FrameReader.consume``)
    method: bytes  # the method frame's payload
    properties_raw: bytes
    body: bytes


_HDR = struct.Struct(">BHI")
_END = b"\xce"
#: heartbeat frame: type 8, channel 0, empty payload (spec 4.2.7).
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
# Minimum payload per frame type (analyze_frame's binary patterns).
_MIN_PAYLOAD = {FRAME_METHOD: 4, FRAME_HEADER: 12, FRAME_BODY: 0, FRAME_HEARTBEAT: 0}

# Hot-path structs. Each packs a frame header together with the fixed fields that follow,
# so a delivery costs a handful of pack calls and one join.
_METHOD_HDR_IDS = struct.Struct(">BHIHH")  # type, channel, size, class-id, method-id
_END_CONTENT_HDR = struct.Struct(">BBHIHHQ")  # end, type, channel, size, class, weight, size
_CONTENT_HDR = struct.Struct(">BHIHHQ")  # type, channel, size, class, weight, body size
_END_BODY_HDR = struct.Struct(">BBHI")  # end of previous frame, type, channel, size
_QB = struct.Struct(">QB")
_CONTENT_FIELDS = struct.Struct(">HHQ")  # a content header's class, weight, body size
# basic.publish's class and method ids, as a method payload starts.
_PUBLISH_IDS = b"\x00\x3c\x00\x28"
_HB = struct.Struct(">H")
_I = struct.Struct(">I")
_OCTET = tuple(bytes((i,)) for i in range(256))


class FrameReader:
    """Incremental frame parser over a byte stream (sans-I/O).

    ``feed(data)`` appends; ``next_frame()`` returns the next whole frame or ``None``.
    Call ``next_frame`` until it returns ``None`` after every ``feed``: the size check
    happens there, so a hostile size is refused after at most one read's worth of data.
    """

    __slots__ = ("_buf", "_pos", "frame_max")

    def __init__(self, frame_max: int = 0) -> None:
        #: Negotiated frame_max (0 = unlimited); settable at any time (after tune-ok).
        self.frame_max = frame_max
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: Buffer) -> None:
        if self._pos:
            # Drop what has been consumed; only a partial frame is left, so this is cheap.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def read_protocol_header(self) -> bytes | None:
        """Consume and return the 8-octet protocol header once buffered (else None).

        For the connection's first read (spec 4.2.2); it judges the octets, not us.
        """
        if len(self._buf) - self._pos < len(PROTOCOL_HEADER):
            return None
        start = self._pos
        self._pos += len(PROTOCOL_HEADER)
        return bytes(self._buf[start : self._pos])

    def peek_publish(self) -> Publish | None:
        """A whole basic.publish at the head of the buffer, parsed, NOT consumed.

        The hot path's shortcut past three Frames: a method frame with basic.publish's ids,
        its content header and (unless the body is empty) exactly one body frame holding the
        whole body, all on one channel and all of them well-formed: every frame-end octet in
        place, every size within ``frame_max``, the header of class 60 with weight 0 (the
        checks ``next_frame`` and the assembler make). Anything else (a bad frame, a body in
        several frames, a publish not all buffered yet) is None, and ``next_frame`` takes it
        frame by frame, so the errors stay exactly as they are. ``consume(end)`` takes it.
        """
        buf = self._buf
        pos = self._pos
        n = len(buf)
        if n - pos < 22:  # a method frame with the ids (11) + a header frame's first 11
            return None
        ftype, channel, size = _HDR.unpack_from(buf, pos)
        frame_max = self.frame_max
        if ftype != FRAME_METHOD or channel == 0 or size < 4 or (frame_max and size > frame_max):
            return None
        start = pos + 7
        if buf[start : start + 4] != _PUBLISH_IDS:
            return None
        mend = start + size
        hpos = mend + 1
        if n < hpos + 7 or buf[mend] != FRAME_END:
            return None
        ftype, hchannel, hsize = _HDR.unpack_from(buf, hpos)
        if ftype != FRAME_HEADER or hchannel != channel or hsize < 12:
            return None
        if frame_max and hsize > frame_max:
            return None
        hend = hpos + 7 + hsize
        if n <= hend or buf[hend] != FRAME_END:
            return None
        class_id, weight, body_size = _CONTENT_FIELDS.unpack_from(buf, hpos + 7)
        if class_id != 60 or weight != 0:
            return None
        if body_size == 0:
            body = b""
            end = hend + 1
        else:
            bpos = hend + 1
            if n < bpos + 7:
                return None
            ftype, bchannel, bsize = _HDR.unpack_from(buf, bpos)
            if ftype != FRAME_BODY or bchannel != channel or bsize != body_size:
                return None
            if frame_max and bsize > frame_max:
                return None
            bend = bpos + 7 + bsize
            if n <= bend or buf[bend] != FRAME_END:
                return None
            if bsize < 8192:
                body = bytes(buf[bpos + 7 : bend])
            else:
                with memoryview(buf) as view:
                    body = view[bpos + 7 : bend].tobytes()
            end = bend + 1
        return Publish(channel, end, bytes(buf[start:mend]), bytes(buf[hpos + 19 : hend]), body)

    def consume(self, end: int) -> None:
        """Take what ``peek_publish`` found (``end`` is its ``end``)."""
        self._pos = end

    def next_frame(self) -> Frame | None:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 7:
            return None
        ftype, channel, size = _HDR.unpack_from(buf, pos)
        frame_max = self.frame_max
        # rabbit_reader: PayloadSize > FrameMax - ?EMPTY_FRAME_SIZE + ?FRAME_SIZE_FUDGE is
        # fatal; both constants are 8, so the payload may not exceed frame_max.
        if frame_max and size > frame_max:
            raise FrameError(
                f"type {ftype}, all octets = <<>>: "
                f"{{frame_too_large,{size},{frame_max - FRAME_OVERHEAD}}}"
            )
        end = pos + 7 + size
        if len(buf) <= end:
            return None
        if size < 8192:
            # bytearray slice + bytes(): two copies, but cheaper than a memoryview when small
            payload = bytes(buf[pos + 7 : end])
        else:
            with memoryview(buf) as view:
                payload = view[pos + 7 : end].tobytes()
        marker = buf[end]
        self._pos = end + 1
        if marker != FRAME_END:
            # Spec 4.2.3: a bad frame-end means the stream is out of sync: fatal.
            prefix = f"type {ftype}, {payload_snippet(payload)}: "
            marker_term = format_tuple(len(prefix), "invalid_frame_end_marker", str(marker))
            raise FrameError(prefix + marker_term)
        if ftype == FRAME_BODY or (ftype == FRAME_METHOD and size >= 4):
            return Frame(ftype, channel, payload)
        minimum = _MIN_PAYLOAD.get(ftype)
        if minimum is None or size < minimum or (ftype == FRAME_HEARTBEAT and size):
            raise FrameError(f"type {ftype}, {payload_snippet(payload)}: unknown_frame")
        return Frame(ftype, channel, payload)


# --------------------------------------------------------------------------- encoders


def encode_frame(frame_type: int, channel: int, payload: Buffer) -> bytes:
    """Any frame from its parts."""
    return b"".join((_HDR.pack(frame_type, channel, len(payload)), payload, _END))


def encode_method_frame(channel: int, method: _Encodable) -> bytes:
    """A method frame carrying ``method.encode()``."""
    payload = method.encode()
    return b"".join((_HDR.pack(FRAME_METHOD, channel, len(payload)), payload, _END))


def _append_content(
    parts: list[bytes | memoryview],
    channel: int,
    class_id: int,
    properties_raw: bytes,
    body: bytes,
    frame_max: int,
    leading_end: bool,
) -> None:
    """Append the content header frame and the body frames to ``parts``.

    With ``leading_end`` the previous frame's frame-end octet is packed in front of the
    header frame (saving one list item); the last frame's end is always appended.
    """
    body_len = len(body)
    hdr_size = 12 + len(properties_raw)
    if leading_end:
        parts.append(
            _END_CONTENT_HDR.pack(FRAME_END, FRAME_HEADER, channel, hdr_size, class_id, 0, body_len)
        )
    else:
        parts.append(_CONTENT_HDR.pack(FRAME_HEADER, channel, hdr_size, class_id, 0, body_len))
    parts.append(properties_raw)
    if body_len:
        limit = frame_max - FRAME_OVERHEAD if frame_max else body_len
        if limit <= 0:
            raise ValueError(f"frame_max {frame_max} leaves no room for a body frame")
        if body_len <= limit:
            parts.append(_END_BODY_HDR.pack(FRAME_END, FRAME_BODY, channel, body_len))
            parts.append(body)
        else:
            view = memoryview(body)
            for start in range(0, body_len, limit):
                chunk = view[start : start + limit]
                parts.append(_END_BODY_HDR.pack(FRAME_END, FRAME_BODY, channel, len(chunk)))
                parts.append(chunk)
    parts.append(_END)


def encode_content(
    channel: int, properties_raw: bytes, body: bytes, frame_max: int, class_id: int = 60
) -> bytes:
    """Content header frame plus body frames (spec 4.2.6)."""
    parts: list[bytes | memoryview] = []
    _append_content(parts, channel, class_id, properties_raw, body, frame_max, False)
    return b"".join(parts)


def _ss(value: str) -> bytes:
    # surrogateescape: basic.publish decodes exchange and routing key that way (RabbitMQ
    # keeps them as binaries), so octets that are not UTF-8 go back out as they came.
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise ValueError(f"shortstr longer than 255 octets: {value[:40]!r}...")
    return _OCTET[len(raw)] + raw


def shortstr(value: str) -> bytes:
    """``value`` as an AMQP shortstr (length octet + UTF-8), for parts encoded once."""
    return _ss(value)


def encode_basic_deliver(
    channel: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    properties_raw: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """basic.deliver method frame + content header + body frames, as one bytes object."""
    return encode_deliver(
        channel,
        _ss(consumer_tag),
        delivery_tag,
        redelivered,
        _ss(exchange) + _ss(routing_key),
        properties_raw,
        body,
        frame_max,
    )


def encode_deliver(
    channel: int,
    ctag: bytes,
    delivery_tag: int,
    redelivered: bool,
    route: bytes,
    properties_raw: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """``encode_basic_deliver`` from parts encoded once: the consumer tag as a shortstr
    (a consumer's, for all its deliveries) and exchange + routing key as two shortstrs
    (a message's, for every queue it is delivered from)."""
    # payload: class+method ids (4) + ctag + delivery-tag (8) + bits (1) + exchange + rk
    size = 13 + len(ctag) + len(route)
    parts: list[bytes | memoryview] = [
        _METHOD_HDR_IDS.pack(FRAME_METHOD, channel, size, 60, 60),
        ctag,
        _QB.pack(delivery_tag, redelivered),
        route,
    ]
    _append_content(parts, channel, 60, properties_raw, body, frame_max, True)
    return b"".join(parts)


def encode_basic_get_ok(
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    message_count: int,
    properties_raw: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """basic.get-ok method frame + content frames."""
    ex = _ss(exchange)
    rk = _ss(routing_key)
    size = 17 + len(ex) + len(rk)
    parts: list[bytes | memoryview] = [
        _METHOD_HDR_IDS.pack(FRAME_METHOD, channel, size, 60, 71),
        _QB.pack(delivery_tag, redelivered),
        ex,
        rk,
        _I.pack(message_count),
    ]
    _append_content(parts, channel, 60, properties_raw, body, frame_max, True)
    return b"".join(parts)


def encode_basic_return(
    channel: int,
    reply_code: int,
    reply_text: str,
    exchange: str,
    routing_key: str,
    properties_raw: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """basic.return method frame + content frames."""
    text = _ss(reply_text)
    ex = _ss(exchange)
    rk = _ss(routing_key)
    size = 6 + len(text) + len(ex) + len(rk)
    parts: list[bytes | memoryview] = [
        _METHOD_HDR_IDS.pack(FRAME_METHOD, channel, size, 60, 50),
        _HB.pack(reply_code),
        text,
        ex,
        rk,
    ]
    _append_content(parts, channel, 60, properties_raw, body, frame_max, True)
    return b"".join(parts)
