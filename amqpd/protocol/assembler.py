"""Per-channel command assembly: method frame (+ content header + body frames) -> Command.

Rules of this module, after ``rabbit_command_assembler.erl``:

- A method without content is a command by itself. A method with content (spec 4.2.6) must
  be followed on the same channel by one content header frame of the same class, then body
  frames until ``body_size`` octets have arrived; ``body_size == 0`` completes the command
  at the header, with no body frame.
- Anything out of that order is 505 UNEXPECTED_FRAME with RabbitMQ's texts ("expected
  content header for class 60, got non content header frame instead", ...). A header with
  a non-zero weight counts as "non content header" (spec: weight MUST be 0).
- Body octets beyond the declared size: 501 "content body frame exceeds remaining content
  size". A declared size above RabbitMQ's hard ceiling (``MAX_MSG_SIZE``, 512 MiB): 501
  "content body size N exceeds maximum allowed size M", at the header.
- ``max_body_size`` (the configured max_message_size): RabbitMQ (rabbit_channel
  ``check_msg_size``) reads the whole message and then closes the *channel* with 406
  "message size N is larger than configured max size M". We give the client the same
  answer at the same moment, but never buffer such a body: its frames are counted and
  dropped, and the 406 is raised when the last one arrives, leaving the assembler ready for
  the next method. So the assembler never holds more than ``max_body_size`` octets.
- Body frames are collected as a list of chunks and joined once.
- Heartbeat frames belong to the connection; one fed here is RabbitMQ's 505 for a heartbeat
  on a non-zero channel ("type 8, all octets = <<>>").
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from amqpd.errors import FrameError, PreconditionFailed, UnexpectedFrame
from amqpd.protocol._erl import payload_snippet
from amqpd.protocol.constants import FRAME_BODY, FRAME_HEADER, FRAME_METHOD, MAX_MSG_SIZE
from amqpd.protocol.frames import Frame
from amqpd.protocol.methods import Method, decode_method

__all__ = ["Command", "CommandAssembler"]

_CONTENT_HEADER = struct.Struct(">HHQ")

# States.
_METHOD = 0
_HEADER = 1
_BODY = 2
_DISCARD = 3


class Command(NamedTuple):
    """A complete command. ``properties_raw``/``body`` are None for methods without content.

    (A NamedTuple rather than an attrs class: one is built per command on the hot path.)
    """

    method: Method
    properties_raw: bytes | None = None
    body: bytes | None = None


class CommandAssembler:
    """Turns one channel's frames into commands; see the module docstring for the rules."""

    __slots__ = ("_chunks", "_method", "_props", "_remaining", "_state", "_total", "max_body_size")

    def __init__(self, max_body_size: int) -> None:
        self.max_body_size = max_body_size
        self.reset()

    def reset(self) -> None:
        """Forget any partial command (e.g. when the channel is closed and reopened)."""
        self._state = _METHOD
        self._method: Method | None = None
        self._props = b""
        self._chunks: list[bytes] = []
        self._remaining = 0
        self._total = 0

    @property
    def idle(self) -> bool:
        """True when the next frame must be a method frame."""
        return self._state == _METHOD

    def feed(self, frame: Frame) -> Command | None:
        ftype = frame.type
        state = self._state
        if ftype == FRAME_BODY and state >= _BODY:
            return self._body(frame.payload)
        if ftype == FRAME_METHOD and state == _METHOD:
            method = decode_method(frame.payload)
            if method.HAS_CONTENT:
                self._method = method
                self._state = _HEADER
                return None
            return Command(method)
        if ftype == FRAME_HEADER and state == _HEADER:
            return self._header(frame.payload)
        if ftype not in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY):
            # rabbit_reader: a heartbeat on a non-zero channel is unexpected_frame.
            raise UnexpectedFrame(f"type {ftype}, {payload_snippet(frame.payload)}")
        raise self._out_of_order()

    def _out_of_order(self) -> UnexpectedFrame:
        state = self._state
        method = self._method
        if state == _METHOD or method is None:
            return UnexpectedFrame("expected method frame, got non method frame instead")
        ids = {"class_id": method.CLASS_ID, "method_id": method.METHOD_ID}
        if state == _HEADER:
            return UnexpectedFrame(
                f"expected content header for class {method.CLASS_ID}, "
                "got non content header frame instead",
                **ids,
            )
        return UnexpectedFrame("expected content body, got non content body frame instead", **ids)

    def _header(self, payload: bytes) -> Command | None:
        method = self._method
        assert method is not None
        if len(payload) < 12:  # FrameReader already refuses these; Frames built by hand
            raise FrameError(f"type {FRAME_HEADER}, {payload_snippet(payload)}: unknown_frame")
        class_id, weight, body_size = _CONTENT_HEADER.unpack_from(payload, 0)
        ids = {"class_id": method.CLASS_ID, "method_id": method.METHOD_ID}
        if weight != 0:
            # Spec 4.2.6.1: weight is unused and MUST be zero; RabbitMQ's assembler only
            # matches a zero weight, so anything else is "non content header".
            raise self._out_of_order()
        if class_id != method.CLASS_ID:
            raise UnexpectedFrame(
                f"expected content header for class {method.CLASS_ID}, "
                f"got one for class {class_id} instead",
                **ids,
            )
        props = payload[12:]
        if body_size == 0:
            self.reset()
            return Command(method, props, b"")
        if body_size > MAX_MSG_SIZE:
            raise FrameError(
                f"content body size {body_size} exceeds maximum allowed size {MAX_MSG_SIZE}",
                **ids,
            )
        self._props = props
        self._remaining = self._total = body_size
        self._state = _BODY if body_size <= self.max_body_size else _DISCARD
        return None

    def _body(self, payload: bytes) -> Command | None:
        size = len(payload)
        if size > self._remaining:
            method = self._method
            assert method is not None
            raise FrameError(
                "content body frame exceeds remaining content size",
                class_id=method.CLASS_ID,
                method_id=method.METHOD_ID,
            )
        self._remaining -= size
        if self._state == _BODY:
            if size:
                self._chunks.append(payload)
            if self._remaining:
                return None
            chunks, method = self._chunks, self._method
            assert method is not None
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            command = Command(method, self._props, body)
            self.reset()
            return command
        # _DISCARD: count, drop, and answer like rabbit_channel once the message is complete.
        if self._remaining:
            return None
        method, total = self._method, self._total
        assert method is not None
        self.reset()
        raise PreconditionFailed(
            f"message size {total} is larger than configured max size {self.max_body_size}",
            class_id=method.CLASS_ID,
            method_id=method.METHOD_ID,
        )
