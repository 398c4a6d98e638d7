"""The ``amqpd`` command: parse argv, set up logging and the data directory, run the broker.

Rules of this module:
- A user mistake (bad argument, unreadable or invalid config file, unusable data directory,
  a data directory another amqpd holds) is one ``amqpd: error: ...`` line on stderr and
  exit code 2, never a traceback.
- A failure writing the data directory while running stops the broker: one ``amqpd:
  error: ...`` line and exit code 1 (the next start recovers).
- A listen address that cannot be bound is the same kind of line with exit code 1.
- A graceful shutdown (SIGINT/SIGTERM) exits 0.
- Command-line options win over the config file, which wins over the built-in defaults.
- ``amqpd hash-password`` prints a password hash for the config file and exits;
  ``amqpd export-definitions`` prints RabbitMQ definitions JSON and exits;
  ``amqpd import-definitions`` hands a definitions file to the running broker.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog
import trio

from amqpd import (
    __version__,
    bootstrap,
    definitions_export,
    definitions_import,
    passwords_cli,
    pidfile,
    tls,
)
from amqpd import config as config_module
from amqpd.broker.alarms import Alarms
from amqpd.config import Config, StorageConfig
from amqpd.definitions_io import DefinitionsError
from amqpd.log import LOG_FORMATS, LOG_LEVELS, LogFormat, configure_logging
from amqpd.server import (
    DEFAULT_LISTEN,
    ListenAddress,
    ListenError,
    ServerConfig,
    parse_listen,
    run_broker,
)
from amqpd.server.persister import StorageFailure
from amqpd.server.resources import memory_limit, raise_fd_limit, system_measure
from amqpd.storage.lock import DataDirError, DataDirLock, lock_data_dir

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in what the user gave us; the message is shown as is."""


