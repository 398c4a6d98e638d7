"""The TOML configuration file (``amqpd --config FILE``): read, validate, turn into values.

Rules of this module (process edge: the core never imports it):
- ``load_config(path)`` returns a frozen ``Config`` of plain values (``bootstrap.py`` makes
  the ``Broker`` they describe). Nothing global: the core gets what it needs as arguments
  (``ConnectionConfig``, the broker's ``Definitions``).
- Every mistake is one ``ConfigError`` naming the key (``users.alice.password_hash``,
  ``permissions[0].configure``) and what is wrong; the CLI prints it as
  ``amqpd: error: FILE: KEY: PROBLEM`` and exits 2. Unknown keys are mistakes too: a typo
  must not silently become a default.
- ``SCHEMA`` lists every key of every section; ``conf/amqpd.toml`` documents each of them
  (a test keeps the two in step). Defaults are RabbitMQ 3.13's.
- Without ``[users]`` the broker has RabbitMQ's default user (guest/guest, full access to
  "/"); with it, exactly the users listed. Without ``[vhosts]`` there is the vhost "/";
  with it, exactly the vhosts listed (RabbitMQ's definitions import behaves the same way).
"""

from __future__ import annotations

import ssl
import tomllib
from pathlib import Path
from typing import Any, cast

import attrs

from amqpd.broker.definitions import Definitions, UserDefinition
from amqpd.broker.limits import UserLimits, VhostLimits
from amqpd.broker.passwords import ALGORITHMS, SHA256, PasswordHash, parse_hash
from amqpd.broker.permissions import Permission, TopicPermission
from amqpd.broker.policies import APPLY_TO, Policy, validate_definition
from amqpd.config_table import ConfigError, Table, kind, name_key
from amqpd.log import LOG_FORMATS, LOG_LEVELS, LogFormat
from amqpd.protocol.constants import FRAME_MIN_SIZE
from amqpd.server.certificates import LOGIN_FROM
from amqpd.server.listeners import ListenAddress, parse_listen
from amqpd.session.config import ConnectionConfig
from amqpd.session.handshake import KNOWN_MECHANISMS
from amqpd.tls import TlsConfig, TlsError, server_context

#: Every key the parser knows, by section ("*" = a name the user picks, "[]" = array item).
SCHEMA: dict[str, tuple[str, ...]] = {
    "listeners": ("amqp", "amqps"),
    "tls": ("certfile", "keyfile", "cafile", "verify_peer", "fail_if_no_peer_cert"),
    "limits": (
        "frame_max",
        "channel_max",
        "heartbeat",
        "max_message_size",
        "max_connections",
        "handshake_timeout",
    ),
    "storage": ("data_dir", "memory_budget", "memory_high_watermark", "disk_free_limit"),
    "logging": ("format", "level"),
    "auth": ("mechanisms", "loopback_users", "ssl_cert_login_from"),
    "vhosts.*": ("max_connections", "max_queues"),
    "users.*": ("password_hash", "hashing_algorithm", "tags", "max_connections", "max_channels"),
    "permissions[]": ("user", "vhost", "configure", "write", "read"),
    "topic_permissions[]": ("user", "vhost", "exchange", "write", "read"),
    "policies[]": ("name", "vhost", "pattern", "apply_to", "priority", "definition"),
    "reload": ("delete_vhosts_with_messages",),
}
_TOP_LEVEL = tuple(dict.fromkeys(s.split(".")[0].removesuffix("[]") for s in SCHEMA))

_U16 = 65535
_MAX_MESSAGE_SIZE = 536870912  # RabbitMQ caps max_message_size at 512 MiB


#: RabbitMQ's out-of-the-box definitions: vhost "/" and guest/guest with full access to it.
_GUEST_HASH = PasswordHash(SHA256, "cu7Jv11osgRN5SWsBYQOG5xXinU0MXela0ifLA8FHGc3XKeE")


