"""The last-resort connection.close the server sends when a connection's code raised.

Rules of this module:
- It depends only on ``amqpd.errors``, not on the protocol codec: it runs exactly when
  something in the layers below misbehaved, so it must not rely on them working.
- The frame is fixed by the spec (0-9-1 section 4.2.3 frame layout, connection.close is
  class 10 method 50), so encoding it by hand is small and stable.
"""

from __future__ import annotations

import struct

from amqpd.errors import InternalError

_FRAME_METHOD = 1
_FRAME_END = b"\xce"
_CONNECTION_CLOSE = (10, 50)


def connection_close_frame(reply_code: int, reply_text: str) -> bytes:
    """connection.close on channel 0 with class-id/method-id 0 (no method to blame)."""
    text = reply_text.encode("utf-8")[:255]
    payload = (
        struct.pack(">HHH", *_CONNECTION_CLOSE, reply_code)
        + struct.pack(">B", len(text))
        + text
        + struct.pack(">HH", 0, 0)
    )
    return struct.pack(">BHI", _FRAME_METHOD, 0, len(payload)) + payload + _FRAME_END


def internal_error_frame() -> bytes:
    """541 INTERNAL_ERROR, the code RabbitMQ uses when a connection process crashes."""
    error = InternalError("internal error in amqpd; see the broker log")
    return connection_close_frame(error.reply_code, error.reply_text)
