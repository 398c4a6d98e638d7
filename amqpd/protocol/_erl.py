"""Erlang-style term text, so our error details read like RabbitMQ's.

Rules of this module: formatting only; it builds the ``FrameError`` details that
``rabbit_reader`` formats with ``"type ~p, ~s octets = ~p: ~p"``, checked against a
RabbitMQ 3.10.8 node (tests/protocol/test_frames.py has the captured texts).

- ``~p`` of a binary: ``<<"text">>`` when every octet is printable Latin-1 (32-126,
  160-255, or \\b \\t \\n \\v \\f \\r, shown escaped), else ``<<1,2,3>>``. RabbitMQ writes the
  octets 160-255 raw, which makes its reply-text invalid UTF-8; we write the Latin-1
  character instead, so our reply-text stays valid UTF-8.
- ``~p`` wraps a tuple that would run past column 80, one element per line aligned after
  the ``{`` (what RabbitMQ does to ``{invalid_frame_end_marker,N}``). Its wrapping of long
  decimal binaries is not imitated.
"""

from __future__ import annotations

from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview

_ESCAPES = {8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r", 34: '\\"', 92: "\\\\"}
_LINE_LENGTH = 80


def _printable(c: int) -> bool:
    return 32 <= c < 127 or 160 <= c <= 255 or 8 <= c <= 13


def format_binary(data: Buffer) -> str:
    """Erlang's ``~p`` of a binary."""
    raw = bytes(data)
    if raw and all(map(_printable, raw)):
        return '<<"' + "".join(_ESCAPES.get(c) or chr(c) for c in raw) + '">>'
    return "<<" + ",".join(map(str, raw)) + ">>"


def format_tuple(column: int, *elements: str) -> str:
    """Erlang's ``~p`` of a flat tuple printed starting at ``column``."""
    text = "{" + ",".join(elements) + "}"
    if column + len(text) <= _LINE_LENGTH:
        return text
    return "{" + (",\n" + " " * (column + 1)).join(elements) + "}"


def payload_snippet(payload: Buffer) -> str:
    """RabbitMQ's ``payload_snippet``: ``all octets = ...`` or ``first 16 octets = ...``."""
    if len(payload) <= 16:
        return f"all octets = {format_binary(payload)}"
    return f"first 16 octets = {format_binary(payload[:16])}"