def default_definitions() -> Definitions:
    return Definitions(
        vhosts={"/": VhostLimits()},
        users=(UserDefinition("guest", _GUEST_HASH, ("administrator",), loopback_only=True),),
        permissions=(("guest", "/", Permission()),),
    )


@attrs.frozen
class StorageConfig:
    data_dir: Path | None = None
    #: Bytes the ready entries in memory may cost (bodies plus a per-entry estimate) before
    #: further ones go to the queues' delta files (None: the default, broker/paging.py
    #: DEFAULT_BUDGET).
    memory_budget: int | None = None
    memory_high_watermark: float = 0.4
    disk_free_limit: int = 50_000_000


@attrs.frozen
class Config:
    path: Path
    listeners: tuple[ListenAddress, ...] | None = None
    #: amqps listeners (RabbitMQ listeners.ssl) and their TLS context, loaded and checked.
    tls_listeners: tuple[ListenAddress, ...] = ()
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False)
    connection: ConnectionConfig = attrs.field(factory=ConnectionConfig)
    max_connections: int | None = None
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    log_format: LogFormat | None = None
    log_level: str | None = None
    definitions: Definitions = attrs.field(factory=default_definitions)
    loopback_users: tuple[str, ...] = ("guest",)


def _section(doc: dict[str, Any], name: str) -> Table:
    return Table(doc.get(name, {}), name, SCHEMA[name])


def _items(doc: dict[str, Any], name: str) -> list[Table]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise ConfigError(name, f"must be an array of tables ([[{name}]]), not {kind(value)}")
    return [Table(item, f"{name}[{i}]", SCHEMA[f"{name}[]"]) for i, item in enumerate(value)]


def _named(doc: dict[str, Any], name: str) -> dict[str, Table] | None:
    if name not in doc:
        return None
    value = doc[name]
    if not isinstance(value, dict):
        raise ConfigError(name, f"must be a table, not {kind(value)}")
    known = SCHEMA[f"{name}.*"]
    return {key: Table(item, name_key(name, key), known) for key, item in value.items()}


def _addresses(table: Table, key: str) -> tuple[ListenAddress, ...]:
    try:
        return tuple(parse_listen(a) for a in table.str_list(key, ()))
    except ValueError as exc:
        raise ConfigError(table.key(key), str(exc)) from None


def _listeners(doc: dict[str, Any]) -> tuple[ListenAddress, ...] | None:
    table = _section(doc, "listeners")
    if not table.has("amqp"):
        return None
    addresses = _addresses(table, "amqp")
    if not addresses:
        raise ConfigError(table.key("amqp"), "must list at least one address")
    return addresses


def _flag(table: Table, key: str) -> bool:
    value = table.data.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(table.key(key), f"must be true or false, not {kind(value)}")
    return value


def _tls(
    doc: dict[str, Any], base: Path
) -> tuple[tuple[ListenAddress, ...], ssl.SSLContext | None]:
    addresses = _addresses(_section(doc, "listeners"), "amqps")
    if "tls" not in doc:
        if addresses:
            raise ConfigError("listeners.amqps", "needs a [tls] section (certfile, keyfile)")
        return (), None
    table = _section(doc, "tls")
    cafile = table.string("cafile")
    settings = TlsConfig(
        certfile=base / table.required_str("certfile"),
        keyfile=base / table.required_str("keyfile"),
        cafile=base / cafile if cafile is not None else None,
        verify_peer=_flag(table, "verify_peer"),
        fail_if_no_peer_cert=_flag(table, "fail_if_no_peer_cert"),
    )
    try:
        return addresses, server_context(settings)
    except TlsError as exc:
        raise ConfigError(table.key(exc.key), exc.problem) from None


