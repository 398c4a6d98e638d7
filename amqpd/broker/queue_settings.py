"""A queue's effective settings: its x-arguments combined with the one policy that applies.

Rules of this module (RabbitMQ 3.13 ``rabbit_amqqueue_process:process_args_policy/1``,
``rabbit_queue_type_util:args_policy_lookup/3``; docs "Policies", "Queue Length Limit",
"Time-To-Live and Expiration"; each rule checked on the oracle):
- Only one policy applies to a queue: the highest-priority match (``policies.matching``);
  its definition is never merged with another policy's.
- Per key, when both the argument (``x-<key>``) and the policy set it: ``message-ttl``,
  ``expires``, ``max-length`` and ``max-length-bytes`` take the MINIMUM (``res_min``);
  ``dead-letter-exchange``, ``dead-letter-routing-key`` and ``overflow`` take the ARGUMENT
  (``res_arg``). Each key is resolved on its own: a DLX argument with a policy's DLRK
  uses both (oracle).
- ``queue-mode`` and ``queue-version`` are accepted and ignored (3.13: every classic queue
  is lazy-like, version 2); ``max-priority`` is not a policy key (refused at validation).
- Nothing here changes arg equivalence: a redeclare compares the declared arguments only.
- Stream queues do not use these settings: their retention (stream.py ``Retention``)
  reads max-length-bytes, max-age and stream-max-segment-size-bytes, policy first.
- ``QueueSettings`` is the one value the queue's parts are fed from (``expiry.QueueClock``,
  ``length_limits.LengthLimits``, the dead-letter exchange and key); ``Queue.apply_settings``
  re-feeds them when a policy is added, changed or removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from amqpd.broker.arguments import is_int
from amqpd.broker.policies import Policy


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int) and is_int(value) else None


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _min(arg: int | None, pol: int | None) -> int | None:
    # res_min/2; a side that is unset leaves the other (args_policy_lookup/3).
    if arg is None:
        return pol
    if pol is None:
        return arg
    return min(arg, pol)


@attrs.frozen(slots=True)
class QueueSettings:
    message_ttl: int | None = None  # ms
    expires: int | None = None  # ms
    max_length: int | None = None
    max_length_bytes: int | None = None
    #: None: not set by argument or policy (behaves as "drop-head").
    overflow: str | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    #: The name of the policy applied, None without one.
    policy: str | None = None

    @property
    def drop_head(self) -> bool:
        return self.overflow in (None, "drop-head")


def effective_settings(arguments: Mapping[str, Any], policy: Policy | None) -> QueueSettings:
    """The settings a queue with these declared ``arguments`` runs with under ``policy``."""
    d: Mapping[str, Any] = policy.definition if policy is not None else {}

    def pol_int(key: str) -> int | None:
        return _int(d.get(key))

    def arg_int(key: str) -> int | None:
        return _int(arguments.get(key))

    def arg_wins(key: str) -> str | None:
        # res_arg/2: the argument, when the queue was declared with one.
        value = arguments.get("x-" + key)
        return _text(value if value is not None else d.get(key))

    return QueueSettings(
        message_ttl=_min(arg_int("x-message-ttl"), pol_int("message-ttl")),
        expires=_min(arg_int("x-expires"), pol_int("expires")),
        max_length=_min(arg_int("x-max-length"), pol_int("max-length")),
        max_length_bytes=_min(arg_int("x-max-length-bytes"), pol_int("max-length-bytes")),
        overflow=arg_wins("overflow"),
        dead_letter_exchange=arg_wins("dead-letter-exchange"),
        dead_letter_routing_key=arg_wins("dead-letter-routing-key"),
        policy=policy.name if policy is not None else None,
    )
