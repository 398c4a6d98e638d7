"""``amqpd export-definitions``: definitions in ``rabbitmqctl export_definitions`` format.

Rules of this module (process edge):
- The output is what RabbitMQ's ``import_definitions`` reads: users with their hashes
  (scrypt ones keep ``"hashing_algorithm": "scrypt"``, which RabbitMQ cannot verify), vhosts,
  permissions, topic permissions, vhost limits as ``vhost-limits`` parameters, user limits,
  policies. No exchanges, queues or bindings: amqpd keeps none on disk to export yet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from amqpd import __version__
from amqpd.bootstrap import effective_definitions
from amqpd.broker.definitions import Definitions
from amqpd.broker.passwords import SHA256
from amqpd.config import ConfigFileError, read_config_file


def _limits(*pairs: tuple[str, int | None]) -> dict[str, int]:
    return {key: value for key, value in pairs if value is not None}


def to_rabbit_json(d: Definitions) -> dict[str, Any]:
    """``d`` in ``rabbitmqctl export_definitions`` form (no topology: nothing persists yet)."""
    return {
        "rabbit_version": "3.13.7",
        "rabbitmq_version": "3.13.7",
        "product_name": "amqpd",
        "product_version": __version__,
        "users": [
            {
                "name": u.name,
                "password_hash": u.password.value if u.password else "",
                "hashing_algorithm": u.password.algorithm if u.password else SHA256,
                "tags": list(u.tags),
                "limits": _limits(
                    ("max-connections", u.limits.max_connections),
                    ("max-channels", u.limits.max_channels),
                ),
            }
            for u in d.users
        ],
        "vhosts": [{"name": name} for name in d.vhosts],
        "permissions": [
            {"user": u, "vhost": v, "configure": p.configure, "write": p.write, "read": p.read}
            for u, v, p in d.permissions
        ],
        "topic_permissions": [
            {"user": u, "vhost": v, "exchange": t.exchange, "write": t.write, "read": t.read}
            for u, v, t in d.topic_permissions
        ],
        "parameters": [
            {
                "vhost": name,
                "component": "vhost-limits",
                "name": "limits",
                "value": _limits(
                    ("max-connections", limits.max_connections),
                    ("max-queues", limits.max_queues),
                ),
            }
            for name, limits in d.vhosts.items()
            if limits.max_connections is not None or limits.max_queues is not None
        ],
        "global_parameters": [],
        "policies": [
            {
                "vhost": p.vhost,
                "name": p.name,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "definition": dict(p.definition),
                "priority": p.priority,
            }
            for p in d.policies
        ],
        "queues": [],
        "exchanges": [],
        "bindings": [],
    }


def export_main(argv: list[str]) -> int:
    """``amqpd export-definitions``: the definitions a config (and definitions file) give."""
    parser = argparse.ArgumentParser(
        prog="amqpd export-definitions",
        description="Write the users, vhosts, permissions, topic permissions, vhost limits and "
        "policies of a config file (and --definitions file) as RabbitMQ definitions JSON, for "
        "rabbitmqctl import_definitions. Exchanges, queues and bindings of a running broker "
        "are not exported (amqpd keeps no definitions on disk yet).",
    )
    parser.add_argument("--config", type=Path, metavar="FILE")
    parser.add_argument("--definitions", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    try:
        config = read_config_file(args.config) if args.config is not None else None
        definitions, _ = effective_definitions(config, args.definitions)
    except ConfigFileError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    json.dump(to_rabbit_json(definitions), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