def _connection(doc: dict[str, Any]) -> tuple[ConnectionConfig, int | None]:
    limits = _section(doc, "limits")
    auth = _section(doc, "auth")
    defaults = ConnectionConfig()
    mechanisms = auth.str_list("mechanisms", defaults.auth_mechanisms)
    for mechanism in mechanisms:
        if mechanism not in KNOWN_MECHANISMS:
            known = ", ".join(sorted(KNOWN_MECHANISMS))
            raise ConfigError(auth.key("mechanisms"), f"unknown mechanism {mechanism!r} ({known})")
    if not mechanisms:
        raise ConfigError(auth.key("mechanisms"), "must list at least one mechanism")
    config = ConnectionConfig(
        frame_max=limits.integer("frame_max", defaults.frame_max, FRAME_MIN_SIZE, 2**31 - 1)
        or defaults.frame_max,
        channel_max=limits.integer("channel_max", defaults.channel_max, 1, _U16)
        or defaults.channel_max,
        heartbeat=limits.integer("heartbeat", defaults.heartbeat, 0, _U16) or 0,
        max_message_size=limits.integer(
            "max_message_size", defaults.max_message_size, 1, _MAX_MESSAGE_SIZE
        )
        or defaults.max_message_size,
        handshake_timeout=limits.number(
            "handshake_timeout", defaults.handshake_timeout, 0.1, 3600.0
        ),
        auth_mechanisms=mechanisms,
        ssl_cert_login_from=auth.choice(
            "ssl_cert_login_from", LOGIN_FROM, defaults.ssl_cert_login_from
        )
        or defaults.ssl_cert_login_from,
    )
    max_connections = limits.integer("max_connections", None, -1)
    if max_connections is not None and max_connections < 0:
        max_connections = None  # -1: no limit, as in RabbitMQ's limits
    return config, max_connections


def _storage(doc: dict[str, Any], base: Path) -> StorageConfig:
    table = _section(doc, "storage")
    data_dir = table.string("data_dir")
    return StorageConfig(
        # A relative data_dir is relative to the config file, not to the current directory.
        data_dir=(base / Path(data_dir).expanduser()) if data_dir else None,
        memory_budget=table.integer("memory_budget", None, 0),
        memory_high_watermark=table.number("memory_high_watermark", 0.4, 0.0, 1.0),
        disk_free_limit=table.integer("disk_free_limit", 50_000_000, 0) or 0,
    )


def _vhosts(doc: dict[str, Any]) -> dict[str, VhostLimits] | None:
    tables = _named(doc, "vhosts")
    if tables is None:
        return None
    vhosts: dict[str, VhostLimits] = {}
    for name, table in tables.items():
        vhosts[name] = VhostLimits(
            max_connections=table.integer("max_connections", None, -1),
            max_queues=table.integer("max_queues", None, -1),
        )
    return vhosts


def _users(doc: dict[str, Any]) -> list[UserDefinition] | None:
    tables = _named(doc, "users")
    if tables is None:
        return None
    users = []
    for name, table in tables.items():
        algorithm = table.choice("hashing_algorithm", ALGORITHMS, None)
        value = table.string("password_hash")
        password = None
        if value is not None:
            try:
                password = parse_hash(value, algorithm)
            except ValueError as exc:
                raise ConfigError(table.key("password_hash"), str(exc)) from None
        limits = UserLimits(
            max_connections=table.integer("max_connections", None, -1),
            max_channels=table.integer("max_channels", None, -1),
        )
        users.append(UserDefinition(name, password, table.str_list("tags", ()), limits=limits))
    return users


def _known(table: Table, key: str, names: set[str] | None, what: str) -> str:
    value = table.required_str(key) if key == "user" else table.string(key, "/") or "/"
    if names is not None and value not in names:
        raise ConfigError(table.key(key), f"no {what} {value!r} is defined")
    return value


