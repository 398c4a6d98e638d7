"""``amqpd export-definitions``: definitions in ``rabbitmqctl export_definitions`` format.

Rules of this module (process edge):
- The output is what RabbitMQ's ``import_definitions`` reads: users with their hashes
  (scrypt ones keep ``"hashing_algorithm": "scrypt"``, which RabbitMQ cannot verify), vhosts,
  permissions, topic permissions, vhost limits as ``vhost-limits`` parameters, user limits,
  policies.
- Without ``--pid-file`` it exports what a config (and definitions) file gives: no
  exchanges, queues or bindings. With ``--pid-file`` it asks the running broker instead,
  as ``rabbitmqctl export_definitions`` does: the pid file is the rendezvous (as for
  ``amqpd reload``): the subcommand leaves a request in ``<pid file>.export/`` and sends
  SIGUSR1; the broker writes its live definitions, durable exchanges, queues and bindings
  included, next to the request (``Exporter``); the subcommand waits for that file (a
  bounded wait), prints it and removes it. What an earlier broker left there is removed
  at start (``Exporter.clear``), as the import spool is.
- Topology is exported as RabbitMQ exports it: durable exchanges other than the default
  and ``amq.*`` ones, durable non-exclusive queues, and the bindings between durable ends
  (the default exchange's implicit bindings are not bindings).
- A reader that goes away (``| head -1``) ends the output quietly: no traceback, exit 141
  (128 + SIGPIPE, the status of a ``cat`` or ``grep`` killed by SIGPIPE), as
  ``write_stdout`` does it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import decimal
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amqpd import __version__
from amqpd.bootstrap import effective_definitions
from amqpd.broker.definitions import Definitions, UserDefinition
from amqpd.broker.exchange import Exchange
from amqpd.broker.limits import UserLimits
from amqpd.broker.passwords import SHA256
from amqpd.config import ConfigFileError, read_config_file
from amqpd.pidfile import PidFileError, clear_leftovers, read_pid

if TYPE_CHECKING:
    from amqpd.broker.broker import Broker

#: What ``amqpd export-definitions --pid-file`` sends the broker.
EXPORT_SIGNAL = signal.SIGUSR1
#: How long the subcommand waits for the broker's answer.
EXPORT_TIMEOUT = 30.0


def _limits(*pairs: tuple[str, int | None]) -> dict[str, int]:
    return {key: value for key, value in pairs if value is not None}


def to_rabbit_json(d: Definitions) -> dict[str, Any]:
    """``d`` in ``rabbitmqctl export_definitions`` form (without topology: ``live_definitions``
    adds a running broker's)."""
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


def _json_value(value: Any) -> Any:
    """A field-table value as RabbitMQ's JSON export writes it."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


def _table(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _json_value(v) for k, v in arguments.items()}


def live_definitions(broker: Broker) -> dict[str, Any]:
    """The running broker's definitions, topology included, in RabbitMQ's export format."""
    d = Definitions(
        vhosts={name: vhost.limits for name, vhost in broker.vhosts.items()},
        users=tuple(
            UserDefinition(
                name,
                broker.user_table.password_hash(name),
                user.tags,
                user.loopback_only,
                broker.user_limits.get(name, UserLimits()),
            )
            for name, user in broker.users.items()
        ),
        permissions=tuple(broker.permissions.items()),
        topic_permissions=tuple(broker.permissions.topic_items()),
        policies=tuple(broker.policies.values()),
    )
    doc = to_rabbit_json(d)
    exchanges, queues, bindings = [], [], []
    for vname, vhost in broker.vhosts.items():
        for x in vhost.exchanges.values():
            if x.durable and x.name and not x.name.startswith("amq."):
                exchanges.append(
                    {
                        "name": x.name,
                        "vhost": vname,
                        "type": x.type,
                        "durable": True,
                        "auto_delete": x.auto_delete,
                        "internal": x.internal,
                        "arguments": _table(x.arguments),
                    }
                )
            if not x.durable or not x.name:
                continue
            for dest, routing_key, arguments in x.impl.bindings():
                if not getattr(dest, "durable", False):
                    continue
                bindings.append(
                    {
                        "source": x.name,
                        "vhost": vname,
                        "destination": dest.name,  # type: ignore[attr-defined]
                        "destination_type": "exchange" if isinstance(dest, Exchange) else "queue",
                        "routing_key": routing_key,
                        "arguments": _table(arguments),
                    }
                )
        for q in vhost.queues.values():
            if q.durable and not q.exclusive:
                queues.append(
                    {
                        "name": q.name,
                        "vhost": vname,
                        "durable": True,
                        "auto_delete": q.auto_delete,
                        "arguments": _table(q.arguments),
                    }
                )
    doc["exchanges"], doc["queues"], doc["bindings"] = exchanges, queues, bindings
    return doc


def export_dir(pid_file: Path) -> Path:
    """Where ``export-definitions --pid-file`` and the broker meet."""
    return pid_file.with_name(pid_file.name + ".export")


class Exporter:
    """The broker's side: answer every pending request (``<id>.request``) with ``<id>.json``."""

    def __init__(self, directory: Path, broker: Broker) -> None:
        self.directory = directory
        self.broker = broker

    def clear(self) -> list[str]:
        """Remove what an earlier broker left (at start, before the pid file names this
        broker, so no request can be for it yet): requests it never answered, answers
        nobody collected (the subcommand timed out or was killed), half-written
        temporaries. Returns the names removed."""
        return clear_leftovers(self.directory)

    def __call__(self) -> int:
        try:
            requests = sorted(self.directory.glob("*.request"))
        except OSError:
            return 0
        if not requests:
            return 0
        text = json.dumps(live_definitions(self.broker), indent=2) + "\n"
        for request in requests:
            tmp = request.with_suffix(".tmp")
            # Written aside and renamed, so the waiting subcommand never reads half a file.
            tmp.write_text(text)
            tmp.rename(request.with_suffix(".json"))
            with contextlib.suppress(OSError):
                request.unlink()
        return len(requests)


#: The exit status when stdout's reader went away: 128 + SIGPIPE, what a shell reports for
#: a tool the signal killed (Python ignores SIGPIPE, so the write fails with EPIPE instead).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def write_stdout(text: str) -> int:
    """Write ``text`` to stdout and flush; 0, or ``EXIT_BROKEN_PIPE`` if the reader is gone.

    The flush is here so that the failure happens inside the ``try`` and not at interpreter
    exit; stdout is then pointed at /dev/null, as the Python docs advise for SIGPIPE, so
    the final flush at exit does not print "Exception ignored ... BrokenPipeError" either.
    """
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return 0


def _export_running(parser: argparse.ArgumentParser, pid_file: Path) -> int:
    try:
        pid = read_pid(pid_file)
        directory = export_dir(pid_file)
        directory.mkdir(parents=True, exist_ok=True)
        request = directory / f"{time.time_ns():020d}-{os.getpid()}.request"
        request.write_text("")
    except PidFileError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write the export request: {exc}\n")
    answer = request.with_suffix(".json")
    try:
        os.kill(pid, EXPORT_SIGNAL)
        deadline = time.monotonic() + EXPORT_TIMEOUT
        while not answer.exists():
            if time.monotonic() > deadline:
                parser.exit(1, f"{parser.prog}: error: the broker (pid {pid}) did not answer\n")
            time.sleep(0.05)  # polling a file the broker writes; not a test
        text = answer.read_text()
    except (ProcessLookupError, PermissionError) as exc:
        reason = "no broker running" if isinstance(exc, ProcessLookupError) else "not allowed"
        parser.exit(1, f"{parser.prog}: error: {reason} (pid {pid})\n")
    finally:
        with contextlib.suppress(OSError):
            request.unlink()
        with contextlib.suppress(OSError):
            answer.unlink()
    return write_stdout(text)


def export_main(argv: list[str]) -> int:
    """``amqpd export-definitions``: a running broker's definitions (``--pid-file``), or
    those a config (and definitions file) give."""
    parser = argparse.ArgumentParser(
        prog="amqpd export-definitions",
        description="Write RabbitMQ definitions JSON (for rabbitmqctl import_definitions): "
        "with --pid-file, the running broker's users, vhosts, permissions, topic "
        "permissions, limits, policies, durable exchanges, queues and bindings; without it, "
        "what a config file (and --definitions file) gives, without topology.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE")
    parser.add_argument("--definitions", type=Path, metavar="FILE")
    parser.add_argument(
        "--pid-file",
        type=Path,
        metavar="FILE",
        help="ask the running broker started with this --pid-file",
    )
    args = parser.parse_args(argv)
    if args.pid_file is not None:
        if args.config is not None or args.definitions is not None:
            parser.exit(
                2,
                f"{parser.prog}: error: --pid-file exports the running broker; "
                "leave out --config and --definitions\n",
            )
        return _export_running(parser, args.pid_file)
    try:
        config = read_config_file(args.config) if args.config is not None else None
        definitions, _ = effective_definitions(config, args.definitions)
    except ConfigFileError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return write_stdout(json.dumps(to_rabbit_json(definitions), indent=2) + "\n")
