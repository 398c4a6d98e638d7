"""Dead-lettering: the message a queue republishes to its dead-letter exchange.

Rules of this module (reference 2.1; docs "Dead Letter Exchanges"; RabbitMQ 3.13
``rabbit_dead_letter.erl``, ``mc.erl:record_death/3``, ``mc_amqpl.erl:death_table/7``):
- Pure functions over messages and header tables; the vhost routes the result.
- Routing keys: the queue's ``x-dead-letter-routing-key`` if set, else *all* the keys the
  message was published with (publish key, CC and BCC). With a DLRK the ``CC`` header is
  removed; ``BCC`` never reaches a queue (the vhost strips it at publish).
- ``expiration`` is removed (so the message does not expire again downstream) and kept as
  ``original-expiration`` in the new x-death entry, whatever the reason.
- ``x-death``: an array of tables, one per {queue, reason}, most recent first. A new pair
  prepends ``{count=1 (long), reason, queue, time (timestamp, s), exchange, routing-keys
  (array; publish key + CC, no BCC)}`` with ``original-expiration`` first when there was a
  per-message TTL (``death_table/7`` order). A repeated pair increments ``count`` and moves
  to the front; ``time``, ``exchange``, ``routing-keys`` keep their first values.
- A client that republishes a message with the x-death header it received has it
  interpreted (3.10, 3.13.3+ after PR #11339; 4.x would restart the count): the header is
  the death history, there is no other state. Entries come back out in the canonical form
  (field order and types of ``death_table/7``), as RabbitMQ re-renders its death records.
- ``x-first-death-{queue,reason,exchange}`` are set when the message had no death history;
  ``x-last-death-{queue,reason,exchange}`` on every death (3.13). The exchange in both is
  the message's exchange before this death.
- The header table comes out sorted by key: RabbitMQ 3.13 rebuilds it with ``lists:usort``
  when it adds the death annotations (``mc_amqpl:protocol_state/2``).
- Cycles (``mc.erl:is_death_cycle/2``): a queue the message would reach is skipped when it
  is already in the death history and no entry between (most recent first) has reason
  ``rejected``: automatic TTL / max-length loops break, client-driven retry loops go on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from amqpd.broker.arguments import is_longstr
from amqpd.broker.message import Message
from amqpd.protocol.fieldtable import Int64, Timestamp

REJECTED = "rejected"
EXPIRED = "expired"
MAXLEN = "maxlen"


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _keys(value: object) -> list[str]:
    """The longstr elements of a CC/BCC array (others ignored, rabbit_basic:header_routes)."""
    if not isinstance(value, list):
        return []
    return [_text(v) for v in value if is_longstr(v)]


def deaths_of(headers: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The x-death entries of a header table (a malformed header counts as none)."""
    value = headers.get("x-death")
    if not isinstance(value, list):
        return []
    return [entry for entry in value if isinstance(entry, dict)]


def _same(entry: Mapping[str, Any], queue: str, reason: str) -> bool:
    return _text(entry.get("queue", "")) == queue and _text(entry.get("reason", "")) == reason


def _entry(
    *,
    count: int,
    reason: str,
    queue: str,
    time: int,
    exchange: str,
    routing_keys: Sequence[str],
    original_expiration: str | None,
) -> dict[str, Any]:
    """One x-death table in mc_amqpl:death_table/7's order and types."""
    entry: dict[str, Any] = {}
    if original_expiration is not None:
        entry["original-expiration"] = original_expiration
    entry["count"] = Int64(count)
    entry["reason"] = reason
    entry["queue"] = queue
    entry["time"] = Timestamp(time)
    entry["exchange"] = exchange
    entry["routing-keys"] = list(routing_keys)
    return entry


def _canonical(entry: Mapping[str, Any], extra: int = 0) -> dict[str, Any]:
    """A (possibly client-supplied) entry re-rendered; ``extra`` is added to its count."""
    count, time = entry.get("count", 0), entry.get("time", 0)
    original = entry.get("original-expiration")
    return _entry(
        count=(count if isinstance(count, int) else 0) + extra,
        reason=_text(entry.get("reason", "")),
        queue=_text(entry.get("queue", "")),
        time=time if isinstance(time, int) else 0,
        exchange=_text(entry.get("exchange", "")),
        routing_keys=_keys(entry.get("routing-keys")),
        original_expiration=None if original is None else _text(original),
    )


def record_death(
    headers: Mapping[str, Any],
    *,
    queue: str,
    reason: str,
    exchange: str,
    routing_keys: Sequence[str],
    time: int,
    original_expiration: str | None,
) -> dict[str, Any]:
    """``headers`` with this death recorded (x-death, x-first-death-*, x-last-death-*)."""
    deaths = deaths_of(headers)
    out = dict(headers)
    for i, found in enumerate(deaths):
        if _same(found, queue, reason):
            # Seen before: count + 1, moved to the front, first time/exchange/keys kept.
            rest = [_canonical(e) for e in deaths[:i] + deaths[i + 1 :]]
            out["x-death"] = [_canonical(found, 1), *rest]
            break
    else:
        new = _entry(
            count=1,
            reason=reason,
            queue=queue,
            time=time,
            exchange=exchange,
            routing_keys=routing_keys,
            original_expiration=original_expiration,
        )
        out["x-death"] = [new, *(_canonical(e) for e in deaths)]
    if not deaths:
        out["x-first-death-queue"] = queue
        out["x-first-death-reason"] = reason
        out["x-first-death-exchange"] = exchange
    out["x-last-death-queue"] = queue
    out["x-last-death-reason"] = reason
    out["x-last-death-exchange"] = exchange
    return dict(sorted(out.items()))


def is_death_cycle(target_queue: str, deaths: Sequence[Mapping[str, Any]]) -> bool:
    """mc.erl is_cycle/2 over the history, most recent first."""
    for entry in deaths:
        reason = _text(entry.get("reason", ""))
        if reason == REJECTED:
            return False  # any rejection breaks the cycle
        if _text(entry.get("queue", "")) == target_queue:
            return True
    return False


@attrs.frozen(slots=True)
class DeadLetter:
    """What to republish: the message and the routing keys to route it by."""

    message: Message
    routing_keys: list[str]
    deaths: list[dict[str, Any]]


def make_dead_letter(
    message: Message,
    *,
    queue: str,
    reason: str,
    dlx: str,
    dlrk: str | None,
    time: int,
) -> DeadLetter:
    """rabbit_dead_letter:make_msg/5 (3.10) / publish/5 with mc:record_death (3.13)."""
    props = message.properties
    headers: dict[str, Any] = dict(props.headers) if props.headers else {}
    cc = _keys(headers.get("CC"))
    # x-death routing-keys: the publish key plus the CC keys still in the headers (BCC was
    # stripped at publish, so it is not recorded).
    death_keys = [message.routing_key, *cc]
    if dlrk is None:
        keys = [message.routing_key, *cc, *message.bcc]
        bcc = message.bcc
    else:
        keys = [dlrk]
        bcc = ()
    headers = record_death(
        headers,
        queue=queue,
        reason=reason,
        exchange=message.exchange,
        routing_keys=death_keys,
        time=time,
        original_expiration=props.expiration,
    )
    if dlrk is not None:
        headers.pop("CC", None)
    new_props = attrs.evolve(props, headers=headers, expiration=None)
    dead = Message(dlx, keys[0], new_props.encode(), message.body, new_props, bcc)
    return DeadLetter(dead, keys, headers["x-death"])
