"""Definitions: the vhosts, users, permissions and policies a broker should have, as values.

Rules of this module:
- ``Definitions`` is what the process edge hands the core (from the config file, later from
  a RabbitMQ definitions export); ``Broker.apply_definitions`` makes the broker match it,
  at start and on every reload, so both paths are one code path.
- It is complete: defaults (RabbitMQ's guest user, vhost "/") are filled in by whoever
  builds it, never guessed here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import attrs

from amqpd.broker.limits import UserLimits, VhostLimits
from amqpd.broker.passwords import PasswordHash
from amqpd.broker.permissions import Permission, TopicPermission
from amqpd.broker.policies import Policy


@attrs.frozen
class UserDefinition:
    name: str
    password: PasswordHash | None
    tags: tuple[str, ...] = ()
    loopback_only: bool = False
    limits: UserLimits = attrs.field(factory=UserLimits)


@attrs.frozen
class Definitions:
    vhosts: Mapping[str, VhostLimits]
    users: tuple[UserDefinition, ...]
    permissions: tuple[tuple[str, str, Permission], ...] = ()
    topic_permissions: tuple[tuple[str, str, TopicPermission], ...] = ()
    policies: tuple[Policy, ...] = ()
    #: The operator's explicit go-ahead to delete these vhosts even though they still
    #: hold messages (without it such a deletion is refused and reported).
    delete_vhosts_with_messages: tuple[str, ...] = ()


@attrs.define
class ApplyReport:
    """What ``apply_definitions`` did that the caller must act on or log."""

    #: Connections to close with connection.close 320 and this text (RabbitMQ's reasons:
    #: "user 'u' is deleted", "vhost 'v' is deleted").
    to_close: list[tuple[Hashable, str]] = attrs.field(factory=list)
    #: Vhosts the definitions drop but that still hold messages: kept (never silently lost).
    kept_vhosts: list[str] = attrs.field(factory=list)
    #: One line per change, for the log.
    changes: list[str] = attrs.field(factory=list)
