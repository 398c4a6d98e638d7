"""Policies: named, prioritised sets of queue/exchange settings matched by a name pattern.

Rules of this module (``rabbit_policy``, ``rabbit_policies``, ``rabbit_mirror_queue_misc``
validators; https://www.rabbitmq.com/docs/parameters#policies):
- A policy has a vhost, a name, a pattern (regex, unanchored search), ``apply-to``
  (``queues``, ``exchanges`` or ``all``), an integer priority and a definition whose keys
  each have one validator here (RabbitMQ rejects an unknown key or a bad value when the
  policy is set).
- ``matching`` names the one policy that applies to a queue or exchange, as
  ``rabbit_policy:match/2`` picks it: the highest priority among those whose ``apply-to``
  fits and whose pattern matches the name; never a merge of several. Among equal
  priorities RabbitMQ takes the first in its table's order (the oracle picked the first by
  name); amqpd takes the first by name, deterministically.
- What a policy does to a queue is queue_settings.py's (with the queue's arguments), to a
  stream stream.py's ``Retention`` (max-length-bytes, max-age,
  stream-max-segment-size-bytes; the policy beats the argument there); to an exchange,
  ``Exchange.apply_policy`` (alternate-exchange). The vhost applies them at
  declare and re-applies them when they change (``VirtualHost.set_policies``).
- ``max-priority`` is not a policy key in RabbitMQ 3.x (only the ``x-max-priority`` queue
  argument sets it), so a definition naming it is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from amqpd.broker.permissions import matches

APPLY_TO = ("queues", "exchanges", "all")


def _non_neg_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be a non-negative integer"
    return None


def _pos_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be a positive integer"
    return None


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in choices and not isinstance(value, bool):
            return None
        return "must be one of " + ", ".join(repr(c) for c in choices)

    return check


def _max_age(value: Any) -> str | None:
    # rabbit_policies: rabbit_amqqueue:check_max_age/1, "<digits><Y|M|D|h|m|s>" above 0.
    if isinstance(value, str):
        digits = len(value) - len(value.lstrip("0123456789"))
        if digits and int(value[:digits]) > 0 and value[digits:] in ("Y", "M", "D", "h", "m", "s"):
            return None
    return "must be a max age such as '7D' (a positive integer and one of Y, M, D, h, m, s)"


def _ha_params(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None  # ha-mode nodes: a list of node names
    return _pos_int(value)


#: Every definition key RabbitMQ 3.13 validates for policies, with its validator.
DEFINITION_KEYS: dict[str, Callable[[Any], str | None]] = {
    "message-ttl": _non_neg_int,
    "expires": _pos_int,
    "max-length": _non_neg_int,
    "max-length-bytes": _non_neg_int,
    "overflow": _one_of("drop-head", "reject-publish", "reject-publish-dlx"),
    "dead-letter-exchange": _string,
    "dead-letter-routing-key": _string,
    "alternate-exchange": _string,
    "queue-mode": _one_of("default", "lazy"),
    "queue-version": _one_of(1, 2),
    "delivery-limit": _non_neg_int,
    "queue-master-locator": _one_of("client-local", "min-masters", "random"),
    # Streams (rabbit_stream_queue:update_stream_conf/2 reads these and max-length-bytes).
    "max-age": _max_age,
    "stream-max-segment-size-bytes": _non_neg_int,
    # Classic mirrored queues (the cluster work reads these).
    "ha-mode": _one_of("all", "exactly", "nodes"),
    "ha-params": _ha_params,
    "ha-sync-mode": _one_of("manual", "automatic"),
    "ha-sync-batch-size": _pos_int,
    "ha-promote-on-shutdown": _one_of("always", "when-synced"),
    "ha-promote-on-failure": _one_of("always", "when-synced"),
}


def validate_definition(definition: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, problem)`` for every bad entry; empty when the definition is valid."""
    problems: list[tuple[str, str]] = []
    if not definition:
        problems.append(("", "a policy definition may not be empty"))
    for key, value in definition.items():
        if key == "max-priority":
            problems.append((key, "is not a policy key (use the x-max-priority argument)"))
            continue
        check = DEFINITION_KEYS.get(key)
        if check is None:
            problems.append((key, "is not a recognised policy key"))
            continue
        problem = check(value)
        if problem is not None:
            problems.append((key, problem))
    mode = definition.get("ha-mode")
    if mode in ("exactly", "nodes") and "ha-params" not in definition:
        problems.append(("ha-params", f"is required when ha-mode is {mode!r}"))
    if mode == "all" and "ha-params" in definition:
        problems.append(("ha-params", "is not allowed when ha-mode is 'all'"))
    if "ha-params" in definition and mode is None:
        problems.append(("ha-params", "needs ha-mode"))
    return problems


@attrs.frozen(slots=True)
class Policy:
    vhost: str
    name: str
    pattern: str
    definition: Mapping[str, Any]
    apply_to: str = "all"
    priority: int = 0

    def applies(self, kind: str, name: str) -> bool:
        wanted = "queues" if kind == "queue" else "exchanges"
        return self.apply_to in ("all", wanted) and matches(self.pattern, name)


def matching(policies: Iterable[Policy], kind: str, name: str) -> Policy | None:
    """The policy that applies to a queue or exchange: the highest priority one matching
    (``kind`` is "queue" or "exchange"); equal priorities: the first by name."""
    best: Policy | None = None
    for policy in policies:
        if not policy.applies(kind, name):
            continue
        if (
            best is None
            or policy.priority > best.priority
            or (policy.priority == best.priority and policy.name < best.name)
        ):
            best = policy
    return best