def default_data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_DATA_HOME/amqpd``, else ``~/.local/share/amqpd`` (XDG base directory spec)."""
    xdg = environ.get("XDG_DATA_HOME", "")
    # The spec says relative paths in XDG_* variables are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "amqpd"


def listen_argument(value: str) -> ListenAddress:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqpd",
        description="An AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.",
    )
    parser.add_argument(
        "--listen",
        action="append",
        type=listen_argument,
        metavar="HOST:PORT",
        help="address to accept AMQP connections on; repeatable. IPv6 as [::1]:5672, "
        "':PORT' or 'PORT' for every interface, port 0 for any free port "
        "(default: port 5672 on every IPv4 and IPv6 interface)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the broker keeps its data; created if missing "
        "(default: $XDG_DATA_HOME/amqpd or ~/.local/share/amqpd)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--pid-file",
        type=Path,
        metavar="FILE",
        help="write the broker's pid here (for amqpd reload); removed on exit",
    )
    parser.add_argument(
        "--definitions",
        type=Path,
        metavar="FILE",
        help="RabbitMQ definitions JSON (rabbitmqctl export_definitions) to load at start",
    )
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="(default: console)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="(default: info)")
    parser.add_argument("--version", action="version", version=f"amqpd {__version__}")
    return parser


def load_config(path: Path) -> Config:
    """Read and validate the TOML config file (amqpd/config.py); UsageError on a mistake."""
    try:
        return config_module.read_config_file(path)
    except config_module.ConfigFileError as exc:
        raise UsageError(str(exc)) from None


def prepare_data_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create data directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"data directory {path} is not writable")
    return path


def lock_data(path: Path) -> DataDirLock:
    try:
        return lock_data_dir(path)
    except DataDirError as exc:
        raise UsageError(str(exc)) from None


#: ``amqpd NAME ...``: tools that do their job and exit instead of running the broker.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "hash-password": passwords_cli.main,
    "export-definitions": definitions_export.export_main,
    "gen-certs": tls.gen_certs_main,
    "reload": pidfile.reload_main,
    "import-definitions": definitions_import.import_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    subcommand = SUBCOMMANDS.get(argv[0]) if argv else None
    if subcommand is not None:
        return subcommand(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a usage message on bad arguments
    config: Config | None = None
    warnings: list[str] = []
    try:
        if args.config is not None:
            config = load_config(args.config)
        data_dir = prepare_data_dir(
            args.data_dir
            if args.data_dir is not None
            else (config.storage.data_dir if config and config.storage.data_dir else None)
            or default_data_dir()
        )
        lock = lock_data(data_dir)  # held (by the open file) until the process exits
        kept_imports = definitions_import.imports_dir(data_dir)
        try:
            saved = definitions_import.saved_imports(kept_imports)
            broker, declare_topology = bootstrap.prepare_broker(
                config, args.definitions, warnings.append, saved
            )
        except DefinitionsError as exc:
            raise UsageError(f"an earlier import-definitions: {exc}") from None
        except config_module.ConfigFileError as exc:
            raise UsageError(str(exc)) from None
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {exc}\n")
    log_format: LogFormat = args.log_format or (config and config.log_format) or "console"
    log_level = args.log_level or (config and config.log_level) or "info"
    # Only once the arguments are known good: configuring structlog is process-global.
    configure_logging(log_format, log_level)
    config_path = str(args.config) if args.config is not None else None
    structlog.get_logger("amqpd").info(
        "starting amqpd", version=__version__, data_dir=str(data_dir), config=config_path
    )
    for warning in warnings:
        structlog.get_logger("amqpd").warning(warning)
    # One descriptor per connection: take what the hard limit allows (README).
    old_fds, fds = raise_fd_limit()
    structlog.get_logger("amqpd").info("file descriptor limit", soft=fds, raised_from=old_fds)

    # The data directory is recovered between the broker's users/vhosts and the topology
    # a definitions file imports, so that imported durable entities reach the log.
    from amqpd.server.storage import open_storage

    try:
        durable = open_storage(
            data_dir, broker, memory_budget=config.storage.memory_budget if config else None
        )
        declare_topology()
    except DataDirError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except config_module.ConfigFileError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    listen: list[ListenAddress] = list(
        args.listen or (config.listeners if config else None) or DEFAULT_LISTEN
    )
    server_config = ServerConfig(connection=config.connection if config else None)
    # SIGHUP re-reads the config file (users, permissions, vhosts, policies) live, and
    # imports what `amqpd import-definitions` spooled next to the pid file.
    spool = (
        definitions_import.Spool(definitions_import.spool_dir(args.pid_file))
        if args.pid_file is not None
        else None
    )
    for leftover in spool.clear() if spool is not None else []:
        # Before the pid file names this broker: nobody can have spooled for it yet.
        structlog.get_logger("amqpd").warning(
            "discarded a definitions import left in the spool by an earlier run",
            file=leftover,
            spool=str(spool.directory) if spool is not None else None,
        )
    exporter = (
        definitions_export.Exporter(definitions_export.export_dir(args.pid_file), broker)
        if args.pid_file is not None
        else None
    )
    for leftover in exporter.clear() if exporter is not None else []:
        # Likewise: requests and answers of an earlier run's export-definitions.
        structlog.get_logger("amqpd").info(
            "removed an export-definitions file left by an earlier run",
            file=leftover,
            directory=str(exporter.directory) if exporter is not None else None,
        )
    reload = (
        bootstrap.reloader(args.config, broker, args.definitions, spool, saved, kept_imports)
        if args.config is not None or args.definitions is not None or spool is not None
        else None
    )
    storage = config.storage if config else StorageConfig()
    try:
        run = functools.partial(
            run_broker,
            config=server_config,
            reload=reload,
            # SIGUSR1: `amqpd export-definitions --pid-file` asks for the live definitions.
            export=exporter,
            tls_addresses=config.tls_listeners if config else (),
            ssl_context=config.ssl_context if config else None,
            durable_log=durable,
            alarms=Alarms(
                memory_limit=memory_limit(storage.memory_high_watermark),
                disk_free_limit=storage.disk_free_limit,
            ),
            measure=system_measure(data_dir),
        )
        with pidfile.pid_file(args.pid_file):
            trio.run(run, broker, listen)
    except (ListenError, pidfile.PidFileError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    except BaseExceptionGroup as group:
        failure = group.subgroup(StorageFailure)
        if failure is None:
            raise
        print(f"{parser.prog}: error: {failure.exceptions[0]}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    except KeyboardInterrupt:
        # Only reachable before the signal handler is installed (very early Ctrl-C).
        return EXIT_INTERRUPTED
    # trio has put the default handlers back; a repeated SIGTERM arriving while the
    # interpreter exits must not turn a clean shutdown into "killed by signal".
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    lock.release()
    return EXIT_OK
