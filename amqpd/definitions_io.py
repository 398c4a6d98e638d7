"""RabbitMQ definitions files (``rabbitmqctl export_definitions``): read them, write them.

Rules of this module (process edge; the format of RabbitMQ 3.x ``rabbit_definitions``):
- ``read_definitions(path)`` gives the users (with their hashes, verified unchanged), vhosts,
  permissions, topic permissions, policies, vhost limits (the ``vhost-limits`` parameter)
  and the topology (exchanges, queues, bindings). Everything else in the file is listed in
  ``unsupported``, never silently dropped: the caller logs it.
- A malformed entry is one ``DefinitionsError`` naming the entry (``users[2].password_hash``)
  and what is wrong, as for the config file.
- ``merge`` adds imported definitions to the config file's: an entry of the same name
  (user, vhost, (user, vhost) permission, (vhost, name) policy) is replaced by the file's.
- Writing the format back is ``definitions_export.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from amqpd.broker.broker import Broker
from amqpd.broker.definitions import Definitions, UserDefinition
from amqpd.broker.limits import UserLimits, VhostLimits
from amqpd.broker.passwords import SHA256, parse_hash
from amqpd.broker.permissions import Permission, TopicPermission, check_regex
from amqpd.broker.policies import APPLY_TO, Policy, validate_definition
from amqpd.errors import AMQPError

#: Top-level keys we read; the version keys are informational.
_KNOWN = {
    "users",
    "vhosts",
    "permissions",
    "topic_permissions",
    "policies",
    "parameters",
    "exchanges",
    "queues",
    "bindings",
    "rabbit_version",
    "rabbitmq_version",
    "product_name",
    "product_version",
}


class DefinitionsError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")


@attrs.frozen
class Exchange:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: Mapping[str, Any]


@attrs.frozen
class Queue:
    vhost: str
    name: str
    durable: bool
    auto_delete: bool
    arguments: Mapping[str, Any]


@attrs.frozen
class Binding:
    vhost: str
    source: str
    destination: str
    destination_type: str
    routing_key: str
    arguments: Mapping[str, Any]


@attrs.frozen
class Imported:
    definitions: Definitions
    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()
    unsupported: tuple[str, ...] = ()


class _Entry:
    def __init__(self, data: Any, key: str) -> None:
        if not isinstance(data, dict):
            raise DefinitionsError(key, "must be an object")
        self.data = data
        self.key = key

    def string(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str):
            problem = "is required" if name not in self.data else "must be a string"
            raise DefinitionsError(f"{self.key}.{name}", problem)
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise DefinitionsError(f"{self.key}.{name}", "must be true or false")
        return value

    def table(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise DefinitionsError(f"{self.key}.{name}", "must be an object")
        return value

    def regex(self, name: str) -> str:
        value = self.string(name)
        try:
            check_regex(value)
        except ValueError as exc:
            raise DefinitionsError(f"{self.key}.{name}", str(exc)) from None
        return value


def _entries(doc: dict[str, Any], name: str) -> list[_Entry]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise DefinitionsError(name, "must be a list")
    return [_Entry(item, f"{name}[{i}]") for i, item in enumerate(value)]


def _tags(entry: _Entry) -> tuple[str, ...]:
    tags = entry.data.get("tags", [])
    if isinstance(tags, str):  # RabbitMQ before 3.9 wrote "administrator,monitoring"
        return tuple(t for t in tags.split(",") if t)
    if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
        return tuple(tags)
    raise DefinitionsError(f"{entry.key}.tags", "must be a list of strings")


def parse_definitions(doc: Any) -> Imported:
    if not isinstance(doc, dict):
        raise DefinitionsError("(top level)", "must be a JSON object")
    # An empty section (an export's "global_parameters": []) holds nothing left unread.
    unsupported = [
        f"{key} (not read by amqpd)" for key, value in doc.items() if key not in _KNOWN and value
    ]
    users = []
    for e in _entries(doc, "users"):
        name = e.string("name")
        algorithm = e.string("hashing_algorithm", SHA256)
        value = e.string("password_hash", "")
        try:
            password = parse_hash(value, algorithm) if value else None
        except ValueError as exc:
            raise DefinitionsError(f"{e.key}.password_hash", str(exc)) from None
        limits = e.table("limits")
        for key in limits:
            if key not in ("max-connections", "max-channels"):
                unsupported.append(f"{e.key}.limits.{key}")
        user_limits = UserLimits(
            max_connections=_int(limits, "max-connections", f"{e.key}.limits"),
            max_channels=_int(limits, "max-channels", f"{e.key}.limits"),
        )
        users.append(UserDefinition(name, password, _tags(e), limits=user_limits))
    vhosts: dict[str, VhostLimits] = {}
    for e in _entries(doc, "vhosts"):
        vhosts[e.string("name")] = VhostLimits()
    for e in _entries(doc, "parameters"):
        component = e.string("component")
        if component != "vhost-limits":
            unsupported.append(f"{e.key} (parameter component {component!r})")
            continue
        vhost = e.string("vhost")
        limits = e.table("value")
        for key in limits:
            if key not in ("max-connections", "max-queues"):
                unsupported.append(f"{e.key}.value.{key}")
        vhosts[vhost] = VhostLimits(
            max_connections=_int(limits, "max-connections", f"{e.key}.value"),
            max_queues=_int(limits, "max-queues", f"{e.key}.value"),
        )
    permissions = [
        (
            e.string("user"),
            e.string("vhost"),
            Permission(e.regex("configure"), e.regex("write"), e.regex("read")),
        )
        for e in _entries(doc, "permissions")
    ]
    topics = [
        (
            e.string("user"),
            e.string("vhost"),
            TopicPermission(e.string("exchange"), e.regex("write"), e.regex("read")),
        )
        for e in _entries(doc, "topic_permissions")
    ]
    policies = [_policy(e) for e in _entries(doc, "policies")]
    exchanges = tuple(
        Exchange(
            e.string("vhost"),
            e.string("name"),
            e.string("type"),
            e.flag("durable", True),
            e.flag("auto_delete"),
            e.flag("internal"),
            e.table("arguments"),
        )
        for e in _entries(doc, "exchanges")
    )
    queues = tuple(
        Queue(
            e.string("vhost"),
            e.string("name"),
            e.flag("durable", True),
            e.flag("auto_delete"),
            e.table("arguments"),
        )
        for e in _entries(doc, "queues")
    )
    bindings = []
    for e in _entries(doc, "bindings"):
        kind = e.string("destination_type")
        if kind not in ("queue", "exchange"):
            raise DefinitionsError(f"{e.key}.destination_type", "must be queue or exchange")
        bindings.append(
            Binding(
                e.string("vhost"),
                e.string("source"),
                e.string("destination"),
                kind,
                e.string("routing_key", ""),
                e.table("arguments"),
            )
        )
    return Imported(
        Definitions(vhosts, tuple(users), tuple(permissions), tuple(topics), tuple(policies)),
        exchanges,
        queues,
        tuple(bindings),
        tuple(unsupported),
    )


def _int(table: Mapping[str, Any], key: str, where: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DefinitionsError(f"{where}.{key}", "must be an integer")
    return value


def _policy(e: _Entry) -> Policy:
    apply_to = e.string("apply-to", "all")
    if apply_to not in APPLY_TO:
        raise DefinitionsError(f"{e.key}.apply-to", f"must be one of {', '.join(APPLY_TO)}")
    definition = e.table("definition")
    for key, problem in validate_definition(definition):
        raise DefinitionsError(
            f"{e.key}.definition.{key}" if key else f"{e.key}.definition", problem
        )
    priority = e.data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise DefinitionsError(f"{e.key}.priority", "must be an integer")
    return Policy(
        e.string("vhost"), e.string("name"), e.regex("pattern"), definition, apply_to, priority
    )


def read_definitions(path: Path) -> Imported:
    """Read a definitions JSON file; every failure is one ``DefinitionsError`` line."""
    try:
        with path.open("rb") as f:
            doc = json.load(f)
    except OSError as exc:
        raise DefinitionsError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DefinitionsError(str(path), f"invalid JSON: {exc}") from None
    try:
        return parse_definitions(doc)
    except DefinitionsError as exc:
        raise DefinitionsError(str(path), str(exc)) from None


def merge(
    base: Definitions, extra: Definitions, loopback_users: tuple[str, ...] = ()
) -> Definitions:
    """``base`` plus ``extra``; an entry of ``extra`` replaces one of the same name."""
    users = {u.name: u for u in base.users}
    for u in extra.users:
        users[u.name] = attrs.evolve(u, loopback_only=u.name in loopback_users)
    perms = {(u, v): p for u, v, p in base.permissions}
    perms.update({(u, v): p for u, v, p in extra.permissions})
    topics = {(u, v, t.exchange): t for u, v, t in base.topic_permissions}
    topics.update({(u, v, t.exchange): t for u, v, t in extra.topic_permissions})
    policies = {(p.vhost, p.name): p for p in base.policies}
    policies.update({(p.vhost, p.name): p for p in extra.policies})
    return Definitions(
        vhosts={**base.vhosts, **extra.vhosts},
        users=tuple(users.values()),
        permissions=tuple((u, v, p) for (u, v), p in perms.items()),
        topic_permissions=tuple((u, v, t) for (u, v, _), t in topics.items()),
        policies=tuple(policies.values()),
        delete_vhosts_with_messages=base.delete_vhosts_with_messages,
    )


def check(d: Definitions) -> None:
    """Every permission and policy names a user and vhost that exist (RabbitMQ refuses)."""
    users = {u.name for u in d.users}
    entries = [("permissions", u, v) for u, v, _ in d.permissions]
    entries += [("topic permissions", u, v) for u, v, _ in d.topic_permissions]
    for what, user, vhost in entries:
        where = f"{what} of user '{user}' in vhost '{vhost}'"
        if user not in users:
            raise DefinitionsError(where, "no such user")
        if vhost not in d.vhosts:
            raise DefinitionsError(where, "no such vhost")
    for policy in d.policies:
        if policy.vhost not in d.vhosts:
            raise DefinitionsError(
                f"policy '{policy.name}' in vhost '{policy.vhost}'", "no such vhost"
            )


def declare_topology(broker: Broker, imported: Imported) -> None:
    """Declare the imported exchanges, then queues, then bindings (RabbitMQ's order)."""
    for x in imported.exchanges:
        _declare(
            f"exchange '{x.name}' in vhost '{x.vhost}'",
            lambda x=x: _vhost(broker, x.vhost).declare_exchange(
                x.name,
                x.type,
                durable=x.durable,
                auto_delete=x.auto_delete,
                internal=x.internal,
                arguments=dict(x.arguments),
            ),
        )
    for q in imported.queues:
        _declare(
            f"queue '{q.name}' in vhost '{q.vhost}'",
            lambda q=q: _vhost(broker, q.vhost).declare_queue(
                q.name, durable=q.durable, auto_delete=q.auto_delete, arguments=dict(q.arguments)
            ),
        )
    for b in imported.bindings:
        vhost = _vhost(broker, b.vhost)
        what = f"binding of '{b.destination}' to '{b.source}' in vhost '{b.vhost}'"
        if b.destination_type == "queue":
            _declare(
                what,
                lambda b=b, v=vhost: v.bind_queue(
                    b.destination, b.source, b.routing_key, dict(b.arguments)
                ),
            )
        else:
            _declare(
                what,
                lambda b=b, v=vhost: v.bind_exchange(
                    b.destination, b.source, b.routing_key, dict(b.arguments)
                ),
            )


def _vhost(broker: Broker, name: str) -> Any:
    vhost = broker.vhosts.get(name)
    if vhost is None:
        raise DefinitionsError(f"vhost {name!r}", "is not defined")
    return vhost


def _declare(what: str, action: Any) -> None:
    try:
        action()
    except AMQPError as exc:
        raise DefinitionsError(what, exc.detail) from None
