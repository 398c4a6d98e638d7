"""The delayed-message exchange: the plugin's rules and a schedule of pending messages.

Rules of this module (reference 2.4; rabbitmq-delayed-message-exchange,
``rabbit_exchange_type_delayed_message.erl`` and ``rabbit_delayed_message_utils.erl``):
- An exchange of type ``x-delayed-message`` routes like the type its ``x-delayed-type``
  argument names (direct, fanout, topic, headers). The argument is required and checked
  when the exchange is created (``validate_delayed_type``), never on a redeclare: the plugin
  delegates argument equivalence to the wrapped type, which compares ``alternate-exchange``
  only.
- The ``x-delay`` header (``delay_of``) delays a message only if it is an integer of any
  width, a string holding an integer, or a float or decimal (truncated), and only if
  ``0 < x-delay <= 4294967295`` ms (Erlang's timer limit). Anything else, including a
  missing header, 0 and negative values, routes the message at once.
- A delayed message routes to nothing at publish time (the plugin's ``route/2`` returns
  ``[]``): a mandatory publish is returned at once, a confirm is sent at once and an
  alternate exchange gets a copy at once. When it is due it is routed once through its
  exchange with ``x-delay`` negated (``swap_delay_header``), so a delayed exchange further
  down an exchange-to-exchange path does not delay it again; nothing bound means dropped.
- ``DelaySchedule`` is a binary heap keyed by (due time, arrival order): O(log n) to add
  and to take, messages due at the same moment leave in publish order, and a message due in
  the past is due at once. Time is the caller's ``now`` (seconds, monotonic), never read
  here. An entry holds the message, or for a durable delayed exchange only its place in
  the durable log (``durability.LoggedDelayed``, docs/storage.md "Delayed messages"), with
  the routing keys as a tuple of interned strings.
"""

from __future__ import annotations

import decimal
import heapq
import itertools
import math
import re
import sys
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from amqpd.broker.arguments import is_int, type_name
from amqpd.broker.message import Message
from amqpd.errors import PreconditionFailed
from amqpd.protocol.fieldtable import Int32, Int64

if TYPE_CHECKING:
    from amqpd.broker.durability import LoggedDelayed

EXCHANGE_TYPE = "x-delayed-message"
DELAYED_TYPE_ARG = "x-delayed-type"
DELAY_HEADER = "x-delay"
# ERL_MAX_T in the plugin: the longest delay an Erlang timer takes, in ms (about 49.7 days).
MAX_DELAY_MS = 4294967295

# Distinct routing-key tuples the schedule shares between entries (DelaySchedule.add).
_KEYS_CACHE = 4096

# Erlang's binary_to_integer/1: an optional sign and decimal digits, nothing else.
_ERLANG_INTEGER = re.compile(r"[+-]?[0-9]+")


def validate_delayed_type(arguments: Mapping[str, Any], known_types: Mapping[str, Any]) -> str:
    """The wrapped exchange type of a new ``x-delayed-message`` exchange, or a 406.

    The plugin's ``validate/1``: the argument must be a string naming an existing exchange
    type other than ``x-delayed-message`` itself; an unknown name fails as
    ``rabbit_exchange:check_type/1`` fails for any declare (406 from RabbitMQ 3.13.3).
    """
    value = arguments.get(DELAYED_TYPE_ARG)
    if isinstance(value, bytes) and type_name(value) == "longstr":
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise PreconditionFailed(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type"
        )
    if value == EXCHANGE_TYPE:
        raise PreconditionFailed(
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
        )
    if value not in known_types:
        raise PreconditionFailed(f"unknown exchange type '{value}'")
    return value


def delay_of(headers: Mapping[str, Any] | None) -> int | None:
    """Milliseconds to hold a message with these headers, or None to route it now."""
    if not headers:
        return None
    delay = _header_delay(headers.get(DELAY_HEADER))
    if delay is None or not 0 < delay <= MAX_DELAY_MS:
        return None
    return delay


def _header_delay(value: object) -> int | None:
    # rabbit_delayed_message_utils:get_delay_header/1: integer types as they are, longstr
    # and shortstr through binary_to_integer, decimal/double/float truncated.
    if isinstance(value, int) and is_int(value):  # not bool, not timestamp
        return int(value)
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return int(value) if value.is_finite() else None
    if isinstance(value, str) and _ERLANG_INTEGER.fullmatch(value):
        return int(value)
    # A string that is not an integer makes binary_to_integer fail inside the plugin (the
    # publish crashes the channel); treating it as "no delay" is the useful reading. bytes
    # here are a longstr that is not UTF-8, or a byte array: not integers either.
    return None


def swap_delay_header(message: Message) -> Message:
    """The message as it leaves the schedule: ``x-delay`` negated (the plugin's
    ``swap_delay_header/1``, a signedint; a long where -delay does not fit in 32 bits)."""
    headers: dict[str, Any] = message.headers()
    delay = delay_of(headers)
    if delay is None:
        return message
    headers[DELAY_HEADER] = Int32(-delay) if delay <= 2**31 else Int64(-delay)
    return message.with_properties(attrs.evolve(message.properties, headers=headers))


#: What a schedule entry holds: the message, or (durable delayed exchanges) its place in
#: the durable log once the record is committed (durability.LoggedDelayed).
Held: TypeAlias = "Message | LoggedDelayed"


class DelaySchedule:
    """Pending delayed messages, earliest first, each with the exchange that holds it and the
    routing keys it was published with (its own key plus CC and BCC keys: the BCC header is
    already gone from the message)."""

    __slots__ = ("_heap", "_keys", "_order")

    def __init__(self) -> None:
        # (due, arrival, exchange, routing keys, message): the arrival counter breaks ties,
        # so two messages due together leave in the order they came and messages never
        # compare.
        self._heap: list[tuple[float, int, Hashable, tuple[str, ...], Held]] = []
        self._order = itertools.count()
        # Recent routing-key tuples, so entries with the same keys share one tuple (a
        # cache only: cleared when it grows, never needed for correctness).
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def add(
        self, due: float, exchange: Hashable, routing_keys: Sequence[str], message: Held
    ) -> bool:
        """Hold ``message`` for ``exchange`` until ``due``; True if it is now the earliest."""
        heap = self._heap
        earliest = not heap or due < heap[0][0]
        # Interned: a million entries usually share a handful of routing keys.
        keys = tuple(sys.intern(k) for k in routing_keys)
        cache = self._keys
        shared = cache.get(keys)
        if shared is None:
            if len(cache) >= _KEYS_CACHE:
                cache.clear()
            cache[keys] = keys
        else:
            keys = shared
        heapq.heappush(heap, (due, next(self._order), exchange, keys, message))
        return earliest

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[Hashable, tuple[str, ...], Held]]:
        """Take every message due at ``now``, in due order (publish order among equals)."""
        heap = self._heap
        out: list[tuple[Hashable, tuple[str, ...], Held]] = []
        while heap and heap[0][0] <= now:
            _due, _order, exchange, routing_keys, message = heapq.heappop(heap)
            out.append((exchange, routing_keys, message))
        return out

    def held(self) -> list[Held]:
        """What every entry holds, in no particular order (tests, diagnostics)."""
        return [entry[4] for entry in self._heap]

    def count_for(self, exchange: Hashable) -> int:
        """Messages pending for one exchange (the plugin's ``messages_delayed`` info item)."""
        return sum(1 for entry in self._heap if entry[2] == exchange)
