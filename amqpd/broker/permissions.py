"""Permissions: configure/write/read regexes per (user, vhost), topic permissions, the checks.

Rules of this module (RabbitMQ ``rabbit_auth_backend_internal``, ``rabbit_access_control``;
https://www.rabbitmq.com/docs/access-control):
- A permission is three regular expressions matched against a resource name with an
  unanchored search (``re:run/3``). The empty string matches nothing (RabbitMQ special-cases
  ``<<"">>``), so ``""`` denies and ``".*"`` allows everything. Python's ``re`` stands in for
  PCRE; the patterns people write (``^name$``, ``^(a|b)\\.``, ``.*``) mean the same in both.
- The default exchange is checked, and named in the error, as ``amq.default``
  (``rabbit_access_control:check_resource_access/4`` renames ``<<>>``).
- A refusal is 403 ``access to exchange 'x' in vhost '/' refused for user 'u'`` (soft).
- Topic permissions (``set_topic_permissions``) apply to topic exchanges only: publish
  checks ``write`` and (un)bind checks ``read`` against the routing key; ``{username}`` and
  ``{vhost}`` in the pattern are replaced first. No topic permission for an exchange means
  the routing key is not restricted.
- The table is plain data owned by the Broker. ``Access`` is the per-connection view the
  session asks; it caches answers until the table changes (``version``), so a reload takes
  effect on the next operation while a publish costs one dict lookup.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

import attrs

from amqpd.errors import AccessRefused

Perm = Literal["configure", "write", "read"]
Kind = Literal["exchange", "queue"]

DEFAULT_EXCHANGE_ALIAS = "amq.default"


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check_regex(pattern: str) -> None:
    """``ValueError`` when ``pattern`` is not a valid regular expression."""
    try:
        _compiled(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def matches(pattern: str, name: str) -> bool:
    # rabbit_auth_backend_internal:check_resource_access/4: <<"">> never matches.
    if pattern == "":
        return False
    return _compiled(pattern).search(name) is not None


@attrs.frozen(slots=True)
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def allows(self, perm: Perm, name: str) -> bool:
        return matches(getattr(self, perm), name)


@attrs.frozen(slots=True)
class TopicPermission:
    exchange: str
    write: str = ".*"
    read: str = ".*"


class PermissionTable:
    """Who may do what where; ``version`` grows on every change (``Access`` caches)."""

    def __init__(self) -> None:
        self._perms: dict[tuple[str, str], Permission] = {}
        self._topics: dict[tuple[str, str], dict[str, TopicPermission]] = {}
        self.version = 0

    @property
    def has_topic_permissions(self) -> bool:
        return bool(self._topics)

    def set(self, user: str, vhost: str, permission: Permission) -> None:
        self._perms[(user, vhost)] = permission
        self.version += 1

    def clear(self, user: str, vhost: str) -> None:
        self._perms.pop((user, vhost), None)
        self._topics.pop((user, vhost), None)
        self.version += 1

    def clear_user(self, user: str) -> None:
        self._clear(0, user)

    def clear_vhost(self, vhost: str) -> None:
        self._clear(1, vhost)

    def _clear(self, position: int, name: str) -> None:
        """Drop every entry whose (user, vhost) key has ``name`` at ``position``."""
        for table in (self._perms, self._topics):
            for key in [k for k in table if k[position] == name]:
                del table[key]
        self.version += 1

    def replace(self, other: PermissionTable) -> None:
        """Take ``other``'s entries (a reload); every ``Access`` sees them on its next check."""
        self._perms = dict(other._perms)
        self._topics = {k: dict(v) for k, v in other._topics.items()}
        self.version += 1

    def get(self, user: str, vhost: str) -> Permission | None:
        return self._perms.get((user, vhost))

    def set_topic(self, user: str, vhost: str, permission: TopicPermission) -> None:
        self._topics.setdefault((user, vhost), {})[permission.exchange] = permission
        self.version += 1

    def topic(self, user: str, vhost: str, exchange: str) -> TopicPermission | None:
        return self._topics.get((user, vhost), {}).get(exchange)

    def items(self) -> list[tuple[str, str, Permission]]:
        return [(u, v, p) for (u, v), p in sorted(self._perms.items())]

    def topic_items(self) -> list[tuple[str, str, TopicPermission]]:
        return [
            (u, v, t)
            for (u, v), by_exchange in sorted(self._topics.items())
            for _, t in sorted(by_exchange.items())
        ]


def _refused(kind: str, name: str, vhost: str, user: str) -> AccessRefused:
    return AccessRefused(f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")


class Access:
    """The checks one connection's user makes in one vhost (see the module docstring)."""

    __slots__ = ("_cache", "_may_publish", "_table", "_version", "user", "vhost")

    def __init__(self, table: PermissionTable, user: str, vhost: str) -> None:
        self._table = table
        self.user = user
        self.vhost = vhost
        self._cache: dict[tuple[str, str, str], bool] = {}
        # Exchanges ``publish`` found writable (in ``_cache`` too; cleared with it).
        self._may_publish: set[str] = set()
        self._version = -1

    def allowed(self, perm: Perm, kind: Kind, name: str) -> bool:
        if self._version != self._table.version:
            self._cache.clear()
            self._may_publish.clear()
            self._version = self._table.version
        key = (perm, kind, name)
        answer = self._cache.get(key)
        if answer is None:
            permission = self._table.get(self.user, self.vhost)
            answer = permission is not None and permission.allows(perm, name)
            if len(self._cache) < 10_000:  # names are client-chosen: bound the cache
                self._cache[key] = answer
        return answer

    def check(self, perm: Perm, kind: Kind, name: str) -> None:
        """403 unless the user has ``perm`` on the resource (rabbit_channel check_*_permitted)."""
        if kind == "exchange" and name == "":
            name = DEFAULT_EXCHANGE_ALIAS
        if not self.allowed(perm, kind, name):
            raise _refused(kind, name, self.vhost, self.user)

    def configure(self, kind: Kind, name: str) -> None:
        self.check("configure", kind, name)

    def write(self, kind: Kind, name: str) -> None:
        self.check("write", kind, name)

    def publish(self, exchange: str) -> None:
        """``write`` on ``exchange``, as every basic.publish checks it: one set lookup once
        the answer is known (a table change clears it, as it clears ``_cache``)."""
        if exchange in self._may_publish and self._version == self._table.version:
            return
        self.check("write", "exchange", exchange)
        if len(self._may_publish) < 10_000:  # names are client-chosen: bound the set
            self._may_publish.add(exchange)

    def read(self, kind: Kind, name: str) -> None:
        self.check("read", kind, name)

    @property
    def topic_restricted(self) -> bool:
        """Whether any topic permission exists (publish skips the exchange lookup if not)."""
        return self._table.has_topic_permissions

    def check_topic(
        self, perm: Literal["write", "read"], exchange: str, exchange_type: str, routing_key: str
    ) -> None:
        """403 when a topic permission on ``exchange`` refuses ``routing_key``.

        Only topic exchanges are checked (rabbit_channel check_*_permitted_on_topic).
        """
        if exchange_type != "topic":
            return
        topic = self._table.topic(self.user, self.vhost, exchange)
        if topic is None:
            return
        pattern = getattr(topic, perm)
        # rabbit_auth_backend_internal: variables are substituted as is (not escaped).
        pattern = pattern.replace("{username}", self.user).replace("{vhost}", self.vhost)
        if not matches(pattern, routing_key):
            raise AccessRefused(
                f"access to topic '{routing_key}' in exchange '{exchange}' in vhost "
                f"'{self.vhost}' refused for user '{self.user}'"
            )
