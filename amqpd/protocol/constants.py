"""Protocol constants of AMQP 0-9-1 (spec section 4.2.3, and the spec XML's <constant>s).

Rules of this module: plain values only, no imports from amqpd. Reply codes live in
``amqpd.errors`` (they belong to the exception tree).
"""

from __future__ import annotations

from typing import Final

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE

#: The smallest frame_max a peer may negotiate (spec constant frame-min-size).
FRAME_MIN_SIZE: Final = 4096

#: type (1) + channel (2) + size (4) + frame-end (1): what a frame costs beyond its payload.
FRAME_OVERHEAD: Final = 8
#: The 7-octet frame header that precedes every payload (spec 4.2.3).
FRAME_HEADER_SIZE: Final = 7

#: "AMQP" 0 0 9 1 (spec 4.2.2).
PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"

#: RabbitMQ's hard ceiling on a message body (rabbit.hrl ?MAX_MSG_SIZE, 512 MiB): a content
#: header declaring more is a 501 whatever max_message_size says.
MAX_MSG_SIZE: Final = 536870912

# Class ids (spec XML <class index>).
CLASS_CONNECTION: Final = 10
CLASS_CHANNEL: Final = 20
CLASS_EXCHANGE: Final = 40
CLASS_QUEUE: Final = 50
CLASS_BASIC: Final = 60
CLASS_CONFIRM: Final = 85
CLASS_TX: Final = 90
