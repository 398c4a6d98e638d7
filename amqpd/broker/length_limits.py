"""Queue length limits: x-max-length, x-max-length-bytes and the x-overflow behaviour.

Rules of this module (reference 2.3; docs "Queue Length Limit"):
- Only READY messages count, and only their body bytes. Both limits may be set; whichever
  is hit first applies.
- ``drop-head`` (default): the queue drops (dead-letters, reason ``maxlen``) from the head
  until ``over`` is False. ``reject-publish``: a publish that ``would_overflow`` is refused
  (nacked under confirms); ``reject-publish-dlx``: also dead-lettered, reason ``maxlen``
  (rabbit_amqqueue_process:maybe_deliver_or_enqueue, will_overflow/2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amqpd.broker.arguments import is_int
from amqpd.broker.queue_settings import QueueSettings


def _int_arg(value: object) -> int | None:
    return int(value) if isinstance(value, int) and is_int(value) else None


class LengthLimits:
    __slots__ = ("max_bytes", "max_length", "reject_dlx", "reject_publish")

    def __init__(self, max_length: int | None, max_bytes: int | None, overflow: str) -> None:
        self.max_length = max_length
        self.max_bytes = max_bytes
        self.reject_publish = overflow in ("reject-publish", "reject-publish-dlx")
        self.reject_dlx = overflow == "reject-publish-dlx"

    @classmethod
    def from_arguments(cls, args: Mapping[str, Any]) -> LengthLimits | None:
        """The queue's limits, None when it has none (the common, free case)."""
        max_length = _int_arg(args.get("x-max-length"))
        max_bytes = _int_arg(args.get("x-max-length-bytes"))
        if max_length is None and max_bytes is None:
            return None
        overflow = args.get("x-overflow", "drop-head")
        if isinstance(overflow, bytes):
            overflow = overflow.decode()
        return cls(max_length, max_bytes, str(overflow))

    @classmethod
    def from_settings(cls, settings: QueueSettings) -> LengthLimits | None:
        """The limits of a queue's effective settings (arguments and policy)."""
        if settings.max_length is None and settings.max_length_bytes is None:
            return None
        return cls(settings.max_length, settings.max_length_bytes, settings.overflow or "")

    def would_overflow(self, count: int, ready_bytes: int, size: int) -> bool:
        """Would one more ready message of ``size`` body bytes exceed a limit?"""
        if self.max_length is not None and count + 1 > self.max_length:
            return True
        return self.max_bytes is not None and ready_bytes + size > self.max_bytes

    def over(self, count: int, ready_bytes: int) -> bool:
        """Is a limit exceeded now (drop-head must drop)?"""
        if self.max_length is not None and count > self.max_length:
            return True
        return self.max_bytes is not None and ready_bytes > self.max_bytes