def _definitions(doc: dict[str, Any]) -> Definitions:
    vhosts = _vhosts(doc)
    users = _users(doc)
    default_user = users is None
    if users is None:  # RabbitMQ's default user (guest/guest, administrator)
        users = [UserDefinition("guest", _GUEST_HASH, ("administrator",))]
    if vhosts is None:
        vhosts = {"/": VhostLimits()}
    user_names = {u.name for u in users}
    vhost_names = set(vhosts)
    permissions = []
    for t in _items(doc, "permissions"):
        user = _known(t, "user", user_names, "user")
        vhost = _known(t, "vhost", vhost_names, "vhost")
        permissions.append(
            (user, vhost, Permission(t.regex("configure"), t.regex("write"), t.regex("read")))
        )
    topics = []
    for t in _items(doc, "topic_permissions"):
        user = _known(t, "user", user_names, "user")
        vhost = _known(t, "vhost", vhost_names, "vhost")
        topic = TopicPermission(t.required_str("exchange"), t.regex("write"), t.regex("read"))
        topics.append((user, vhost, topic))
    policies = [_policy(t, vhost_names) for t in _items(doc, "policies")]
    seen: set[tuple[str, str]] = set()
    for i, p in enumerate(policies):
        if (p.vhost, p.name) in seen:
            raise ConfigError(
                f"policies[{i}].name", f"policy {p.name!r} in vhost {p.vhost!r} is defined twice"
            )
        seen.add((p.vhost, p.name))
    if default_user and "/" in vhosts and not any(u == "guest" for u, _, _ in permissions):
        permissions.insert(0, ("guest", "/", Permission()))  # with the default user, as RabbitMQ
    loopback = _section(doc, "auth").str_list("loopback_users", ("guest",))
    return Definitions(
        vhosts=vhosts,
        users=tuple(attrs.evolve(u, loopback_only=u.name in loopback) for u in users),
        permissions=tuple(permissions),
        topic_permissions=tuple(topics),
        policies=tuple(policies),
        delete_vhosts_with_messages=_section(doc, "reload").str_list(
            "delete_vhosts_with_messages", ()
        ),
    )


def _policy(t: Table, vhost_names: set[str]) -> Policy:
    name = t.required_str("name")
    vhost = _known(t, "vhost", vhost_names, "vhost")
    pattern = t.regex("pattern")
    apply_to = t.choice("apply_to", APPLY_TO, "all") or "all"
    priority = t.integer("priority", 0, -(2**31), 2**31 - 1) or 0
    if not t.has("definition"):
        raise ConfigError(t.key("definition"), "is required")
    definition = t.data["definition"]
    if not isinstance(definition, dict):
        raise ConfigError(t.key("definition"), f"must be a table, not {kind(definition)}")
    for key, problem in validate_definition(definition):
        where = f'{t.key("definition")}."{key}"' if key else t.key("definition")
        raise ConfigError(where, problem)
    return Policy(vhost, name, pattern, definition, apply_to, priority)


def parse_config(doc: dict[str, Any], path: Path) -> Config:
    """Validate a decoded TOML document (``ConfigError`` on the first mistake)."""
    for key in doc:
        if key not in _TOP_LEVEL:
            raise ConfigError(key, f"unknown section (known: {', '.join(_TOP_LEVEL)})")
    logging = _section(doc, "logging")
    connection, max_connections = _connection(doc)
    tls_listeners, ssl_context = _tls(doc, path.parent)
    return Config(
        path=path,
        listeners=_listeners(doc),
        tls_listeners=tls_listeners,
        ssl_context=ssl_context,
        connection=connection,
        max_connections=max_connections,
        storage=_storage(doc, path.parent),
        log_format=cast("LogFormat | None", logging.choice("format", LOG_FORMATS, None)),
        log_level=logging.choice("level", LOG_LEVELS, None),
        definitions=_definitions(doc),
        loopback_users=_section(doc, "auth").str_list("loopback_users", ("guest",)),
    )


def load_config(path: Path) -> Config:
    """Read and validate ``path``; ``OSError`` / ``TOMLDecodeError`` / ``ConfigError``."""
    with path.open("rb") as f:
        doc = tomllib.load(f)
    return parse_config(doc, path)


class ConfigFileError(Exception):
    """Why a config file cannot be used, as the one line the user sees."""


def read_config_file(path: Path) -> Config:
    """``load_config`` with every failure turned into one ``ConfigFileError`` line."""
    try:
        return load_config(path)
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"invalid config file {path}: {exc}") from None
    except ConfigError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
